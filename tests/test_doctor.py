"""The installation check prints the stack and names each problem with its fix."""

import importlib.metadata

import jax

from invariant_slots import doctor


def test_doctor_prints_the_stack_and_the_devices(capsys):
  status = doctor.main()
  out = capsys.readouterr().out
  assert f"jax                    {importlib.metadata.version('jax')}" in out
  assert f"backend                {jax.default_backend()}" in out
  assert f"devices                {jax.device_count()} x " in out
  assert status == (0 if "no problem found" in out else 1)


def test_doctor_names_version_cuda_and_tensorflow_problems():
  good = {"jax": "0.10.2", "jaxlib": "0.10.2"}
  assert not doctor.problems(good, "gpu", tf_gpus=0)
  found = doctor.problems({"jax": "0.10.2", "jaxlib": "0.9.0", "jax-cuda12-plugin": "0.9.0"},
                          "cpu", tf_gpus=2)
  assert len(found) == 3
  assert "jax 0.10.2 and jaxlib 0.9.0 differ" in found[0]
  assert "TensorFlow sees 2 GPU(s)" in found[1] and "tensorflow-cpu" in found[1]
  assert "JAX runs on the CPU" in found[2]
