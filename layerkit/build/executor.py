"""The interface between the builder and whatever runs a ``RUN`` step.

The builder resolves everything a step needs (argv, environment, user, mounts on host paths) into a
:class:`RunRequest`; an :class:`Executor` runs it against the parent image's filesystem and writes
the filesystem change as one layer through the ``write_layer`` callback the builder passes, so the
layer lands in the store with the build's compression and ``SOURCE_DATE_EPOCH`` — executors never
choose those themselves. Executors live in ``layerkit.build.executors.<name>`` (one module each,
imported only when asked for) and expose ``create_executor() -> Executor``.

Auto selection tries :data:`AUTO_ORDER` and picks the first executor whose ``unavailable()`` is
``None``; when none can run, :class:`ExecutorUnavailableError` lists every reason, so a RUN is never
silently skipped.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import ExecutorUnavailableError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..image import Image
    from ..spec import Platform
    from ..store import LocalStore
    from ..tarfs.writer import LayerResult, LayerWriter

__all__ = [
    "AUTO_ORDER",
    "Executor",
    "Mount",
    "RunOutcome",
    "RunRequest",
    "WriteLayer",
    "select_executor",
]

#: Executors tried, in order, when none is named (``--executor``): fastest and most isolated first.
AUTO_ORDER: tuple[str, ...] = ("native", "rootless", "docker")

#: ``write_layer(fill) -> LayerResult``: the builder opens a blob writer in the store and a
#: ``LayerWriter`` on it, calls ``fill(writer)`` (the executor adds entries, whiteouts, opaque
#: markers in any order — the writer sorts), closes the writer and commits the blob. If ``fill``
#: raises, nothing is committed.
WriteLayer = Callable[["Callable[[LayerWriter], None]"], "LayerResult"]

#: ``output(chunk)``: live stdout+stderr bytes of the step, for progress display. May be a no-op.
Output = Callable[[bytes], None]


@dataclass(frozen=True)
class Mount:
    """One ``RUN --mount``, resolved by the builder.

    ``type`` is ``bind``, ``cache``, ``tmpfs`` or ``secret``:

    - ``bind`` from the context: ``host_path`` is the source file or directory on the host.
      ``bind`` from a stage or image (``from=``): ``image`` is that image and ``source`` the path
      inside it (``"/"`` for the root); the executor materialises it (e.g. from its snapshots).
      ``readonly=False`` (``rw``) means writes are allowed but discarded after the step.
    - ``cache``: ``host_path`` is a persistent directory under the store's ``cache_dir`` (created,
      owned ``uid:gid`` with ``mode`` when new); ``sharing`` is ``shared``/``private``/``locked``
      (for ``locked`` the executor holds an exclusive ``flock`` on ``<host_path>.lock`` for the step).
    - ``tmpfs``: an empty tmpfs; ``size`` in bytes, 0 = unlimited.
    - ``secret``: ``host_path`` is a readable file with the secret (the builder made it); mount it
      read-only at ``target`` with ``mode``/``uid``/``gid``. Its content never enters a layer or a key.

    ``target`` is absolute inside the container. Mounted paths never appear in the step's layer
    (BuildKit drops mount points that did not exist before the step).
    """

    type: str
    target: str
    host_path: Path | None = None
    image: Image | None = None
    source: str = "/"
    readonly: bool = True
    sharing: str = "shared"
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    size: int = 0


@dataclass(frozen=True)
class RunRequest:
    """Everything one ``RUN`` step needs; immutable, no defaults that hide a decision.

    ``image`` is the parent state: its ``layers`` are the lower filesystem (an image with no layers
    is ``FROM scratch``); its config is informational only — ``env``/``workdir``/``user`` here are
    authoritative. ``argv`` is final (``SHELL`` + command for the shell form, the JSON array for
    the exec form, heredocs already turned into a script invocation); ``env`` is ``KEY=VALUE`` in
    order (image ENV + in-scope build ARGs; PATH always present). ``workdir`` exists in the
    parent filesystem or must be created (``mkdir -p``, owned by root) before exec, like BuildKit.
    ``uid``/``gid``/``groups`` are resolved from the parent's ``/etc/passwd`` and ``/etc/group``.
    """

    image: Image
    argv: tuple[str, ...]
    env: tuple[str, ...]
    workdir: str
    uid: int
    gid: int
    platform: Platform
    store: LocalStore
    groups: tuple[int, ...] = ()
    user: str = ""  # the USER text as written, for messages
    network: str = "default"  # "default" (the executor's choice, loopback-only sandbox is fine), "none", "host"
    security: str = "sandbox"  # or "insecure" (RUN --security=insecure)
    hostname: str = "buildkitsandbox"
    mounts: tuple[Mount, ...] = ()
    step: str = ""  # e.g. "RUN apk add curl", for messages
    location: str = ""  # e.g. "Dockerfile:7"
    extra: dict[str, str] = field(default_factory=dict)  # executor-specific knobs, never part of a cache key


@dataclass(frozen=True)
class RunOutcome:
    """What a step did: its exit code, the last bytes of its output (for error messages), and the
    layer it wrote via ``write_layer`` — ``None`` when the step changed nothing (the builder then
    records an ``empty_layer`` history entry) or when it failed (nothing must be written then)."""

    exit_code: int
    output_tail: str = ""
    layer: LayerResult | None = None


@runtime_checkable
class Executor(Protocol):
    """Runs RUN steps. Instances are cheap; ``run`` may be called many times per build."""

    #: the name used with ``--executor`` (``native``, ``rootless``, ``docker``…)
    name: str

    def unavailable(self) -> str | None:
        """``None`` when this executor can run here; otherwise why not and what to install or
        change (e.g. "needs root or unprivileged user namespaces: apt-get install bubblewrap")."""
        ...

    def run(self, request: RunRequest, *, write_layer: WriteLayer, output: Output) -> RunOutcome:
        """Run the step; return its outcome. A non-zero exit is *not* an exception (the builder
        raises ``StepFailedError`` with the location); infrastructure failures raise ``BuildError``."""
        ...


def _load(name: str) -> Executor:
    if not name.isidentifier():
        raise ExecutorUnavailableError(f"selecting executor {name!r}: not a valid executor name")
    module_name = f"layerkit.build.executors.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ExecutorUnavailableError(
                f"selecting executor {name!r}: no module {module_name}; choose one of {', '.join(AUTO_ORDER)} "
                "or install a layerkit version that ships it"
            ) from None
        raise ExecutorUnavailableError(
            f"selecting executor {name!r}: it needs the Python package {exc.name!r}; pip install it"
        ) from None
    executor: Executor = module.create_executor()
    return executor


def select_executor(name: str | None = None) -> Executor:
    """The executor called ``name``, or the first usable one of :data:`AUTO_ORDER`.

    Raises :class:`ExecutorUnavailableError` naming what to install when the named one (or every
    one) cannot run here.
    """
    if name:
        executor = _load(name)
        reason = executor.unavailable()
        if reason:
            raise ExecutorUnavailableError(f"executor {name!r} cannot run RUN steps here: {reason}")
        return executor
    reasons: list[str] = []
    for candidate in AUTO_ORDER:
        try:
            executor = _load(candidate)
        except ExecutorUnavailableError as exc:
            reasons.append(str(exc))
            continue
        reason = executor.unavailable()
        if reason is None:
            return executor
        reasons.append(f"{candidate}: {reason}")
    raise ExecutorUnavailableError(
        "running RUN steps: no executor can run here ("
        + "; ".join(reasons)
        + "); run as root for 'native', install bubblewrap and fuse-overlayfs for 'rootless', "
        "or start a Docker Engine for 'docker'"
    )
