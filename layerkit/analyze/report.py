"""``layerkit inspect --html``: one self-contained page (no network, inline SVG and JS).

The page embeds the data it draws as JSON in ``<script type="application/json" id="layerkit-data">``:
the inspect document's ``reference``, ``digest``, ``platform``, ``created``, ``layers``, ``totals`` and
``waste`` (top 100 paths), plus ``tree``: the merged image by directory as nested
``{"n": name, "s": content bytes, "l": layer providing most of them, "c": children}``, cut at depth 6
and with entries under 0.05 % of the image folded into their directory, so the page stays small.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..tarfs.entry import EntryType
from .summary import Inspection

__all__ = ["render_report", "report_data", "write_report"]

_MARKER = "/*LAYERKIT_DATA*/"
_MAX_DEPTH = 6
_MIN_FRACTION = 0.0005


class _Dir:
    __slots__ = ("by_layer", "children", "size")

    def __init__(self) -> None:
        self.size = 0
        self.by_layer: dict[int, int] = {}
        self.children: dict[str, _Dir] = {}


def _tree(ins: Inspection) -> dict[str, Any]:
    root = _Dir()
    for node in ins.union.walk():
        e = node.entry
        if e.type is not EntryType.FILE or not e.size:
            continue
        cur = root
        parts = node.path.split("/")
        for part in [None, *parts]:
            if part is not None:
                cur = cur.children.setdefault(part, _Dir())
            cur.size += e.size
            cur.by_layer[node.layer] = cur.by_layer.get(node.layer, 0) + e.size
    floor = root.size * _MIN_FRACTION

    def render(name: str, d: _Dir, depth: int) -> dict[str, Any]:
        layer = max(d.by_layer, key=lambda k: (d.by_layer[k], -k)) if d.by_layer else -1
        doc: dict[str, Any] = {"n": name, "s": d.size, "l": layer}
        if depth < _MAX_DEPTH and d.children:
            kids = [render(k, v, depth + 1) for k, v in sorted(d.children.items()) if v.size >= floor]
            if kids:
                rest = d.size - sum(k["s"] for k in kids)
                if rest > 0:
                    kids.append({"n": "(other)", "s": rest, "l": layer})
                doc["c"] = kids
        return doc

    return render("", root, 0)


def report_data(ins: Inspection) -> dict[str, Any]:
    doc = ins.to_json(top_waste=100)
    return {
        "reference": doc["reference"],
        "digest": doc["digest"],
        "platform": str(ins.image.platform),
        "created": doc["created"],
        "layers": doc["layers"],
        "totals": doc["totals"],
        "waste": doc["waste"],
        "tree": _tree(ins),
    }


def render_report(ins: Inspection) -> str:
    from importlib import resources  # 25 ms of imports (zipfile…) only the report needs

    template = resources.files(__package__).joinpath("report.html").read_text(encoding="utf-8")
    payload = json.dumps(report_data(ins), ensure_ascii=True, separators=(",", ":"))
    # inside <script>, "</" could end the element early; "\/" is the same JSON string
    payload = payload.replace("</", "<\\/")
    return template.replace(_MARKER, payload)


def write_report(ins: Inspection, path: Path) -> None:
    path.write_text(render_report(ins), encoding="utf-8")
