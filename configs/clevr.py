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
  config.data = ml_collections.ConfigDict()
  config.data.source = "multi_object"
  config.data.name = "clevr_with_masks"
  config.data.path = "~/tensorflow_datasets/multi_object_datasets/clevr_with_masks_train.tfrecords"
  config.data.num_eval_examples = 320  # Held out from the start of the file.
  config.data.resolution = (128, 128)
  config.data.max_instances = 10
  config.data.shuffle_buffer_size = 1024
  crop = ["clevr_crop()", "resize(128)", "value_range(0, 1)"]
  config.data.preprocess_train = crop + ["keep('image')"]
  config.data.preprocess_eval = crop + ["keep('image', 'segmentations')"]
  config.model = config_defaults.slot_attention_model(num_slots=11, resolution=128)
  return config
