"""OHIF's static build and a PACS's DICOMweb on one localhost origin, as a hospital would deploy them.

``OhifSite`` is a threaded HTTP server on a free port of 127.0.0.1 that

- serves OHIF's built ``dist/`` folder as a single-page app: a path that names no file (``/viewer``)
  gets ``index.html``, so the app's router sees it;
- serves an ``app-config.js`` of its own instead of the build's: one DICOMweb data source at this
  origin's ``/dicom-web`` (the build's points at a public demo server, unreachable here);
- passes ``/dicom-web/*`` on to Orthanc with its basic-auth header, so the browser needs no
  credentials and makes no cross-origin request (OHIF would otherwise need CORS and a login);
- records every ``/dicom-web`` answer's status, so a test can say that none failed.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

import requests

# The types a browser insists on (a module script or WebAssembly with another type is refused);
# Python's own guesses depend on the machine's /etc/mime.types.
MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".map": "application/json",
}
# Hop-by-hop headers and those the proxy rewrites: never passed on as they came.
NOT_PASSED_ON = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


def app_config(data_source_name: str = "orthanc") -> str:
    """OHIF's ``window.config``: one DICOMweb data source, Orthanc's DICOMweb at this origin.

    The fields follow OHIF's own Orthanc example (platform/app/public/config/local_orthanc.js):
    Orthanc answers QIDO-RS without ``includefield``, and sends each frame as ``multipart/related``
    without quotes around the type. The investigational-use dialog would cover the viewer.
    """
    root = "/dicom-web"
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,  # the CI machine has 2 cores
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": False,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": data_source_name,
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": data_source_name,
                "configuration": {
                    "friendlyName": "Orthanc (volcam test)",
                    "name": data_source_name,
                    "wadoUriRoot": root,
                    "qidoRoot": root,
                    "wadoRoot": root,
                    "qidoSupportsIncludeField": False,
                    "supportsReject": False,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "omitQuotationForMultipartRequest": True,
                    "bulkDataURI": {"enabled": True},
                },
            }
        ],
    }
    return f"window.config = {json.dumps(config, indent=1)};\n"


@dataclass(frozen=True)
class Answer:
    """One ``/dicom-web`` request the site passed on (all are GET), and Orthanc's status."""

    path: str
    status: int


class OhifSite:
    """OHIF's ``dist`` and Orthanc's DICOMweb (``rest`` is Orthanc's root URL) at ``self.url``; a
    context manager that stops the server and closes its port on the way out."""

    def __init__(self, dist: Path, rest: str, auth: tuple[str, str]) -> None:
        self.dist, self.rest, self.auth = dist, rest.rstrip("/"), auth
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._local = threading.local()  # one requests.Session per server thread (keep-alive to Orthanc)
        self._sessions: list[requests.Session] = []
        config = app_config().encode()
        site = self

        class Handler(SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the browser fetches ~100 files and ~50 frames

            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(dist), **kwargs)

            def log_message(self, *args: object) -> None:
                pass

            def guess_type(self, path: str | os.PathLike[str]) -> str:
                return MIME_TYPES.get(Path(path).suffix.lower()) or super().guess_type(path)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path.startswith("/dicom-web/") or path == "/dicom-web":
                    site._pass_on(self)
                elif path == "/app-config.js":
                    self._send(config, "text/javascript; charset=utf-8")
                elif not Path(self.translate_path(path)).exists() and "." not in path.rsplit("/", 1)[-1]:
                    self.path = "/index.html"  # a route of the app (/viewer, /): its router takes it from here
                    super().do_GET()
                else:
                    super().do_GET()

            def _send(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # a thread per connection
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="ohif-site", daemon=True)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.auth = self.auth
            with self._lock:
                self._sessions.append(session)
        return session

    def _pass_on(self, handler: SimpleHTTPRequestHandler) -> None:
        """Ask Orthanc for ``handler.path`` with the credentials and send its answer back as it came."""
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in NOT_PASSED_ON}
        # Orthanc builds the BulkDataURIs of its metadata from the Host it was asked on: this site's,
        # so the browser fetches the bulk data from here too
        headers["Host"] = handler.headers.get("Host", self.url.removeprefix("http://"))
        headers["Accept-Encoding"] = "identity"  # the body goes on byte for byte
        try:
            upstream = self._session().get(self.rest + handler.path, headers=headers, timeout=60)
            status, body = upstream.status_code, upstream.content
            kind = upstream.headers.get("Content-Type", "application/octet-stream")
        except requests.RequestException as error:
            status, body, kind = 502, str(error).encode(), "text/plain"
        with self._lock:
            self.answers.append(Answer(handler.path, status))
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def failures(self) -> list[Answer]:
        """The ``/dicom-web`` requests Orthanc answered with an error (status 400 or more)."""
        with self._lock:
            return [a for a in self.answers if a.status >= 400]

    def __enter__(self) -> OhifSite:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)
        for session in self._sessions:
            session.close()
