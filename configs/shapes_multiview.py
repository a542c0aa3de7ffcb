"""Multi-view object discovery on the embedded ray-traced scenes (SRT encoder, SA, ray-broadcast decoder; CPU-sized).

    python -m invariant_slots.main --config=configs/shapes_multiview.py --workdir=/tmp/mv

32x32 views of 3-6 spheres and boxes, 10 views per scene: 5 input views, 256
random target rays per scene from the other 5 in training, all their pixels
at evaluation. A small SRT encoder (two downsampling conv blocks on the
colours, each patch's ray added after them, 2 Transformer layers), Slot
Attention with three iterations, and the ray-broadcast decoder: every slot
renders every ray from where the slot's 3D point (triangulated from the rays
it attends to) lies relative to the ray. Evaluation prints novel-view PSNR and
multi-view FG-ARI; the 3000 steps take about 28 minutes on 2 CPU cores
(results in docs/multiview.md).

Expect (docs/multiview.md, 2-core CPU): novel-view FG-ARI 0.650 and PSNR
21.42 dB (the ground alone: 16.83 dB) after its 3000 steps; 0.614 and 20.99
dB with seed 43.

Variants for the diagnostics of docs/multiview.md, after a colon
(`--config=configs/shapes_multiview.py:slot_mixer,single_view`):
`slot_mixer` swaps in the Slot Mixer decoder this config used before;
`single_view` gives one input view and renders that same view.
"""

import ml_collections

from configs import common


VARIANTS = ("slot_mixer", "single_view")


def get_config(variants: str = "") -> ml_collections.ConfigDict:
  """Returns the experiment config with the comma-separated `variants` (see above)."""
  chosen = [v for v in variants.split(",") if v]
  unknown = sorted(set(chosen) - set(VARIANTS))
  if unknown:
    raise ValueError(f"Unknown variant(s) {', '.join(unknown)}; use {', '.join(VARIANTS)}.")
  config = common.training_defaults()
  config.pipeline = "multiview"
  config.batch_size = 8
  config.num_train_steps = 3000
  config.learning_rate = 1e-3
  config.lr_schedule = "cosine"
  config.warmup_steps = 250
  config.max_grad_norm = 1.0
  config.log_loss_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.num_eval_images = 4
  config.losses = ml_collections.ConfigDict(
      {"reconstruction": {"type": "mse", "prediction": "reconstruction",
                          "target": "target_color", "weight": 1.0}})

  config.data = ml_collections.ConfigDict()
  config.data.source = "shapes_multiview"
  # None: the TFDS default directory (~/tensorflow_datasets).
  config.data.data_dir = ml_collections.config_dict.placeholder(str)
  config.data.shapes_multiview = dict(resolution=32, num_views=10, min_objects=3, max_objects=6,
                                      num_train=2000, num_validation=64, seed=0)
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  config.data.num_eval_examples = 64
  config.data.resolution = (32, 32)
  config.data.num_input_views = 5
  config.data.max_instances = 6  # Largest object id after background -> 0.
  config.data.shuffle_buffer_size = 500
  config.data.num_shards = 0
  config.data.preprocess_train = [f"multiview_train({config.data.num_input_views}, 256, 0)"]
  config.data.preprocess_eval = [f"multiview_eval({config.data.num_input_views})"]

  config.model = ml_collections.ConfigDict()
  config.model.num_slots = 7
  config.model.slot_size = 128
  config.model.ray_encoding = dict(origin_octaves=4, origin_start_octave=-3,
                                   direction_octaves=6, direction_start_octave=0)
  config.model.encoder = dict(name="SRT", features=[16, 64], hidden_size=128, num_layers=2,
                              num_heads=4, mlp_size=256, output_size=128, ray_input="patches")
  config.model.initializer = dict(name="learned")
  config.model.corrector = dict(name="SA", num_iterations=3, mlp_size=256)
  config.model.decoder = dict(name="RayBroadcast", hidden_sizes=[128, 128, 128])

  if "slot_mixer" in chosen:
    config.model.decoder = dict(name="SlotMixer", hidden_size=128, num_layers=2, num_heads=4,
                                mlp_size=256, render_sizes=[192, 192])
  if "single_view" in chosen:
    config.data.num_input_views = 1
    config.data.preprocess_train = ["multiview_train(1, 256, 0, targets='inputs')"]
    config.data.preprocess_eval = ["multiview_eval(1, targets='inputs')"]

  # Orbit of `invariant_slots.render` (distance and elevation follow the input cameras).
  config.render = dict(num_frames=24, fov_deg=45.0)
  return config
