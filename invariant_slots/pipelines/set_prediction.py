"""Set prediction: predict every object's properties from slots (Locatello et al. 2020, 4.2).

Targets are property vectors `target [num_slots, property_size]` laid out as
`[coordinates | one-hot of each categorical attribute | presence]` and
zero-padded to the number of slots (see `modules/set_prediction.py`), made
by the preprocessing ops `shapes_set_target` and `clevr_set_target`
(`datasets/set_targets.py`).

The training loss is `hungarian_huber` from `lib/losses.py` (matching on
device); evaluation reports the AP of `lib/metrics.py` at distance thresholds
inf, 1, 0.5, 0.25 and 0.125, where a distance is `coordinate_scale` times the
Euclidean distance of the [0, 1] coordinates (6 for CLEVR's scene units).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from invariant_slots.lib import diagnostics
from invariant_slots.lib import losses
from invariant_slots.lib import metrics
from invariant_slots.lib import visualize
from invariant_slots.pipelines.base import PIPELINES, Pipeline

Array = jax.Array


@PIPELINES.register("set_prediction")
class SetPredictionPipeline(Pipeline):
  """Slots -> object property vectors, Hungarian-matched loss, AP metrics."""

  def per_example_outputs(self, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    del config
    return ("loss", "set_prediction", "target")

  def make_eval_step(self, model, config: ml_collections.ConfigDict):

    def eval_step(params, batch: dict[str, Array], rng: Array) -> dict[str, Array]:
      outputs = model.apply({"params": params}, batch, train=False, rngs={"slots": rng})
      attention = outputs["attention"][:, -1]  # [batch, K, h, w]
      winners = jnp.argmax(attention, axis=1)  # Every feature counts as foreground.
      return {
          "loss": losses.per_example_loss(config.losses, outputs, batch),
          "set_prediction": outputs["set_prediction"],
          "target": batch["target"],
          "attention": attention,
          **diagnostics.eval_outputs(outputs["slots"], attention, winners,
                                     jnp.ones_like(winners, bool)),
      }

    return eval_step

  def batch_metrics(self, gathered, config: ml_collections.ConfigDict
                    ) -> metrics.SetPredictionMetrics:
    properties = config.data.properties
    return metrics.set_prediction_metrics_from_batch(
        gathered["loss"], gathered["set_prediction"], gathered["target"], gathered["mask"],
        properties.num_coords, tuple(properties.category_sizes), properties.coordinate_scale)

  def summary_images(self, outputs, batch, num_images: int) -> dict[str, np.ndarray]:
    image = batch["image"][:num_images]
    attention = visualize.upsample_attention(outputs["attention"][:num_images],
                                             *image.shape[1:3])
    return {"input": image,
            "attention": visualize.montage(np.repeat(attention[..., None], 3, axis=-1))}
