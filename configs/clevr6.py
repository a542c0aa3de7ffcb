"""Slot Attention on CLEVR6 (Locatello et al. 2020: CLEVR scenes with at most 6 objects).

The network, 7 slots and schedule of the paper's CLEVR6 object discovery
(published ARI 98.8 +- 0.3; docs/fidelity.md): 128x128 crops, 4x(5x5, 64)
CNN, Slot Attention with 3 iterations, broadcast decoder; Adam 4e-4, 10k
warm-up steps, halved every 100k, batch 64, 500k steps. Needs the original
TFRecord file (gs://multi-object-datasets/clevr_with_masks/):

    python -m invariant_slots.main --config=configs/clevr6.py --workdir=/tmp/clevr6 \
        --config.data.path=/data/clevr_with_masks_train.tfrecords

Expect (Locatello et al. 2020, docs/fidelity.md): FG-ARI 98.8 ± 0.3.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  """Returns the experiment config."""
  return common.clevr_config(num_slots=7, max_objects=6)
