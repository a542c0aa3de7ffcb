"""Slot Attention on Tetrominoes (35x35, 3 pieces, 4 slots).

Needs the original TFRecord file (gs://multi-object-datasets/tetrominoes/):

    python -m invariant_slots.main --config=configs/tetrominoes.py --workdir=/tmp/tetro \
        --config.data.path=/data/tetrominoes_train.tfrecords

Expect (Locatello et al. 2020): FG-ARI 99.5.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  """Returns the experiment config."""
  config = common.training_defaults()
  config.data = common.multi_object_data(
      "tetrominoes", resolution=(35, 35), max_instances=3, preprocess=[])
  config.model = common.slot_attention_model(num_slots=4, resolution=32)
  # 35 is not 8 times a power of two: broadcast at full size, stride-1 convs.
  config.model.decoder = dict(name="SpatialBroadcast", broadcast_size=(35, 35),
                              features=[32, 32, 32], strides=[1, 1, 1], kernel_size=5)
  return config
