"""Slot Attention on CLEVR-with-masks (Locatello et al. 2020 settings, 128x128).

Needs the original TFRecord file (gs://multi-object-datasets/clevr_with_masks/):

    python -m invariant_slots.main --config=configs/clevr.py --workdir=/tmp/clevr \
        --config.data.path=/data/clevr_with_masks_train.tfrecords

Expect: the paper publishes no object-discovery ARI for all of CLEVR with 11
slots; its CLEVR6 setting (configs/clevr6.py) reaches FG-ARI 98.8 ± 0.3.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  """Returns the experiment config."""
  return common.clevr_config(num_slots=11)
