"""``--store`` to a real PACS (Orthanc, its own instance here: the session's is shared) that stops after
part of the cohort.

Cases stored before the stop are finished; the others are error rows that may pass (not recorded as
done, no folder left). When the server is back (same port, same storage), a resume stores exactly the
rest: every case's parametric map is in the PACS once, and the finished cases are not redone.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
from pathlib import Path

import pytest
import requests

import volcam
from faults.common import FAST, assert_resumed, assert_whole, case_ids, cohort, finished, stop, wait_until
from pacs import ORTHANC, PLUGIN, _config, _wait, free_port
from volcam import sample_data as sd
from volcam.io.dicom import web


class Server:
    """Orthanc with DICOMweb on a fixed port and storage folder, that can be stopped and started again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.user, self.password = "volcam", secrets.token_hex(12)
        self.port = free_port()
        self.config = _config(folder, self.port, self.user, self.password)
        self.rest = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.rest}/dicom-web"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        log = self.folder / f"orthanc-{self.starts}.log"
        with open(log, "wb") as out:
            self.process = subprocess.Popen([str(ORTHANC), str(self.config)], stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        why = _wait(self.process, f"{self.url}/studies", (self.user, self.password), log)
        if why is not None:
            self.stop()
            pytest.skip(why)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def series(self) -> list[dict]:
        answer = requests.get(f"{self.rest}/series?expand", auth=(self.user, self.password), timeout=30)
        answer.raise_for_status()
        return answer.json()


@pytest.fixture
def server(tmp_path, monkeypatch):
    if not ORTHANC.is_file() or not PLUGIN.is_file():
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)")
    found = Server(tmp_path / "orthanc")
    monkeypatch.setenv(web.USER_VARIABLE, found.user)
    monkeypatch.setenv(web.PASSWORD_VARIABLE, found.password)
    monkeypatch.delenv(web.TOKEN_VARIABLE, raising=False)
    hosts = getattr(web, "HOSTS_VARIABLE", None)  # where credentials may go, when volcam asks
    if hosts:
        monkeypatch.setenv(hosts, f"127.0.0.1:{found.port}")
    try:
        yield found
    finally:
        found.stop()


@pytest.mark.slow
def test_the_pacs_stops_part_way_and_a_resume_stores_the_rest_once(server, tmp_path) -> None:
    server.start()
    manifest = cohort(tmp_path / "data", 6)
    out = tmp_path / "out"

    def stop_after_two() -> None:
        wait_until(lambda: len(finished(out, manifest)) >= 2, 240, "two stored cases", 0.01)
        server.stop()

    stopper = threading.Thread(target=stop_after_two, daemon=True)
    stopper.start()
    table = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, store=server.url, prefetch=False, **FAST)
    stopper.join(30)
    rows = table.set_index("case")
    stored_first = [c for c in case_ids(manifest) if rows.loc[c, "status"] == "ok"]
    waiting = [c for c in case_ids(manifest) if rows.loc[c, "status"] != "ok" and c != "case002"]
    assert len(stored_first) >= 2 and waiting, list(rows["status"])
    for case in waiting:  # one line naming the server; not finished: no folder
        assert rows.loc[case, "error"].startswith("store: "), rows.loc[case, "error"]
        assert not (out / case).exists()
    assert_whole(out, manifest)
    before = finished(out, manifest)
    assert set(before) == {*stored_first, "case002"}

    server.start()  # the same port and storage: what was stored is still there
    assert len(server.series()) == len(stored_first)
    again = volcam.run_cohort(manifest, sd.file(sd.CT_CARD), out, store=server.url, prefetch=False, **FAST)
    assert_resumed(again, before, out, manifest)
    series = server.series()
    assert len(series) == len(case_ids(manifest)) - 1  # one parametric map per ok case, none twice
    assert all(s["MainDicomTags"].get("Modality") for s in series)
