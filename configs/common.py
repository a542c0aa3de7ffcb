"""Helpers shared by the experiment configs; imports only ml_collections.

A config reads `from configs import common` and builds on
`common.training_defaults()` (or one of the published-network helpers below).
"""

import ml_collections


def training_defaults() -> ml_collections.ConfigDict:
  """Trainer keys every experiment has; experiments override what they need."""
  config = ml_collections.ConfigDict()
  config.pipeline = "images"  # images | video | multiview | set_prediction (see pipelines/)
  # Modules to import before building anything: one's own correctors, ops,
  # losses or data sources (docs/architecture.md).
  config.imports = ()
  config.seed = 42
  # Compute dtype of the train step (float32 | bfloat16 | float16); parameters,
  # optimizer state and the loss stay float32.
  config.dtype = "float32"
  config.batch_size = 64
  # > 1 splits each global batch into this many micro-batches inside the
  # train step and averages their gradients (same data order, less memory).
  config.grad_accum_steps = 1
  # True recomputes the heavy blocks' activations (encoder, corrector, decoder)
  # in the backward pass: less memory, about one more forward pass of compute.
  config.remat = False
  # Single-process runs on a CPU-only host: split the host into this many JAX
  # devices and train data-parallel over them. 0: one per core (the largest
  # count that divides batch_size); 1: JAX's default of one device. Small
  # models run faster this way (docs/benchmarks.md); GPU and TPU ignore it.
  config.cpu_devices = 1
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


def video_preprocessing(max_instances: int, resolution: int, train_frames: int,
                        eval_frames: int, targets: tuple[str, ...],
                        train_crop: float | None = None) -> tuple[list[str], list[str]]:
  """SAVi-style op lists `(train, eval)` for MOVi-schema data.

  Training keeps the video, boxes, centres and targets of a random window of
  `train_frames`, cropped at random to at least `train_crop` of the frame when
  given (SAVi++: 0.75), else resized; evaluation the first `eval_frames` plus
  the segmentations, resized.
  """
  decode = ["video_from_tfds()", f"sparse_to_dense_annotation(max_instances={max_instances})"]
  resize = f"resize_small({resolution})"
  if train_crop is not None:
    resize_train = (f"random_resized_crop({resolution}, {resolution}, "
                    f"min_object_covered={train_crop})")
  else:
    resize_train = resize
  targets_ops = ["flow_to_rgb()", "transform_depth('log_plus')"]
  keys = ("video", "boxes", "centers") + tuple(t for t in targets if t != "video")
  train = decode + [f"temporal_random_strided_window(length={train_frames})",
                    resize_train] + targets_ops
  evaluation = decode + [f"temporal_crop_or_pad(length={eval_frames})", resize] + targets_ops
  return (train + [f"keep{keys!r}"], evaluation + [f"keep{keys + ('segmentations',)!r}"])


def savi_plus_plus_config(dataset: str, max_instances: int,
                          targets: dict[str, int] | None = None) -> ml_collections.ConfigDict:
  """SAVi++ on MOVi (`dataset` e.g. "movi_c"): 128x128 frames, ResNet-34 encoder
  with a Transformer head, box-conditioned slots of size 128 (objects plus
  background), one SA iteration per frame, Transformer predictor, 4-layer
  broadcast decoder for flow and depth; 6-frame training windows, 24-frame
  evaluation in slices of 6. The network and schedule are SAVi++'s
  (docs/fidelity.md). `targets` (`{name: channels}`, default flow 3 + depth 1)
  sets what the decoder predicts, each with an MSE loss."""
  config = training_defaults()
  config.pipeline = "video"
  config.batch_size = 64
  config.num_train_steps = 500_000
  config.learning_rate = 2e-4
  config.lr_schedule = "cosine"
  config.warmup_steps = 2500
  config.max_grad_norm = 0.05
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  config.num_eval_images = 4
  config.eval_slice_length = 6

  targets = targets or {"flow": 3, "depth": 1}
  data = ml_collections.ConfigDict()
  data.source = "movi"
  data.name = f"{dataset}/128x128:1.0.0"
  data.data_dir = "gs://kubric-public/tfds"
  data.resolution = (128, 128)
  data.max_instances = max_instances
  data.shuffle_buffer_size = 8 * config.batch_size
  data.num_shards = 0
  data.preprocess_train, data.preprocess_eval = video_preprocessing(
      max_instances, 128, train_frames=6, eval_frames=24, targets=tuple(targets),
      train_crop=0.75)
  config.data = data

  model = ml_collections.ConfigDict()
  model.num_slots = max_instances + 1
  model.slot_size = 128
  model.targets = targets
  # The SAVi++ network module by module (docs/fidelity.md): ResNet-34 with the
  # 3x3 stem for small inputs, the Transformer encoder head giving 64-d tokens,
  # boxes (and a zero box for the background) through an MLP, SA with qkv 256
  # and no MLP, a post-LN predictor and 1x1 readouts of the broadcast decoder.
  model.encoder = dict(name="ResNet34", width=64, stem_kernel_size=3, stem_stride=1,
                       stem_activation=False, mlp_size=64, position_embedding="linear",
                       transformer=dict(num_layers=4, num_heads=4, qkv_size=64,
                                        transformer_mlp_size=1024))
  model.initializer = dict(name="conditioned", conditioning="boxes", hidden_size=256,
                           background_slot=True, zero_box_background=True)
  model.corrector = dict(name="SA", num_iterations=1, qkv_size=256, mlp_size=0)
  model.predictor = dict(name="Transformer", num_heads=4, qkv_size=256, mlp_size=1024)
  model.decoder = dict(name="SpatialBroadcast", broadcast_size=(8, 8), features=(64,) * 4,
                       strides=(2,) * 4, kernel_size=5, readout="dense",
                       position_embedding="linear")
  config.model = model
  config.losses = ml_collections.ConfigDict({
      name: {"type": "mse", "prediction": name, "target": name, "weight": 1.0}
      for name in targets})
  return config
