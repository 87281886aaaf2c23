"""CI thresholds for ``layerkit inspect --ci``: dive-compatible rules, from flags or ``.layerkit-ci.yaml``.

Rules are checked against dive's figures (see :mod:`layerkit.analyze.waste`) so a pipeline moving
from ``dive --ci`` keeps its numbers. Defaults are dive's: efficiency at least 0.9, user wasted
percent at most 10 %, wasted bytes unchecked.

The config file is a tiny YAML subset parsed here (no PyYAML dependency for three numbers):
``key: value`` lines, ``#`` comments, optionally nested one level under ``rules:`` as in dive's
``.dive-ci``. Keys: ``min-efficiency`` / ``lowestEfficiency`` (ratio 0-1),
``max-wasted-bytes`` / ``highestWastedBytes`` (bytes, or with a unit: ``20MB``, ``1.5GiB``),
``max-wasted-percent`` (a percentage, ``10`` or ``10%``) / ``highestUserWastedPercent`` (a ratio
0-1, as dive reads it). ``disabled`` turns a rule off. Flags override the file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..tarfs.limits import parse_size
from .waste import DiveFigures

__all__ = ["CONFIG_FILE", "CiRules", "RuleResult", "evaluate", "load_rules", "parse_bytes", "parse_percent"]

CONFIG_FILE = ".layerkit-ci.yaml"


@dataclass(frozen=True)
class CiRules:
    """Thresholds; ``None`` disables a rule. ``max_wasted_ratio`` is a ratio (0.1 = 10 %)."""

    min_efficiency: float | None = 0.9
    max_wasted_bytes: int | None = None
    max_wasted_ratio: float | None = 0.1


@dataclass(frozen=True)
class RuleResult:
    """One CI rule checked: its value against its threshold."""

    name: str
    passed: bool
    value: str
    threshold: str

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.name, "passed": self.passed, "value": self.value, "threshold": self.threshold}


def _disabled(text: str) -> bool:
    return text.strip().lower() in ("disabled", "off", "none", "null", "~", "")


def parse_bytes(text: str) -> int | None:
    """``20MB``, ``1.5GiB``, ``1048576`` → bytes; ``disabled`` → None."""
    return None if _disabled(text) else parse_size(text, "the wasted-bytes threshold")


def _number(text: str, what: str) -> float | None:
    if _disabled(text):
        return None
    try:
        return float(text.strip().rstrip("%"))
    except ValueError:
        raise ConfigError(f"reading the {what} threshold: {text!r} is not a number") from None


def parse_percent(text: str) -> float | None:
    """A percentage (``10`` or ``10%``) → ratio 0.1; ``disabled`` → None."""
    value = _number(text, "wasted-percent")
    return None if value is None else value / 100


def parse_ratio(text: str, what: str) -> float | None:
    return _number(text, what)


def _read_yaml_subset(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        key, sep, value = line.strip().partition(":")
        if not sep:
            raise ConfigError(f"reading {path.name}:{lineno}: expected 'key: value'")
        value = value.strip().strip("'\"")
        if key == "rules" and not value:
            continue  # dive's layout nests the rules one level down
        out[key.strip()] = value
    return out


def load_rules(path: Path | None = None, base: CiRules | None = None) -> CiRules:
    """Rules from ``path`` (default ``./.layerkit-ci.yaml`` when it exists) over ``base``."""
    rules = base or CiRules()
    path = path if path is not None else Path(CONFIG_FILE)
    if not path.is_file():
        return rules
    for key, value in _read_yaml_subset(path).items():
        if key in ("min-efficiency", "lowestEfficiency"):
            rules = replace(rules, min_efficiency=parse_ratio(value, "efficiency"))
        elif key in ("max-wasted-bytes", "highestWastedBytes"):
            rules = replace(rules, max_wasted_bytes=parse_bytes(value))
        elif key == "max-wasted-percent":
            rules = replace(rules, max_wasted_ratio=parse_percent(value))
        elif key == "highestUserWastedPercent":
            rules = replace(rules, max_wasted_ratio=parse_ratio(value, "user wasted percent"))
        else:
            raise ConfigError(
                f"reading {path.name}: unknown key {key!r}; use min-efficiency, max-wasted-bytes or max-wasted-percent"
            )
    return rules


def evaluate(figures: DiveFigures, rules: CiRules) -> list[RuleResult]:
    """One result per enabled rule."""
    out = []
    if rules.min_efficiency is not None:
        out.append(RuleResult("min-efficiency", figures.efficiency >= rules.min_efficiency,
                              f"{figures.efficiency:.4f}", f">= {rules.min_efficiency:g}"))
    if rules.max_wasted_bytes is not None:
        out.append(RuleResult("max-wasted-bytes", figures.wasted_bytes <= rules.max_wasted_bytes,
                              str(figures.wasted_bytes), f"<= {rules.max_wasted_bytes}"))
    if rules.max_wasted_ratio is not None:
        ratio = figures.user_wasted_percent
        passed = ratio is None or ratio <= rules.max_wasted_ratio
        value = "n/a (single layer)" if ratio is None else f"{ratio * 100:.2f}%"
        out.append(RuleResult("max-wasted-percent", passed, value, f"<= {rules.max_wasted_ratio * 100:g}%"))
    return out
