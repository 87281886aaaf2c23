"""``layerkit build``: parse options, call :func:`layerkit.build.builder.build`, render progress.

Progress goes to stderr (``plain``: BuildKit-style ``#N [stage k/n] INSTR`` lines, ``CACHED``
marks and RUN output; ``json``: one object per event; ``auto``: a rich view on a TTY, else plain);
the image digest goes to stdout. A Dockerfile mistake prints ``error: Dockerfile:LINE: …`` and exits 1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import click

from ._common import is_tty, stderr_console


def _pairs(values: tuple[str, ...], what: str, *, from_env: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint=what)
        if not sep:
            if not from_env:
                raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint=what)
            if key not in os.environ:
                continue  # docker: `--build-arg NAME` passes NAME only when it is set
            value = os.environ[key]
        out[key] = value
    return out


class _PlainRenderer:
    """BuildKit's plain progress: ``#N [stage k/n] INSTR``, then ``#N CACHED`` or ``#N DONE 0.1s``."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self._partial: dict[int, bytes] = {}

    def __call__(self, event: Any) -> None:
        kind = event.kind
        if kind == "step":
            prefix = f"[{event.stage} {event.stage_index}/{event.stage_total}] " if event.stage_total else ""
            self.write(f"#{event.step} {prefix}{event.text}")
        elif kind == "cached":
            self.write(f"#{event.step} CACHED")
        elif kind == "done":
            rest = self._partial.pop(event.step, b"")
            if rest:  # a last line without a newline is still output
                self.write(f"#{event.step} {rest.decode('utf-8', 'replace')}")
            self.write(f"#{event.step} DONE {event.seconds:.1f}s")
        elif kind == "output":
            buf = self._partial.get(event.step, b"") + event.data
            *lines, rest = buf.split(b"\n")
            self._partial[event.step] = rest
            for line in lines:
                self.write(f"#{event.step} {line.decode('utf-8', 'replace')}")
        elif kind == "export":
            self.write(f"#  exporting to {event.text}")


class _RichRenderer(_PlainRenderer):
    """The plain lines, styled, with a spinner for the running step (rich live view)."""

    def __init__(self) -> None:
        self.console = stderr_console()
        self.status = self.console.status("")
        self.status.start()
        super().__init__(lambda text: self.console.print(text, highlight=False, markup=False))

    def __call__(self, event: Any) -> None:
        if event.kind == "step":
            self.status.update(f"[bold]#{event.step}[/] {event.text}")
        if event.kind == "cached":
            self.console.print(f"[blue]#{event.step} CACHED[/]", highlight=False)
            return
        super().__call__(event)

    def close(self) -> None:
        self.status.stop()


@click.command("build")
@click.argument("path", default=".", type=click.Path(file_okay=False))
@click.option("-f", "--file", "dockerfile", type=click.Path(dir_okay=False), help="Dockerfile (default PATH/Dockerfile).")
@click.option("-t", "--tag", "tags", multiple=True, help="Tag the image in the local store (repeatable).")
@click.option("-o", "--output", "outputs", multiple=True,
              help="Also write the image: a reference (oci:DIR, docker-archive:FILE, docker-daemon:NAME, "
                   "registry ref) or type=oci|docker|registry|local|tar,dest=…,name=… (repeatable).")
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE", help="Set a build ARG.")
@click.option("--target", default=None, help="Build this stage (default: the last).")
@click.option("--platform", default=None, metavar="OS/ARCH[/VARIANT]", help="Target platform (default: this host's).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Add a label to the image.")
@click.option("--no-cache", is_flag=True, help="Run every step again (results still fill the cache).")
@click.option("--progress", type=click.Choice(["auto", "plain", "json"]), default="auto", show_default=True)
@click.option("--iidfile", type=click.Path(dir_okay=False), help="Write the image digest to this file.")
@click.option("--compression", type=click.Choice(["gzip", "zstd", "none"]), default="gzip", show_default=True)
@click.option("--source-date-epoch", type=int, default=None,
              help="Clamp timestamps to this time for reproducible images (default: $SOURCE_DATE_EPOCH).")
@click.option("--secret", "secrets", multiple=True, metavar="id=ID,src=FILE|env=VAR", help="Secret for RUN --mount=type=secret.")
@click.option("--executor", default=None, help="RUN executor (native, rootless, docker; default: the first usable).")
@click.option("--network", type=click.Choice(["default", "none", "host"]), default=None, help="Network for RUN steps.")
def build(path: str, dockerfile: str | None, tags: tuple[str, ...], outputs: tuple[str, ...],
          build_args: tuple[str, ...], target: str | None, platform: str | None, labels: tuple[str, ...],
          no_cache: bool, progress: str, iidfile: str | None, compression: str, source_date_epoch: int | None,
          secrets: tuple[str, ...], executor: str | None, network: str | None) -> None:
    """Build an image from a Dockerfile and the context at PATH (no daemon needed)."""
    from ..build.builder import build as run_build

    mode = progress
    if mode == "auto":
        mode = "rich" if is_tty() else "plain"
    renderer: Any
    if mode == "json":
        def renderer(event: Any) -> None:
            click.echo(json.dumps(event.to_json(), ensure_ascii=False), err=True)
    elif mode == "rich":
        renderer = _RichRenderer()
    else:
        renderer = _PlainRenderer(lambda text: click.echo(text, err=True))
    try:
        result = run_build(
            path, dockerfile=dockerfile, tags=tags, outputs=outputs,
            build_args=_pairs(build_args, "--build-arg", from_env=True), target=target, platform=platform,
            labels=_pairs(labels, "--label"), no_cache=no_cache, compression=compression,
            source_date_epoch=source_date_epoch, secrets=secrets, executor=executor, network=network,
            progress=renderer,
        )
    finally:
        close = getattr(renderer, "close", None)
        if close is not None:
            close()
    if iidfile:
        with open(iidfile, "w") as f:
            f.write(str(result.digest))
    if mode == "json":
        click.echo(json.dumps({"event": "result", "digest": str(result.digest), "tags": list(result.tags),
                               "cached_steps": len(result.cached_steps), "outputs": list(result.outputs)}), err=True)
    click.echo(str(result.digest))
