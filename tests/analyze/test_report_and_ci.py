"""The HTML report renders in headless Chromium without console errors and embeds its data; CI
thresholds parse from flags' syntax and from ``.layerkit-ci.yaml``."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from layerkit.analyze import inspect_image
from layerkit.analyze.ci import (
    CiRules,
    evaluate,
    load_rules,
    parse_bytes,
    parse_percent,
)
from layerkit.analyze.report import write_report
from layerkit.analyze.waste import DiveFigures
from layerkit.errors import LayerkitError
from layerkit.transport import open_image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/run does this)")
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_report_renders_without_errors_and_embeds_the_inspect_data(alpine_image_oci: Path, tmp_path: Path) -> None:
    ins = inspect_image(open_image(f"oci:{alpine_image_oci}:3.20"))
    page = tmp_path / "report.html"
    write_report(ins, page)
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text

    shot = _chromium(tmp_path / "profile", "--enable-logging=stderr", "--v=0", f"--screenshot={tmp_path / 'out.png'}",
                     "--window-size=1200,900", page.as_uri())
    assert (tmp_path / "out.png").stat().st_size > 10_000
    errors = [line for line in shot.stderr.splitlines()
              if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
    assert errors == []

    dom = _chromium(tmp_path / "profile", "--dump-dom", page.as_uri()).stdout
    assert 'data-rendered="yes"' in dom
    assert dom.count('class="cell"') > 10  # treemap cells drawn by the inline script
    data = json.loads(html.unescape(re.search(r'id="layerkit-data">(.*?)</script>', dom, re.DOTALL).group(1)))
    assert data["digest"] == str(ins.image.digest)
    assert [layer["contentSize"] for layer in data["layers"]] == [st.content_size for st in ins.layers]
    assert data["tree"]["s"] == ins.layers[0].surviving_size
    assert {c["n"] for c in data["tree"]["c"]} >= {"bin", "lib", "usr", "etc"}


def test_threshold_syntax() -> None:
    assert parse_bytes("20MB") == 20_000_000
    assert parse_bytes("1.5KiB") == 1536
    assert parse_bytes("disabled") is None
    assert parse_percent("10%") == parse_percent("10") == 0.1
    with pytest.raises(LayerkitError, match="not a size"):
        parse_bytes("lots")


def test_rules_come_from_the_yaml_subset_in_dive_or_layerkit_names(tmp_path: Path) -> None:
    config = tmp_path / ".layerkit-ci.yaml"
    config.write_text("# dive layout\nrules:\n  lowestEfficiency: 0.95\n  highestWastedBytes: 1kB\n"
                      "  highestUserWastedPercent: disabled\n")
    assert load_rules(config) == CiRules(min_efficiency=0.95, max_wasted_bytes=1000, max_wasted_ratio=None)
    config.write_text("max-wasted-percent: 20%  # of the user layers\n")
    assert load_rules(config).max_wasted_ratio == 0.2
    config.write_text("colour: blue\n")
    with pytest.raises(LayerkitError, match="unknown key 'colour'"):
        load_rules(config)


def test_rules_evaluate_dive_figures() -> None:
    figures = DiveFigures(efficiency=0.8, wasted_bytes=5000, user_wasted_percent=0.5, size_bytes=10, user_size_bytes=8)
    results = evaluate(figures, CiRules(min_efficiency=0.9, max_wasted_bytes=10_000, max_wasted_ratio=0.1))
    assert [(r.name, r.passed) for r in results] == [
        ("min-efficiency", False), ("max-wasted-bytes", True), ("max-wasted-percent", False)]
