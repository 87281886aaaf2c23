"""Unpacking a layer for a RUN reads all of its headers: the snapshot keeps them as the layer's member
list, so a COPY planned on that layer later does not decompress it a second time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerkit.build.builder import build

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the native executor needs root")


def test_a_copy_after_a_run_reads_the_base_once(tmp_path: Path, layerkit_home: Path, alpine_image_oci: Path,
                                                 opened_layers: list[str]) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a\n")
    (ctx / "Dockerfile").write_text(f"FROM oci:{alpine_image_oci}:3.20\nRUN echo ran > /ran\nCOPY a.txt /etc/a.txt\n")
    result = build(ctx, home=layerkit_home, executor="native", network="none")
    base, run = (str(layer.digest) for layer in result.image.layers[:2])
    assert opened_layers.count(base) == 1  # unpacked for the RUN; the COPY took its members from that read
    assert opened_layers == [base, run]
