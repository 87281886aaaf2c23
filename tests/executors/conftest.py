"""Fixtures for the RUN executor tests: a store on tmpfs, the Alpine base, each executor."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exec_helpers import EXECUTORS, load_executor

from layerkit.store import LocalStore, open_store


@pytest.fixture(scope="session")
def exec_store() -> Iterator[LocalStore]:
    """One store for the session (snapshots are reused across tests, as across builds), on tmpfs."""
    home = Path(tempfile.mkdtemp(prefix="lk-exec-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    yield open_store(home)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def alpine_image(alpine_image_oci: Path) -> Any:
    from layerkit.sources.oci import open_image

    return open_image(alpine_image_oci, "3.20")


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> Any:
    if request.param == "docker":
        request.getfixturevalue("docker_client")  # starts dockerd when none answers
    return load_executor(request.param)
