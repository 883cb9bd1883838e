"""The only code that hooks a model: one cached forward, gradients from the target layer on.

``core`` (:class:`CamEngine`), ``layers`` (names and the auto rule), ``head`` (cutting the head for
head-only passes), ``clip`` (frame models on clips), ``drive`` (how any part of volcam runs a network:
frozen, on its device, its output read as ``output=`` picks it).
"""

from volcam.engine.core import CamEngine, ForwardPass

__all__ = ["CamEngine", "ForwardPass"]
