"""The seed corpus and the oracle's child, made once per test session (per xdist worker)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fuzz.oracle import Oracle
from fuzz.seeds import Seed, build_seeds


@pytest.fixture(scope="session")
def seeds(tmp_path_factory) -> list[Seed]:
    return build_seeds(tmp_path_factory.mktemp("fuzz-seeds"))


@pytest.fixture(scope="session")
def oracle(tmp_path_factory) -> Iterator[Oracle]:
    with Oracle(tmp_path_factory.mktemp("fuzz-oracle"), timeout=60.0) as found:
        yield found
