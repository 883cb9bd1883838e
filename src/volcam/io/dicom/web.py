"""DICOMweb in and out: a series from a PACS (QIDO-RS to list, WADO-RS to retrieve), results back (STOW-RS).

An address is ``http(s)://host[:port]/<root>/studies/<StudyInstanceUID>[/series/<SeriesInstanceUID>]``;
the part before ``/studies/`` is the service's root (Orthanc: ``http://host:8042/dicom-web``). Every
request goes through ``dicomweb-client`` without retries, so an unreachable server is one line at once.

Retrieval streams the series' instances one at a time into a private folder of this process (mode
0700 under the system's temporary folder, names made of random hex and numbers, never a UID or a
patient identifier) and reads that folder with the one DICOM series reader,
:func:`volcam.io.dicom.reader.load_dicom`: the same pixels, geometry, checks and ``meta["source_files"]``
(the writers reference the source instances through them) as a local folder. Memory stays at one
instance plus the volume. The files stay while the process runs, since a writer may reference them
long after loading; :func:`release` removes a scan's files sooner (a cohort does, case by case), all
go at exit, and what a killed process left is removed by the next one.

Authentication comes from the environment only, never from the command line or the address:
``VOLCAM_DICOMWEB_TOKEN`` is sent as ``Authorization: Bearer <token>``; else
``VOLCAM_DICOMWEB_USER`` and ``VOLCAM_DICOMWEB_PASSWORD`` as HTTP basic authentication (Orthanc's
``RegisteredUsers``). Neither value ever appears in a message or a log line. They go only to the
hosts named for them in ``VOLCAM_DICOMWEB_HOSTS`` (a comma list of ``host`` or ``host:port``; a host
without a port stands for all its ports), and never in clear text (``http://``) to a host other than
this machine (:func:`credential_refusal`): an address a manifest from someone else names gets no
token of the user's. A request that would carry them elsewhere is refused with one line naming the
host and what to set; with no credentials set, requests go anywhere without them.

Failures are one line each and leave nothing behind: :class:`~volcam.errors.FileFormatError` when
reading (unreachable server, no such study or series, refused credentials, a transfer that broke
off, an address that is not a DICOMweb service), :class:`~volcam.errors.OutputError` when storing.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import stat
import tempfile
import threading
import uuid
import warnings
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from volcam.errors import FileFormatError, InputError, OutputError, SeriesError, VolcamError, VolcamWarning, one_line
from volcam.io.atomic import is_temporary, remove_stale
from volcam.io.dicom.headers import note_identifiers
from volcam.io.dicom.instances import dicom_instances
from volcam.io.dicom.series import Scan, Series, select_series
from volcam.io.formats import is_url

if TYPE_CHECKING:
    from monai.data import MetaTensor
    from pydicom.dataset import Dataset

__all__ = [
    "HOSTS_VARIABLE",
    "PASSWORD_VARIABLE",
    "TOKEN_VARIABLE",
    "USER_VARIABLE",
    "Address",
    "StudySeries",
    "check_store",
    "credential_refusal",
    "load_url",
    "load_url_steps",
    "parse_address",
    "release",
    "store",
    "study_series",
]

TOKEN_VARIABLE = "VOLCAM_DICOMWEB_TOKEN"  # sent as "Authorization: Bearer <token>"
USER_VARIABLE = "VOLCAM_DICOMWEB_USER"  # with PASSWORD_VARIABLE: HTTP basic authentication
PASSWORD_VARIABLE = "VOLCAM_DICOMWEB_PASSWORD"
HOSTS_VARIABLE = "VOLCAM_DICOMWEB_HOSTS"  # where the credentials may go: "pacs.example.org,10.0.0.5:8042"
# Seconds to connect, and to wait for the next bytes of an answer (a PACS may think a while before
# answering a large STOW-RS request).
TIMEOUT_S = (10.0, 300.0)
# Bytes read from the network at once while streaming (the library's default is 1 MB): instances are
# written, and progress shown, as they arrive; also the size of a STOW-RS request's chunks.
CHUNK_BYTES = 1 << 18
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_SHAPE = "http(s)://host/<root>/studies/<StudyInstanceUID>[/series/<SeriesInstanceUID>]"
# DICOM JSON tags (PS3.18 F.2) of what QIDO-RS tells about a series.
_SERIES_UID, _DESCRIPTION, _MODALITY, _NUMBER, _INSTANCES, _SOP_UID = (
    "0020000E",
    "0008103E",
    "00080060",
    "00200011",
    "00201209",
    "00080018",
)


# -- addresses --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    """A DICOMweb address: the service's ``root`` (no trailing slash), and a study and series in it."""

    root: str
    study: str | None = None
    series: str | None = None

    def __str__(self) -> str:
        study = f"/studies/{self.study}" if self.study else ""
        return self.root + study + (f"/series/{self.series}" if self.series else "")

    @property
    def server(self) -> str:
        """``scheme://host:port``: what a connection failure names."""
        parts = urlsplit(self.root)
        return f"{parts.scheme}://{parts.netloc}"


