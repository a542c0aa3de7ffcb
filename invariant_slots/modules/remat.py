"""Rematerialisation: recompute a block's activations in the backward pass.

`model.remat = True` trades compute for memory: the heavy blocks (encoder,
corrector, decoder or each ray chunk of it) keep only their inputs for the
backward pass and run their forward pass again there. Parameters, outputs and
gradients are the same as without it (tests/test_remat.py).
"""

from typing import Any

import flax.linen as nn


def call(block: nn.Module, *args: Any, remat: bool, **static_kwargs: Any) -> Any:
  """`block(*args, **static_kwargs)`, rematerialised when `remat`.

  `args` are traced arrays; `static_kwargs` (e.g. `train`) are Python values
  fixed at trace time. The block's parameters keep their names either way.
  """
  if not remat:
    return block(*args, **static_kwargs)
  return nn.remat(lambda module, *inner: module(*inner, **static_kwargs))(block, *args)
