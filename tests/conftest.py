"""Shared fixtures."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory) -> str:
  """One TFDS directory for all tests; the tiny dataset is generated on first use."""
  return str(tmp_path_factory.mktemp("tfds"))


def pytest_addoption(parser):
  parser.addoption("--run-slow", action="store_true", default=False,
                   help="also run tests marked slow (each compiles large models)")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: compiles large models; run with --run-slow")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--run-slow"):
    return
  skip = pytest.mark.skip(reason="slow; run with --run-slow")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)


def corrector_params(names, fast=("TF-Inv",)):
  """`names` as pytest params; all but `fast` are marked slow."""
  return [pytest.param(name, marks=() if name in fast else pytest.mark.slow)
          for name in names]
