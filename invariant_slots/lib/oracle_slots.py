"""Oracle slots: a multi-view decoder trained on the true objects of the embedded scenes.

The decoder-capacity diagnostic of `python -m invariant_slots.oracle`
(docs/multiview.md). The encoder and the corrector are bypassed: slot 0 is a
learned background slot, slot `j + 1` an MLP embedding of object `j`'s true
centre, size, colour and kind (read from the `shapes_multiview` generator),
and the remaining slots an "absent" embedding. Each object slot's 3D point is
the object's centre. Only the embedding and the config's decoder are trained,
on the config's target rays, optimiser and learning-rate schedule; evaluation
renders every pixel of the held-out views of the eval scenes, as the
multi-view pipeline does.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from invariant_slots import datasets
from invariant_slots.datasets import ops as preprocessing
from invariant_slots.datasets import shapes_multiview
from invariant_slots.lib import metrics
from invariant_slots.lib import training
from invariant_slots.modules.decoders import DECODERS
from invariant_slots.modules.multiview import RayEncoding
from invariant_slots.registry import ConfigError

Array = jax.Array
# `(params, batch)` -> per-view metrics and ids.
EvalStep = Callable[[Any, dict[str, np.ndarray]], dict[str, Array]]

# Per-slot features: present, background, centre (3), size, colour (3), box.
FEATURE_SIZE = 10


def object_slots(scene: dict[str, np.ndarray], num_slots: int
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Oracle features `[num_slots, FEATURE_SIZE]` and points `[num_slots, 3]` of a scene.

  Slot 0 is the background, slot `j + 1` object `j` (instance id `j + 2`, the
  eval's target id `j + 1`), the rest absent (all zeros, point at the origin).

  Raises:
    ValueError: the scene has more objects than `num_slots - 1`.
  """
  num_objects = len(scene["kinds"])
  if num_objects + 1 > num_slots:
    raise ValueError(f"A scene has {num_objects} objects but model.num_slots={num_slots}; "
                     f"oracle slots need one per object plus the background.")
  features = np.zeros((num_slots, FEATURE_SIZE), np.float32)
  positions = np.zeros((num_slots, 3), np.float32)
  features[0, :2] = 1.0
  objects = slice(1, num_objects + 1)
  features[objects, 0] = 1.0
  features[objects, 2:5] = scene["centres"]
  features[objects, 5] = scene["sizes"][:, 0]
  features[objects, 6:9] = scene["colors"]
  features[objects, 9] = scene["kinds"]
  positions[objects] = scene["centres"]
  return features, positions


class OracleSlotDecoder(nn.Module):
  """Slot embedding of the oracle features, then a registered multi-view decoder."""

  slot_size: int
  decoder: nn.Module

  @nn.compact
  def __call__(self, features: Array, positions: Array, origins: Array, directions: Array
               ) -> dict[str, Array]:
    """`features [batch, num_slots, FEATURE_SIZE]`, `positions [batch, num_slots, 3]`,
    rays `[batch, rays, 3]` x 2 -> `rgb [batch, rays, 3]`, `masks [batch, rays, num_slots]`."""
    x = nn.relu(nn.Dense(self.slot_size, name="embed_0")(features))
    slots = nn.Dense(self.slot_size, name="embed_1")(x)
    return self.decoder(slots, positions, origins, directions)


def build(config: ml_collections.ConfigDict) -> OracleSlotDecoder:
  """The oracle model of a multi-view config on `shapes_multiview` data.

  Raises:
    ConfigError: another pipeline or data source.
  """
  if config.get("pipeline") != "multiview" or config.data.source != "shapes_multiview":
    raise ConfigError("Oracle slots need a multiview config on data.source 'shapes_multiview' "
                      f"(the generator knows its objects), got pipeline "
                      f"{config.get('pipeline')!r} on {config.data.source!r}.")
  decoder = DECODERS.build(config.model.decoder,
                           ray_encoding=RayEncoding(**config.model.ray_encoding))
  return OracleSlotDecoder(slot_size=config.model.slot_size, decoder=decoder)


