"""The benchmark suites: build (cold / no-change / one file touched), unpack, inspect, the floor, memory.

Every suite runs its tools interleaved (A B C A B C …) so drift on a shared machine hits each tool alike.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from .measure import Sample, run_quiet, run_timed
from .tools import LAYERKIT, Builder, LayerkitBuilder, dive_path
from .workloads import Workload, touch

#: (suite, workload, phase, tool) -> samples
Results = dict[tuple[str, str, str, str], list[Sample]]


def _record(results: Results, key: tuple[str, str, str, str], sample: Sample) -> None:
    results.setdefault(key, []).append(sample)
    print(
        f"  {key[0]:<7} {key[1]:<14} {key[2]:<15} {key[3]:<24} {sample.seconds:8.3f}s {sample.peak_rss_mb:6.0f} MB",
        file=sys.stderr,
        flush=True,
    )


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def build_suite(
    results: Results, workloads: list[Workload], builders: list[Builder], runs: int
) -> None:
    """Per run and workload, each tool in turn: cold build, no-change rebuild, rebuild after a touch."""
    generation = 0
    for _ in range(runs):
        for wl in workloads:
            for b in builders:
                tag = f"bench-{wl.context.name}:{b.name}"
                b.reset()
                _record(
                    results,
                    ("build", wl.name, "cold", b.name),
                    b.build(wl.context, tag),
                )
                _record(
                    results,
                    ("build", wl.name, "no-change", b.name),
                    b.build(wl.context, tag),
                )
                generation += 1
                touch(wl, generation)
                _record(
                    results,
                    ("build", wl.name, "touch one file", b.name),
                    b.build(wl.context, tag),
                )


def layerkit_image(lk: LayerkitBuilder, wl: Workload, dest: Path) -> Path:
    """The workload built by layerkit (a cache hit after the build suite), as an OCI layout ``dest:bench``."""
    tag = f"bench-{wl.context.name}:layerkit"
    lk.build(wl.context, tag)
    shutil.rmtree(dest, ignore_errors=True)
    run_quiet([*LAYERKIT, "--home", str(lk.home), "copy", tag, f"oci:{dest}:bench"])
    return dest


def _layer_blobs(layout: Path) -> list[Path]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(
        (layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text()
    )
    return [layout / "blobs" / "sha256" / d["digest"][7:] for d in manifest["layers"]]


def unpack_suite(
    results: Results,
    name: str,
    layout: Path,
    scratch: Path,
    runs: int,
    tools: tuple[str, ...] = ("layerkit", "umoci", "tar -x (sequential)", "layerkit start-up"),
) -> None:
    """``layerkit unpack`` vs ``umoci unpack`` vs applying each layer with ``tar -xzf`` in turn.

    ``tar -x`` ignores whiteouts (it is a bound, not a correct unpack); umoci also writes its mtree
    manifest (it hashes every file), which is part of what its unpack costs. ``layerkit start-up``
    (``layerkit --version``: interpreter, site, the CLI) is the floor under every layerkit figure.
    """
    layer_files = _layer_blobs(layout)
    home = scratch / "unpack-home"
    argvs: dict[str, Callable[[Path], list[str]]] = {
        "layerkit": lambda t: [
            *LAYERKIT,
            "--home",
            str(home),
            "unpack",
            f"oci:{layout}:bench",
            str(t),
        ],
        "umoci": lambda t: ["umoci", "unpack", "--image", f"{layout}:bench", str(t)],
        "layerkit start-up": lambda t: [*LAYERKIT, "--version"],
        "tar -x (sequential)": lambda t: [
            "/bin/sh",
            "-c",
            f"mkdir -p {t} && "
            + " && ".join(f"tar -xzf {f} -C {t}" for f in layer_files),
        ],
    }
    for _ in range(runs):
        for tool in tools:
            target = scratch / f"unpack-{_slug(tool)}"
            shutil.rmtree(target, ignore_errors=True)
            _record(
                results,
                ("unpack", name, "unpack", tool),
                run_timed(argvs[tool](target)),
            )
            shutil.rmtree(target, ignore_errors=True)


def inspect_suite(
    results: Results, name: str, layout: Path, scratch: Path, runs: int
) -> None:
    """``layerkit inspect --layers --waste`` vs ``dive --ci`` on the same docker-archive.

    dive's CI rules are disabled (the workloads waste space on purpose): both tools index every layer
    and compute the waste figures; neither judges them.
    """
    archive = scratch / f"{_slug(name)}.tar"
    archive.unlink(missing_ok=True)
    run_quiet(
        [
            "skopeo",
            "copy",
            "-q",
            f"oci:{layout}:bench",
            f"docker-archive:{archive}:bench:latest",
        ]
    )
    argvs = {
        "layerkit": [
            *LAYERKIT,
            "--home",
            str(scratch / "inspect-home"),
            "inspect",
            "--layers",
            "--waste",
            f"docker-archive:{archive}",
        ],
        "dive": [
            dive_path(),
            "--ci",
            "--source",
            "docker-archive",
            "--lowestEfficiency",
            "0",
            "--highestUserWastedPercent",
            "disabled",
            "--highestWastedBytes",
            "disabled",
            str(archive),
        ],
    }
    for _ in range(runs):
        for tool, argv in argvs.items():
            _record(
                results,
                ("inspect", name, "inspect", tool),
                run_timed(argv, env={"CI": "true"}),
            )
    archive.unlink(missing_ok=True)


#: floor pipelines: (tool label, compressor command or "" for none). Both sha256 sums are taken, as a
#: layer writer must (diff ID of the tar, digest of the blob).
FLOORS = [
    ("tar | sha256sum", ""),
    ("tar | sha256 | gzip -6 | sha256", "gzip -6"),
    ("tar | sha256 | pigz -6 | sha256", "pigz -6"),
    ("tar | sha256 | pigz -2 | sha256", "pigz -2"),
    ("tar | sha256 | zstd -T0 -3 | sha256", "zstd -T0 -3 -q"),
]
#: layerkit's layer writer at the same codec/level: (label, compression, level)
LAYER_WRITES = [
    ("layerkit none", "none", 0),
    ("layerkit gzip -2 (default)", "gzip", 2),
    ("layerkit gzip -6", "gzip", 6),
    ("layerkit zstd -3", "zstd", 3),
]


def floor_suite(results: Results, wl: Workload, scratch: Path, runs: int) -> None:
    """The hardware floor for the same bytes (GNU tar, coreutils, the compressor CLIs) and layerkit's
    layer writer (``bench.layerwrite``: walk → tar → sha256 → compress → sha256 → blob file)."""
    src = wl.context
    blob = scratch / "floor-blob"
    for _ in range(runs):
        for tool, compressor in FLOORS:
            if not compressor:
                cmd = f"tar -C {src} -cf - . | sha256sum"
            else:
                cmd = f"tar -C {src} -cf - . | tee >(sha256sum >/dev/null) | {compressor} | sha256sum"
            _record(
                results,
                ("floor", wl.name, "layer write", tool),
                run_timed([cmd], shell=True),
            )
        for tool, codec, level in LAYER_WRITES:
            argv = [
                sys.executable,
                "-m",
                "bench.layerwrite",
                str(src),
                str(blob),
                "--compression",
                codec,
                "--level",
                str(level),
            ]
            _record(results, ("floor", wl.name, "layer write", tool), run_timed(argv))
            blob.unlink(missing_ok=True)


def memory_suite(results: Results, wl: Workload, scratch: Path, runs: int) -> None:
    """Peak RSS building a single huge layer (FROM scratch + COPY) and unpacking it again."""
    home = scratch / "memory-home"
    layout = scratch / "memory-oci"
    for _ in range(runs):
        shutil.rmtree(home, ignore_errors=True)
        argv = [
            *LAYERKIT,
            "--home",
            str(home),
            "build",
            "--progress",
            "plain",
            "-t",
            "bench-memory",
            str(wl.context),
        ]
        _record(results, ("memory", wl.name, "build", "layerkit"), run_timed(argv))
        shutil.rmtree(layout, ignore_errors=True)
        run_quiet(
            [
                *LAYERKIT,
                "--home",
                str(home),
                "copy",
                "bench-memory",
                f"oci:{layout}:bench",
            ]
        )
        shutil.rmtree(home, ignore_errors=True)
        unpack_suite(results, wl.name, layout, scratch, 1, tools=("layerkit", "umoci"))
    shutil.rmtree(layout, ignore_errors=True)
