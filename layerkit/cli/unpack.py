"""``layerkit unpack``: the merged rootfs of an image, written safely into a directory.

A module of its own so that the command loads only what unpacking needs.
"""

from __future__ import annotations

from typing import Any

import click

from ._common import (
    insecure_option,
    is_tty,
    json_option,
    limits_option,
    open_ref,
    platform_option,
    print_json,
    stage_progress,
)

__all__ = ["unpack"]


@click.command("unpack")
@click.argument("ref")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--rootless", is_flag=True,
              help="Do not chown (files belong to you); skip device nodes; implies --no-privileged-bits.")
@click.option("--no-privileged-bits", is_flag=True, help="Strip setuid/setgid bits and file capabilities.")
@json_option
@platform_option
@insecure_option
@limits_option
def unpack(ref: str, directory: str, rootless: bool, no_privileged_bits: bool, as_json: bool,
           platform: str | None, insecure: bool, limits: Any) -> None:
    """Unpack the merged rootfs of image REF into DIRECTORY (empty or new), safely."""
    from ..union.readahead import LayerStreams

    # the base layer starts decompressing (in a thread) before the unpacker loads, which overlaps the two
    streams = LayerStreams(open_ref(ref, platform, insecure))
    from ..union.unpack import unpack as unpack_tree

    with stage_progress(is_tty() and not as_json, "unpacking") as progress:
        # a rootless tree is for looking at, not for running as root: no setuid or capabilities
        result = unpack_tree(streams, directory, rootless=rootless, no_privileged_bits=no_privileged_bits or rootless,
                             limits=limits, progress=progress)
    skipped = [{"path": s.path, "layer": s.layer, "reason": s.reason} for s in result.skipped]
    stripped = [{"path": s.path, "layer": s.layer, "bits": list(s.bits)} for s in result.stripped]
    if as_json:
        print_json({
            "reference": ref, "directory": directory, "files": result.files, "dirs": result.dirs,
            "symlinks": result.symlinks, "hardlinks": result.hardlinks, "specials": result.specials,
            "bytes": result.bytes, "skipped": skipped, "stripped": stripped,
        })
        return
    click.echo(
        f"unpacked {ref} into {directory}: {result.files} files, {result.dirs} directories, "
        f"{result.symlinks} symlinks, {result.hardlinks} hard links, {result.bytes} bytes",
        err=True,
    )
    _report_policy(skipped, stripped)


#: paths listed per line of the unpack summary; --json lists them all
_SHOWN = 5


def _report_policy(skipped: list[dict[str, Any]], stripped: list[dict[str, Any]]) -> None:
    """A short stderr summary of what the policy left out: one line per reason, a few paths each."""
    groups: dict[str, list[str]] = {}
    for s in skipped:
        groups.setdefault(f"skipped: {s['reason']}", []).append(s["path"])
    for s in stripped:
        groups.setdefault(f"stripped: {'/'.join(s['bits'])} bit", []).append(s["path"])
    for what, paths in groups.items():
        more = f" and {len(paths) - _SHOWN} more (--json lists all)" if len(paths) > _SHOWN else ""
        click.echo(f"{what}: {', '.join(paths[:_SHOWN])}{more}", err=True)
