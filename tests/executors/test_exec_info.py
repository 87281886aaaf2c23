"""``layerkit info``: what a user checks first when a RUN cannot run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from layerkit.build.executor import AUTO_ORDER


def test_info_json_lists_every_executor_and_tool(run_cli: Any, layerkit_home: Path) -> None:
    result = run_cli("info", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"version", "python", "store", "executors", "default_executor", "tools"}
    assert doc["store"] == str(layerkit_home)
    assert [e["name"] for e in doc["executors"]] == list(AUTO_ORDER)
    for e in doc["executors"]:
        assert e["usable"] is (e["reason"] is None)
    usable = [e["name"] for e in doc["executors"] if e["usable"]]
    assert doc["default_executor"] == (usable[0] if usable else None)
    assert doc["tools"]["kernel"] and "bwrap" in doc["tools"] and "docker" in doc["tools"]


def test_info_human_view(run_cli: Any, layerkit_home: Path) -> None:
    result = run_cli("info")
    assert result.exit_code == 0
    assert "RUN executors" in result.stdout and "default executor:" in result.stdout
    for name in AUTO_ORDER:
        assert name in result.stdout
