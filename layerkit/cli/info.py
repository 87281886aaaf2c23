"""``layerkit info``: version, store path, which RUN executors work here (and why not), tool versions.

JSON keys (stable): ``version``, ``python``, ``store`` (path), ``executors`` (list of ``{name, usable,
reason}`` in auto-selection order), ``default_executor`` (first usable or null), ``tools``
(name → version or null when not installed; ``kernel`` included).
"""

from __future__ import annotations

import platform
from typing import Any

import click

from ._common import json_option, print_json
from .output import Column, Output, Table

__all__ = ["info"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("layerkit")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _gather() -> dict[str, Any]:
    from ..build.executors import executor_status, tool_versions
    from ..store import default_home

    executors = executor_status()
    usable = [e.name for e in executors if e.usable]
    return {
        "version": _version(),
        "python": platform.python_version(),
        "store": str(default_home()),
        "executors": [e.to_json() for e in executors],
        "default_executor": usable[0] if usable else None,
        "tools": tool_versions(),
    }


@click.command("info")
@json_option
def info(as_json: bool) -> None:
    """Show layerkit's version, store, usable RUN executors and the tools found."""
    doc = _gather()
    if as_json:
        print_json(doc)
        return
    out = Output()
    out.line(f"layerkit {doc['version']} (Python {doc['python']})")
    out.line(f"store: {doc['store']}")
    table = Table("executor", "usable", Column("why not", wrap=True), title="RUN executors (auto order)")
    for e in doc["executors"]:
        table.add_row(e["name"], "yes" if e["usable"] else "no", e["reason"] or "")
    out.table(table)
    out.line(f"default executor: {doc['default_executor'] or 'none: RUN steps cannot run here'}")
    tools = Table("tool", "version", title="tools")
    for name, version in doc["tools"].items():
        tools.add_row(name, version or "not found")
    out.table(tools)
