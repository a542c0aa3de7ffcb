"""The registry of data sources that `config.data.source` names.

A data source is `load(data, train, num_shards, shard) -> (dataset, size)`:
shard `shard` of `num_shards` of the train (`train=True`) or eval split, as a
`tf.data.Dataset` of feature dicts before preprocessing, and the number of
examples in the whole split (None where that is unknown without reading it).
Register one with `@DATA_SOURCES.register("name")`.
"""

from typing import Callable

import ml_collections
import tensorflow as tf

from invariant_slots.registry import Registry

DataSource = Callable[[ml_collections.ConfigDict, bool, int, int],
                      tuple[tf.data.Dataset, int | None]]
DATA_SOURCES: Registry[DataSource] = Registry("data source")
