"""The benchmark harness keeps working: ``python -m bench --smoke`` runs every suite with every tool once.

No assertion on seconds (CI machines are noisy and shared); only that each tool produced a figure.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: (suite, tools) every smoke run must report
EXPECTED = {
    "build": {"layerkit", "buildkit", "docker-classic", "buildah"},
    "unpack": {"layerkit", "umoci", "tar -x (sequential)", "layerkit start-up"},
    "inspect": {"layerkit", "dive"},
    "floor": {
        "tar | sha256sum",
        "tar | sha256 | gzip -6 | sha256",
        "tar | sha256 | pigz -6 | sha256",
        "tar | sha256 | pigz -2 | sha256",
        "tar | sha256 | zstd -T0 -3 | sha256",
        "layerkit none",
        "layerkit gzip -2 (default)",
        "layerkit gzip -6",
        "layerkit zstd -3",
    },
    "memory": {"layerkit"},
}


def test_bench_smoke_runs_every_suite_with_every_tool(shared_dir: Path) -> None:
    work = Path(
        tempfile.mkdtemp(
            prefix="lk-bench-smoke-",
            dir="/dev/shm" if Path("/dev/shm").is_dir() else None,
        )
    )
    try:
        out_json, out_md = work / "results.json", work / "benchmarks.md"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "--smoke",
                "--workdir",
                str(work / "scratch"),
                "--base",
                str(shared_dir / "fixtures" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"),
                "--json-out",
                str(out_json),
                "--out",
                str(out_md),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        doc = json.loads(out_json.read_text())
        assert doc["meta"]["smoke"] is True
        found: dict[str, set[str]] = {}
        for row in doc["results"]:
            assert row["runs"] == 1 and row["median_s"] > 0 and row["peak_rss_mb"] > 0
            found.setdefault(row["suite"], set()).add(row["tool"])
        assert found == EXPECTED
        phases = {r["phase"] for r in doc["results"] if r["suite"] == "build"}
        assert phases == {"cold", "no-change", "touch one file"}
        assert {t["target"] for t in doc["targets"]}, (
            "targets are evaluated even when most are unmeasured"
        )
        assert (
            "## Targets" in proc.stdout and not out_md.exists()
        )  # a smoke run never rewrites the report
    finally:
        shutil.rmtree(work, ignore_errors=True)
