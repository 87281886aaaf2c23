"""The store's home: a relative ``--home``/``$LAYERKIT_HOME`` is taken relative to where layerkit
was started, and stays right for code that changes directory (a RUN sandbox mounts paths below it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerkit.store import LocalStore


def test_a_relative_home_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = LocalStore("rel-home")
    assert store.home == tmp_path / "rel-home"
    assert Path(store.tmp_dir).is_absolute() and Path(store.snapshots_dir).is_absolute()


@pytest.mark.skipif(os.geteuid() != 0, reason="the native RUN executor needs root")
def test_a_build_with_run_works_from_a_relative_home(tmp_path: Path, alpine_image_oci: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base:1\nRUN echo ran > /ran\n")
    cli = [sys.executable, "-m", "layerkit", "--home", "rel-home"]
    env = {k: v for k, v in os.environ.items() if k != "LAYERKIT_HOME"}
    subprocess.run([*cli, "copy", f"oci:{alpine_image_oci}:3.20", "base:1"], cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    done = subprocess.run([*cli, "build", "--progress", "plain", "--network", "none", "-t", "rel:1", "ctx"], check=False,
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cat = subprocess.run([*cli, "cat", "rel:1", "/ran"], check=True, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert cat.stdout == "ran\n"
