"""Image analysis: the inspect document, size figures, waste (with dive's figures), blame, diff and the
HTML report — all computed from one read of each layer (through :class:`layerkit.union.Union`)."""

from __future__ import annotations

from .diff import DiffResult, diff_sides, image_side, is_layer_file, layer_file_side
from .report import write_report
from .sizes import Change, LayerStats, metered_union
from .summary import Blame, Inspection, blame, inspect_image
from .waste import DiveFigures, Waste, dive_figures, waste

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
