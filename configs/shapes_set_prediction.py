"""Set prediction on the embedded synthetic shapes dataset (CPU-sized default).

    python -m invariant_slots.main --config=configs/shapes_set_prediction.py \
        --workdir=/tmp/shapes_set_prediction

32x32 scenes of 2-4 shapes in 4 colours, 5 slots (SA-ID corrector, learned
initial slots, strided 4-layer CNN with a 16x16 feature grid). Each slot predicts the
object's (y, x) centre in [0, 1], its shape (6 classes), colour (4) and size
(half-extent below / above 0.17 of the image side), and a presence score;
evaluation reports AP at distance thresholds inf, 1, 0.5, 0.25, 0.125 in units
of 1/6 of the image side (the image spans 6 units, like CLEVR's [-3, 3] scene).

Expect (docs/set_prediction.md, 2-core CPU): AP 0.81 / 0.80 / 0.55 at distance
inf / 1 / 0.5 after its 5000 steps.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  """Returns the experiment config."""
  config = common.training_defaults()
  config.pipeline = "set_prediction"
  config.batch_size = 32
  config.num_train_steps = 5_000
  config.learning_rate = 1e-3
  config.lr_schedule = "cosine"
  config.warmup_steps = 500
  config.max_grad_norm = 1.0
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 1000
  config.losses = ml_collections.ConfigDict(
      {"set": {"type": "hungarian_huber", "prediction": "set_prediction",
               "target": "target", "weight": 1.0}})

  num_slots = 5
  config.data = ml_collections.ConfigDict()
  config.data.source = "shapes"
  # None: the TFDS default directory (~/tensorflow_datasets).
  config.data.data_dir = ml_collections.config_dict.placeholder(str)
  config.data.shapes = dict(resolution=32, min_objects=2, max_objects=4, num_colors=4,
                            min_size=0.12, max_size=0.22,
                            num_train=20_000, num_validation=512, seed=0)
  config.data.resolution = (32, 32)
  # Target layout: (y, x), shape (6), colour (4), size (2), presence.
  config.data.properties = dict(num_coords=2, category_sizes=(6, 4, 2), coordinate_scale=6.0)
  config.data.shuffle_buffer_size = 2048
  config.data.num_shards = 0
  target = f"shapes_set_target({num_slots}, 4, 0.17)"
  config.data.preprocess_train = ["value_range(0, 1)", target, "keep('image', 'target')"]
  config.data.preprocess_eval = list(config.data.preprocess_train)

  config.model = ml_collections.ConfigDict()
  config.model.num_slots = num_slots
  config.model.slot_size = 64
  config.model.encoder = dict(name="CNN", features=[64, 64, 64, 64], strides=[1, 2, 1, 1],
                              kernel_size=3, mlp_size=64)
  config.model.initializer = dict(name="learned")
  config.model.corrector = dict(name="SA-ID", num_iterations=3, mlp_size=128)
  config.model.head_hidden_size = 64
  return config
