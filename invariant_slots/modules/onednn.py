"""oneDNN's CPU convolutions inside jitted JAX code, through an XLA FFI call.

XLA:CPU's convolution weight gradient runs at a fraction of the speed of its
forward pass (docs/benchmarks.md). oneDNN, the library PyTorch's CPU
convolutions use, runs all three passes at about the same speed. When the
`onednn` and `onednn-devel` wheels are installed (`pip install -e ".[cpu]"`),
`onednn_conv` compiles `kernels/onednn_conv.cc` once with the system C++
compiler into `~/.cache/invariant_slots` (or `$INVARIANT_SLOTS_CACHE`) and
registers it as an FFI target; `available()` says whether that worked, and
`unavailable_reason()` why not.
"""

import ctypes
import functools
import hashlib
import os
import shutil
import site
import subprocess
import sys
import tempfile
from typing import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array
Padding = tuple[tuple[int, int], tuple[int, int]]
TARGET = "invariant_slots_onednn_conv"
SOURCE = os.path.join(os.path.dirname(__file__), "kernels", "onednn_conv.cc")
CACHE_VARIABLE = "INVARIANT_SLOTS_CACHE"
FORWARD, INPUT_GRADIENT, KERNEL_GRADIENT = 0, 1, 2
_REGISTERED: list[str] = []  # The library registered in this process, if any.


def _prefixes() -> list[str]:
  """Installation prefixes where pip puts the oneDNN wheels' `lib/` and `include/`."""
  prefixes = [sys.prefix, sys.base_prefix, site.getuserbase()]
  return list(dict.fromkeys(p for p in prefixes if p))


def _find_onednn() -> tuple[str, str] | None:
  """`(include_dir, lib_dir)` of an installed oneDNN, or None."""
  for prefix in _prefixes():
    include, lib = os.path.join(prefix, "include"), os.path.join(prefix, "lib")
    if (os.path.exists(os.path.join(include, "oneapi", "dnnl", "dnnl.hpp"))
        and os.path.exists(os.path.join(lib, "libdnnl.so"))):
      return include, lib
  return None


def _cache_dir() -> str:
  default = os.path.join(os.path.expanduser("~"), ".cache", "invariant_slots")
  return os.environ.get(CACHE_VARIABLE) or default


def _compile(include: str, lib: str) -> str:
  """Builds the FFI library (once per source, oneDNN and jaxlib) and returns its path."""
  compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
  if compiler is None:
    raise RuntimeError("no C++ compiler (g++) found; install one or set CXX")
  with open(SOURCE, "rb") as f:
    source = f.read()
  command = [compiler, "-O2", "-shared", "-fPIC", "-std=c++17", "-w",
             f"-I{include}", f"-I{jax.ffi.include_dir()}", SOURCE, f"-L{lib}", "-ldnnl",
             f"-Wl,--disable-new-dtags,-rpath,{lib}"]
  digest = hashlib.sha256(source + " ".join(command).encode()
                          + jax.__version__.encode()).hexdigest()[:16]
  path = os.path.join(_cache_dir(), f"onednn_conv-{digest}.so")
  if os.path.exists(path):
    return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as scratch:
    built = os.path.join(scratch, "onednn_conv.so")
    result = subprocess.run(command + ["-o", built], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
      raise RuntimeError(f"compiling {SOURCE} failed: {result.stderr.strip()[-2000:]}")
    os.replace(built, path)  # Atomic: concurrent builders leave one whole file.
  return path


@functools.lru_cache(maxsize=None)
def _load() -> str | None:
  """Compiles and registers the FFI target; returns None, or why it is unavailable."""
  if jax.default_backend() != "cpu":
    return "oneDNN convolutions are for the CPU backend"
  found = _find_onednn()
  if found is None:
    return 'oneDNN is not installed (pip install -e ".[cpu]")'
  include, lib = found
  # oneDNN's wheel runs CPU primitives through the SYCL runtime, which finds the
  # CPU device through the OpenCL loader.
  icd = os.path.join(lib, "libintelocl.so")
  if os.path.exists(icd) and not os.environ.get("OCL_ICD_FILENAMES"):
    os.environ["OCL_ICD_FILENAMES"] = icd
  try:
    _register(_compile(include, lib))
  except (OSError, RuntimeError) as error:
    return f"the oneDNN convolution could not be built or loaded: {error}"
  return None


def _register(path: str) -> None:
  """Loads the library at `path` and registers its handler, once per process:
  XLA refuses a second handler under the same name."""
  if _REGISTERED:
    return
  library = ctypes.CDLL(path)
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.OnednnConvolution),
                              platform="cpu")
  _REGISTERED.append(path)


