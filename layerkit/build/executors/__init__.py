"""RUN executors, one module each, loaded by name through :func:`layerkit.build.executor.select_executor`.

- :mod:`.native` — namespaces + overlayfs over per-layer snapshots (root, or a user namespace with
  ``userxattr`` where the kernel allows it);
- :mod:`.rootless` — fuse-overlayfs over the same snapshots; last fallback ``bwrap`` over a private
  copy of the rootfs, changes found by tree comparison;
- :mod:`.docker` — a container in the Docker Engine, its committed top layer re-emitted.

Shared pieces: :mod:`.snapshots` (overlay lower dirs keyed by chain ID), :mod:`.overlay_diff` (upper
dir → changes, kernel and fuse-overlayfs dialects), :mod:`.owners` (owners after a one-id user
namespace), :mod:`.tree_diff` (the change set and before/after comparison), :mod:`.sandbox`
(namespace/mount helpers; runs as a stdlib-only script), :mod:`.launcher` (one warm sandbox process
per executor process that forks each step's sandbox), :mod:`.cache_mounts` (cache mount sharing
modes), :mod:`.heredoc` (RUN heredocs turned into argv as BuildKit does; used by the builder).
"""

from __future__ import annotations

import importlib
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass

__all__ = ["TOOLS", "ExecutorStatus", "executor_status", "tool_versions"]

#: external programs layerkit uses or compares itself with, and how to ask their version
TOOLS: dict[str, tuple[str, ...]] = {
    "bwrap": ("--version",),
    "fuse-overlayfs": ("--version",),
    "docker": ("version", "--format", "{{.Client.Version}}"),
    "skopeo": ("--version",),
    "umoci": ("--version",),
    "buildah": ("--version",),
    "dive": ("--version",),
}
_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?(?:[-+~][\w.+~-]*)?")


@dataclass(frozen=True)
class ExecutorStatus:
    """Whether a RUN executor can be used here, and if not, why."""

    name: str
    usable: bool
    reason: str | None  # why not, and what to install or change

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "usable": self.usable, "reason": self.reason}


def executor_status() -> list[ExecutorStatus]:
    """Every executor of ``AUTO_ORDER`` with whether it can run RUN steps here, and why not."""
    from ..executor import AUTO_ORDER

    out = []
    for name in AUTO_ORDER:
        try:
            executor = importlib.import_module(f"{__name__}.{name}").create_executor()
            reason = executor.unavailable()
        except ImportError as exc:
            reason = f"cannot be loaded: {exc}"
        out.append(ExecutorStatus(name, reason is None, reason))
    return out


def tool_versions(timeout: float = 10.0) -> dict[str, str | None]:
    """Version of each of :data:`TOOLS` found on PATH (None when absent), plus the kernel's."""
    versions: dict[str, str | None] = {"kernel": platform.release()}
    for tool, args in TOOLS.items():
        exe = shutil.which(tool)
        if exe is None:
            versions[tool] = None
            continue
        try:
            r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, check=False)
            match = _VERSION.search(r.stdout + r.stderr)
            versions[tool] = match.group(0) if match else (r.stdout.strip() or "unknown")
        except (OSError, subprocess.SubprocessError):
            versions[tool] = "unknown"
    return versions
