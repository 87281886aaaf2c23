"""``layerkit diff A B``: parse arguments, call :mod:`layerkit.analyze.diff`, render."""

from __future__ import annotations

from typing import Any

import click

from ._common import (
    insecure_option,
    json_option,
    limits_option,
    platform_option,
    print_json,
)
from .output import Output

__all__ = ["diff"]


def _side(arg: str, platform: str | None, insecure: bool, limits: Any) -> Any:
    from ..analyze import diff as d
    from ..spec import Platform
    from ..transport import open_image

    if d.is_layer_file(arg):
        return d.layer_file_side(arg, limits)
    image = open_image(arg, platform=Platform.parse(platform) if platform else None, insecure=insecure)
    return d.image_side(image, arg, limits=limits)


def _render(out: Output, result: Any) -> None:
    from .inspect import _human

    a, b = result.a, result.b
    out.line(("a", "bold"), f" {a.reference} {a.digest}")
    out.line(("b", "bold"), f" {b.reference} {b.digest}")
    if result.shared_layers:
        out.line(f"shared layers: {len(result.shared_layers)} (" +
                 ", ".join(f"a{s['a']}=b{s['b']}" for s in result.shared_layers) + ")")
    if result.identical:
        out.line("no differences")
        return
    files = result.files
    for key, mark, style in (("added", "+", "green"), ("removed", "-", "red")):
        for f in files.get(key, []):
            out.line((f"{mark} {f['path']}", style), f" ({f['type']}, {_human(f['size'])})")
    for f in files.get("changed", []):
        out.line((f"~ {f['path']}", "yellow"), f" {', '.join(f['changes'])}")
    if result.sizes:
        out.line(("size changes by directory", "bold"))
        for s in result.sizes[:20]:
            sign = "+" if s["delta"] > 0 else "-"
            out.line(f"  {s['path']}: {_human(s['before'])} → {_human(s['after'])} ({sign}{_human(abs(s['delta']))})")
    for key, value in result.config.items():
        out.line((f"config {key}", "bold"), f": {value}")
    hist = result.history
    if hist.get("removed") or hist.get("added"):
        out.line(("history", "bold"), f" (first {hist['commonPrefix']} steps shared)")
        for step in hist["removed"]:
            out.line((f"- {step}", "red"))
        for step in hist["added"]:
            out.line((f"+ {step}", "green"))
    for manager, changes in result.packages.items():
        for p in changes["added"]:
            out.line((f"+ {manager} {p['name']} {p['version']}", "green"))
        for p in changes["removed"]:
            out.line((f"- {manager} {p['name']} {p['version']}", "red"))
        for p in changes["changed"]:
            out.line((f"~ {manager} {p['name']} {p['previousVersion']} → {p['version']}", "yellow"))


@click.command()
@click.argument("a")
@click.argument("b")
@click.option("--type", "types", multiple=True, type=click.Choice(["file", "size", "config", "history", "packages"]),
              help="Only these kinds of differences (repeatable; default: all).")
@json_option
@platform_option
@insecure_option
@limits_option
def diff(a: str, b: str, types: tuple[str, ...], as_json: bool, platform: str | None, insecure: bool,
         limits: Any) -> None:
    """Compare two images (any transports) or two layer files (.tar, .tar.gz, .tar.zst)."""
    from ..analyze.diff import TYPES, diff_sides

    result = diff_sides(_side(a, platform, insecure, limits), _side(b, platform, insecure, limits), types or TYPES)
    if as_json:
        print_json(result.to_json())
    else:
        _render(Output(), result)
