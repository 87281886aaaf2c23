"""``layerkit copy``, ``pull`` and ``push``: move images between transports."""

from __future__ import annotations

from typing import Any

import click

from ._common import (
    byte_progress,
    insecure_option,
    is_tty,
    json_option,
    limits_option,
    platform_option,
    print_json,
)

_FORMATS = click.Choice(["oci", "docker"])
_COMPRESSIONS = click.Choice(["gzip", "zstd", "none"])


def _run_copy(src: str, dst: str, *, as_json: bool, bare_src: bool = False, **options: Any) -> None:
    from .. import api

    with byte_progress(is_tty() and not as_json) as bar:
        progress = (lambda d, done, total: bar(d.digest, d.digest.short, done, total)) if bar else None
        result = api.copy(src, dst, progress=progress, **options)
    if bare_src and not as_json:
        click.echo(f"{src}: found in {result.resolved_from}", err=True)
    if as_json:
        print_json({
            "source": src,
            "resolved_from": result.resolved_from,
            "destination": dst,
            "digest": result.digest,
            "media_type": result.descriptor.media_type,
            "size": result.descriptor.size,
        })
    else:
        click.echo(f"copied {src} → {dst} ({result.digest})")


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
@limits_option
def copy(src: str, dst: str, fmt: str | None, compression: str | None, platform: str | None, all_platforms: bool,
         insecure: bool, as_json: bool, limits: Any) -> None:
    """Copy an image from SRC to DST (oci:DIR[:TAG], docker-archive:FILE[:NAME:TAG], docker-daemon:NAME,
    docker://REF, store:NAME, or a bare name: local store for DST; store → Docker Engine → registry for SRC)."""
    if all_platforms and platform:
        raise click.UsageError("--all-platforms and --platform exclude each other")
    _run_copy(src, dst, platform=platform, insecure=insecure, format=fmt, compression=compression,
              as_json=as_json, bare_src=_is_bare(src), all_platforms=all_platforms, limits=limits)


@click.command()
@click.argument("ref")
@platform_option
@insecure_option
@json_option
def pull(ref: str, platform: str | None, insecure: bool, as_json: bool) -> None:
    """Copy REF into the local store under its familiar name (a bare REF means a registry, as with
    `docker pull`; prefix docker-daemon:, oci:, docker-archive: for other sources)."""
    from ..transport import bare_to_registry, store_name

    _run_copy(bare_to_registry(ref), f"store:{store_name(ref)}", platform=platform, insecure=insecure,
              as_json=as_json)


@click.command()
@click.argument("store_name")
@click.argument("dest")
@click.option("--format", "fmt", type=_FORMATS, default=None, help="Manifest format to push (default: keep).")
@insecure_option
@json_option
def push(store_name: str, dest: str, fmt: str | None, insecure: bool, as_json: bool) -> None:
    """Push STORE_NAME from the local store to DEST (a registry reference, or any transport)."""
    from ..transport import bare_to_registry

    _run_copy(f"store:{store_name}", bare_to_registry(dest), insecure=insecure, format=fmt, as_json=as_json)
