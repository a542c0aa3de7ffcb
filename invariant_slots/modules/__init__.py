"""Flax modules; importing the package registers every encoder, initializer,
corrector, predictor and decoder in its registry."""

from invariant_slots.modules import attention
from invariant_slots.modules import convolution
from invariant_slots.modules import correctors
from invariant_slots.modules import decoders
from invariant_slots.modules import encoders
from invariant_slots.modules import initializers
from invariant_slots.modules import models
from invariant_slots.modules import multiview
from invariant_slots.modules import remat
from invariant_slots.modules import set_prediction
from invariant_slots.modules import video
