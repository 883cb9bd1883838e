"""DICOM in and out, a module per job; import the one you need (this package imports none of them).

In (:func:`volcam.load` reads through :mod:`.reader`):

- :mod:`.headers`: one file's header read quietly; its fields as checked numbers and one-line text.
- :mod:`.pixels`: pixel data checked before decoding, decoded, rescaled to modality units.
- :mod:`.geometry`: pure numpy: a stack's slice order and affine, gaps and tilt; a slice from an affine.
- :mod:`.stacks`: a series' or a multi-frame file's geometry from its headers.
- :mod:`.series`: a folder's image series (headers read once, grouped by UID) and the one asked for.
- :mod:`.clips`: ultrasound and other cine loops: frame interval, calibrated spacing, the clip.
- :mod:`.reader`: :func:`~volcam.io.dicom.reader.load_dicom`: a folder's series or one file as a volume.

Out (:func:`volcam.io.write_dicom` writes through these):

- :mod:`.placement`: where a map's frames go (viewer order, source positions) and what they refer to.
- :mod:`.objects`: parametric map, segmentation and RGB overlay datasets, built with highdicom.
- :mod:`.instances`: a plain instance written; the instance files an output holds.

Both ways, over the network: :mod:`.web` (DICOMweb: QIDO-RS, WADO-RS, STOW-RS).
"""
