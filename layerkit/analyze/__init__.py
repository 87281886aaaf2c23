"""Image analysis: the inspect document, size figures, waste (with dive's figures), blame, diff and the
HTML report — all computed from one read of each layer (through :class:`layerkit.union.Union`).

The diff and HTML report names are imported on first use: ``inspect`` needs neither, and a CLI run
should not pay for importing them (the report alone pulls in ``importlib.resources`` and ``zipfile``).
The rest is what every analysis needs (and ``waste`` must be the function, not its module)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes
from .sizes import Change, LayerStats, metered_union
from .summary import Blame, Inspection, blame, inspect_image
from .waste import DiveFigures, Waste, dive_figures, waste

_LAZY = {
    "DiffResult": ".diff",
    "diff_sides": ".diff",
    "image_side": ".diff",
    "is_layer_file": ".diff",
    "layer_file_side": ".diff",
    "write_report": ".report",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .diff import DiffResult, diff_sides, image_side, is_layer_file, layer_file_side
    from .report import write_report

__all__ = [
    "Blame",
    "Change",
    "DiffResult",
    "DiveFigures",
    "Inspection",
    "LayerStats",
    "Waste",
    "blame",
    "diff_sides",
    "dive_figures",
    "image_side",
    "inspect_image",
    "is_layer_file",
    "layer_file_side",
    "metered_union",
    "waste",
    "write_report",
]
