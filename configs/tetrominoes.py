"""Slot Attention on Tetrominoes (35x35, up to 3 pieces, 4 slots).

Needs the original TFRecord file (gs://multi-object-datasets/tetrominoes/):

    python -m invariant_slots.main --config=configs/tetrominoes.py --workdir=/tmp/tetro \
        --config.data.path=/data/tetrominoes_train.tfrecords
"""

import ml_collections

from invariant_slots.lib import config_defaults


def get_config() -> ml_collections.ConfigDict:
  """Returns the experiment config."""
  config = config_defaults.training_defaults()
  config.data = ml_collections.ConfigDict()
  config.data.source = "multi_object"
  config.data.name = "tetrominoes"
  config.data.path = "~/tensorflow_datasets/multi_object_datasets/tetrominoes_train.tfrecords"
  config.data.num_eval_examples = 320
  config.data.resolution = (35, 35)
  config.data.max_instances = 3
  config.data.shuffle_buffer_size = 4096
  config.data.preprocess_train = ["value_range(0, 1)", "keep('image')"]
  config.data.preprocess_eval = ["value_range(0, 1)", "keep('image', 'segmentations')"]
  config.model = config_defaults.slot_attention_model(num_slots=4, resolution=32)
  # 35 is not a power-of-two multiple of 8: broadcast at full size, stride-1 convs.
  config.model.decoder = dict(name="SpatialBroadcast", broadcast_size=(35, 35),
                              features=[32, 32, 32], strides=[1, 1, 1], kernel_size=5)
  return config