def parse_address(url: str, *, study: bool = True) -> Address:
    """The :class:`Address` of ``url``; with ``study=False`` the service root alone is enough (storing).

    Raises:
        InputError: not an http(s) address, credentials or a query in it, a path that is not
            ``.../studies/<uid>[/series/<uid>]``, or a UID that is not one (digits and dots).
    """
    text = str(url).strip()
    if not is_url(text):
        raise InputError(f"{one_line(text)[:80]}: not a DICOMweb address; give {_SHAPE}")
    parts = urlsplit(text)
    shown = one_line(f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if _port(parts) else ''}{parts.path}")
    if parts.username is not None or parts.password is not None:
        raise InputError(
            f"{shown}: credentials do not belong in the address (it shows in process lists and logs); "
            f"set {TOKEN_VARIABLE}, or {USER_VARIABLE} and {PASSWORD_VARIABLE}"
        )
    if not parts.hostname:
        raise InputError(f"{one_line(text)[:80]}: no host in the address; give {_SHAPE}")
    if parts.query or parts.fragment:
        raise InputError(f"{shown}: a DICOMweb address has no query (?...) or fragment (#...); give {_SHAPE}")
    segments = parts.path.rstrip("/").split("/")
    server = f"{parts.scheme.lower()}://{parts.netloc}"
    if "studies" not in segments:
        if study:
            raise InputError(f"{shown}: not a DICOMweb study or series address; give {_SHAPE}")
        return Address(server + "/".join(segments))
    at = len(segments) - 1 - segments[::-1].index("studies")
    root = server + "/".join(segments[:at])
    rest = segments[at + 1 :]
    if not (len(rest) == 1 or (len(rest) == 3 and rest[1] == "series")):
        raise InputError(f"{shown}: not a DICOMweb study or series address; give {_SHAPE}")
    for uid in rest[::2]:
        if not _UID.match(uid) or len(uid) > 64:
            raise InputError(f"{shown}: {one_line(uid)[:70]!r} is not a DICOM UID (digits and dots, at most 64)")
    return Address(root, rest[0], rest[2] if len(rest) == 3 else None)


def _port(parts: Any) -> int | None:
    try:
        return parts.port
    except ValueError:  # "host:abc"
        raise InputError(f"{parts.scheme}://{parts.hostname}: the port is not a number") from None


# -- the client and its failures --------------------------------------------------------------------


def _credentials(environ: Any = None) -> str:
    """Which environment variables the requests carry (their names only, for a message)."""
    environ = os.environ if environ is None else environ
    if environ.get(TOKEN_VARIABLE, "").strip():
        return TOKEN_VARIABLE
    if environ.get(USER_VARIABLE, "").strip():
        return f"{USER_VARIABLE}/{PASSWORD_VARIABLE}"
    return ""


_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def _is_this_machine(host: str) -> bool:
    """Whether ``host`` names this machine without leaving it: a loopback address or name, or the
    machine's own host name (no DNS is asked: a name that resolves elsewhere later would not count)."""
    import ipaddress
    import socket

    host = host.strip("[]").lower().rstrip(".")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    with contextlib.suppress(OSError):
        return host == socket.gethostname().lower().rstrip(".")
    return False


