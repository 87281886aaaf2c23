"""Validation of documents against the OCI image-spec JSON schemas kept in ../shared (not redistributed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMAS = {
    "manifest": "image-manifest-schema.json",
    "index": "image-index-schema.json",
    "config": "config-schema.json",
    "layout": "image-layout-schema.json",
    "descriptor": "content-descriptor.json",
}


def _ids(node: Any) -> list[str]:
    """Every ``id`` in a schema, nested ones included (each opens a new base URI scope)."""
    out: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("id"), str):
                out.append(item["id"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


def make_validator(schema_dir: Path) -> Callable[[str, Any], None]:
    """``validate(kind, doc_or_bytes)`` raising ``jsonschema.ValidationError``; refs resolve locally."""
    from jsonschema import Draft4Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    docs = {path.name: json.loads(path.read_text()) for path in schema_dir.glob("*.json")}
    # relative $refs ("defs.json#/...") resolve against each schema's id URL: register every file
    # under every base those ids use, and under its bare name
    bases = {i.rsplit("/", 1)[0] + "/" for doc in docs.values() for i in _ids(doc)} | {""}
    registry = Registry().with_resources(
        (base + name, Resource.from_contents(doc, default_specification=DRAFT4))
        for name, doc in docs.items()
        for base in bases
    )

    def validate(kind: str, doc: Any) -> None:
        if isinstance(doc, (bytes, str)):
            doc = json.loads(doc)
        schema = json.loads((schema_dir / SCHEMAS[kind]).read_text())
        Draft4Validator(schema, registry=registry).validate(doc)

    return validate
