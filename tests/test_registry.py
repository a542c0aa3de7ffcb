"""One registry mechanism for every part a config names."""

import glob
import os

import pytest

from invariant_slots import config_files
from invariant_slots import datasets
from invariant_slots import pipelines
from invariant_slots.lib import losses
from invariant_slots.modules import correctors
from invariant_slots.modules import decoders
from invariant_slots.modules import encoders
from invariant_slots.modules import initializers
from invariant_slots.modules import video
from invariant_slots.registry import ConfigError, Registry
from tests.training_utils import REPO


class _Part:

  def __init__(self, width: int = 1):
    self.width = width


def test_a_duplicate_name_is_an_error():
  registry = Registry("part")
  registry.register("a")(_Part)
  with pytest.raises(ValueError, match="part 'a' is registered twice"):
    registry.register("a")(_Part)


def test_an_unknown_name_lists_the_valid_ones_and_the_closest():
  registry = Registry("part")
  registry.register("resize")(_Part)
  registry.register("crop")(_Part)
  with pytest.raises(ConfigError, match=r"Unknown part 'resise'; Did you mean 'resize'\? "
                                        r"valid names: resize, crop\.$"):
    registry.get("resise")
  with pytest.raises(ConfigError, match=r"Unknown part 'zzz'; valid names: resize, crop\.$"):
    registry.get("zzz")


def test_build_passes_options_and_names_what_is_wrong():
  registry = Registry("part")
  registry.register("p")(_Part)
  assert registry.build({"name": "p", "width": 3}).width == 3
  with pytest.raises(ConfigError, match="has no 'name'; valid names: p"):
    registry.build({"width": 3})
  with pytest.raises(ConfigError, match="Bad options for part 'p'"):
    registry.build({"name": "p", "depth": 3})


@pytest.mark.parametrize("registry, members", [
    (correctors.CORRECTORS, {"SA", "SA-ID", "SA-noGRU", "TF", "TF-Inv", "TF-Inv+GRU", "SlotODE"}),
    (encoders.ENCODERS, {"CNN", "ResNet34", "SRT"}),
    (decoders.DECODERS, {"SpatialBroadcast", "SlotMixer", "RayBroadcast"}),
    (initializers.INITIALIZERS, {"gaussian", "learned", "conditioned"}),
    (video.PREDICTORS, {"Transformer"}),
    (pipelines.PIPELINES, {"images", "video", "multiview", "set_prediction"}),
    (datasets.DATA_SOURCES, {"shapes", "multi_object", "movi", "movi_shapes",
                             "multi_shapenet", "shapes_multiview", "clevr"}),
    (datasets.OPS, {"resize", "crop", "clevr_crop", "value_range", "keep", "video_from_tfds",
                    "resize_small", "flow_to_rgb", "multiview_train", "multiview_eval",
                    "shapes_set_target", "clevr_set_target"}),
    (losses.LOSSES, {"mse", "l1", "hungarian_huber"}),
], ids=lambda value: getattr(value, "kind", ""))
def test_every_named_part_lives_in_a_registry(registry, members):
  assert isinstance(registry, Registry)
  assert members <= set(registry.names)


# Sub-dicts of `config.model` that are options rather than modules.
_OPTION_GROUPS = {"targets", "ray_encoding"}


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))),
                         ids=os.path.basename)
def test_every_model_part_of_every_config_has_a_name(path):
  if os.path.basename(path) in ("__init__.py", "common.py"):
    pytest.skip("not a config")
  model = config_files.load_config(path).model
  parts = [key for key, value in model.items()
           if hasattr(value, "keys") and key not in _OPTION_GROUPS]
  assert parts and all("name" in model[key] for key in parts), parts
