"""``layerkit build``: Dockerfile + context in, an image in the local store out.

:func:`build` is the entry point. A rebuild whose inputs are all unchanged is answered by the build
memo (:mod:`.memo`) without loading the step loop; otherwise :class:`.dispatch.Dispatcher` runs the
Dockerfile step by step, each filesystem step cached by content (:mod:`.cache`). Everything the
CLI shows comes from :class:`BuildEvent` callbacks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import mediatypes as mt
from ..digest import Digest
from ..errors import BuildError
from ..spec import Platform, host_platform

if TYPE_CHECKING:  # pragma: no cover
    from ..image import Image
    from .memo import BuildMemo, MemoRecord

__all__ = ["BuildEvent", "BuildResult", "Secret", "build", "parse_secret"]



# -- public types ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildEvent:
    """One progress event. ``kind``: ``step`` (starting), ``cached``, ``done``, ``output`` (RUN
    bytes in ``data``), ``stage`` (a stage starts), ``export`` (an output is written)."""

    kind: str
    step: int = 0
    text: str = ""
    stage: str = ""
    stage_index: int = 0
    stage_total: int = 0
    location: str = ""
    data: bytes = b""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"event": self.kind, "step": self.step, "text": self.text}
        if self.stage:
            doc["stage"] = self.stage
        if self.location:
            doc["location"] = self.location
        if self.data:
            doc["output"] = self.data.decode("utf-8", "replace")
        if self.seconds:
            doc["seconds"] = round(self.seconds, 3)
        return doc


class Secret(NamedTuple):
    """``--secret id=ID,src=FILE`` or ``id=ID,env=VAR``: mounted by ``RUN --mount=type=secret``."""

    id: str
    src: str = ""
    env: str = ""


def parse_secret(text: str) -> Secret:
    fields = dict(part.partition("=")[::2] for part in text.split(",") if part)
    sid = fields.get("id", "")
    src = fields.get("src") or fields.get("source") or ""
    env = fields.get("env", "")
    if not sid:
        raise BuildError(f"invalid --secret {text!r}: give id=ID,src=FILE or id=ID,env=VAR")
    if not src and not env:
        src = sid if os.path.exists(sid) else ""
        env = "" if src else sid
    return Secret(sid, src, env)


@dataclass(frozen=True)
class BuildResult:
    """A finished build: the image, its digest and tags, which steps ran or came from the cache, where it went."""

    image: Image
    digest: Digest
    tags: tuple[str, ...]
    cached_steps: tuple[str, ...]
    executed_steps: tuple[str, ...]
    outputs: tuple[str, ...]
    target: str
    warnings: tuple[str, ...] = ()


# -- the library entry point ---------------------------------------------------------------------------


def build(
    context_dir: str | os.PathLike[str],
    *,
    dockerfile: str | os.PathLike[str] | None = None,
    tags: tuple[str, ...] | list[str] = (),
    outputs: tuple[str, ...] | list[str] = (),
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    platform: Platform | str | None = None,
    labels: Mapping[str, str] | None = None,
    no_cache: bool = False,
    compression: mt.Compression | str = mt.Compression.GZIP,
    source_date_epoch: int | None = None,
    secrets: tuple[Secret | str, ...] | list[Secret | str] = (),
    executor: str | None = None,
    network: str | None = None,
    progress: Callable[[BuildEvent], None] | None = None,
    home: str | os.PathLike[str] | None = None,
) -> BuildResult:
    """Build the Dockerfile (default ``<context>/Dockerfile``) and store the image; tag it with
    ``tags`` and write it to each of ``outputs`` (see :mod:`.outputs`).

    ``source_date_epoch`` (default: ``$SOURCE_DATE_EPOCH``) clamps file mtimes and sets every
    ``created`` so clean builds are reproducible bit for bit.
    """
    from ..store import open_store
    from .dockerignore import ignore_file_for
    from .memo import BuildMemo

    context = Path(context_dir)
    if not context.is_dir():
        raise BuildError(f"building {context}: the context must be an existing directory")
    df_path = Path(dockerfile) if dockerfile is not None else context / "Dockerfile"
    if not df_path.is_absolute() and dockerfile is not None and not df_path.exists():
        df_path = context / df_path
    try:
        text = df_path.read_bytes()
    except OSError as exc:
        raise BuildError(f"reading {df_path}: {exc.strerror or exc}; pass -f FILE or put a Dockerfile in the context") from None
    if source_date_epoch is None and os.environ.get("SOURCE_DATE_EPOCH"):
        try:
            source_date_epoch = int(os.environ["SOURCE_DATE_EPOCH"])
        except ValueError:
            raise BuildError("invalid SOURCE_DATE_EPOCH: expected whole seconds since 1970") from None
    plat = Platform.parse(platform) if isinstance(platform, str) else platform
    secret_objs = tuple(parse_secret(s) if isinstance(s, str) else s for s in secrets)
    compression = mt.Compression(compression)
    store = open_store(home)
    ignore_file = ignore_file_for(context, df_path)
    memo = BuildMemo(store, context, df_path, text, ignore_file, {
        "file": df_path.name, "build_args": dict(build_args or {}), "target": target,
        "platform": str(plat or ""), "host": str(host_platform()), "labels": dict(labels or {}),
        "compression": compression.value, "source_date_epoch": source_date_epoch,
        "secrets": [[s.id, s.src, s.env] for s in secret_objs], "executor": executor, "network": network,
    })
    memo.key  # noqa: B018 - taken before the build reads the context, so a change during it is a miss later
    if not no_cache:
        result = _from_memo(memo, tags, progress)
        if result is not None:
            return _export(result, outputs, progress, home)

    from .dispatch import Dispatcher

    b = Dispatcher(
        context, df_path, build_args=build_args or {}, target=target, platform=plat, labels=labels or {},
        no_cache=no_cache, compression=compression, source_date_epoch=source_date_epoch,
        secrets=secret_objs, executor=executor, network=network, progress=progress, store=store,
        ignore_file=ignore_file, home=home,
    )
    # the store's writer lock from the first layer to the tags: a concurrent `layerkit gc` must not
    # collect a step's layer (or a cache hit's) before the image that references it is recorded
    with store.lock():
        try:
            b.run(text)
        finally:
            b.context.close()
        final = b.stages[b.needed[-1]]
        clock = b.created()
        created = final.state.fill_created(clock)
        image = final.state.commit(created)
        result = BuildResult(
            image=image, digest=image.digest, tags=_tag(store, image, tags), cached_steps=tuple(b.cached),
            executed_steps=tuple(b.executed), outputs=(),
            target=final.spec.name or str(final.spec.index), warnings=tuple(b.df.warnings),
        )
    # the same inputs give the same image again unless something came from outside the store or
    # from the clock (``created`` of a build that made no layer)
    from_clock = source_date_epoch is None and clock in {h.created for h in image.config.history} | {created}
    if b.unrepeatable or from_clock:
        memo.forget()
    else:
        from .memo import MemoRecord

        memo.record(MemoRecord(image.manifest.descriptor(), tuple(b.bases), tuple(b.trail),
                               result.cached_steps + result.executed_steps, result.target, result.warnings))
    return _export(result, outputs, progress, home)


def _from_memo(memo: BuildMemo, tags: tuple[str, ...] | list[str],
               progress: Callable[[BuildEvent], None] | None) -> BuildResult | None:
    """The memoized build, tagged, with every step reported cached; None on a miss."""
    with memo.store.lock():  # gc must not collect the image between the check and the tags
        hit: tuple[MemoRecord, Image] | None = memo.lookup()
        if hit is None:
            return None
        record, image = hit
        written = _tag(memo.store, image, tags)
    if progress is not None:
        for step in record.trail:
            event = BuildEvent("step", **step)
            progress(event)
            progress(BuildEvent("cached", step=event.step, text=event.text))
    return BuildResult(image=image, digest=image.digest, tags=written, cached_steps=record.fs_steps,
                       executed_steps=(), outputs=(), target=record.target, warnings=record.warnings)


def _tag(store: Any, image: Image, tags: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    descriptor = image.manifest.descriptor()
    return tuple(store.set_tag(tag, descriptor).annotations.get("org.opencontainers.image.ref.name", tag)
                 for tag in tags)


def _export(result: BuildResult, outputs: tuple[str, ...] | list[str],
            progress: Callable[[BuildEvent], None] | None, home: str | os.PathLike[str] | None) -> BuildResult:
    if not outputs:
        return result
    from dataclasses import replace

    from .outputs import export

    written: list[str] = []
    for dest in outputs:
        if progress is not None:
            progress(BuildEvent("export", text=dest))
        written.append(export(result.image, dest, home=home))
    return replace(result, outputs=tuple(written))
