"""The old home of the explain dock: :class:`ExplainWidget` now lives in :mod:`napari_volcam._qt`."""

from napari_volcam._qt import ExplainWidget

__all__ = ["ExplainWidget"]