def _named_hosts(text: str) -> list[tuple[str, int | None]]:
    """``VOLCAM_DICOMWEB_HOSTS`` as (host, port or None): ``"pacs, 10.0.0.5:8042, [::1]:8042"``."""
    found = []
    for entry in text.split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        parts = urlsplit(f"//{entry}")
        try:
            port = parts.port
        except ValueError:
            port = None
        found.append(((parts.hostname or entry).rstrip("."), port))
    return found


def credential_refusal(url: str, environ: Any = None) -> str | None:
    """Why the environment's credentials may not go to ``url``; ``None`` when they may (or none are set).

    They may go to a host named in ``VOLCAM_DICOMWEB_HOSTS`` (with its port, when the entry gives
    one), over ``https``, or over ``http`` to this machine only (loopback, its own name). The reason
    names the host and what to set.
    """
    environ = os.environ if environ is None else environ
    given = _credentials(environ)
    if not given:
        return None
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        port = None
    shown = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    named = _named_hosts(environ.get(HOSTS_VARIABLE, ""))
    if not any(host == h and (p is None or p == port) for h, p in named):
        listed = f" (it names {environ.get(HOSTS_VARIABLE, '').strip()})" if named else ""
        return (
            f"{given} is set, but {HOSTS_VARIABLE} does not name {shown}{listed}: the credentials go only to the "
            f"hosts named for them; add {shown} to {HOSTS_VARIABLE} to send them there, or unset {given} to "
            "connect without them"
        )
    if parts.scheme.lower() != "https" and not _is_this_machine(host):
        return (
            f"{given} would go in clear text (http) to {shown}, another machine; use an https:// address "
            f"(or unset {given} to connect without credentials)"
        )
    return None


