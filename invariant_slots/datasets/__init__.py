"""Data sources and their preprocessing ops; importing the package registers them all.

`sources.DATA_SOURCES` holds the sources that `config.data.source` names and
`ops.OPS` the ops of `config.data.preprocess_*`.
"""

from invariant_slots.datasets import ops
from invariant_slots.datasets import sources
from invariant_slots.datasets import video_ops
from invariant_slots.datasets import multi_object
from invariant_slots.datasets import shapes
from invariant_slots.datasets import movi
from invariant_slots.datasets import multishapenet
from invariant_slots.datasets import set_targets

DATA_SOURCES = sources.DATA_SOURCES
OPS = ops.OPS
