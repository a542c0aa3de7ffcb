"""Training losses, configured as `config.losses = {name: {type, prediction, target, weight}}`.

A loss type is a function `(prediction, target) -> [batch]` registered in
`LOSSES` under the name that `type` gives.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from invariant_slots.registry import Registry

Array = jax.Array

LOSSES: Registry[Callable[[Array, Array], Array]] = Registry("loss type")


@LOSSES.register("mse")
def mse(prediction: Array, target: Array) -> Array:
  """Mean squared error per example: `[batch, ...]` -> `[batch]`."""
  return jnp.mean(jnp.square(prediction - target).reshape(prediction.shape[0], -1), axis=-1)


@LOSSES.register("l1")
def l1(prediction: Array, target: Array) -> Array:
  """Mean absolute error per example: `[batch, ...]` -> `[batch]`."""
  return jnp.mean(jnp.abs(prediction - target).reshape(prediction.shape[0], -1), axis=-1)


def per_example_loss(losses: ml_collections.ConfigDict, outputs: dict[str, Array],
                     batch: dict[str, Array]) -> Array:
  """Weighted sum of the configured losses, `[batch]`."""
  total = 0.0
  for spec in losses.values():
    total = total + spec.weight * LOSSES.get(spec.type)(
        outputs[spec.prediction], batch[spec.target])
  return total


def linear_sum_assignment(cost: Array) -> Array:
  """Minimum-cost perfect matching of a square cost matrix, on device.

  The Hungarian algorithm with potentials (shortest augmenting paths,
  O(n^3)), written with `lax` loops so it runs inside the jitted train step on
  any backend and under `vmap`, with no host round trip (a host callback would
  serialise every step on process 0 and break multi-host SPMD).

  Args:
    cost: `[n, n]` float cost of assigning row i to column j.

  Returns:
    int32 `[n]`: the column assigned to each row, equal in total cost to
    `scipy.optimize.linear_sum_assignment`.
  """
  n = cost.shape[0]
  # 1-based arrays as in the textbook algorithm: row/column 0 is a sentinel.
  padded = jnp.pad(cost.astype(jnp.float32), ((1, 0), (1, 0)))
  columns = jnp.arange(n + 1)

  def add_row(row, state):
    row_potential, col_potential, owner, way = state
    owner = owner.at[0].set(row)

    def not_free(search):
      return search[0][search[1]] != 0

    def grow_tree(search):
      owner_, col, min_slack, visited, way_, row_pot, col_pot = search
      visited = visited.at[col].set(True)
      current_row = owner_[col]
      slack = padded[current_row] - row_pot[current_row] - col_pot
      open_columns = ~visited & (columns > 0)
      better = open_columns & (slack < min_slack)
      min_slack = jnp.where(better, slack, min_slack)
      way_ = jnp.where(better, col, way_)
      candidates = jnp.where(open_columns, min_slack, jnp.inf)
      next_col = jnp.argmin(candidates)
      delta = candidates[next_col]
      row_pot = row_pot.at[owner_].add(jnp.where(visited, delta, 0.0))
      col_pot = jnp.where(visited, col_pot - delta, col_pot)
      min_slack = jnp.where(open_columns, min_slack - delta, min_slack)
      return owner_, next_col, min_slack, visited, way_, row_pot, col_pot

    search = (owner, jnp.asarray(0), jnp.full(n + 1, jnp.inf), jnp.zeros(n + 1, bool), way,
              row_potential, col_potential)
    _, col, _, _, way, row_potential, col_potential = jax.lax.while_loop(
        not_free, grow_tree, search)

    def augment(path):
      owner_, col_ = path
      previous = way[col_]
      return owner_.at[col_].set(owner_[previous]), previous

    owner, _ = jax.lax.while_loop(lambda path: path[1] != 0, augment, (owner, col))
    return row_potential, col_potential, owner, way

  state = (jnp.zeros(n + 1), jnp.zeros(n + 1), jnp.zeros(n + 1, jnp.int32),
           jnp.zeros(n + 1, jnp.int32))
  _, _, owner, _ = jax.lax.fori_loop(1, n + 1, add_row, state)
  return jnp.zeros(n, jnp.int32).at[owner[1:] - 1].set(jnp.arange(n, dtype=jnp.int32))


def _huber(x: Array, delta: float = 1.0) -> Array:
  abs_x = jnp.abs(x)
  return jnp.where(abs_x <= delta, 0.5 * jnp.square(x), delta * (abs_x - 0.5 * delta))


@LOSSES.register("hungarian_huber")
def hungarian_huber(prediction: Array, target: Array) -> Array:
  """Set loss: Huber loss (delta 1) after the best one-to-one slot matching.

  The pairwise cost is the Huber loss averaged over the property vector; each
  example's slots are matched to its (zero-padded) targets by
  `linear_sum_assignment` on device, and the matched costs are summed.

  Args:
    prediction: `[batch, num_slots, dim]`.
    target: `[batch, num_slots, dim]`, padded to `num_slots` rows.

  Returns:
    `[batch]`; invariant to permuting the rows of `target` or `prediction`.
  """
  pairwise = jnp.mean(_huber(prediction[:, :, None] - target[:, None, :]), axis=-1)
  assignment = jax.vmap(linear_sum_assignment)(jax.lax.stop_gradient(pairwise))
  matched = jnp.take_along_axis(pairwise, assignment[..., None], axis=-1)[..., 0]
  return jnp.sum(matched, axis=-1)
