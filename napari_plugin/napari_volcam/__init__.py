"""napari-volcam: the napari plugin of volcam (readers, explain widget, writer, sample data).

The plugin's adapters are thin layers over the :mod:`volcam` API; this package holds no imaging
or CAM logic of its own.
"""

from volcam._version import __version__  # the version's one home

__all__ = ["__version__"]
