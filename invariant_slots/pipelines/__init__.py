"""Pipelines: images, and the others registered on import."""

from invariant_slots.pipelines import images
from invariant_slots.pipelines.base import PIPELINES, Pipeline, get_pipeline
from invariant_slots.pipelines import multiview
from invariant_slots.pipelines import set_prediction
from invariant_slots.pipelines import video
