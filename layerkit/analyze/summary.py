"""The ``layerkit inspect`` document: an image's identity, config, history and per-layer figures.

``inspect_image(image)`` reads every layer exactly once (through the union, metered) and returns an
:class:`Inspection`; ``Inspection.to_json()`` is the stable document ``layerkit inspect --json``
prints. Keys (sizes are bytes; paths are absolute, ``/``-prefixed):

``reference``
    the reference as given; ``source`` which transport/source answered (``store``,
    ``docker-daemon``, ``registry docker.io``, ``docker-archive:FILE``…).
``digest``, ``mediaType``
    of the manifest (for a docker-archive without a registry manifest: the synthesized one).
``platform``
    ``{"os", "architecture"}`` plus ``"variant"`` when set.
``created``, ``author``
    from the image config.
``config``
    the image config's ``config`` object verbatim, OCI names: ``Env``, ``Cmd``, ``Entrypoint``,
    ``WorkingDir``, ``User``, ``Labels``, ``ExposedPorts``, ``Volumes``, ``StopSignal``,
    ``Healthcheck``… (absent keys are absent).
``history``
    list of ``{"created", "createdBy", "author", "comment", "emptyLayer", "layer"}`` in config order;
    ``layer`` is the index of the layer the step made, ``null`` for empty layers.
``layers``
    in manifest order: ``{"index", "digest", "diffId", "mediaType", "size", "uncompressedSize",
    "contentSize", "survivingSize", "wastedSize", "files", "added", "modified", "removed",
    "createdBy", "history"}``. ``size`` is the compressed blob, ``uncompressedSize`` the tar
    stream, ``contentSize`` the sum of its regular files, ``survivingSize`` what of that the merged
    image shows, ``wastedSize`` the rest; ``files`` counts members other than whiteout markers;
    ``added``/``modified``/``removed`` are ``{"count", "bytes"}``; ``history`` is the index of the
    history step that made the layer (``null`` when the config has none).
``totals``
    ``{"size", "uncompressedSize", "contentSize", "survivingSize", "wastedSize", "files"}``: sums
    over layers, except ``files`` = paths in the merged image.
``waste``
    ``{"reclaimableBytes", "paths", "dive"}``: ``paths`` lists the top wasted paths
    ``{"path", "bytes", "copies": [{"layer", "size", "hiddenBy", "reason"}]}`` (``reason`` is
    ``overwritten``, ``deleted`` or ``opaque``), largest first; ``dive`` holds dive 0.13's
    ``{"efficiency", "wastedBytes", "userWastedPercent"}`` (see :mod:`layerkit.analyze.waste`).
``privileged``
    always present, at the top level for the merged image (only what it shows; each entry with the
    ``layer`` providing it) and in every ``layers`` item for what that layer ships:
    ``{"setuid", "setgid", "capabilities", "devices", "worldWritable"}``, lists sorted by path of
    ``{"path", "mode", "uid", "gid"}`` (``mode`` octal text). ``setuid``/``setgid``: regular files
    with that bit; ``capabilities`` add ``caps`` (permitted set, libcap names such as
    ``cap_net_bind_service``), ``inheritable``, ``effective``, ``text`` (``getcap`` form,
    ``cap_net_raw=ep``), ``version`` (vfs_cap_data 1-3) and ``rootid`` (v3), or ``error`` when the
    value does not decode; ``devices`` add ``type`` (``char``/``block``) and ``device``
    ``[major, minor]``; ``worldWritable`` (mode o+w without the sticky bit, symlinks aside) adds
    ``type``. See :mod:`layerkit.analyze.privileged`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..image import Image
from ..spec import History, ImageConfig
from ..tarfs.limits import Limits
from ..union import Union
from .privileged import Privileged, image_privileged, layer_privileged
from .sizes import LayerStats, ProgressHook, layer_stats, metered_union, paused_gc
from .waste import Waste, waste

__all__ = ["TOP_WASTE", "Blame", "BlameVersion", "Inspection", "blame", "inspect_image", "layer_history"]

#: wasted paths listed in the JSON document and the human view
TOP_WASTE = 20


def layer_history(config: ImageConfig, layers: int) -> list[int | None]:
    """For each layer, the index of the history step that made it: non-empty steps pair with layers
    in order (what Docker and BuildKit write); layers beyond the history get ``None``."""
    steps = [i for i, h in enumerate(config.history) if not h.empty_layer]
    return [steps[i] if i < len(steps) else None for i in range(layers)]


@dataclass
class Inspection:
    """Everything ``inspect`` reports on one image: its union, per-layer figures, history and waste."""

    image: Image
    reference: str
    source: str
    union: Union
    layers: list[LayerStats]
    history_of_layer: list[int | None]
    waste: Waste

    @property
    def config(self) -> ImageConfig:
        return self.image.config

    def created_by(self, layer: int) -> str:
        h = self.history_of_layer[layer]
        return self.config.history[h].created_by if h is not None else ""

    @cached_property
    def privileged(self) -> Privileged:
        """Privileged entries of the merged image (from the union's index: no extra read)."""
        return image_privileged(self.union)

    @cached_property
    def layer_privileged(self) -> list[Privileged]:
        """Privileged entries each layer ships."""
        return [layer_privileged(self.union, st.index) for st in self.layers]

    def step(self, layer: int) -> History | None:
        h = self.history_of_layer[layer]
        return self.config.history[h] if h is not None else None

    def totals(self) -> dict[str, int]:
        """The document's ``totals``, without building the rest of it."""
        out = {"size": 0, "uncompressedSize": 0, "contentSize": 0, "survivingSize": 0, "wastedSize": 0}
        for st in self.layers:
            out["size"] += st.size
            out["uncompressedSize"] += st.uncompressed_size
            out["contentSize"] += st.content_size
            out["survivingSize"] += st.surviving_size
            out["wastedSize"] += st.wasted_size
        out["files"] = len(self.union) - 1  # every visible path but the root (no walk of 20k nodes)
        return out

    def to_json(self, *, top_waste: int = TOP_WASTE) -> dict[str, Any]:
        cfg = self.config
        layer_of_step = {h: i for i, h in enumerate(self.history_of_layer) if h is not None}
        history = [
            {"created": h.created, "createdBy": h.created_by, "author": h.author, "comment": h.comment,
             "emptyLayer": h.empty_layer, "layer": layer_of_step.get(i)}
            for i, h in enumerate(cfg.history)
        ]
        layers = []
        for st in self.layers:
            doc: dict[str, Any] = {"index": st.index, "digest": str(st.digest), "diffId": str(st.diff_id), "mediaType": st.media_type}
            doc.update(st.to_json())
            doc["createdBy"] = self.created_by(st.index)
            doc["history"] = self.history_of_layer[st.index]
            doc["privileged"] = self.layer_privileged[st.index].to_json()
            layers.append(doc)
        return {
            "reference": self.reference,
            "source": self.source,
            "digest": str(self.image.digest),
            "mediaType": self.image.media_type,
            "platform": self.image.platform.to_json(),
            "created": cfg.created,
            "author": cfg.author,
            "config": dict(cfg.config),
            "history": history,
            "layers": layers,
            "totals": self.totals(),
            "waste": self.waste.to_json(top=top_waste),
            "privileged": self.privileged.to_json(),
        }


def inspect_image(image: Image, *, reference: str = "", progress: ProgressHook | None = None,
                  limits: Limits | None = None) -> Inspection:
    """Read every layer of ``image`` once (within ``limits``) and gather the inspect figures."""
    with paused_gc():
        union, metered = metered_union(image, progress, limits)
        stats = layer_stats(union, metered)
        figures = waste(union)
    source = str(getattr(image, "resolved_from", "") or image.source.name)
    return Inspection(image, reference or image.reference, source, union, stats,
                      layer_history(image.config, len(image.layers)), figures)


@dataclass(frozen=True)
class BlameVersion:
    """One layer's version of a path and what became of it."""

    layer: int
    type: str
    size: int
    fate: str
    hidden_by: int | None
    implicit: bool
    created_by: str

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "type": self.type, "size": self.size, "fate": self.fate,
                "hiddenBy": self.hidden_by, "implicit": self.implicit, "createdBy": self.created_by}


@dataclass(frozen=True)
class Blame:
    """Which layer provides ``path`` and which versions of it (in lower layers) it overrides; when
    the path is gone, ``provider`` is None and the versions say which layer removed it."""

    path: str
    provider: int | None
    versions: list[BlameVersion]

    @property
    def overrides(self) -> list[BlameVersion]:
        return [v for v in self.versions if self.provider is not None and v.layer < self.provider]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "exists": self.provider is not None, "provider": self.provider,
                "overrides": sorted({v.layer for v in self.overrides if not v.implicit}),
                "versions": [v.to_json() for v in self.versions]}


def blame(inspection: Inspection, path: str) -> Blame:
    """Attribution of ``path`` (absolute or relative; never follows symlinks)."""
    union = inspection.union
    display = "/" + path.strip("/")
    provider = union.provider(path) if path in union else None
    versions = [
        BlameVersion(n.layer, n.entry.type.value, n.entry.size if n.entry.type.value == "file" else 0,
                     n.fate.value, n.by, n.implicit, inspection.created_by(n.layer))
        for n in union.history(path)
    ]
    return Blame(display if display != "/" else "/", provider, versions)
