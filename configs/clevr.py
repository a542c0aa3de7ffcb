"""Slot Attention on CLEVR-with-masks (Locatello et al. 2020 settings, 128x128).

Needs the original TFRecord file (gs://multi-object-datasets/clevr_with_masks/):

    python -m invariant_slots.main --config=configs/clevr.py --workdir=/tmp/clevr \
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
  config.model = config_defaults.slot_attention_model(num_slots=11, resolution=128)
  return config