def _client(address: Address) -> Any:
    """A ``DICOMwebClient`` for ``address``'s root, without retries, with the environment's credentials
    where :func:`credential_refusal` allows them (an :class:`InputError` where it does not)."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    refusal = credential_refusal(address.root)
    if refusal is not None:
        raise InputError(f"{address}: {refusal}")
    session = requests.Session()
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif os.environ.get(USER_VARIABLE, "").strip():
        session.auth = (os.environ[USER_VARIABLE].strip(), os.environ.get(PASSWORD_VARIABLE, ""))
    client = DICOMwebClient(address.root, session=session, timeout=TIMEOUT_S)
    # Its retries wait seconds between tries, on any exception: a refused connection would take 30 s.
    client.set_http_retry_params(retry=False)
    client.set_chunk_size(CHUNK_BYTES)
    return client


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def _reason(error: BaseException) -> str:
    """The system's words for a failed connection (``Connection refused``), else the error's type."""
    found = _ERRNO.findall(str(error))
    if found:
        return found[-1].strip()
    for words in ("Connection aborted", "Connection broken", "IncompleteRead", "Read timed out", "RemoteDisconnected"):
        if words in str(error):
            return words[0] + words[1:].lower() if " " in words else words
    return type(error).__name__


_BROKEN = ("Connection aborted", "Connection broken", "IncompleteRead", "RemoteDisconnected", "ended prematurely")


def _broke_off(error: BaseException) -> bool:
    """Whether a connection that was open broke off (the server died or hung up), rather than never opened."""
    import requests

    return isinstance(error, requests.exceptions.ChunkedEncodingError) or (
        isinstance(error, requests.ConnectionError) and any(words in str(error) for words in _BROKEN)
    )


def _refused(status: int) -> str:
    """What a 401 or 403 means here, and what to set."""
    given = _credentials()
    if status == 401 and not given:
        return (
            f"the server asks for credentials (HTTP 401); set {TOKEN_VARIABLE} (a Bearer token), "
            f"or {USER_VARIABLE} and {PASSWORD_VARIABLE}, and name the host in {HOSTS_VARIABLE}"
        )
    return f"the server refused the credentials from {given or 'the environment'} (HTTP {status})"


def _is_dicomweb(client: Any) -> bool:
    """Whether the service answers QIDO-RS (a JSON list of DICOM JSON objects for ``/studies``)."""
    import requests

    try:
        answer = client.search_for_studies(limit=1)
    except (requests.RequestException, ValueError):
        return False
    return isinstance(answer, list) and all(isinstance(item, dict) for item in answer)


@contextlib.contextmanager
def _speaking(address: Address, client: Any, error_type: type[VolcamError], missing: str = "") -> Iterator[None]:
    """The requests' failures as one ``error_type`` line naming ``address``: unreachable, refused, not
    DICOMweb, or (HTTP 404 from a DICOMweb service) ``missing``."""
    import requests

    try:
        yield
    except VolcamError:  # already one line (and some are ValueErrors: not the library's)
        raise
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else 0
        if status in (401, 403):
            raise error_type(f"{address}: {_refused(status)}") from None
        if status == 404 and missing and _is_dicomweb(client):
            raise error_type(f"{address}: {missing}") from None
        if status in (404, 405, 406, 415):
            raise error_type(
                f"{address}: not a DICOMweb service at {address.root} (HTTP {status}); give {_SHAPE}"
            ) from None
        reason = one_line(getattr(error.response, "reason", "") or "")[:60]
        raise error_type(f"{address}: the server answered HTTP {status} {reason}".rstrip()) from None
    except requests.Timeout:
        raise error_type(f"{address}: the server {address.server} did not answer within {TIMEOUT_S[1]:g} s") from None
    except requests.ConnectionError as error:
        if _broke_off(error):
            raise error_type(f"{address}: the connection to {address.server} broke off ({_reason(error)})") from None
        raise error_type(f"{address}: cannot reach the DICOMweb server {address.server} ({_reason(error)})") from None
    except RecursionError:  # JSON nested deeper than the parser goes
        raise error_type(f"{address}: not a DICOMweb answer (its JSON is nested too deeply)") from None
    except requests.RequestException as error:  # invalid JSON, a broken transfer, too many redirects
        if isinstance(error, ValueError):
            raise error_type(
                f"{address}: not a DICOMweb service at {address.root} (the answer is not DICOM JSON)"
            ) from None
        raise error_type(f"{address}: the transfer broke off ({_reason(error)})") from None
    except ValueError as error:  # dicomweb-client: a media type that is not multipart/related or DICOM
        raise error_type(f"{address}: not a DICOMweb answer ({one_line(str(error))[:80]})") from None


# -- listing series ---------------------------------------------------------------------------------


@dataclass
class StudySeries(Series):
    """A series as QIDO-RS lists it: its headers come later (or never), ``instances`` from the server."""

    instances: int | None = None

    @property
    def label(self) -> str:
        description = f" '{self.description}'" if self.description else ""
        count = "?" if self.instances is None else str(self.instances)
        return f"{self.uid}{description} ({self.modality}, {count} instance(s))"


def _first(item: dict, tag: str) -> Any:
    values = (item.get(tag) or {}).get("Value") or [None]
    return values[0]


def _number(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number == int(number) else None


def _list_series(client: Any, address: Address) -> list[StudySeries]:
    """The study's series (QIDO-RS), ordered by number like a folder's; an error when it has none."""
    answer = client.search_for_series(
        address.study, fields=["SeriesDescription", "SeriesNumber", "Modality", "NumberOfSeriesRelatedInstances"]
    )
    if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
        raise FileFormatError(f"{address}: not a DICOMweb service at {address.root} (the answer is not DICOM JSON)")
    found = [
        StudySeries(
            uid=one_line(str(_first(item, _SERIES_UID) or "")),
            description=one_line(str(_first(item, _DESCRIPTION) or "")),
            modality=one_line(str(_first(item, _MODALITY) or "OT")),
            number=_number(_first(item, _NUMBER)),
            instances=_number(_first(item, _INSTANCES)),
        )
        for item in answer
    ]
    found = [s for s in found if s.uid]
    if not found:
        raise FileFormatError(f"{Address(address.root, address.study)}: no such study on the server")
    return sorted(found, key=lambda s: (s.number is None, s.number or 0, s.uid))


def _choose(address: Address, listed: list[StudySeries], series: str | int | None) -> StudySeries:
    """The series the address names, or ``series=`` picks, or the study's only one: as for a folder."""
    study = Address(address.root, address.study)
    if address.series is not None and series is not None and str(series) != address.series:
        raise InputError(f"{address}: the address names a series; series= picks one in a study address, not both")
    wanted = address.series if address.series is not None else series
    try:
        chosen = select_series(Scan(Path(), list(listed), {}), wanted)
    except SeriesError as error:  # the folder's words, said of the study
        words = str(error).split(": ", 1)[-1].replace("in the folder", "in the study")
        hint = "; or add /series/<SeriesInstanceUID> to the address" if wanted is None else ""
        raise SeriesError(f"{study}: {words}{hint}") from None
    assert isinstance(chosen, StudySeries)  # select_series returns one of those given
    return chosen


