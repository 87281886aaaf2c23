"""The benchmark suites: build (cold / no-change / one file touched), unpack, inspect, and the floor."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from .measure import Sample, run_quiet, run_timed
from .tools import LAYERKIT, Builder
from .workloads import Workload, touch

#: (suite, workload, phase, tool) -> samples
Results = dict[tuple[str, str, str, str], list[Sample]]


def _record(results: Results, key: tuple[str, str, str, str], sample: Sample) -> None:
    results.setdefault(key, []).append(sample)
    print(f"  {key[1]:<12} {key[2]:<16} {key[3]:<15} {sample.seconds:8.3f}s {sample.peak_rss_mb:7.0f} MB",
          file=sys.stderr)


def build_suite(results: Results, workloads: list[Workload], builders: list[Builder], runs: int) -> None:
    """Per run and workload, each tool in turn (interleaved): cold build, no-change rebuild, touch rebuild."""
    generation = 0
    for run in range(runs):
        for wl in workloads:
            for b in builders:
                tag = f"bench-{wl.context.name}:{b.name}"
                b.reset()
                _record(results, ("build", wl.name, "cold", b.name), b.build(wl.context, tag))
                _record(results, ("build", wl.name, "no-change", b.name), b.build(wl.context, tag))
                generation += 1
                touch(wl, generation)
                _record(results, ("build", wl.name, "touch one file", b.name), b.build(wl.context, tag))


def export_oci(builder_home: Path, tag: str, dest: Path) -> Path:
    """The layerkit-built image as an OCI layout, for the unpack and inspect suites."""
    shutil.rmtree(dest, ignore_errors=True)
    run_quiet([*LAYERKIT, "--home", str(builder_home), "copy", tag, f"oci:{dest}:bench"])
    return dest


def unpack_suite(results: Results, name: str, layout: Path, scratch: Path, runs: int) -> None:
    """layerkit unpack vs umoci unpack vs applying each layer with sequential ``tar -x`` (no whiteouts)."""
    import json

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    layer_files = [layout / "blobs" / "sha256" / d["digest"][7:] for d in manifest["layers"]]

    def fresh(tool: str) -> Path:
        target = scratch / f"unpack-{tool}"
        shutil.rmtree(target, ignore_errors=True)
        return target

    tools: dict[str, Callable[[Path], list[str]]] = {
        "layerkit": lambda t: [*LAYERKIT, "unpack", f"oci:{layout}:bench", str(t)],
        "umoci": lambda t: ["umoci", "unpack", "--image", f"{layout}:bench", str(t)],
        "tar -x (sequential)": lambda t: [
            "/bin/sh", "-c",
            f"mkdir -p {t} && " + " && ".join(f"tar -xzf {f} -C {t}" for f in layer_files)],
    }
    for _ in range(runs):
        for tool, argv in tools.items():
            target = fresh(tool)
            _record(results, ("unpack", name, "unpack", tool), run_timed(argv(target)))
            shutil.rmtree(target, ignore_errors=True)


def inspect_suite(results: Results, name: str, layout: Path, scratch: Path, runs: int) -> None:
    """layerkit inspect --layers --waste vs dive --ci on the same docker-archive."""
    archive = scratch / f"{name.replace(' ', '-')}.tar"
    archive.unlink(missing_ok=True)
    run_quiet(["skopeo", "copy", "-q", f"oci:{layout}:bench", f"docker-archive:{archive}:bench:latest"])
    tools = {
        "layerkit": [*LAYERKIT, "inspect", "--layers", "--waste", f"docker-archive:{archive}"],
        "dive": ["dive", "--ci", "--source", "docker-archive", str(archive)],
    }
    if not shutil.which("dive"):
        del tools["dive"]
    for _ in range(runs):
        for tool, argv in tools.items():
            _record(results, ("inspect", name, "inspect", tool), run_timed(argv, env={"CI": "true"}))


def floor_suite(results: Results, wl: Workload, home: Path, runs: int) -> None:
    """The hardware floor for the same bytes: tar + hash (+ compressor), and layerkit writing one layer."""
    src = wl.context
    floors = {
        "tar | sha256sum": f"tar -C {src} -cf - . | sha256sum",
        "tar | gzip -6 | sha256sum": f"tar -C {src} -cf - . | gzip -6 | sha256sum",
        "tar | pigz | sha256sum": f"tar -C {src} -cf - . | pigz | sha256sum",
        "tar | zstd -T0 | sha256sum": f"tar -C {src} -cf - . | zstd -T0 -3 -q | sha256sum",
    }
    dockerfile = home.parent / "Dockerfile.floor"
    dockerfile.write_text("FROM scratch\nCOPY . /src\n")
    for _ in range(runs):
        for tool, cmd in floors.items():
            if shutil.which(cmd.split("|")[1].split()[0]) is None:
                continue
            _record(results, ("floor", wl.name, "layer write", tool), run_timed([cmd], shell=True))
        for codec in ("gzip", "zstd"):
            shutil.rmtree(home, ignore_errors=True)
            argv = [*LAYERKIT, "--home", str(home), "build", "--no-cache", "--progress", "plain",
                    "--compression", codec, "-f", str(dockerfile), "-t", "floor", str(src)]
            _record(results, ("floor", wl.name, "layer write", f"layerkit ({codec})"), run_timed(argv))


def tree_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out else 0
