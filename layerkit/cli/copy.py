"""``layerkit copy``, ``pull`` and ``push``: move images between transports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..errors import InvalidReferenceError
from ._common import (
    insecure_option,
    is_tty,
    json_option,
    platform_option,
    print_json,
    stderr_console,
)

_FORMATS = click.Choice(["oci", "docker"])
_COMPRESSIONS = click.Choice(["gzip", "zstd", "none"])


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Any]:
    """A transient rich progress bar on stderr, one row per blob; silent without a TTY."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    from ..spec import Descriptor

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=stderr_console(), transient=True, disable=not enabled) as bar:
        tasks: dict[str, Any] = {}

        def update(desc: Descriptor, done: int, total: int) -> None:
            task = tasks.get(desc.digest)
            if task is None:
                task = tasks[desc.digest] = bar.add_task(desc.digest.short, total=total)
            bar.update(task, completed=done)

        yield update


def _run_copy(src: str, dst: str, *, platform: str | None, insecure: bool, fmt: str | None,
              compression: str | None, as_json: bool, bare_src: bool, all_platforms: bool = False) -> None:
    from ..ops.copy import copy_image, copy_index
    from ..transport import open_image, open_index, open_sink, resolved_from

    index, images, origin = None, list[Any](), ""
    if all_platforms:
        index, images = open_index(src, insecure=insecure)
    if index is None:
        images = [open_image(src, platform=platform, insecure=insecure)]
        origin = resolved_from(images[0])
        if bare_src and not as_json:
            click.echo(f"{src}: found in {origin}", err=True)
    sink = open_sink(dst, insecure=insecure)
    try:
        with _progress_bar(is_tty() and not as_json) as progress:
            if index is not None:
                desc = copy_index(index, images, sink, format=fmt, compression=compression, progress=progress)
            else:
                desc = copy_image(images[0], sink, format=fmt, compression=compression, progress=progress)
    except BaseException:
        abort = getattr(sink, "abort", None)
        (abort or sink.close)()
        raise
    sink.close()
    if as_json:
        print_json({
            "source": src,
            "resolved_from": origin,
            "destination": dst,
            "digest": str(desc.digest),
            "media_type": desc.media_type,
            "size": desc.size,
        })
    else:
        click.echo(f"copied {src} → {dst} ({desc.digest})")


def _is_bare(ref: str) -> bool:
    from ..reference import parse_reference

    return parse_reference(ref).transport == ""


@click.command()
@click.argument("src")
@click.argument("dst")
@click.option("--format", "fmt", type=_FORMATS, default=None,
              help="Manifest format to write (default: keep the source's).")
@click.option("--compression", type=_COMPRESSIONS, default=None,
              help="Recompress layers (default: keep; uncompressed layers get gzip except in archives and the Engine).")
@platform_option
@click.option("--all-platforms", is_flag=True,
              help="Copy every platform of a multi-platform image (registries, oci: layouts, the store).")
@insecure_option
@json_option
def copy(src: str, dst: str, fmt: str | None, compression: str | None, platform: str | None, all_platforms: bool,
         insecure: bool, as_json: bool) -> None:
    """Copy an image from SRC to DST (oci:DIR[:TAG], docker-archive:FILE[:NAME:TAG], docker-daemon:NAME,
    docker://REF, store:NAME, or a bare name: local store for DST; store → Docker Engine → registry for SRC)."""
    if all_platforms and platform:
        raise click.UsageError("--all-platforms and --platform exclude each other")
    _run_copy(src, dst, platform=platform, insecure=insecure, fmt=fmt, compression=compression, as_json=as_json,
              bare_src=_is_bare(src), all_platforms=all_platforms)


def _store_name(ref: str) -> str:
    from ..reference import DockerReference, parse_reference

    tref = parse_reference(ref)
    if tref.docker is not None:
        return tref.docker.familiar
    if tref.transport == "docker-archive" and tref.name:
        return DockerReference.parse(tref.name).familiar
    raise InvalidReferenceError(
        f"pulling {ref}: it carries no image name to tag in the store; use `layerkit copy {ref} NAME:TAG`"
    )


@click.command()
@click.argument("ref")
@platform_option
@insecure_option
@json_option
def pull(ref: str, platform: str | None, insecure: bool, as_json: bool) -> None:
    """Copy REF into the local store under its familiar name (a bare REF means a registry, as with
    `docker pull`; prefix docker-daemon:, oci:, docker-archive: for other sources)."""
    from ..transport import bare_to_registry

    name = _store_name(ref)
    _run_copy(bare_to_registry(ref), f"store:{name}", platform=platform, insecure=insecure, fmt=None,
              compression=None, as_json=as_json, bare_src=False)


@click.command()
@click.argument("store_name")
@click.argument("dest")
@click.option("--format", "fmt", type=_FORMATS, default=None, help="Manifest format to push (default: keep).")
@insecure_option
@json_option
def push(store_name: str, dest: str, fmt: str | None, insecure: bool, as_json: bool) -> None:
    """Push STORE_NAME from the local store to DEST (a registry reference, or any transport)."""
    from ..transport import bare_to_registry

    _run_copy(f"store:{store_name}", bare_to_registry(dest), platform=None, insecure=insecure, fmt=fmt,
              compression=None, as_json=as_json, bare_src=False)