def _headers(client: Any, study: str, series: StudySeries) -> list[tuple[Path, Dataset]]:
    """The series' instance headers from WADO-RS metadata (no pixel data), each named by its SOP UID."""
    from pydicom.dataset import Dataset

    headers = []
    for item in client.retrieve_series_metadata(study, series.uid):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings may quote values
            ds = Dataset.from_json(item, bulk_data_uri_handler=lambda tag, vr, uri: None)
            note_identifiers(ds)  # as for a file: no message may quote them
        headers.append((Path(one_line(str(_first(item, _SOP_UID) or "instance"))), ds))
    return headers


def study_series(url: str) -> tuple[str, list[Series], dict[str, int]]:
    """What ``volcam info`` shows of a study or series address: its image series, headers only.

    Returns the address as shown, the series (each with its instances' headers from WADO-RS
    metadata; no pixel data moves) and the count of series passed over for holding no image.
    """
    address = parse_address(url)
    client = _client(address)
    found: list[Series] = []
    skipped: dict[str, int] = {}
    with _speaking(address, client, FileFormatError, missing="no such study or series on the server"):
        listed = _list_series(client, address)
        chosen = [_choose(address, listed, None)] if address.series else listed
        for series in chosen:
            series.headers = [(p, ds) for p, ds in _headers(client, str(address.study), series) if "Rows" in ds]
            if series.headers:
                found.append(series)
            else:
                skipped["no image"] = skipped.get("no image", 0) + 1
    if not found:
        raise FileFormatError(f"{address}: no DICOM image in the study ({len(chosen)} series without one)")
    return str(address), found, skipped


# -- where retrieved instances live -----------------------------------------------------------------

_lock = threading.Lock()
_folder: Path | None = None  # this process's folder of retrieved series


def _forget_folder() -> None:
    """In a forked child: the parent's folder is the parent's (its exit removes it)."""
    global _folder
    _folder = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_folder)


def _private_root() -> Path:
    """``<tmp>/volcam-dicomweb-<uid>``, 0700 and ours; a fresh private folder when that is not safe."""

    uid = os.getuid() if hasattr(os, "getuid") else 0
    root = Path(tempfile.gettempdir()) / f"volcam-dicomweb-{uid}"
    with contextlib.suppress(OSError):
        root.mkdir(mode=0o700, exist_ok=True)
    try:
        info = os.lstat(root)
        safe = stat.S_ISDIR(info.st_mode) and (not hasattr(os, "getuid") or info.st_uid == uid)
        safe = safe and stat.S_IMODE(info.st_mode) & 0o077 == 0
    except OSError:
        safe = False
    if not safe:  # someone else's, a link, or open to others: never put a patient's images there
        return Path(tempfile.mkdtemp(prefix="volcam-dicomweb-"))
    remove_stale(root)  # what processes that were killed left
    return root


def _remove_at_exit(folder: Path, pid: int) -> None:
    """Remove ``folder`` when the process that made it exits (a forked child inherits the handler, not the folder)."""
    if os.getpid() == pid:
        shutil.rmtree(folder, ignore_errors=True)


