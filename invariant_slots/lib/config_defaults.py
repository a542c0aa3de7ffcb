"""Defaults shared by the experiment configs in `configs/`, and config loading."""

import importlib.util

import ml_collections


def training_defaults() -> ml_collections.ConfigDict:
  """Trainer keys every experiment has; experiments override what they need."""
  config = ml_collections.ConfigDict()
  config.pipeline = "images"  # images | video | multiview | set_prediction (see pipelines/)
  config.seed = 42
  # Compute dtype of the train step (float32 | bfloat16 | float16); parameters,
  # optimizer state and the loss stay float32.
  config.dtype = "float32"
  config.batch_size = 64
  # > 1 splits each global batch into this many micro-batches inside the
  # train step and averages their gradients (same data order, less memory).
  config.grad_accum_steps = 1
  config.num_train_steps = 500_000
  config.learning_rate = 4e-4
  config.lr_schedule = "exponential"  # cosine | exponential | constant
  config.lr_decay_steps = 100_000  # exponential: multiply by lr_decay_rate every this many steps
  config.lr_decay_rate = 0.5
  config.warmup_steps = 10_000
  config.max_grad_norm = 0.0  # 0 disables global-norm clipping.
  config.log_loss_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  config.checkpoints_to_keep = 3
  config.num_eval_images = 8
  # fsdp > 1 shards parameters and optimizer state of at least fsdp_min_size
  # elements over that many devices; the rest of the mesh is data parallel.
  config.mesh = dict(fsdp=1, fsdp_min_size=2**16)
  config.losses = ml_collections.ConfigDict(
      {"reconstruction": {"type": "mse", "prediction": "reconstruction",
                          "target": "image", "weight": 1.0}})
  return config


def multi_object_data(name: str, resolution: tuple[int, int], max_instances: int,
                      preprocess: list[str]) -> ml_collections.ConfigDict:
  """Data config for a multi_object_datasets TFRecord file.

  The file is expected at `~/tensorflow_datasets/multi_object_datasets/NAME_train.tfrecords`
  unless `data.path` is overridden; the first `num_eval_examples` are held out.
  `data.max_objects` > 0 keeps only scenes with at most that many visible
  objects (before the hold-out).
  """
  data = ml_collections.ConfigDict()
  data.source = "multi_object"
  data.name = name
  data.path = f"~/tensorflow_datasets/multi_object_datasets/{name}_train.tfrecords"
  data.num_eval_examples = 320
  data.max_objects = 0
  data.resolution = resolution
  data.max_instances = max_instances
  data.shuffle_buffer_size = 2048
  data.num_shards = 0  # Training-data shards; 0: one per process.
  data.preprocess_train = preprocess + ["value_range(0, 1)", "keep('image')"]
  data.preprocess_eval = preprocess + ["value_range(0, 1)", "keep('image', 'segmentations')"]
  return data


def slot_attention_model(num_slots: int, resolution: int) -> ml_collections.ConfigDict:
  """Locatello et al.'s object-discovery model: 4x(5x5, 64) CNN, SA, broadcast decoder."""
  model = ml_collections.ConfigDict()
  model.num_slots = num_slots
  model.slot_size = 64
  model.encoder = dict(name="CNN", features=[64, 64, 64, 64], strides=[1, 1, 1, 1],
                       kernel_size=5, mlp_size=64)
  model.initializer = dict(name="gaussian")
  model.corrector = dict(name="SA", num_iterations=3, mlp_size=128)
  num_upsamplings = {128: 4, 64: 3, 32: 2}[resolution]
  model.decoder = dict(name="SpatialBroadcast", broadcast_size=(8, 8),
                       features=[64] * (num_upsamplings + 1),
                       strides=[2] * num_upsamplings + [1], kernel_size=5)
  return model


def clevr_config(num_slots: int, max_objects: int = 0) -> ml_collections.ConfigDict:
  """Locatello et al.'s object discovery on CLEVR-with-masks, 128x128 crops.

  `max_objects` > 0 keeps only scenes with at most that many objects (CLEVR6: 6).
  """
  config = training_defaults()
  config.data = multi_object_data("clevr_with_masks", resolution=(128, 128), max_instances=10,
                                  preprocess=["clevr_crop()", "resize(128)"])
  config.data.max_objects = max_objects
  config.model = slot_attention_model(num_slots=num_slots, resolution=128)
  return config


def load_config(path: str, **overrides) -> ml_collections.ConfigDict:
  """Loads `get_config()` from a config file and applies dotted-key overrides.

  `load_config("configs/shapes.py", **{"model.corrector.name": "TF"})`.
  """
  spec = importlib.util.spec_from_file_location("experiment_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return apply_overrides(module.get_config(), **overrides)


def apply_overrides(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """Sets dotted keys in place (`**{"data.batch_size": 8}`) and returns `config`."""
  for key, value in overrides.items():
    node = config
    *parents, last = key.split(".")
    for part in parents:
      node = node[part]
    node[last] = value
  return config
