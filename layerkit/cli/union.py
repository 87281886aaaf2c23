"""``layerkit ls``, ``cat`` and ``export``: the merged filesystem of an image (``unpack`` has a module of its own)."""

from __future__ import annotations

import stat
import sys
from datetime import UTC, datetime
from typing import Any

import click

from ..errors import LayerkitError
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


def _union(image: Any, limits: Any) -> Any:
    from ..union import Union

    # the local store keeps its layers' member lists: listing a stored image again reads no layer
    return Union(image, limits=limits, index_cache=getattr(image.source, "layer_index", None))


def _missing(exc: OSError) -> LayerkitError:
    return LayerkitError(str(exc.args[0] if len(exc.args) == 1 else exc))


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
    image = open_ref(ref, platform, insecure)
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
    union = _union(open_ref(ref, platform, insecure), limits)
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

    image = open_ref(ref, platform, insecure)
    with stage_progress(is_tty() and output != "-", "exporting") as progress:
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