def unavailable_reason() -> str | None:
  """None when `onednn_conv` can run here, else one line saying why not."""
  return _load()


def available() -> bool:
  """Whether `onednn_conv` can run here (CPU backend, oneDNN installed, compiled)."""
  return _load() is None


def _call(pass_: int, a: Array, b: Array, out_shape: Sequence[int], strides: tuple[int, int],
          padding: Padding) -> Array:
  (top, bottom), (left, right) = padding
  return jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(tuple(out_shape), jnp.float32),
                          vmap_method="sequential")(
      a, b, **{"pass": pass_}, sh=strides[0], sw=strides[1], pad_top=top,
      pad_bottom=bottom, pad_left=left, pad_right=right)


def _output_shape(inputs_shape, kernel_shape, strides, padding) -> tuple[int, ...]:
  batch, height, width, _ = inputs_shape
  (kh, kw, _, features), (sh, sw) = kernel_shape, strides
  out_h = (height + sum(padding[0]) - kh) // sh + 1
  out_w = (width + sum(padding[1]) - kw) // sw + 1
  return batch, out_h, out_w, features


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(inputs: Array, kernel: Array, strides: tuple[int, int], padding: Padding) -> Array:
  return _call(FORWARD, inputs, kernel, _output_shape(inputs.shape, kernel.shape, strides,
                                                      padding), strides, padding)


def _conv_forward(inputs, kernel, strides, padding):
  return _conv(inputs, kernel, strides, padding), (inputs, kernel)


def _conv_backward(strides, padding, residuals, grad):
  inputs, kernel = residuals
  grad = grad.astype(jnp.float32)
  input_grad = _call(INPUT_GRADIENT, grad, kernel, inputs.shape, strides, padding)
  kernel_grad = _call(KERNEL_GRADIENT, inputs, grad, kernel.shape, strides, padding)
  return input_grad, kernel_grad


_conv.defvjp(_conv_forward, _conv_backward)


def onednn_conv(inputs: Array, kernel: Array, strides: tuple[int, int],
                padding: Padding) -> Array:
  """Equals `lax.conv_general_dilated` (NHWC, HWIO, float32) in value and both gradients.

  Args:
    inputs: `[batch, height, width, in_features]`.
    kernel: `[kh, kw, in_features, out_features]`.
    strides: `(sh, sw)`.
    padding: `((low, high), (low, high))`; negative values crop the input.

  Returns:
    `[batch, out_height, out_width, out_features]` float32.
  """
  reason = _load()
  if reason is not None:
    raise RuntimeError(reason)
  # oneDNN pads by zeros only: a negative padding is a crop, done first.
  crop = tuple((max(-low, 0), max(-high, 0)) for low, high in padding)
  if any(any(c) for c in crop):
    (ct, cb), (cl, cr) = crop
    inputs = inputs[:, ct:inputs.shape[1] - cb, cl:inputs.shape[2] - cr]
    padding = tuple((max(low, 0), max(high, 0)) for low, high in padding)
  return _conv(inputs.astype(jnp.float32), kernel.astype(jnp.float32), tuple(strides),
               tuple(tuple(p) for p in padding))
