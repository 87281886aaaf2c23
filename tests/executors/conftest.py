"""Fixtures for the RUN executor tests: a store on tmpfs, the Alpine base, each executor."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exec_helpers import EXECUTORS, NOBODY_SCRIPT, load_executor, unprivileged_python

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


@pytest.fixture
def nobody_dir(alpine_image_oci: Path) -> Iterator[Path]:
    """A tmpfs dir owned by 'nobody' with the Alpine layout and the step runner (exec_helpers)."""
    if os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs root (the suite runs rootless as this user then)")
    if shutil.which("setpriv") is None or unprivileged_python() is None:
        pytest.skip("needs setpriv (util-linux) and a system python3 to run as 'nobody'")
    base = Path(tempfile.mkdtemp(prefix="lk-exec-nobody-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    base.chmod(0o777)
    shutil.copytree(alpine_image_oci, base / "alpine")
    (base / "run.py").write_text(NOBODY_SCRIPT)
    subprocess.run(["chown", "-R", "nobody", str(base)], check=True)
    yield base
    shutil.rmtree(base, ignore_errors=True)
