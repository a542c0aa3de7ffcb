"""OSRT on MultiShapeNet-Hard (accelerator-sized; paper settings where known).

    python -m invariant_slots.main --config=configs/msn_hard.py --workdir=/tmp/msn \
        --config.data.data_dir=/path/to/tfds

Reads the TFDS directory `kubric_frames/multi_shapenet_conditional/2.8.0` under
`data.data_dir` (copy it there from gs://kubric-public/tfds, or set
`--config.data.data_dir=gs://kubric-public/tfds`); trains on `train`, evaluates
on `val`, rays derived from the stored cameras. 128x128 views, 5 input views,
8192 random target rays per scene from the other views (the paper; the
PyTorch reproduction used 2304), batch 256. The network is OSRT's module by
module (docs/fidelity.md): SRT encoder, Slot Attention with one iteration from
32 learned slots of size 1536, Slot Mixer decoder. Swap the corrector with
`--config.model.corrector.name=TF-Inv` etc.

Expect (the PyTorch OSRT reproduction after 750k steps, docs/fidelity.md):
FG-ARI about 0.73, novel-view PSNR 22.8 dB.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  """Returns the experiment config."""
  config = common.training_defaults()
  config.pipeline = "multiview"
  config.batch_size = 256
  config.num_train_steps = 4_000_000
  config.learning_rate = 1e-4
  config.lr_schedule = "exponential"
  config.lr_decay_steps = 4_000_000  # 1e-4 -> 1.6e-5 over training.
  config.lr_decay_rate = 0.16
  config.warmup_steps = 10_000
  config.max_grad_norm = 0.0  # No clipping.
  config.log_loss_every_steps = 100
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5000
  config.num_eval_images = 4
  config.losses = ml_collections.ConfigDict(
      {"reconstruction": {"type": "mse", "prediction": "reconstruction",
                          "target": "target_color", "weight": 1.0}})

  config.data = ml_collections.ConfigDict()
  config.data.source = "multi_shapenet"
  config.data.data_dir = "~/tensorflow_datasets"
  config.data.train_split = "train"
  config.data.eval_split = "val"
  config.data.num_eval_examples = 1000
  config.data.resolution = (128, 128)
  config.data.num_input_views = 5
  config.data.max_instances = 34  # instance_image ids 1 (background) .. 35.
  config.data.shuffle_buffer_size = 1024
  config.data.num_shards = 0
  config.data.preprocess_train = [f"multiview_train({config.data.num_input_views}, 8192, 0)"]
  config.data.preprocess_eval = [f"multiview_eval({config.data.num_input_views})"]

  # The OSRT network module by module (docs/fidelity.md).
  config.model = ml_collections.ConfigDict()
  config.model.num_slots = 32
  config.model.slot_size = 1536
  config.model.ray_encoding = dict(origin_octaves=15, origin_start_octave=-5,
                                   direction_octaves=15, direction_start_octave=0)
  config.model.encoder = dict(name="SRT", features=[192, 384, 768],
                              hidden_features=[96, 192, 384], conv_bias=False, hidden_size=768,
                              num_layers=5, num_heads=12, qkv_size=768, qkv_bias=False,
                              mlp_size=1536, activation="gelu_exact",
                              first_view_embedding=False, output_size=None)
  config.model.initializer = dict(name="learned")
  config.model.corrector = dict(name="SA", num_iterations=1, mlp_size=3072)
  config.model.decoder = dict(name="SlotMixer", hidden_size=180, query_mlp_size=360,
                              num_layers=2, num_heads=12, qkv_size=1536, qkv_bias=False,
                              mlp_size=3072, activation="gelu_exact", mixing_size=1536,
                              slot_norm=False, mixing_norm=False, render_input="queries",
                              render_sizes=[1536, 1536, 1536, 1536],
                              render_activation="leaky_relu")
  # Whole held-out views (5 x 128 x 128 rays) are rendered in chunks at evaluation.
  config.model.ray_chunk_size = 8192

  config.render = dict(num_frames=36, fov_deg=50.0)
  return config
