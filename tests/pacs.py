"""A real PACS for the tests: Orthanc with its DICOMweb plugin on a free localhost port.

``orthanc`` (session-wide) starts ``/usr/sbin/Orthanc`` with a JSON configuration of its own: HTTP on
a free port of 127.0.0.1, the DICOM port off, a temporary storage folder, HTTP basic authentication
(one user with a random password) and the DICOMweb plugin. It waits until the server answers, loads
the shipped CT series (``sample_data/ct_covid_sample_dicom``) and a study of two copies of it with
new UIDs through Orthanc's own REST API (not volcam's code), and stops the server at the end. Tests
that need it skip with the reason when it cannot start (not installed, no free port, it exits).

``pacs`` is the same server with its credentials in the environment (``VOLCAM_DICOMWEB_USER`` and
``VOLCAM_DICOMWEB_PASSWORD``, ``VOLCAM_DICOMWEB_HOSTS`` naming 127.0.0.1), as a user would set
them. ``DyingServer`` stands in front of it and dies in the middle of a transfer.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from volcam import sample_data
from volcam.io.dicom.web import HOSTS_VARIABLE, PASSWORD_VARIABLE, TOKEN_VARIABLE, USER_VARIABLE

ORTHANC = Path("/usr/sbin/Orthanc")
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")  # dpkg -L orthanc-dicomweb
START_S = 30.0


@dataclass
class Pacs:
    """A running Orthanc: ``url`` is its DICOMweb root; ``rest`` its own REST API (for checks)."""

    url: str
    rest: str
    user: str
    password: str
    study: str  # the shipped CT's StudyInstanceUID
    series: str  # and its SeriesInstanceUID
    pair_study: str  # a study holding two copies of the CT series
    pair_series: tuple[str, str]
    storage: Path

    @property
    def auth(self) -> tuple[str, str]:
        return self.user, self.password

    def study_url(self, study: str | None = None) -> str:
        return f"{self.url}/studies/{study or self.study}"

    def series_url(self, study: str | None = None, series: str | None = None) -> str:
        return f"{self.study_url(study)}/series/{series or self.series}"

    def upload(self, files: list[Path]) -> None:
        """Store files with Orthanc's REST API (``POST /instances``)."""
        with requests.Session() as session:
            session.auth = self.auth
            for file in files:
                answer = session.post(f"{self.rest}/instances", data=file.read_bytes(), timeout=30)
                answer.raise_for_status()

    def copy_of_ct(self, folder: Path, study: str | None = None, description: str | None = None) -> tuple[str, str]:
        """Upload a copy of the shipped CT series with new UIDs (in ``study``, else a new one): (study, series)."""
        study = study or generate_uid()
        series = generate_uid()
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for source in sorted(Path(sample_data.file(sample_data.CT_DICOM)).glob("*.dcm")):
            ds = pydicom.dcmread(source)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            if description is not None:
                ds.SeriesDescription = description
            ds.save_as(folder / source.name, enforce_file_format=True)
            files.append(folder / source.name)
        self.upload(files)
        return study, series

    def series_of(self, study: str) -> list[dict]:
        """QIDO-RS of the study's series, asked with plain requests."""
        answer = requests.get(
            f"{self.url}/studies/{study}/series",
            auth=self.auth,
            headers={"Accept": "application/dicom+json"},
            timeout=30,
        )
        answer.raise_for_status()
        return answer.json() if answer.content else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(folder: Path, port: int, user: str, password: str) -> Path:
    storage = folder / "storage"
    storage.mkdir()
    config = {
        "Name": "volcam-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {user: password},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "ConcurrentJobs": 1,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def _wait(process: subprocess.Popen, url: str, auth: tuple[str, str], log: Path) -> str | None:
    """None once ``url`` answers 200; else why the server did not come up."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            return f"Orthanc exited with status {process.returncode}: {tail}"
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, auth=auth, timeout=2).status_code == 200:
                return None
        time.sleep(0.1)
    return f"Orthanc did not answer within {START_S:g} s"


@contextlib.contextmanager
def running_orthanc(folder: Path) -> Iterator[Pacs | str]:
    """A started Orthanc with the shipped CT in it, or the reason it cannot start; stopped at the end."""
    if not ORTHANC.is_file() or not PLUGIN.is_file():
        yield "Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)"
        return
    user, password = "volcam", secrets.token_hex(12)
    port = free_port()
    config = _config(folder, port, user, password)
    log = folder / "orthanc.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(ORTHANC), str(config)], stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    try:
        rest = f"http://127.0.0.1:{port}"
        why = _wait(process, f"{rest}/dicom-web/studies", (user, password), log)
        if why is not None:
            yield why
            return
        first = pydicom.dcmread(next(Path(sample_data.file(sample_data.CT_DICOM)).glob("*.dcm")))
        pacs = Pacs(
            url=f"{rest}/dicom-web", rest=rest, user=user, password=password, study=first.StudyInstanceUID,
            series=first.SeriesInstanceUID, pair_study="", pair_series=("", ""), storage=folder / "storage",
        )  # fmt: skip
        pacs.upload(sorted(Path(sample_data.file(sample_data.CT_DICOM)).glob("*.dcm")))
        pair, one = pacs.copy_of_ct(folder / "pair-1", description="first copy")
        _, two = pacs.copy_of_ct(folder / "pair-2", study=pair, description="second copy")
        pacs.pair_study, pacs.pair_series = pair, (one, two)
        yield pacs
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory) -> Iterator[Pacs]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as found:
        if isinstance(found, str):
            pytest.skip(found)
        yield found


@pytest.fixture
def pacs(orthanc: Pacs, monkeypatch) -> Pacs:
    """The running Orthanc with its user and password in the environment, and no token; the credentials
    may go to this machine's loopback address (any port: the server and those in front of it)."""
    monkeypatch.setenv(USER_VARIABLE, orthanc.user)
    monkeypatch.setenv(PASSWORD_VARIABLE, orthanc.password)
    monkeypatch.setenv(HOSTS_VARIABLE, "127.0.0.1")
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    return orthanc


class DyingServer:
    """A server in front of the PACS that dies in the middle of a transfer: it passes requests on, and
    after ``limit`` bytes of a series' pixel data (WADO-RS) or of a request body (STOW-RS) it closes
    the connection and stops listening; later connections are refused.
    """

    def __init__(self, pacs: Pacs, limit: int = 200_000) -> None:
        self.pacs, self.limit = pacs, limit
        self.died = threading.Event()
        dying = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _die(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                dying.died.set()
                threading.Thread(target=dying.stop, daemon=True).start()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(min(length, dying.limit) if length else dying.limit)
                self._die()

            def do_GET(self) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "accept-encoding")}
                headers["Accept-Encoding"] = "identity"  # the body is passed on as it comes
                upstream = requests.get(dying.pacs.rest + self.path, headers=headers, stream=True, timeout=30)
                body = upstream.raw.read()
                cut = "/series/" in self.path and not self.path.rstrip("/").endswith(("/metadata", "/series"))
                self.send_response(upstream.status_code)
                for key, value in upstream.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if cut and len(body) > dying.limit:
                    self.wfile.write(body[: dying.limit])
                    self.wfile.flush()
                    self._die()
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def stop(self) -> None:
        """Stop serving and close the listening socket: a new connection is refused."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> DyingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.died.is_set():
            self.stop()
        self._thread.join(10)
