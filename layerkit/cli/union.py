"""``layerkit ls``, ``cat``, ``export`` and ``unpack``: the merged filesystem of an image."""

from __future__ import annotations

import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click

from ..errors import LayerkitError
from ._common import (
    byte_progress,
    insecure_option,
    is_tty,
    json_option,
    limits_option,
    platform_option,
    print_json,
)


def _open(ref: str, platform: str | None, insecure: bool) -> Any:
    from ..transport import open_image

    return open_image(ref, platform=platform, insecure=insecure)


def _union(image: Any, limits: Any) -> Any:
    from ..union import Union

    # the local store keeps its layers' member lists: listing a stored image again reads no layer
    return Union(image, limits=limits, index_cache=getattr(image.source, "layer_index", None))


def _missing(exc: OSError) -> LayerkitError:
    return LayerkitError(str(exc.args[0] if len(exc.args) == 1 else exc))


@contextmanager
def _progress(enabled: bool, what: str) -> Iterator[Any]:
    """The library's ``progress(stage, done, total)`` drawn as a bar (``None`` when off)."""
    with byte_progress(enabled) as bar:
        yield (lambda stage, done, total: bar(stage, "indexing layers" if stage == "index" else what, done,
                                              total)) if bar else None


def _digest(image: Any, layer: int) -> str:
    layers = getattr(image, "layers", ())
    return str(layers[layer].digest) if 0 <= layer < len(layers) else ""


def _long_line(node: Any, name: str) -> str:
    e = node.entry
    mode = stat.filemode(e.st_mode)
    size = f"{e.devmajor},{e.devminor}" if e.is_device() else str(node.size)
    when = datetime.fromtimestamp(e.mtime, UTC).strftime("%Y-%m-%d %H:%M")
    tail = ""
    if e.is_symlink():
        tail = f" -> {e.linkname}"
    elif e.is_hardlink():
        tail = f" => /{e.linkname}"
    return f"{mode} {e.uid:>5} {e.gid:>5} {size:>10} {when} L{node.layer:<3} {name}{tail}"


@click.command("ls")
@click.argument("ref")
@click.argument("path", default="/")
@click.option("-l", "long", is_flag=True, help="Long format: mode, owner, size, mtime, providing layer.")
@click.option("-R", "recursive", is_flag=True, help="List the whole tree below PATH.")
@json_option
@platform_option
@insecure_option
@limits_option
def ls(ref: str, path: str, long: bool, recursive: bool, as_json: bool, platform: str | None, insecure: bool,
       limits: Any) -> None:
    """List PATH in the merged filesystem of image REF, with the layer providing each entry."""
    image = _open(ref, platform, insecure)
    union = _union(image, limits)
    try:
        top = union.stat(path)
        if top.entry.is_symlink() and not long:  # like ls(1): a link to a directory lists the directory
            target = union.stat(path, follow=True) if union.exists(path, follow=True) else top
            top = target if target.is_dir() else top
        if recursive:
            nodes = [n for n in union.walk(top.path) if n.path != top.path]
        elif top.is_dir():
            base = "" if top.path == "." else top.path + "/"
            nodes = [union.stat(base + name) for name in union.listdir(top.path)]
        else:
            nodes = [top]
    except OSError as exc:
        raise _missing(exc) from None
    if as_json:
        docs = []
        for n in nodes:
            doc = n.to_json()
            doc["layer_digest"] = _digest(image, n.layer)
            docs.append(doc)
        print_json({"reference": ref, "path": path, "entries": docs})
        return
    for n in nodes:
        name = "/" + n.path if recursive or not top.is_dir() else n.path.rpartition("/")[2]
        click.echo(_long_line(n, name) if long else name)


@click.command("cat")
@click.argument("ref")
@click.argument("path")
@platform_option
@insecure_option
@limits_option
def cat(ref: str, path: str, platform: str | None, insecure: bool, limits: Any) -> None:
    """Write the content of file PATH of image REF to stdout (symlinks followed inside the image)."""
    union = _union(_open(ref, platform, insecure), limits)
    try:
        src = union.open(path)
    except OSError as exc:
        raise _missing(exc) from None
    out = click.get_binary_stream("stdout")
    with src:
        while chunk := src.read(1 << 20):
            out.write(chunk)
    out.flush()


@click.command("export")
@click.argument("ref")
@click.option("-o", "--output", required=True, metavar="FILE.tar", help="Tar file to write ('-' for stdout).")
@json_option
@platform_option
@insecure_option
@limits_option
def export(ref: str, output: str, as_json: bool, platform: str | None, insecure: bool, limits: Any) -> None:
    """Flatten image REF: its merged rootfs as one plain tar (no whiteouts, hard links kept)."""
    import os

    from ..union.export import export as export_tar

    image = _open(ref, platform, insecure)
    with _progress(is_tty() and output != "-", "exporting") as progress:
        if output == "-":
            result = export_tar(image, sys.stdout.buffer, limits=limits, progress=progress)
            sys.stdout.buffer.flush()
        else:
            tmp = output + ".partial"
            try:
                with open(tmp, "wb") as f:
                    result = export_tar(image, f, limits=limits, progress=progress)
                os.replace(tmp, output)
            except BaseException as exc:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                if isinstance(exc, OSError):  # the output cannot be written (no such directory, full disk)
                    raise LayerkitError(f"writing {output}: {exc.strerror or exc}; check the path and free space") from None
                raise
    if as_json:
        print_json({"reference": ref, "output": output, "diff_id": result.diff_id, "size": result.uncompressed_size})
    elif output != "-":
        click.echo(f"exported {ref} to {output} ({result.uncompressed_size} bytes, {result.diff_id})", err=True)


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
    streams = LayerStreams(_open(ref, platform, insecure))
    from ..union.unpack import unpack as unpack_tree

    with _progress(is_tty() and not as_json, "unpacking") as progress:
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
