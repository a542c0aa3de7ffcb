r"""Prints what this installation will train on: the stack's versions, JAX's
backend and devices, and whether TensorFlow (which only feeds data) sees a GPU.

    python -m invariant_slots.doctor

Most launch failures on GPUs and TPUs are version or CUDA mix-ups; the last
lines name each problem found and its fix.
"""

import importlib.metadata
import os
import sys

# Distributions whose versions matter, in the order they are printed.
STACK = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "libtpu", "flax", "optax",
         "orbax-checkpoint", "chex", "diffrax", "lineax", "ml-collections", "clu",
         "tensorflow", "tensorflow-cpu", "tensorflow-datasets", "numpy")


def versions() -> dict[str, str]:
  """`{distribution: version}` of the installed members of `STACK`."""
  found = {}
  for name in STACK:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return found


def problems(installed: dict[str, str], backend: str, tf_gpus: int | None) -> list[str]:
  """One line per problem found, each naming its fix."""
  found = []
  if installed.get("jax") != installed.get("jaxlib"):
    found.append(f"jax {installed.get('jax')} and jaxlib {installed.get('jaxlib')} differ; "
                 "install matching versions (pip install -U jax jaxlib).")
  if tf_gpus:
    found.append(f"TensorFlow sees {tf_gpus} GPU(s) and may reserve their memory; install "
                 "tensorflow-cpu instead of tensorflow (the framework hides GPUs from TF at "
                 "start-up, but other tools may not).")
  if backend == "cpu" and any(k.startswith(("jax-cuda", "libtpu")) for k in installed):
    found.append("An accelerator plugin is installed but JAX runs on the CPU; check "
                 "JAX_PLATFORMS, the driver (nvidia-smi) and that the plugin matches jaxlib.")
  return found


def main() -> int:
  installed = versions()
  print(f"python {sys.version.split()[0]} ({sys.executable})")
  for name, version in installed.items():
    print(f"{name:22s} {version}")
  import jax  # pylint: disable=g-import-not-at-top
  backend = jax.default_backend()
  print(f"backend                {backend}")
  print(f"devices                {jax.device_count()} x {jax.devices()[0].device_kind} "
        f"({jax.local_device_count()} local, {jax.process_count()} process(es))")
  tf_gpus = None
  if "tensorflow" in installed or "tensorflow-cpu" in installed:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf_gpus = len(tf.config.list_physical_devices("GPU"))
    print(f"tensorflow GPUs        {tf_gpus}")
  found = problems(installed, backend, tf_gpus)
  for line in found:
    print(f"problem: {line}")
  if not found:
    print("no problem found")
  return 1 if found else 0


if __name__ == "__main__":
  sys.exit(main())