def _process_folder() -> Path:
    """This process's folder of retrieved series, made on first use and removed at exit."""
    global _folder

    with _lock:
        if _folder is None or not _folder.is_dir():
            # the atomic writers' temporary name, so that remove_stale knows when its process is gone
            name = f".retrieved.volcam-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
            assert is_temporary(name)
            _folder = _private_root() / name
            _folder.mkdir(mode=0o700)
            atexit.register(_remove_at_exit, _folder, os.getpid())
        return _folder


def release(scan: Any) -> None:
    """Remove the files a scan loaded from a DICOMweb address was read from (nothing for other scans).

    A writer that references the source instances needs them: call this when done with the scan.
    """
    meta = getattr(scan, "meta", None) or {}
    files = meta.get("source_files") or []
    if not files or _folder is None:
        return
    parent = Path(files[0]).parent
    if parent.parent == _folder:
        shutil.rmtree(parent, ignore_errors=True)


# -- loading ----------------------------------------------------------------------------------------


def _retrieve(
    client: Any, address: Address, series: StudySeries, folder: Path
) -> Generator[tuple[int, int | None], None, int]:
    """Stream the series' instances into ``folder`` (``00001.dcm``, ...): yields (received, expected)."""
    import pydicom

    expected = series.instances
    count = 0
    yield count, expected
    try:
        for ds in client.iter_series(address.study, series.uid):
            count += 1
            try:
                pydicom.dcmwrite(folder / f"{count:05d}.dcm", ds, enforce_file_format=True)
            except OSError as error:  # a full disk
                raise FileFormatError(
                    f"{address}: cannot keep the retrieved instances in {folder.parent} ({error.strerror or error})"
                ) from None
            del ds  # one instance in memory at a time
            yield count, expected
    except (OSError, ValueError) as error:  # requests' errors are OSErrors, a broken multipart a ValueError
        import requests

        if isinstance(error, VolcamError) or not (
            _broke_off(error) or (count and isinstance(error, requests.RequestException | ValueError))
        ):
            raise
        of = f" of {expected}" if expected else ""
        raise FileFormatError(
            f"{address}: the transfer broke off after {count}{of} instances ({_reason(error)}); nothing was kept"
        ) from None
    if expected is not None and count != expected:
        raise FileFormatError(
            f"{address}: the server sent {count} of the series' {expected} instances; nothing was kept"
        )
    if count == 0:
        raise FileFormatError(f"{address}: the server sent no instance of the series")
    return count


def _as_said_of(error: VolcamError, folder: Path, address: Address) -> VolcamError:
    """The reader's error about the retrieval folder, said of the address (same class where it can be)."""
    import volcam.errors

    kind = next(c for c in type(error).__mro__ if vars(volcam.errors).get(c.__name__) is c)
    return kind(str(error).replace(os.fspath(folder), str(address)))


def _read(folder: Path, address: Address) -> MetaTensor:
    """The retrieved series read by the one DICOM reader, its messages naming the address."""
    from volcam.io.dicom.reader import load_dicom
    from volcam.io.image import warn_problem

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", VolcamWarning)
        try:
            scan = load_dicom(folder)
        except VolcamError as error:
            raise _as_said_of(error, folder, address) from None
    meta = scan.meta
    meta["problems"] = [str(p).replace(os.fspath(folder), str(address)) for p in meta.get("problems", [])]
    meta["filename_or_obj"] = str(address)
    for warning in caught:
        if issubclass(warning.category, VolcamWarning):
            warn_problem([], str(warning.message).replace(os.fspath(folder), str(address)))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return scan


