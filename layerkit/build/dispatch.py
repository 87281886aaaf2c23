"""The step loop of a build: each Dockerfile instruction of the needed stages, dispatched in order.

It follows BuildKit's Dockerfile frontend (``dockerfile2llb``): global ARGs and the predefined
platform ARGs expand ``FROM``; only the stages ``--target`` needs are built, each once; a stage's
ARGs must be declared inside it, ENV wins over ARG; variables are expanded in ADD, COPY, ENV,
EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR and ARG defaults, never in RUN, CMD,
ENTRYPOINT, SHELL or HEALTHCHECK. COPY/ADD/WORKDIR/RUN each make one layer (Docker 20.10's
BuildKit keeps an empty one when nothing changed; a RUN whose executor reports no change makes
none); every other instruction adds an ``empty_layer`` history entry.

Filesystem steps are cached by content address (:mod:`.cache`); RUN steps go to an executor
through :mod:`.executor`. Everything the CLI shows comes from :class:`~.builder.BuildEvent` callbacks.
Internal: :func:`layerkit.build.builder.build` is the entry point.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import mediatypes as mt
from ..digest import sha256_file
from ..errors import (
    BuildError,
    DockerfileSyntaxError,
    ExecutorUnavailableError,
    LayerkitError,
    StepFailedError,
)
from ..image import Image
from ..spec import History, Platform, host_platform
from .builder import BuildEvent, Secret
from .cache import CacheRecord, StepCache, cache_key
from .context import BuildContext
from .copy import (
    CopyPlan,
    CopyPlanner,
    CopyRequest,
    CopySourceError,
    ImageFS,
    fingerprint_sources,
    parse_chmod,
)
from .dockerfile import instructions as ins
from .dockerfile.parser import go_quote
from .dockerignore import read_ignore_file
from .executor import Mount, RunOutcome, RunRequest, select_executor
from .executors.heredoc import run_command
from .memo import BaseImage
from .state import DEFAULT_PATH, BuildState, LayerFactory, format_time, scratch_config
from .users import UnknownUserError, resolve_chown, resolve_user

if TYPE_CHECKING:  # pragma: no cover
    from ..store.local import LocalStore

__all__ = ["Dispatcher"]


COMMENT = "buildkit.dockerfile.v0"
_PLATFORM_ARGS = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
                  "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT")
_FS_STEPS = (ins.Copy, ins.Add, ins.Run, ins.Workdir)


@dataclass
class _Stage:
    """Dispatch state of one stage."""

    spec: ins.Stage
    state: BuildState
    platform: Platform
    args: dict[str, str | None] = field(default_factory=dict)
    shell: tuple[str, ...] = ("/bin/sh", "-c")
    cmd_set: bool = False
    union: Any = None
    union_chain: str = ""
    result: Image | None = None

    @property
    def label(self) -> str:
        return self.spec.name or str(self.spec.index)

    def env_map(self) -> dict[str, str]:
        """Expansion env: declared ARGs, overridden by the image's ENV."""
        env = {k: v for k, v in self.args.items() if v is not None}
        env.update(_env_dict(self.state.config.config.get("Env") or []))
        return env


