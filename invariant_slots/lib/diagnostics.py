"""Collapse diagnostics: do the slots share the scene, or does one slot take it all?

Computed per example inside every pipeline's eval step (`eval_outputs`), then
averaged by the evaluator into `eval/collapse/*` scalars:

- `attention_entropy`: entropy of each input's attention over the slots,
  averaged over the inputs and divided by log(num_slots): 1 when every input
  is shared equally by all slots, 0 when each goes to one slot.
- `slot_similarity`: mean cosine similarity of the distinct pairs of slots (1
  when all slots are the same vector).
- `share_rank_<r>`: share of the foreground pixels (or rays, or inputs) won by
  the slot of rank r, largest first; `top_share` is rank 1.
- `active_slots`: how many slots win more than `ACTIVE_SHARE` of the foreground.

`looks_collapsed` flags an evaluation where one slot wins more than
`COLLAPSE_SHARE` of the foreground in most examples.
"""

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

ACTIVE_SHARE = 0.01
COLLAPSE_SHARE = 0.9
PREFIX = "collapse_"


def attention_entropy(attention: Array) -> Array:
  """`[batch, num_slots, num_inputs]` (each input's distribution over slots) -> `[batch]`."""
  num_slots = attention.shape[1]
  p = attention / jnp.maximum(jnp.sum(attention, axis=1, keepdims=True), 1e-12)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-12)), 0.0), axis=1)
  return jnp.mean(entropy, axis=-1) / jnp.log(jnp.maximum(num_slots, 2))


def slot_similarity(slots: Array) -> Array:
  """`[batch, num_slots, slot_size]` -> `[batch]` mean cosine similarity of slot pairs."""
  unit = slots / jnp.maximum(jnp.linalg.norm(slots, axis=-1, keepdims=True), 1e-12)
  cosine = jnp.einsum("bkd,bld->bkl", unit, unit)
  num_slots = slots.shape[1]
  off_diagonal = jnp.sum(cosine, axis=(1, 2)) - jnp.trace(cosine, axis1=1, axis2=2)
  return off_diagonal / max(num_slots * (num_slots - 1), 1)


def slot_shares(pred_ids: Array, foreground: Array, num_slots: int) -> Array:
  """Share of the foreground won by each slot, sorted largest first.

  Args:
    pred_ids: int `[batch, num_points]`, the slot each pixel, ray or input goes to.
    foreground: bool `[batch, num_points]`.
    num_slots: number of slots.

  Returns:
    `[batch, num_slots]`; NaN rows for examples without foreground.
  """
  wins = jax.nn.one_hot(pred_ids, num_slots) * foreground[..., None]
  counts = jnp.sum(wins, axis=1)
  total = jnp.sum(counts, axis=-1, keepdims=True)
  shares = jnp.where(total > 0, counts / jnp.maximum(total, 1), jnp.nan)
  return -jnp.sort(-shares, axis=-1)


def eval_outputs(slots: Array, attention: Array, pred_ids: Array, foreground: Array
                 ) -> dict[str, Array]:
  """Per-example diagnostics, each `[batch]`, keyed `collapse_<name>`.

  Args:
    slots: `[batch, num_slots, slot_size]`.
    attention: `[batch, num_slots, ...]`, the last iteration's attention over the
      inputs (any number of input axes).
    pred_ids: int `[batch, ...]`, the winning slot per pixel, ray or input.
    foreground: bool, the shape of `pred_ids`.
  """
  batch, num_slots = slots.shape[:2]
  shares = slot_shares(pred_ids.reshape(batch, -1), foreground.reshape(batch, -1), num_slots)
  outputs = {
      "attention_entropy": attention_entropy(attention.reshape(batch, num_slots, -1)),
      "slot_similarity": slot_similarity(slots),
      "top_share": shares[:, 0],
      "active_slots": jnp.where(jnp.isnan(shares[:, 0]), jnp.nan,
                                jnp.sum(shares > ACTIVE_SHARE, axis=-1).astype(jnp.float32)),
  }
  outputs.update({f"share_rank_{rank + 1}": shares[:, rank] for rank in range(num_slots)})
  return {PREFIX + name: value for name, value in outputs.items()}


def summarize(gathered: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, tuple[float, int]]:
  """`{name: (sum, count)}` over the valid, non-NaN examples of the `collapse_` outputs."""
  sums = {}
  for key, values in gathered.items():
    if key.startswith(PREFIX):
      values = np.asarray(values, np.float64)
      valid = mask.astype(bool) & ~np.isnan(values)
      sums[key[len(PREFIX):]] = (float(values[valid].sum()), int(valid.sum()))
  return sums


def looks_collapsed(top_shares: np.ndarray) -> bool:
  """Whether one slot wins more than `COLLAPSE_SHARE` of the foreground in most examples."""
  top_shares = top_shares[~np.isnan(top_shares)]
  return bool(top_shares.size) and float(np.mean(top_shares > COLLAPSE_SHARE)) > 0.5
