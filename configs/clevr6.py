"""Slot Attention on CLEVR6 (Locatello et al. 2020: CLEVR scenes with at most 6 objects).

The network, 7 slots and schedule of the paper's CLEVR6 object discovery
(published ARI 98.8 +- 0.3; docs/fidelity.md): 128x128 crops, 4x(5x5, 64)
CNN, Slot Attention with 3 iterations, broadcast decoder; Adam 4e-4, 10k
warm-up steps, halved every 100k, batch 64, 500k steps. Needs the original
TFRecord file (gs://multi-object-datasets/clevr_with_masks/):

    python -m invariant_slots.main --config=configs/clevr6.py --workdir=/tmp/clevr6 \
        --config.data.path=/data/clevr_with_masks_train.tfrecords
"""

import ml_collections

from invariant_slots.lib import config_defaults


def get_config() -> ml_collections.ConfigDict:
  """Returns the experiment config."""
  config = config_defaults.training_defaults()
  config.data = config_defaults.multi_object_data(
      "clevr_with_masks", resolution=(128, 128), max_instances=10,
      preprocess=["clevr_crop()", "resize(128)"])
  config.data.max_objects = 6
  config.model = config_defaults.slot_attention_model(num_slots=7, resolution=128)
  return config
