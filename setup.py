"""Installs the invariant_slots package."""
import setuptools

setuptools.setup(
    name="invariant_slots",
    version="0.1.0",
    license="Apache-2.0",
    description="Object-centric learning in JAX/Flax with interchangeable slot correctors.",
    packages=setuptools.find_packages(include=["invariant_slots", "invariant_slots.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.8",
        "optax",
        "clu",
        "ml-collections",
        "orbax-checkpoint",
        "tensorflow-cpu",
        "tensorflow-datasets",
        "tensorboard",
        "scipy",
        "diffrax",  # ODE solvers of the SlotODE corrector.
        "lineax",  # GMRES for SA-ID's implicit gradient.
        "numpy",
        "absl-py",
        "importlib_resources",  # Needed by tensorflow-datasets, not declared by it.
        # oneDNN's CPU convolutions (modules/onednn.py), built on first use with g++.
        "onednn; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "onednn-devel; platform_system == 'Linux' and platform_machine == 'x86_64'",
    ],
    package_data={"invariant_slots.modules": ["kernels/*.cc"]},
    extras_require={
        # The tests also check the plots of `invariant_slots.analyze`.
        "test": ["pytest", "pytest-xdist", "scikit-learn", "matplotlib"],
        "plots": ["matplotlib"],
        "bench": ["torch"],
        # oneDNN's convolutions where the default install leaves them out.
        "cpu": ["onednn", "onednn-devel"],
        # JAX for NVIDIA GPUs (CUDA 12 wheels, no local CUDA install needed) and Cloud TPUs.
        "cuda12": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
    },
)
