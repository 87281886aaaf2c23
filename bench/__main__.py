"""``python -m bench``: run the suites, write docs/benchmarks.md and bench/results/latest.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from . import report, suites, workloads
from .tools import (
    Builder,
    LayerkitBuilder,
    PrivateDockerd,
    ensure_peers,
    install_layerkit,
    make_builders,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURE = (
    REPO.parent / "shared" / "fixtures" / "alpine-minirootfs-3.20.3-x86_64.tar.gz"
)
ALL_SUITES = "build,unpack,inspect,floor,memory"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--runs",
        type=int,
        default=3,
        help="interleaved runs per tool (median reported)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="smallest settings, one run, every tool: what CI runs so the harness cannot rot",
    )
    p.add_argument(
        "--suites", default=ALL_SUITES, help=f"comma-separated subset of {ALL_SUITES}"
    )
    p.add_argument(
        "--workloads",
        default="small,big,many",
        help="comma-separated subset of small,big,many",
    )
    p.add_argument(
        "--tools",
        default="",
        help="comma-separated builders (default: layerkit,buildkit,docker-classic,buildah)",
    )
    p.add_argument(
        "--docker",
        choices=["private", "system", "none"],
        default="private",
        help="private: a dockerd of the bench's own on the scratch space (default); "
        "system: the running daemon; none: leave Docker out",
    )
    p.add_argument(
        "--memory-mib",
        type=int,
        default=1024,
        help="size of the single-layer memory workload",
    )
    p.add_argument(
        "--layerkit",
        choices=["venv", "current"],
        default="venv",
        help="venv: time this checkout installed with pip into a fresh venv in the workdir, as users "
        "run it (default); current: this interpreter's layerkit (an editable install, say)",
    )
    p.add_argument(
        "--no-install", action="store_true", help="do not install missing peers"
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("/dev/shm/layerkit-bench")
        if Path("/dev/shm").is_dir()
        else Path("bench-work"),
        help="scratch space (tmpfs recommended: file creation on disk is slow)",
    )
    p.add_argument(
        "--base",
        type=Path,
        default=SHARED_FIXTURE,
        help="Alpine minirootfs tar.gz used as the base image",
    )
    p.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="only rewrite --out from the results of an earlier run (its JSON)",
    )
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument(
        "--json-out", type=Path, default=REPO / "bench" / "results" / "latest.json"
    )
    return p.parse_args(argv)


def make_base(workdir: Path, tgz: Path) -> Path:
    """An OCI layout holding the Alpine base (FROM scratch + ADD rootfs, like the official image)."""
    sys.path.insert(0, str(REPO / "tests"))
    from support import make_alpine_oci  # type: ignore[import-not-found]  # tests/ is not a package

    layout = workdir / "base-oci"
    shutil.rmtree(layout, ignore_errors=True)
    made: Path = make_alpine_oci(layout, tgz, "3.20")
    return made


def _release(builders: list[Builder], dockerd: PrivateDockerd | None) -> None:
    """Let each builder clean up (unmount, untag), then stop the bench's own dockerd."""
    for b in builders:
        b.cleanup()
    if dockerd is not None:
        dockerd.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        doc = json.loads(args.render.read_text())
        targets = report.evaluate(doc["results"])
        args.out.write_text(report.markdown(doc["results"], targets, doc["meta"]))
        return 0
    runs = 1 if args.smoke else args.runs
    work: Path = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not args.base.is_file():
        print(
            f"bench: base tarball {args.base} not found (pass --base)", file=sys.stderr
        )
        return 2
    installed: list[str] = []
    if not args.no_install:
        ensure_peers(installed)
    layerkit_setup = install_layerkit(args.layerkit, work)
    wanted = set(args.suites.split(","))
    base = make_base(work, args.base)
    ctx_root = work / "contexts"
    ctx_root.mkdir(exist_ok=True)
    make = {
        "small": workloads.small_app,
        "big": workloads.big_context,
        "many": workloads.many_layers,
    }
    names = ["small"] if args.smoke else [n for n in args.workloads.split(",") if n]
    wls = [make[n](ctx_root) for n in names]
    # unpack and inspect: the images worth timing (the small app is only timed in a smoke run)
    image_wls = wls if args.smoke else [w for n, w in zip(names, wls) if n != "small"]

    dockerd = PrivateDockerd(work / "dockerd") if args.docker == "private" else None
    docker_host = (
        None
        if args.docker == "none"
        else os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    )
    builders: list[Builder] = []
    results: suites.Results = {}
    try:
        if dockerd is not None:
            dockerd.start()
            docker_host = dockerd.host
        builders = make_builders(
            work / "tools", docker_host, [t for t in args.tools.split(",") if t] or None
        )
        for b in builders:
            b.prepare(base)
        if "build" in wanted:
            suites.build_suite(results, wls, builders, runs)
        lk = next(b for b in builders if isinstance(b, LayerkitBuilder))
        # the suites below need no daemon: stop it and unmount what the builders left mounted, so that
        # neither runs behind the timed commands (every tool was slower with them there)
        _release(builders, dockerd)
        builders, dockerd = [], None
        for wl in image_wls:
            if {"unpack", "inspect"} & wanted:
                layout = suites.layerkit_image(lk, wl, work / "oci-out")
                if "unpack" in wanted:
                    suites.unpack_suite(results, wl.name, layout, work, runs)
                if "inspect" in wanted:
                    suites.inspect_suite(results, wl.name, layout, work, runs)
        if "floor" in wanted:
            floor_wl = wls[0] if args.smoke else workloads.big_context(ctx_root)
            suites.floor_suite(results, floor_wl, work, runs)
        if "memory" in wanted:
            mem_wl = workloads.single_file(
                ctx_root, 16 if args.smoke else args.memory_mib
            )
            suites.memory_suite(results, mem_wl, work, runs)
    finally:
        _release(builders, dockerd)
    rows = report.summarize(results)
    targets = report.evaluate(rows)
    storage = "everything on " + (
        f"{work} (tmpfs)" if str(work).startswith("/dev/shm") else str(work)
    )
    if args.docker == "system":
        storage += "; Docker: the system daemon's data root"
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "runs": runs,
        "date": time.strftime("%Y-%m-%d"),
        "smoke": args.smoke,
        "storage": storage,
        "peers": ", ".join(installed)
        if installed
        else "all present (nothing installed)",
        "layerkit": layerkit_setup,
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(
        json.dumps({"meta": meta, "targets": targets, "results": rows}, indent=2) + "\n"
    )
    text = report.markdown(rows, targets, meta)
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