def _env_dict(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def _set_env(env: list[str], key: str, value: str) -> list[str]:
    """Replace ``key`` in place (BuildKit keeps the order) or append it."""
    out = list(env)
    for i, e in enumerate(out):
        if e.partition("=")[0] == key:
            out[i] = f"{key}={value}"
            return out
    out.append(f"{key}={value}")
    return out


def _go_list(items: list[str] | tuple[str, ...]) -> str:
    """Go's ``%v`` of a ``[]string``."""
    return "[" + " ".join(items) + "]"


def _go_quoted_list(items: list[str] | tuple[str, ...]) -> str:
    """Go's ``%q`` of a ``[]string``."""
    return "[" + " ".join(go_quote(x) for x in items) + "]"


def _go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String``."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    neg = ns < 0
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                text = f"{ns / size:.9f}".rstrip("0").rstrip(".")
                return ("-" if neg else "") + text + unit
    h, rem = divmod(ns, 3_600_000_000_000)
    m, rem = divmod(rem, 60_000_000_000)
    s = f"{rem / 1e9:.9f}".rstrip("0").rstrip(".")
    out = (f"{h}h{m}m" if h else f"{m}m" if m else "") + f"{s}s"
    return ("-" if neg else "") + out


def _go_rune(n: int) -> str:
    """Go's ``%q`` of an int (a quoted rune), as BuildKit prints HEALTHCHECK retries."""
    ch = chr(n)
    if ch.isprintable() and ch not in "'\\":
        return f"'{ch}'"
    return f"'\\x{n:02x}'" if n < 0x100 else f"'\\u{n:04x}'"


def _normalize_ports(ports: list[str]) -> list[str]:
    out: list[str] = []
    for spec in ports:
        port, _, proto = spec.partition("/")
        proto = (proto or "tcp").lower()
        if "-" in port:
            lo, _, hi = port.partition("-")
            if lo.isdigit() and hi.isdigit() and int(lo) <= int(hi):
                out.extend(f"{p}/{proto}" for p in range(int(lo), int(hi) + 1))
                continue
        if not port.isdigit():
            raise ValueError(f"invalid containerPort: {port}")
        out.append(f"{int(port)}/{proto}")
    return out


class Dispatcher:
    """One build's state: the store, the context, the options, and each stage as it is dispatched."""

    def __init__(
        self,
        context_dir: Path,
        dockerfile_path: Path,
        *,
        build_args: Mapping[str, str],
        target: str | None,
        platform: Platform | None,
        labels: Mapping[str, str],
        no_cache: bool,
        compression: mt.Compression,
        source_date_epoch: int | None,
        secrets: tuple[Secret, ...],
        executor: str | None,
        network: str | None,
        progress: Callable[[BuildEvent], None] | None,
        store: LocalStore,
        ignore_file: Path | None,
        home: str | os.PathLike[str] | None,
    ) -> None:
        self.store = store
        self.home = home
        self.file = dockerfile_path.name
        self.dockerfile_path = dockerfile_path
        self.build_args = dict(build_args)
        self.target = target
        self.platform = platform or host_platform()
        self.labels = dict(labels)
        self.cache = StepCache(self.store, enabled=not no_cache)
        self.compression = compression
        self.epoch = source_date_epoch
        self.secrets = {s.id: s for s in secrets}
        self.executor_name = executor
        self.network = network
        self.progress = progress
        self.layer_factory = LayerFactory(self.store, compression, source_date_epoch)
        self.context = BuildContext(context_dir, read_ignore_file(ignore_file),
                                    cache_dir=Path(self.store.cache_dir))
        self.cached: list[str] = []
        self.executed: list[str] = []
        self.step_no = 0
        self.stages: dict[int, _Stage] = {}
        self.external: dict[str, Image] = {}
        self._executor: Any = None
        self._probe: threading.Thread | None = None
        self._probed: Any = None
        # for the build memo: every step as shown, the store images read, and why the result could
        # differ if the build ran again (then it is not memoized)
        self.trail: list[dict[str, Any]] = []
        self.bases: list[BaseImage] = []
        self.unrepeatable: list[str] = []

    # -- helpers -----------------------------------------------------------------------------------
    def emit(self, kind: str, **kw: Any) -> None:
        if kind == "step":
            self.trail.append(kw)
        if self.progress is not None:
            self.progress(BuildEvent(kind, **kw))

    def loc(self, instr: ins.Instruction) -> str:
        return f"{self.file}:{instr.line}"

    def fail(self, instr: ins.Instruction, message: str) -> BuildError:
        return BuildError(f"{self.loc(instr)}: {message}")

    def now_ns(self) -> int:
        return self.epoch * 1_000_000_000 if self.epoch is not None else time.time_ns()

    def created(self) -> str:
        return format_time(self.now_ns())

    def history(self, created_by: str, empty: bool, created: str | None = None) -> History:
        """A history entry; metadata steps get their time at commit (see ``BuildState.fill_created``)."""
        if self.epoch is not None:
            created = self.created()
        elif created is None:
            created = "" if empty else self.created()
        return History(created=created, created_by=created_by, comment=COMMENT, empty_layer=empty)

    def expand(self, st: _Stage, word: str, instr: ins.Instruction) -> str:
        return ins.expand(word, st.env_map(), escape_token=self.df.escape_token, file=self.file, line=instr.line)

    # -- the whole build ---------------------------------------------------------------------------
    def run(self, dockerfile_text: bytes) -> Image:
        self.df = ins.parse_dockerfile(dockerfile_text, file=self.file)
        self.meta = self._global_args()
        stages = self.df.stages
        names = {s.name: s.index for s in stages if s.name}
        self.names = names
        if self.target:
            want = self.target.lower()
            if want not in names:
                raise BuildError(
                    f"building target {self.target!r}: no such stage in {self.file} "
                    f"(stages: {', '.join(names) or 'none named'})"
                )
            target_index = names[want]
        else:
            target_index = len(stages) - 1
        self.needed = self._needed(target_index)
        self.total = len(self.needed)
        if any(isinstance(i, ins.Run) for n in self.needed for i in stages[n].instructions):
            self._probe = threading.Thread(target=self._pick_executor, name="layerkit-executor-probe", daemon=True)
            self._probe.start()
        image = self._build_stage(target_index)
        return image

    def _pick_executor(self) -> None:
        """Choose the RUN executor ahead of the first step that needs it: the choice probes the
        sandbox, which starts the launcher process (~0.1 s), while the steps before run."""
        try:
            self._probed = select_executor(self.executor_name)
        except Exception:  # noqa: BLE001 - the step that needs the executor selects again and reports
            self._probed = None

    def _get_executor(self) -> Any:
        """The RUN executor; raises ExecutorUnavailableError when none can run here."""
        if self._executor is None:
            if self._probe is not None:
                self._probe.join()
                self._probe = None
                self._executor = self._probed
            if self._executor is None:
                self._executor = select_executor(self.executor_name)
        return self._executor

    def _global_args(self) -> dict[str, str | None]:
        build = self.platform
        host = host_platform()
        meta: dict[str, str | None] = {
            "TARGETPLATFORM": str(build), "TARGETOS": build.os, "TARGETARCH": build.architecture,
            "TARGETVARIANT": build.variant,
            "BUILDPLATFORM": str(host), "BUILDOS": host.os, "BUILDARCH": host.architecture,
            "BUILDVARIANT": host.variant,
        }
        for arg in self.df.global_args:
            for name, default in arg.pairs:
                if name in self.build_args:
                    meta[name] = self.build_args[name]
                elif default is not None:
                    env = {k: v for k, v in meta.items() if v is not None}
                    meta[name] = ins.expand(default, env, escape_token=self.df.escape_token, file=self.file,
                                            line=arg.line)
                else:
                    meta.setdefault(name, None)
        return meta

    def _meta_env(self) -> dict[str, str]:
        return {k: v for k, v in self.meta.items() if v is not None}

    def _stage_ref(self, text: str, current: int) -> int | None:
        """Index of the stage ``text`` names (a name or a number before ``current``), else None."""
        low = text.lower()
        if low in self.names and self.names[low] < current:
            return self.names[low]
        if text.isdigit():
            return int(text) if int(text) < current else None
        return None

    def _from_base(self, stage: ins.Stage) -> str:
        return ins.expand(stage.from_.image, self._meta_env(), escape_token=self.df.escape_token,
                          file=self.file, line=stage.from_.line)

    def _deps(self, stage: ins.Stage) -> list[int]:
        deps: list[int] = []
        base = self._from_base(stage)
        ref = self._stage_ref(base, stage.index)
        if ref is not None:
            deps.append(ref)
        for instr in stage.instructions:
            froms: list[str] = []
            if isinstance(instr, (ins.Copy, ins.Add)) and instr.from_:
                froms.append(instr.from_)
            if isinstance(instr, ins.Run):
                froms.extend(m.from_ for m in instr.mounts if m.from_)
            for f in froms:
                try:
                    f = ins.expand(f, self._meta_env(), escape_token=self.df.escape_token)
                except LayerkitError:
                    pass
                r = self._stage_ref(f, stage.index)
                if r is not None:
                    deps.append(r)
                elif f.lower() in self.names or (f.isdigit()):
                    raise BuildError(
                        f"{self.file}:{instr.line}: stage {f!r} is not defined before this instruction; "
                        "a stage can only use stages above it"
                    )
        return deps

    def _needed(self, target: int) -> list[int]:
        seen: set[int] = set()
        order: list[int] = []

        def visit(i: int) -> None:
            if i in seen:
                return
            seen.add(i)
            for d in self._deps(self.df.stages[i]):
                visit(d)
            order.append(i)

        visit(target)
        return order

    # -- stages -----------------------------------------------------------------------------------
    def _build_stage(self, index: int) -> Image:
        st = self.stages.get(index)
        if st is not None and st.result is not None:
            return st.result
        spec = self.df.stages[index]
        for dep in self._deps(spec):
            self._build_stage(dep)
        position = self.needed.index(index) + 1
        st = self._start_stage(spec, position)
        self.stages[index] = st
        for instr in spec.instructions:
            self._dispatch(st, instr, position)
        if index == self.needed[-1] and self.labels:
            labels = dict(st.state.config.config.get("Labels") or {})
            labels.update(self.labels)
            st.state.update_config(Labels=labels)
        st.result = st.state.image()
        return st.result

    def _open_external(self, ref: str, platform: Platform | None, instr: ins.Instruction) -> Image:
        key = f"{ref}@{platform}"
        if key not in self.external:
            from ..transport import open_image, resolved_from, store_name

            try:
                image = open_image(ref, platform=platform, home=self.home)
            except LayerkitError as exc:
                raise self.fail(instr, f"resolving image {ref!r}: {exc}") from None
            self.external[key] = image
            if resolved_from(image) == "store":
                self.bases.append(BaseImage(store_name(ref), str(platform) if platform else "", str(image.digest)))
            else:
                self.unrepeatable.append(f"{ref} came from {resolved_from(image) or 'outside the store'}")
        return self.external[key]

    def _start_stage(self, spec: ins.Stage, position: int) -> _Stage:
        instr = spec.from_
        base = self._from_base(spec)
        platform = self.platform
        if instr.platform:
            text = ins.expand(instr.platform, self._meta_env(), escape_token=self.df.escape_token,
                              file=self.file, line=instr.line)
            try:
                platform = Platform.parse(text)
            except LayerkitError as exc:
                raise self.fail(instr, str(exc)) from None
        self.step_no += 1
        desc = f"FROM {base}" + (f" AS {spec.name}" if spec.name else "")
        self.emit("step", step=self.step_no, text=desc, stage=spec.name or str(spec.index),
                  stage_index=position, stage_total=self.total, location=self.loc(instr))
        ref = self._stage_ref(base, spec.index)
        if ref is not None:
            parent = self.stages[ref]
            state = BuildState(self.store, parent.state.config.evolve(), list(parent.state.layers),
                               dict(parent.state.origins), parent.state.base_history)
            platform = parent.platform
        elif base.lower() == "scratch":
            state = BuildState(self.store, scratch_config(platform))
        else:
            if not base:
                raise self.fail(instr, "FROM needs an image: the base expanded to an empty string")
            image = self._open_external(base, platform, instr)
            state = BuildState.from_image(self.store, image)
        env = list(state.config.config.get("Env") or [])
        if not any(e.startswith("PATH=") for e in env):
            state.update_config(Env=[f"PATH={DEFAULT_PATH}", *env])
        st = _Stage(spec, state, platform)
        shell = state.config.config.get("Shell")
        if shell:
            st.shell = tuple(shell)
        self.emit("done", step=self.step_no, text=desc)
        # ONBUILD triggers of the base run first, then are not inherited
        triggers = list(state.config.config.get("OnBuild") or [])
        if triggers:
            state.update_config(OnBuild=None)
            for trigger in triggers:
                try:
                    parsed = ins.parse_dockerfile(f"FROM scratch\n{trigger}\n".encode(), file=self.file)
                except DockerfileSyntaxError as exc:
                    raise self.fail(instr, f"ONBUILD trigger {trigger!r} of the base image: {exc}") from None
                for sub in parsed.stages[0].instructions:
                    sub = _relocate(sub, instr)
                    self._dispatch(st, sub, position)
        return st

    # -- instructions ---------------------------------------------------------------------------------
    def _dispatch(self, st: _Stage, instr: ins.Instruction, position: int) -> None:
        handler = getattr(self, "_do_" + type(instr).__name__.lower())
        self.step_no += 1
        text = " ".join(instr.original.split()) if len(instr.original) < 200 else instr.original[:197] + "..."
        self.emit("step", step=self.step_no, text=text, stage=st.label, stage_index=position,
                  stage_total=self.total, location=self.loc(instr))
        start = time.monotonic()
        try:
            cached = handler(st, instr)
        except (UnknownUserError, CopySourceError, ValueError) as exc:
            raise self.fail(instr, str(exc)) from None
        if isinstance(instr, _FS_STEPS):
            (self.cached if cached else self.executed).append(text)
        self.emit("cached" if cached else "done", step=self.step_no, text=text, seconds=time.monotonic() - start)

    def _meta_step(self, st: _Stage, created_by: str) -> bool:
        st.state.add_history(self.history(created_by, True))
        return False

    def _do_env(self, st: _Stage, instr: ins.Env) -> bool:
        env = list(st.state.config.config.get("Env") or [])
        parts = []
        for key, raw in instr.pairs:
            value = self.expand(st, raw, instr)
            env = _set_env(env, key, value)
            st.state.update_config(Env=env)  # later pairs see earlier ones
            parts.append(f"{key}={value}")
        return self._meta_step(st, "ENV " + " ".join(parts))

    def _do_label(self, st: _Stage, instr: ins.Label) -> bool:
        labels = dict(st.state.config.config.get("Labels") or {})
        parts = []
        for key, raw in instr.pairs:
            k, v = self.expand(st, key, instr), self.expand(st, raw, instr)
            labels[k] = v
            parts.append(f"{k}={v}")
        st.state.update_config(Labels=labels)
        return self._meta_step(st, "LABEL " + " ".join(parts))

    def _do_arg(self, st: _Stage, instr: ins.Arg) -> bool:
        parts = []
        for name, default in instr.pairs:
            expanded = self.expand(st, default, instr) if default is not None else None
            if name in self.build_args:
                value: str | None = self.build_args[name]
            elif expanded is not None:
                value = expanded
            else:
                value = self.meta.get(name)
            st.args[name] = value
            parts.append(name if expanded is None else f"{name}={expanded}")
        return self._meta_step(st, "ARG " + " ".join(parts))

    def _do_user(self, st: _Stage, instr: ins.User) -> bool:
        user = self.expand(st, instr.user, instr)
        st.state.update_config(User=user)
        return self._meta_step(st, f"USER {user}")

    def _do_expose(self, st: _Stage, instr: ins.Expose) -> bool:
        ports = dict(st.state.config.config.get("ExposedPorts") or {})
        words: list[str] = []
        for p in instr.ports:
            words.extend(ins.expand_words(p, st.env_map(), escape_token=self.df.escape_token, file=self.file,
                                          line=instr.line))
        new = _normalize_ports(words)
        for p in new:
            ports[p] = {}
        st.state.update_config(ExposedPorts=ports)
        shown = " ".join(f"{p}:{{}}" for p in sorted(set(new)))
        return self._meta_step(st, f"EXPOSE map[{shown}]")

    def _do_volume(self, st: _Stage, instr: ins.Volume) -> bool:
        vols = dict(st.state.config.config.get("Volumes") or {})
        paths = [self.expand(st, p, instr) for p in instr.paths]
        for p in paths:
            if not p:
                raise self.fail(instr, "VOLUME specified can not be an empty string")
            vols[p] = {}
        st.state.update_config(Volumes=vols)
        return self._meta_step(st, f"VOLUME {_go_list(paths)}")

    def _argv(self, st: _Stage, command: tuple[str, ...] | str, shell_form: bool) -> list[str]:
        if shell_form:
            return [*st.shell, str(command)]
        return list(command)

    def _do_cmd(self, st: _Stage, instr: ins.Cmd) -> bool:
        argv = self._argv(st, instr.command, instr.shell_form)
        st.state.update_config(Cmd=argv)
        st.cmd_set = True
        return self._meta_step(st, f"CMD {_go_quoted_list(argv)}")

    def _do_entrypoint(self, st: _Stage, instr: ins.Entrypoint) -> bool:
        argv = self._argv(st, instr.command, instr.shell_form)
        st.state.update_config(Entrypoint=argv)
        if not st.cmd_set:
            st.state.update_config(Cmd=None)
        return self._meta_step(st, f"ENTRYPOINT {_go_quoted_list(argv)}")

    def _do_shell(self, st: _Stage, instr: ins.Shell) -> bool:
        st.shell = tuple(instr.shell)
        st.state.update_config(Shell=list(instr.shell))
        return self._meta_step(st, f"SHELL {_go_list(instr.shell)}")

    def _do_stopsignal(self, st: _Stage, instr: ins.Stopsignal) -> bool:
        sig = self.expand(st, instr.signal, instr)
        import signal as _signal

        valid = sig.isdigit() or sig.upper() in _signal.Signals.__members__ or \
            ("SIG" + sig.upper()) in _signal.Signals.__members__ or sig.upper().startswith("SIGRTM")
        if not valid:
            raise self.fail(instr, f"invalid signal: {sig}; use a name like SIGTERM or a number")
        st.state.update_config(StopSignal=sig)
        return self._meta_step(st, f"STOPSIGNAL {sig}")

    def _do_healthcheck(self, st: _Stage, instr: ins.Healthcheck) -> bool:
        hc: dict[str, Any] = {"Test": list(instr.test)}
        for key, value in (("Interval", instr.interval), ("Timeout", instr.timeout),
                           ("StartPeriod", instr.start_period), ("StartInterval", instr.start_interval)):
            if value:
                hc[key] = round(value * 1e9)
        if instr.retries:
            hc["Retries"] = instr.retries
        st.state.update_config(Healthcheck=hc)
        durations = [_go_duration(v or 0) for v in (instr.interval, instr.timeout, instr.start_period)]
        if instr.start_interval is not None:
            durations.append(_go_duration(instr.start_interval))
        shown = " ".join([_go_quoted_list(instr.test), *(f'"{d}"' for d in durations), _go_rune(instr.retries or 0)])
        return self._meta_step(st, "HEALTHCHECK &{" + shown + "}")

    def _do_onbuild(self, st: _Stage, instr: ins.Onbuild) -> bool:
        triggers = list(st.state.config.config.get("OnBuild") or [])
        triggers.append(instr.expression)
        st.state.update_config(OnBuild=triggers)
        return False  # BuildKit records no history for ONBUILD

    def _do_maintainer(self, st: _Stage, instr: ins.Maintainer) -> bool:
        name = self.expand(st, instr.name, instr)
        st.state.config = st.state.config.evolve(author=name)
        st.state._changed()
        return self._meta_step(st, f"MAINTAINER {name}")

    # -- filesystem steps -------------------------------------------------------------------------------
    def _union(self, st: _Stage) -> Any:
        """The merged tree of the stage's current state (rebuilt only when the layers changed)."""
        chain = st.state.chain_id()
        if st.union is None or st.union_chain != chain:
            from ..union import Union

            st.union = Union(st.state.image(), index_cache=self.store.layer_index)
            st.union_chain = chain
        return st.union

    def _read_file(self, st: _Stage) -> Callable[[str], bytes | None]:
        def read(path: str) -> bytes | None:
            if not st.state.layers:
                return None
            union = self._union(st)
            try:
                return bytes(union.read_bytes(path))
            except (OSError, LayerkitError):
                return None

        return read

    def _cached_layer(self, st: _Stage, key: str, created_by: str) -> bool:
        record = self.cache.get(key)
        if record is None:
            return False
        if record.layer is None:
            st.state.add_history(self.history(created_by, True))
        else:
            assert record.diff_id is not None
            st.state.add_layer(record.layer, record.diff_id,
                               self.history(created_by, False, record.created or None))
        return True

    def _new_layer(self, st: _Stage, key: str, created_by: str, plan: CopyPlan,
                   instr: ins.Instruction | None = None) -> None:
        """Write a planned step's layer; when a RUN of the stage comes later (``instr`` given),
        its snapshot too, so that RUN does not unpack the layer again."""
        fill = plan.write
        size_hint = sum(p.entry.size for p in plan.planned.values())
        staged = self._stage_snapshot(st, instr) if instr is not None else None
        if staged is None:
            result = self.layer_factory(fill, size_hint=size_hint)
        else:
            try:
                result = self.layer_factory(lambda writer: fill(staged.tee(writer)), size_hint=size_hint)
            except BaseException:
                staged.discard()
                raise
        history = self.history(created_by, False)
        self.cache.put(key, CacheRecord(_descriptor(result), result.diff_id, history.created))
        st.state.add_layer_result(result, history)
        if staged is not None:
            staged.commit(st.state.chain_id())

    def _stage_snapshot(self, st: _Stage, instr: ins.Instruction) -> Any:
        """A :class:`~.executors.snapshots.StagedSnapshot` for the layer ``instr`` writes, or None
        when no later RUN of the stage will stand on it or the executor keeps no snapshots."""
        instrs = st.spec.instructions
        at = next((i for i, x in enumerate(instrs) if x is instr), -1)  # -1: an ONBUILD trigger
        if not any(isinstance(x, ins.Run) for x in instrs[at + 1:]):
            return None
        try:
            executor = self._get_executor()
        except ExecutorUnavailableError:
            return None  # the RUN reports it
        snapshots = getattr(executor, "snapshots", None)
        if snapshots is None:
            return None
        epoch = self.layer_factory.source_date_epoch
        return snapshots(self.store).stage(None if epoch is None else int(epoch) * 1_000_000_000)

    def _do_workdir(self, st: _Stage, instr: ins.Workdir) -> bool:
        path = self.expand(st, instr.path, instr)
        current = st.state.config.config.get("WorkingDir") or "/"
        wd = posixpath.normpath(posixpath.join(current, path)) if path else current
        if not wd.startswith("/"):
            wd = "/" + wd
        wd = "/" + wd.lstrip("/")
        st.state.update_config(WorkingDir=wd)
        created_by = f"WORKDIR {wd}"
        if wd == "/":
            return self._meta_step(st, created_by)
        user = st.state.config.config.get("User") or ""
        key = cache_key(st.state.chain_id(), "WORKDIR", wd, user)
        if self._cached_layer(st, key, created_by):
            return True
        owner = None
        if user:
            try:
                owner = resolve_chown(user, self._read_file(st))
            except UnknownUserError:
                owner = None
        planner = CopyPlanner(self._union(st) if st.state.layers else None)
        planner.mkdir_all(wd, CopyRequest((), wd, chown=owner, mtime_ns=self.now_ns()))
        self._new_layer(st, key, created_by, planner.plan, instr)
        return False

    def _dest(self, st: _Stage, raw: str) -> str:
        wd = st.state.config.config.get("WorkingDir") or "/"
        keep = raw == "." or raw.endswith(("/", "/."))
        full = raw if raw.startswith("/") else posixpath.join(wd, raw)
        clean = posixpath.normpath(full)
        clean = "/" + clean.lstrip("/")
        if keep and not clean.endswith("/"):
            clean += "/"
        return clean

    def _do_copy(self, st: _Stage, instr: ins.Copy) -> bool:
        return self._file_copy(st, instr, add=False)

    def _do_add(self, st: _Stage, instr: ins.Add) -> bool:
        return self._file_copy(st, instr, add=True)

    def _file_copy(self, st: _Stage, instr: ins._FileCopy, *, add: bool) -> bool:
        keyword = "ADD" if add else "COPY"
        env = st.env_map()
        sources = [self.expand(st, s, instr) for s in instr.sources]
        dest_raw = self.expand(st, instr.dest, instr)
        chown = self.expand(st, instr.chown, instr) if instr.chown else None
        chmod = self.expand(st, instr.chmod, instr) if instr.chmod else None
        if chmod:
            try:
                parse_chmod(chmod)
            except BuildError as exc:
                raise self.fail(instr, str(exc)) from None
        if len(sources) + len(instr.heredocs) > 1 and not (dest_raw.endswith("/") or dest_raw in (".",)):
            raise self.fail(instr, f"when using {keyword} with more than one source file, the destination "
                                   "must be a directory and end with a /")
        dest = self._dest(st, dest_raw)
        urls = [s for s in sources if s.startswith(("http://", "https://"))]
        gits = [s for s in sources if s.startswith(("git@", "git://")) or s.endswith(".git")]
        if not add and (urls or gits):
            raise self.fail(instr, "source can't be a URL for COPY; use ADD for URLs")
        if gits:
            raise self.fail(instr, f"ADD of a git repository ({gits[0]}) is not supported yet; clone it into "
                                   "the context and COPY it")
        if instr.checksum and (not urls or len(sources) != 1):
            raise self.fail(instr, "checksum can't be specified for non-HTTP(S) sources")
        inline = []
        for doc in instr.heredocs:
            content = doc.content
            if doc.expand:
                content = ins.expand(content, env, escape_token=self.df.escape_token, file=self.file,
                                     line=instr.line) if "$" in content else content
            inline.append((doc.name, content.encode("utf-8", "surrogateescape")))
        from_image: Image | None = None
        from_name = ""
        if instr.from_:
            from_name = self.expand(st, instr.from_, instr)
            from_image = self._from_image(st, from_name, instr)
        created_by = f"{keyword} {' '.join([*sources, *(f'<<{d.name}' for d in instr.heredocs), dest_raw])} # buildkit"
        spool: Path | None = None
        try:
            url_files: list[tuple[str, Path, int | None]] = []
            for url in urls:
                self.unrepeatable.append(f"ADD {url}")
                spool = spool or Path(tempfile.mkdtemp(prefix="add-url-", dir=self.store.tmp_dir))
                url_files.append(self._download(url, spool, instr))
            local = [s for s in sources if s not in urls]
            try:
                if from_image is None:
                    fingerprint = fingerprint_sources(self.context, local, excludes=instr.excludes,
                                                      parents=instr.parents)
                else:  # an image's content is its chain ID: no need to read its layers for the key
                    chain = from_image.chain_ids()[-1] if from_image.layers else "scratch"
                    fingerprint = f"image:{chain}:" + "\x00".join(local)
            except CopySourceError as exc:
                raise self.fail(instr, f"{keyword} failed: {exc}") from None
            parent = "" if instr.link else st.state.chain_id()
            key = cache_key(parent, keyword, sources, dest, chown, chmod, list(instr.excludes), instr.parents,
                            instr.link, fingerprint, [(n, hashlib.sha256(c).hexdigest()) for n, c in inline],
                            [(str(sha256_file(str(p))[0]), n) for n, p, _ in url_files],
                            "" if instr.link else st.state.config.config.get("WorkingDir", ""))
            if self._cached_layer(st, key, created_by):
                return True
            owner = None
            if chown:
                owner = resolve_chown(chown, self._read_file(st))
            from_fs: Any = self.context
            if from_image is not None:  # indexing the source's layers only now that the step runs
                from ..union import Union

                from_fs = ImageFS(Union(from_image, index_cache=self.store.layer_index),
                                  f"stage or image {from_name!r}")
            lower = None if (instr.link or not st.state.layers) else self._union(st)
            planner = CopyPlanner(lower, tmp_dir=Path(self.store.tmp_dir))
            req = CopyRequest(tuple(local), dest, tuple(inline), owner, chmod, tuple(instr.excludes),
                              instr.parents, unpack=add, mtime_ns=self.now_ns())
            try:
                planner.add(from_fs, req)
                for name, path, mtime in url_files:
                    url_fs = _SingleFileFS(name, path, mtime)
                    planner.add(url_fs, CopyRequest((name,), dest, (), owner, chmod, mtime_ns=self.now_ns()))
            except CopySourceError as exc:
                planner.plan.cleanup()
                raise self.fail(instr, f"{keyword} failed: {exc}") from None
            self._new_layer(st, key, created_by, planner.plan, instr)
            return False
        finally:
            if spool is not None:
                shutil.rmtree(spool, ignore_errors=True)

    def _from_image(self, st: _Stage, name: str, instr: ins.Instruction) -> Image:
        ref = self._stage_ref(name, st.spec.index)
        if ref is not None:
            return self._build_stage(ref)
        if not any(c in name for c in ":/@."):
            raise self.fail(instr, f"no stage named {name!r} before this instruction (stages: "
                                   f"{', '.join(self.names) or 'none named'}); to use an image, give a full "
                                   "reference like alpine:3.20")
        return self._open_external(name, st.platform, instr)

    def _download(self, url: str, spool: Path, instr: ins._FileCopy) -> tuple[str, Path, int | None]:
        parsed = urllib.parse.urlparse(url)
        name = "__unnamed__"
        if parsed.path not in ("", "/"):
            base = posixpath.basename(parsed.path.rstrip("/")) if not parsed.path.endswith("/") else ""
            if base not in ("", ".", "/"):
                name = base
        path = spool / f"{len(list(spool.iterdir()))}-{name}"
        # only ADD <url> needs http (~35 ms of imports at start-up)
        from urllib.request import urlopen

        try:
            with urlopen(url, timeout=60) as resp, open(path, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
                modified = resp.headers.get("Last-Modified")
        except OSError as exc:
            raise self.fail(instr, f"ADD failed: downloading {url}: {exc}") from None
        mtime = None
        if modified:
            from email.utils import parsedate_to_datetime

            try:
                mtime = int(parsedate_to_datetime(modified).timestamp()) * 1_000_000_000
            except (TypeError, ValueError):
                mtime = None
        if instr.checksum:
            actual, _ = sha256_file(str(path))
            if instr.checksum != actual:
                raise self.fail(instr, f"ADD failed: {url}: digest mismatch: expected {instr.checksum}, got {actual}")
        return name, path, mtime

    # -- RUN ----------------------------------------------------------------------------------------------
    def _do_run(self, st: _Stage, instr: ins.Run) -> bool:
        env_list = list(st.state.config.config.get("Env") or [])
        image_env = _env_dict(env_list)
        run_env = list(env_list)
        for k, v in st.args.items():
            if v is not None and k not in image_env:
                run_env.append(f"{k}={v}")
        command = run_command(st.shell, instr)  # heredocs as BuildKit runs them
        argv = list(command.argv)
        workdir = st.state.config.config.get("WorkingDir") or "/"
        user = st.state.config.config.get("User") or ""
        network = instr.network or self.network or "default"
        mounts_spec = [self._mount_key(st, m, instr) for m in instr.mounts]
        created_by = f"RUN {_run_command_string(argv, st.args, image_env)} # buildkit"
        key = cache_key(st.state.chain_id(), "RUN", argv, run_env, user, workdir, mounts_spec, network,
                        instr.security or "sandbox", *command.key_parts())
        if self._cached_layer(st, key, created_by):
            return True
        try:
            ids = resolve_user(user, self._read_file(st))
        except UnknownUserError as exc:
            raise self.fail(instr, str(exc)) from None
        mounts, cleanup = self._resolve_mounts(st, instr)
        mounts, cleanup = command.with_script_mount(mounts, cleanup, self.store.tmp_dir)
        try:
            try:
                executor = self._get_executor()
            except ExecutorUnavailableError as exc:
                raise ExecutorUnavailableError(f"{self.loc(instr)}: {exc}") from None
            request = RunRequest(
                image=st.state.image(), argv=tuple(argv), env=tuple(run_env), workdir=workdir, uid=ids.uid,
                gid=ids.gid, groups=ids.groups, platform=st.platform, store=self.store, user=user,
                network=network, security=instr.security or "sandbox", mounts=tuple(mounts),
                step=" ".join(instr.original.split()), location=self.loc(instr),
            )
            step = self.step_no
            outcome: RunOutcome = executor.run(
                request, write_layer=self.layer_factory,
                output=lambda data: self.emit("output", step=step, data=data),
            )
        finally:
            cleanup()
        if outcome.exit_code != 0:
            raise StepFailedError(request.step, self.loc(instr), outcome.exit_code, outcome.output_tail)
        if outcome.layer is None:
            self.cache.put(key, CacheRecord(None, None))
            st.state.add_history(self.history(created_by, True))
        else:
            history = self.history(created_by, False)
            self.cache.put(key, CacheRecord(_descriptor(outcome.layer), outcome.layer.diff_id, history.created))
            st.state.add_layer_result(outcome.layer, history)
        return False

    def _mount_key(self, st: _Stage, m: ins.Mount, instr: ins.Run) -> list[Any]:
        spec = m
        if m.needs_expansion:
            try:
                spec = ins.parse_mount(m.spec, expand=lambda w: self.expand(st, w, instr))
            except ValueError as exc:
                raise self.fail(instr, f"invalid --mount: {exc}") from None
        src_id = ""
        if spec.type == "bind":
            if spec.from_:
                img = self._from_image(st, spec.from_, instr)
                src_id = str(img.digest)
            else:
                try:
                    src_id = fingerprint_sources(self.context, [spec.source or "."])
                except CopySourceError as exc:
                    raise self.fail(instr, f"RUN --mount: {exc}") from None
        # secrets: only the id and target, never the content
        return [spec.type, spec.target, spec.source, spec.from_, spec.id, spec.sharing, spec.mode, spec.uid,
                spec.gid, spec.readonly, spec.size, src_id]

    def _resolve_mounts(self, st: _Stage, instr: ins.Run) -> tuple[list[Mount], Callable[[], None]]:
        out: list[Mount] = []
        temps: list[Path] = []
        for m in instr.mounts:
            spec = ins.parse_mount(m.spec, expand=lambda w: self.expand(st, w, instr)) if m.needs_expansion else m
            target = spec.target
            if target and not target.startswith("/"):
                target = posixpath.join(st.state.config.config.get("WorkingDir") or "/", target)
            if spec.type == "bind":
                if spec.from_:
                    out.append(Mount("bind", target, image=self._from_image(st, spec.from_, instr),
                                     source="/" + (spec.source or "").lstrip("/"), readonly=spec.readonly))
                else:
                    rel = self.context.resolve(spec.source or ".")
                    if rel is None:
                        raise self.fail(instr, f"RUN --mount: {spec.source!r} not found in the build context")
                    out.append(Mount("bind", target, host_path=Path(self.context.host(rel)), readonly=spec.readonly))
            elif spec.type == "cache":
                cid = spec.id or target
                d = Path(self.store.cache_dir) / "mounts" / hashlib.sha256(cid.encode()).hexdigest()[:32]
                d.mkdir(parents=True, exist_ok=True)
                out.append(Mount("cache", target, host_path=d, readonly=spec.readonly, sharing=spec.sharing or "shared",
                                 mode=spec.mode, uid=spec.uid or 0, gid=spec.gid or 0))
            elif spec.type == "tmpfs":
                out.append(Mount("tmpfs", target, readonly=False, size=spec.size or 0))
            elif spec.type == "secret":
                sid = spec.id or posixpath.basename(spec.target or spec.source)
                secret = self.secrets.get(sid)
                if secret is None:
                    if spec.required:
                        raise self.fail(instr, f"secret {sid!r} is required: pass --secret id={sid},src=FILE")
                    continue
                tmp = Path(tempfile.mkdtemp(prefix="secret-", dir=self.store.tmp_dir))
                temps.append(tmp)
                file = tmp / "secret"
                if secret.src:
                    shutil.copyfile(secret.src, file)
                else:
                    file.write_text(os.environ.get(secret.env, ""))
                os.chmod(file, 0o400)
                out.append(Mount("secret", target or f"/run/secrets/{sid}", host_path=file,
                                 mode=spec.mode if spec.mode is not None else 0o400, uid=spec.uid or 0,
                                 gid=spec.gid or 0))
            else:
                raise self.fail(instr, f"RUN --mount=type={spec.type} is not supported by layerkit yet")

        def cleanup() -> None:
            for t in temps:
                shutil.rmtree(t, ignore_errors=True)

        return out, cleanup


def _run_command_string(argv: list[str], args: Mapping[str, str | None], env: Mapping[str, str]) -> str:
    """BuildKit's ``runCommandString``: ``|N K=V ...`` for the stage's declared ARGs, then argv."""
    pairs = [f"{k}={env.get(k, v or '')}" for k, v in args.items()]
    return " ".join(([f"|{len(pairs)}", *pairs] if pairs else []) + argv)


class _SingleFileFS:
    """One downloaded file as a COPY source (ADD of a URL: mode 0600, mtime from Last-Modified)."""

    def __init__(self, name: str, path: Path, mtime_ns: int | None) -> None:
        self.name = "download"
        self._name = name
        self._path = path
        self._mtime = mtime_ns

    def resolve(self, path: str, *, follow_last: bool = True) -> str | None:
        return self._name if path.strip("/") == self._name else None

    def lstat(self, path: str) -> Any:
        from ..tarfs.entry import Entry, EntryType

        st = self._path.stat()
        return Entry(self._name, EntryType.FILE, 0o600, size=st.st_size,
                     mtime_ns=self._mtime if self._mtime is not None else st.st_mtime_ns)

    def listdir(self, path: str) -> list[str]:
        return []

    def open(self, path: str) -> Any:
        return open(self._path, "rb")

    def host_path(self, path: str) -> str | None:
        return str(self._path)


def _descriptor(result: Any) -> Any:
    from ..spec import Descriptor

    return Descriptor(result.media_type, result.digest, result.size)


def _relocate(instr: ins.Instruction, at: ins.Instruction) -> ins.Instruction:
    """An ONBUILD trigger reports the child's FROM line."""
    from dataclasses import replace

    return replace(instr, line=at.line, end_line=at.end_line)
