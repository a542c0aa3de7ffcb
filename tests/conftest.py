"""Shared fixtures."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One persistent XLA compilation cache for the session's processes (set before
# JAX is imported, and inherited by the `main` processes the tests start): the
# many tiny runs compile the same programs, and reading them back takes a third
# of the CPU time of compiling them. Entries are keyed by program, JAX version
# and flags, so a stale one is never used.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache",
    "jax_compilation_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


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