def load_url_steps(url: str, series: str | int | None = None) -> Generator[tuple[int, int | None], None, MetaTensor]:
    """:func:`load_url` as steps: yields (instances received, instances expected or ``None``), returns the scan.

    For a caller that shows progress its own way (the napari dock, in a worker thread). Closing the
    generator early removes what was received.
    """
    address = parse_address(url)
    client = _client(address)
    missing = "no such study or series on the server"
    with _speaking(address, client, FileFormatError, missing=missing):
        chosen = _choose(address, _list_series(client, address), series)
    address = Address(address.root, address.study, chosen.uid)
    folder = _process_folder() / uuid.uuid4().hex
    folder.mkdir(mode=0o700)
    try:
        with _speaking(address, client, FileFormatError, missing=missing):
            yield from _retrieve(client, address, chosen, folder)
        return _read(folder, address)
    except BaseException:  # an error, Ctrl-C or the caller closing the steps: nothing is kept
        shutil.rmtree(folder, ignore_errors=True)
        raise


def load_url(url: str, series: str | int | None = None, *, bar: Any = None) -> MetaTensor:
    """A study's or series' images from a DICOMweb server, as :func:`volcam.load` reads a DICOM folder.

    Args:
        url: ``http(s)://host/<root>/studies/<StudyInstanceUID>[/series/<SeriesInstanceUID>]``.
        series: in a study of several series, which one (UID, description or number); without it
            (and without ``/series/`` in the address) such a study is an error listing its series.

    A progress bar counts the instances received: ``bar`` (any ``tqdm``, e.g. napari's ``progress``),
    else a tqdm bar on a terminal. ``meta["filename_or_obj"]`` is the address;
    ``meta["source_files"]`` the retrieved files (see :func:`release`).
    """
    from tqdm.auto import tqdm

    steps = load_url_steps(url, series)
    own = bar is None
    if bar is None:
        bar = tqdm(desc="DICOMweb", unit="instance", leave=False, disable=None)
    try:
        while True:
            try:
                received, expected = next(steps)
            except StopIteration as done:
                scan: MetaTensor = done.value
                return scan
            if expected is not None and bar.total != expected:
                bar.total = expected
                bar.refresh()
            bar.update(received - bar.n)
    finally:
        if own:
            bar.close()
        steps.close()


# -- storing ----------------------------------------------------------------------------------------


def check_store(url: str) -> Address:
    """The service to store to, checked before any work: a DICOMweb root that answers with these credentials."""
    address = parse_address(url, study=False)
    root = Address(address.root)
    client = _client(root)
    with _speaking(root, client, OutputError):
        answer = client.search_for_studies(limit=1)
    if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
        raise OutputError(f"{root}: not a DICOMweb service (the answer is not DICOM JSON); give {_SHAPE}")
    return root


def store(paths: Iterable[str | os.PathLike], url: str) -> int:
    """Send DICOM files (a folder: every file in it) to the DICOMweb service at ``url`` (STOW-RS).

    Args:
        paths: what :func:`volcam.io.write.write_dicom` wrote (its folders; a ``.dcm`` file is one
            instance), listed by :func:`volcam.io.dicom.instances.dicom_instances`.
        url: the service's root (``http://host/dicom-web``); a study or series address stands for
            its root (each instance says which study it belongs to).

    Returns:
        The number of instances the server stored.

    All instances go in one request, so a transfer that breaks off stores none of them. Raises an
    :class:`~volcam.errors.OutputError` (one line) when the server cannot be reached, refuses the
    credentials, is not DICOMweb, or refuses any instance.
    """
    from volcam.io.dicom.headers import read_header

    root = Address(parse_address(url, study=False).root)
    files = [file for path in paths for file in dicom_instances(path)]
    if not files:
        raise InputError(f"{root}: nothing to store (no DICOM file given)")
    datasets = [read_header(f, pixels=True) for f in files]
    client = _client(root)
    with _speaking(root, client, OutputError):
        answer = client.store_instances(datasets)
    failed = answer.get("FailedSOPSequence") or []
    stored = answer.get("ReferencedSOPSequence") or []
    if failed or len(stored) != len(datasets):
        reasons = sorted({f"0x{int(item.get('FailureReason', 0)):04X}" for item in failed})
        why = f" (failure reason {', '.join(reasons)})" if reasons else ""
        raise OutputError(f"{root}: the server stored {len(stored)} of {len(datasets)} instance(s){why}")
    return len(stored)
