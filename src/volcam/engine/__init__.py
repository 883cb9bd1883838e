"""The only code that hooks a model: one cached forward, gradients from the target layer on.

``core`` (:class:`CamEngine`, the front), ``probe`` (which layers run, their shapes, ``"auto"``),
``capture`` (the hooked forward, :class:`ForwardPass`), ``gradients`` (backwards through the head, CAM's
weights), ``perturb`` (the model on changed inputs or activations), ``assembly`` (a method's inputs and
its :class:`~volcam.CamResult`), ``layers`` (names and the auto rule), ``tokens`` (tokens on their grid),
``head`` (cutting the head for head-only passes), ``clip`` (a clip batch by batch, one pass kept: frame
models), ``windows`` (spatio-temporal models over windows along T, maps stitched), ``drive`` (how any
part of volcam runs a network: frozen, on its device, its output read as ``output=`` picks it).
"""

from volcam.engine.capture import ForwardPass
from volcam.engine.core import CamEngine

__all__ = ["CamEngine", "ForwardPass"]