def _batches(config: ml_collections.ConfigDict, train: bool) -> Iterator[dict[str, np.ndarray]]:
  """Batches of the config's train (repeated, shuffled) or eval split with oracle slots."""
  options = dict(config.data.shapes_multiview)
  dataset, _ = datasets.DATA_SOURCES.get(config.data.source)(config.data, train, 1, 0)
  ops = preprocessing.build_ops(config.data.preprocess_train if train
                                else config.data.preprocess_eval)
  if train:
    dataset = dataset.shuffle(config.data.shuffle_buffer_size, seed=config.seed)
  dataset = dataset.map(lambda f: {**ops(f), "scene_name": f["scene_name"]})
  dataset = dataset.batch(config.batch_size if train else 8, drop_remainder=train).prefetch(2)
  for batch in dataset.as_numpy_iterator():
    slots = [object_slots(shapes_multiview.scene_named(options, name), config.model.num_slots)
             for name in batch.pop("scene_name")]
    batch["oracle_features"] = np.stack([f for f, _ in slots])
    batch["oracle_positions"] = np.stack([p for _, p in slots])
    yield batch


def _render(model: OracleSlotDecoder, params, batch) -> dict[str, Array]:
  return model.apply({"params": params}, batch["oracle_features"], batch["oracle_positions"],
                     batch["target_origins"], batch["target_directions"])


def make_eval_step(model: OracleSlotDecoder, config: ml_collections.ConfigDict
                   ) -> EvalStep:
  """A jitted `(params, batch)` -> per-view PSNR, ARI, FG-ARI and the true and predicted ids."""
  num_true, num_slots = config.data.max_instances + 1, config.model.num_slots

  @jax.jit
  def step(params, batch):
    outputs = _render(model, params, batch)
    true_ids = jnp.minimum(batch["target_ids"], num_true - 1)
    pred_ids = jnp.argmax(outputs["masks"], axis=-1)
    return {"psnr": metrics.psnr(jnp.clip(outputs["rgb"], 0.0, 1.0), batch["target_color"]),
            "ari": metrics.adjusted_rand_index(true_ids, pred_ids, num_true, num_slots),
            "fg_ari": metrics.adjusted_rand_index(true_ids, pred_ids, num_true, num_slots,
                                                  ignore_background=True),
            "pred_ids": pred_ids, "true_ids": true_ids}

  return step


def evaluate(eval_step: EvalStep, params,
             config: ml_collections.ConfigDict) -> dict[str, float]:
  """Novel-view PSNR, ARI, FG-ARI and FG-mIoU over the eval scenes' held-out views.

  `eval_step`: `make_eval_step(model, config)`, built once and reused.
  """
  num_true, num_slots = config.data.max_instances + 1, config.model.num_slots
  results = [jax.device_get(eval_step(params, batch)) for batch in _batches(config, train=False)]
  stacked = {key: np.concatenate([r[key] for r in results]) for key in results[0]}
  fg_miou = metrics.mean_iou_hungarian(stacked["true_ids"], stacked["pred_ids"], num_true,
                                       num_slots)
  return {"psnr": float(stacked["psnr"].mean()), "ari": float(stacked["ari"].mean()),
          "fg_ari": float(np.nanmean(stacked["fg_ari"])), "fg_miou": float(np.nanmean(fg_miou))}


def train_and_evaluate(config: ml_collections.ConfigDict,
                       report: Callable[[int, dict[str, float]], None] = lambda s, m: None
                       ) -> list[tuple[int, dict[str, float]]]:
  """Trains the oracle model for `config.num_train_steps`; evaluates every `eval_every_steps`.

  `report(step, scalars)` receives the mean training loss every
  `log_loss_every_steps` and each evaluation. Returns the evaluations as
  `(step, scalars)`, the last one at the final step.
  """
  model = build(config)
  tx = training.make_optimizer(config)
  data = _batches(config, train=True)
  first = next(data)
  params = model.init(jax.random.PRNGKey(config.seed), first["oracle_features"],
                      first["oracle_positions"], first["target_origins"],
                      first["target_directions"])["params"]
  opt_state = tx.init(params)
  eval_step = make_eval_step(model, config)

  @jax.jit
  def train_step(params, opt_state, batch):
    def loss_fn(params):
      return jnp.mean((_render(model, params, batch)["rgb"] - batch["target_color"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  evaluations, losses, batch = [], [], first
  for step in range(1, config.num_train_steps + 1):
    params, opt_state, loss = train_step(params, opt_state, batch)
    losses.append(loss)
    if step % config.log_loss_every_steps == 0:
      report(step, {"loss": float(np.mean(jax.device_get(losses)))})
      losses = []
    if step % config.eval_every_steps == 0 or step == config.num_train_steps:
      scalars = evaluate(eval_step, params, config)
      report(step, scalars)
      evaluations.append((step, scalars))
    if step < config.num_train_steps:
      batch = next(data)
  return evaluations
