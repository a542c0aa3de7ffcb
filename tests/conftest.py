"""Shared fixtures."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory) -> str:
  """One TFDS directory for all tests; the tiny dataset is generated on first use."""
  return str(tmp_path_factory.mktemp("tfds"))
