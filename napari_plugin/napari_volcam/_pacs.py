"""Opening a series from a PACS (DICOMweb) for the dock's URL field, without Qt: for a worker."""

from __future__ import annotations

from collections.abc import Generator

from napari_volcam._layers import scan_layer
from napari_volcam._status import Status


def retrieve(url: str, status: Status) -> Generator[str, None, tuple]:
    """Retrieve the series at a DICOMweb address: yields a status line per instance received, returns
    the scan's image layer data ``(data, kwargs, "image")``.

    Credentials come from the environment (``VOLCAM_DICOMWEB_TOKEN``, or ``VOLCAM_DICOMWEB_USER`` and
    ``VOLCAM_DICOMWEB_PASSWORD``); stopping the generator early removes what was received.
    """
    from volcam.io.dicom.web import load_url_steps

    steps = load_url_steps(url.strip())
    try:
        while True:
            try:
                received, expected = next(steps)
            except StopIteration as done:
                status.say("opened from the PACS")
                return scan_layer(done.value)
            of = f" of {expected}" if expected is not None else ""
            yield status.say(f"retrieving from the PACS: {received}{of} instance(s) …")
    finally:
        steps.close()
