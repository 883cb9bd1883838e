"""The explain dock's Qt side: small panels that build widgets, forward input to the controller, show its answers.

:class:`ExplainWidget` (napari.yaml's widget) composes them over one
:class:`napari_volcam._controller.DockController`; all state and decisions live there.
"""

from napari_volcam._qt._dock import ExplainWidget

__all__ = ["ExplainWidget"]
