"""The tools under test: how each one builds, unpacks and inspects, and how its cache is reset.

Resets and imports are untimed; only the measured command is. Every container runs with network none.
"""

from __future__ import annotations

import abc
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .measure import Sample, run_quiet, run_timed
from .workloads import BASE_IMAGE

DOCKER = "/usr/bin/docker"  # the Engine 20.10 client; BuildKit is built into its daemon
LAYERKIT = [sys.executable, "-m", "layerkit"]


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
        run_quiet([*LAYERKIT, "--home", str(self.template), "copy", f"oci:{base_oci}:3.20", BASE_IMAGE])
        self.home = self.work / "home"
        self.reset()

    def reset(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.copytree(self.template, self.home, symlinks=True)

    def build(self, context: Path, tag: str, *, no_cache: bool = False) -> Sample:
        argv = [*LAYERKIT, "--home", str(self.home), "build", "-t", tag, "--progress", "plain", str(context)]
        return run_timed(argv + (["--no-cache"] if no_cache else []))


class DockerBuilder(Builder):
    """``docker build`` with BuildKit (``buildkit=True``) or the classic builder."""

    def __init__(self, name: str, work: Path, buildkit: bool) -> None:
        super().__init__(name, work, {"DOCKER_BUILDKIT": "1" if buildkit else "0"})
        self.buildkit = buildkit
        self.tags: set[str] = set()

    def prepare(self, base_oci: Path) -> None:
        run_quiet(["skopeo", "copy", "-q", f"oci:{base_oci}:3.20", f"docker-daemon:{BASE_IMAGE}"])

    def reset(self) -> None:
        for tag in self.tags:
            run_quiet([DOCKER, "rmi", "-f", tag], check=False)
        run_quiet([DOCKER, "image", "prune", "-f"], check=False)
        if self.buildkit:
            run_quiet([DOCKER, "builder", "prune", "-af"], check=False)

    def build(self, context: Path, tag: str, *, no_cache: bool = False) -> Sample:
        self.tags.add(tag)
        argv = [DOCKER, "build", "-q", "--network", "none", "-t", tag, str(context)]
        return run_timed(argv + (["--no-cache"] if no_cache else []), env=self.env)

    def cleanup(self) -> None:
        self.reset()


class BuildahBuilder(Builder):
    def prepare(self, base_oci: Path) -> None:
        self.tags: set[str] = set()
        run_quiet(["skopeo", "copy", "-q", f"oci:{base_oci}:3.20",
                   f"containers-storage:docker.io/library/{BASE_IMAGE}"])

    def reset(self) -> None:
        for tag in self.tags:
            run_quiet(["buildah", "rmi", "-f", tag], check=False)
        run_quiet(["buildah", "rmi", "--prune"], check=False)

    def build(self, context: Path, tag: str, *, no_cache: bool = False) -> Sample:
        self.tags.add(tag)
        argv = ["buildah", "bud", "-q", "--layers", "--network", "none", "--pull-never", "-t", tag, str(context)]
        return run_timed(argv + (["--no-cache"] if no_cache else []))

    def cleanup(self) -> None:
        self.reset()


def available_builders(work: Path, only: list[str] | None = None) -> list[Builder]:
    found: list[Builder] = [LayerkitBuilder("layerkit", work / "layerkit")]
    if os.path.exists(DOCKER) and shutil.which("dockerd"):
        found += [DockerBuilder("buildkit", work / "buildkit", True), DockerBuilder("docker-classic", work / "classic", False)]
    if shutil.which("buildah"):
        found.append(BuildahBuilder("buildah", work / "buildah"))
    for b in found:
        b.work.mkdir(parents=True, exist_ok=True)
    return [b for b in found if not only or b.name in only]
