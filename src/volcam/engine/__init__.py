"""The only code that hooks a model: one cached forward, gradients from the target layer on.

``core`` (:class:`CamEngine`), ``layers`` (names and the auto rule), ``head`` (cutting the head for
head-only passes), ``clip`` (frame models on clips).
"""

from volcam.engine.core import CamEngine, ForwardPass, first_tensor

__all__ = ["CamEngine", "ForwardPass", "first_tensor"]
