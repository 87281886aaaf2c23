"""Image analysis: the inspect document, size figures, waste (with dive's figures), blame, diff and the
HTML report — all computed from one read of each layer (through :class:`layerkit.union.Union`)."""

from __future__ import annotations

from .sizes import Change, LayerStats, metered_union
from .summary import Blame, Inspection, blame, inspect_image
from .waste import DiveFigures, Waste, dive_figures, waste

__all__ = [
    "Blame",
    "Change",
    "DiveFigures",
    "Inspection",
    "LayerStats",
    "Waste",
    "blame",
    "dive_figures",
    "inspect_image",
    "metered_union",
    "waste",
]
