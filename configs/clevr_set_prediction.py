"""Set prediction on CLEVR with Locatello et al.'s settings (CLEVR10, 128x128).

    python -m invariant_slots.main --config=configs/clevr_set_prediction.py \
        --workdir=/tmp/clevr_set_prediction --config.data.data_dir=~/tensorflow_datasets

Needs TFDS `clevr:3.1.0` prepared under `data.data_dir` (`tfds build clevr`).
Scenes with at most 10 objects, images resized to 128x128, 10 slots. Each slot
predicts 3D coordinates (mapped from [-3, 3] to [0, 1]), colour, material,
shape, size and presence; AP distance thresholds are in CLEVR scene units.

Expect (Locatello et al. 2020, Table 3, CLEVR10): AP 94.3 / 86.7 / 56.0 / 10.8 /
0.9 at distance inf / 1 / 0.5 / 0.25 / 0.125.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  """Returns the experiment config."""
  config = common.training_defaults()
  config.pipeline = "set_prediction"
  config.batch_size = 512
  config.num_train_steps = 150_000
  config.learning_rate = 4e-4
  config.lr_schedule = "exponential"
  config.lr_decay_steps = 100_000
  config.lr_decay_rate = 0.5
  config.warmup_steps = 10_000
  config.losses = ml_collections.ConfigDict(
      {"set": {"type": "hungarian_huber", "prediction": "set_prediction",
               "target": "target", "weight": 1.0}})

  num_slots = 10
  config.data = ml_collections.ConfigDict()
  config.data.source = "clevr"
  config.data.data_dir = ml_collections.config_dict.placeholder(str)
  config.data.max_objects = num_slots
  config.data.num_eval_examples = 2048
  config.data.resolution = (128, 128)
  # Target layout: 3D coordinates, colour (8), material (2), shape (3), size (2), presence.
  config.data.properties = dict(num_coords=3, category_sizes=(8, 2, 3, 2), coordinate_scale=6.0)
  config.data.shuffle_buffer_size = 2048
  config.data.num_shards = 0
  config.data.preprocess_train = ["resize(128)", "value_range(0, 1)",
                                  f"clevr_set_target({num_slots})", "keep('image', 'target')"]
  config.data.preprocess_eval = list(config.data.preprocess_train)

  config.model = ml_collections.ConfigDict()
  config.model.num_slots = num_slots
  config.model.slot_size = 64
  config.model.encoder = dict(name="CNN", features=[64, 64, 64, 64], strides=[1, 2, 2, 1],
                              kernel_size=5, mlp_size=64)
  config.model.initializer = dict(name="gaussian")
  config.model.corrector = dict(name="SA", num_iterations=3, mlp_size=128)
  config.model.head_hidden_size = 64
  return config
