"""``layerkit inspect`` and ``layerkit blame``: parse arguments, call :mod:`layerkit.analyze`, render."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ._common import (
    byte_progress,
    insecure_option,
    is_tty,
    json_option,
    limits_option,
    open_ref,
    platform_option,
    print_json,
)
from .output import Column, Output, Span, Table, Tree

__all__ = ["blame", "inspect"]


def _human(n: float) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


def _inspect_with_progress(image: Any, reference: str, limits: Any) -> Any:
    """Run the analysis with a transient progress bar on stderr (quiet without a TTY)."""
    from ..analyze.summary import inspect_image

    total = sum(layer.size for layer in image.layers)
    done: dict[int, int] = {}
    with byte_progress(is_tty()) as bar:
        def hook(index: int, n: int, _total: int) -> None:
            done[index] = n
            if bar:
                bar("layers", "reading layers", sum(done.values()), total)

        return inspect_image(image, reference=reference, progress=hook, limits=limits)


def _render_summary(out: Output, ins: Any) -> None:
    image, cfg = ins.image, ins.config
    out.line((ins.reference, "bold"), f"  (from {ins.source})")
    meta = Table("key", Column("value", wrap=True), header=False)
    meta.add_row("digest", str(image.digest))
    meta.add_row("media type", image.media_type)
    meta.add_row("platform", str(image.platform))
    meta.add_row("created", cfg.created or "-")
    c = cfg.config
    for key, label in (("Entrypoint", "entrypoint"), ("Cmd", "cmd"), ("WorkingDir", "workdir"), ("User", "user"),
                       ("StopSignal", "stop signal")):
        if c.get(key):
            meta.add_row(label, str(c[key]))
    for key, label in (("ExposedPorts", "exposed ports"), ("Volumes", "volumes")):
        if c.get(key):
            meta.add_row(label, ", ".join(sorted(c[key])))
    for env in c.get("Env") or []:
        meta.add_row("env", env)
    for k, v in sorted((c.get("Labels") or {}).items()):
        meta.add_row("label", f"{k}={v}")
    if c.get("Healthcheck"):
        meta.add_row("healthcheck", str(c["Healthcheck"].get("Test")))
    out.table(meta)
    hist = Table(Column("#", "right"), Column("layer", "right"), Column("created by", wrap=True), title="history")
    layer_of_step = {h: i for i, h in enumerate(ins.history_of_layer) if h is not None}
    for i, h in enumerate(cfg.history):
        layer = layer_of_step.get(i)
        hist.add_row(str(i), "empty" if layer is None else str(layer), h.created_by)
    out.table(hist)


def _render_layers(out: Output, ins: Any, detailed: bool) -> None:
    columns = [Column("#", "right"), Column("digest"), Column("size", "right"), Column("uncompr.", "right"),
               Column("files", "right")]
    if detailed:
        columns += [Column(name, "right") for name in ("content", "survives", "wasted", "A/M/R", "priv")]
    table = Table(*columns, Column("created by", max_width=50), title="layers")
    for st in ins.layers:
        row = [str(st.index), st.digest.short[:8], _human(st.size), _human(st.uncompressed_size), str(st.files)]
        if detailed:
            row += [_human(st.content_size), _human(st.surviving_size), _human(st.wasted_size),
                    f"{st.added[0]}/{st.modified[0]}/{st.removed[0]}", str(len(ins.layer_privileged[st.index]))]
        row.append(ins.created_by(st.index))
        table.add_row(*row)
    out.table(table)
    tot = ins.totals()
    out.line(f"total: {_human(tot['size'])} compressed, {_human(tot['uncompressedSize'])} uncompressed, "
             f"{_human(tot['contentSize'])} content, {_human(tot['survivingSize'])} in the merged image, "
             f"{tot['files']} paths")


def _render_privileged(out: Output, ins: Any) -> None:
    """setuid/setgid files, file capabilities, devices and world-writable paths the image shows:
    always printed, so nobody runs an image without seeing what it can do beyond plain files."""
    priv = ins.privileged
    if not len(priv):
        out.line("privileged: none (no setuid/setgid files, file capabilities, devices or world-writable paths)")
        return
    out.line(("privileged", "bold"), " (merged image)")
    rows: list[tuple[str, dict[str, Any], str]] = []
    rows += [("setuid", d, "") for d in priv.setuid]
    rows += [("setgid", d, "") for d in priv.setgid]
    rows += [("caps", d, d.get("text") or f"undecodable: {d.get('error')}") for d in priv.capabilities]
    rows += [(d["type"], d, "{}:{}".format(*d["device"])) for d in priv.devices]
    rows += [("o+w", d, d["type"]) for d in priv.world_writable]
    for kind, d, note in rows:
        out.line(f"  {kind:<6} {d['path']}  {d['mode']} {d['uid']}:{d['gid']}  layer {d['layer']}"
                 + (f"  {note}" if note else ""))


def _render_files(out: Output, ins: Any, only: int | None) -> None:
    style = {"+": "green", "~": "yellow", "-": "red"}
    for st in ins.layers:
        if only is not None and st.index != only:
            continue
        tree = Tree((f"layer {st.index}", "bold"), f" {st.digest.short}  {ins.created_by(st.index)}")
        nodes: dict[str, Tree] = {"": tree}
        for change in st.changes:
            parent_path, _, name = change.path.rpartition("/")
            parent = nodes.get(parent_path)
            if parent is None:  # a change below an unchanged directory: show the path from there
                parent, name = tree, change.path
            size = f" {_human(change.size)}" if change.type == "file" else f" ({change.type})"
            label: list[Span] = [(f"{change.kind} {name}", style[change.kind]), size]
            if change.lower is not None:
                verb = "hides" if change.kind == "~" else "removes"
                label.append((f"  {verb} layer {change.lower}", "dim"))
            nodes[change.path] = parent.add(*label)
        out.tree(tree)


def _render_waste(out: Output, ins: Any) -> None:
    w = ins.waste
    table = Table(Column("path", wrap=True), Column("wasted", "right"), Column("copies", wrap=True),
                  title="wasted space (stored, never shown)")
    for wp in w.paths[:20]:
        copies = ", ".join(f"layer {c.layer} {c.reason} by {c.hidden_by}" for c in wp.copies)
        table.add_row("/" + wp.path, _human(wp.bytes), copies)
    out.table(table)
    out.line("per layer: " + ", ".join(f"{i}: {_human(b)}" for i, b in enumerate(w.per_layer)))
    out.line(f"reclaimable: {_human(w.reclaimable_bytes)} ({w.reclaimable_bytes} bytes)")
    d = w.dive
    pct = "n/a" if d.user_wasted_percent is None else f"{d.user_wasted_percent * 100:.2f}%"
    out.line(f"dive: efficiency {d.efficiency * 100:.4f}%, wasted bytes {d.wasted_bytes}, user wasted {pct}")


@click.command()
@click.argument("ref")
@json_option
@platform_option
@insecure_option
@click.option("--raw", type=click.Choice(["manifest", "config"]), help="Print the stored document byte for byte.")
@click.option("--layers", "show_layers", is_flag=True, help="Per-layer size figures and added/modified/removed counts.")
@click.option("--files", "show_files", is_flag=True, help="Tree of each layer's changes (+ added, ~ modified, - removed).")
@click.option("--layer", "layer_index", type=int, default=None, help="With --files: only this layer (0 = base).")
@click.option("--waste", "show_waste", is_flag=True, help="Wasted bytes per path and layer, and dive's figures.")
@click.option("--ci", is_flag=True, help="Check the waste rules (flags or ./.layerkit-ci.yaml); exit 1 on failure.")
@click.option("--min-efficiency", default=None, help="--ci: lowest allowed dive efficiency (ratio 0-1).")
@click.option("--max-wasted-bytes", default=None, help="--ci: highest allowed dive wasted bytes (e.g. 20MB).")
@click.option("--max-wasted-percent", default=None, help="--ci: highest allowed user wasted percent (e.g. 10).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, writable=True),
              help="Write a self-contained HTML report to this file.")
@limits_option
def inspect(ref: str, as_json: bool, platform: str | None, insecure: bool, raw: str | None, show_layers: bool,
            show_files: bool, layer_index: int | None, show_waste: bool, ci: bool, min_efficiency: str | None,
            max_wasted_bytes: str | None, max_wasted_percent: str | None, html_file: str | None,
            limits: Any) -> None:
    """Show an image's config, history and layers with their real sizes, changes and waste."""
    image = open_ref(ref, platform, insecure)
    if raw is not None:
        data = image.manifest.to_bytes() if raw == "manifest" else image.raw_config
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    if layer_index is not None and not 0 <= layer_index < len(image.layers):
        raise click.BadParameter(f"the image has layers 0-{len(image.layers) - 1}", param_hint="--layer")
    ins = _inspect_with_progress(image, ref, limits)
    results = None
    if ci:
        from dataclasses import replace

        from ..analyze import ci as rules_mod

        rules = rules_mod.load_rules()
        if min_efficiency is not None:
            rules = replace(rules, min_efficiency=rules_mod.parse_ratio(min_efficiency, "efficiency"))
        if max_wasted_bytes is not None:
            rules = replace(rules, max_wasted_bytes=rules_mod.parse_bytes(max_wasted_bytes))
        if max_wasted_percent is not None:
            rules = replace(rules, max_wasted_ratio=rules_mod.parse_percent(max_wasted_percent))
        results = rules_mod.evaluate(ins.waste.dive, rules)
    if html_file:
        from ..analyze.report import write_report

        write_report(ins, Path(html_file))
        click.echo(f"wrote {html_file}", err=True)
    if as_json:
        doc = ins.to_json()
        if show_files:
            doc["changes"] = {str(st.index): [c.to_json() for c in st.changes] for st in ins.layers
                              if layer_index is None or st.index == layer_index}
        if results is not None:
            doc["ci"] = {"passed": all(r.passed for r in results), "rules": [r.to_json() for r in results]}
        print_json(doc)
    else:
        out = Output()
        if not (show_layers or show_files or show_waste or ci):
            _render_summary(out, ins)
            _render_layers(out, ins, detailed=False)
            _render_privileged(out, ins)
        if show_layers:
            _render_layers(out, ins, detailed=True)
        if show_files:
            _render_files(out, ins, layer_index)
        if show_waste:
            _render_waste(out, ins)
        if results is not None:
            for r in results:
                out.line(("PASS", "green") if r.passed else ("FAIL", "red"), f" {r.name}: {r.value} (allowed {r.threshold})")
    if results is not None and not all(r.passed for r in results):
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("ref")
@click.argument("path")
@json_option
@platform_option
@insecure_option
@limits_option
def blame(ref: str, path: str, as_json: bool, platform: str | None, insecure: bool, limits: Any) -> None:
    """Which layer provides PATH in REF, and which layers' versions it overrides or hides."""
    from ..analyze.summary import blame as blame_path
    from ..errors import LayerkitError

    image = open_ref(ref, platform, insecure)
    ins = _inspect_with_progress(image, ref, limits)
    result = blame_path(ins, path)
    if not result.versions:
        raise LayerkitError(f"blaming {result.path} in {ref}: no layer has this path; check it with `layerkit ls`")
    if as_json:
        print_json(result.to_json())
        return
    out = Output()
    if result.provider is None:
        out.line(f"{result.path}: not in the merged image")
    else:
        out.line(f"{result.path}: provided by layer {result.provider}  {ins.created_by(result.provider)}")
    for v in result.versions:
        if v.layer == result.provider and v.fate == "visible":
            continue
        what = "implied directory" if v.implicit else v.type
        by = f" by layer {v.hidden_by}  {ins.created_by(v.hidden_by)}" if v.hidden_by is not None else ""
        out.line(f"  layer {v.layer} ({what}, {_human(v.size)}): {v.fate}{by}")
        if v.created_by:
            out.line(f"    made by: {v.created_by}")
