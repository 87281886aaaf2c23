"""BuildKit's parser test cases (``parser_test.go``) run against layerkit's parser.

Positive cases must dump byte-for-byte like BuildKit, negative cases must fail, and line numbers
must match ``TestParseIncludesLineNumbers``. The fixtures sit next to the repository
(``../shared/conformance/dockerfile-parser``) and are not redistributed with layerkit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from layerkit.build.dockerfile.parser import parse
from layerkit.errors import DockerfileSyntaxError

PARSER_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "dockerfile-parser"

if not PARSER_DIR.is_dir():
    pytest.skip(
        "BuildKit conformance fixtures not found at ../shared/conformance (they are not redistributed with layerkit)",
        allow_module_level=True,
    )


def _cases(kind: str) -> list[Path]:
    return sorted(p for p in (PARSER_DIR / kind).iterdir() if (p / "Dockerfile").is_file())


@pytest.mark.parametrize("case", _cases("testfiles"), ids=lambda p: p.name)
def test_positive_case_dumps_like_buildkit(case: Path) -> None:
    result = parse((case / "Dockerfile").read_bytes())
    expected = (case / "result").read_bytes().decode("utf-8")
    assert result.ast.dump() + "\n" == expected


@pytest.mark.parametrize("case", _cases("testfiles-negative"), ids=lambda p: p.name)
def test_negative_case_fails(case: Path) -> None:
    with pytest.raises(DockerfileSyntaxError):
        parse((case / "Dockerfile").read_bytes())


def test_line_numbers_count_every_physical_line() -> None:
    ast = parse((PARSER_DIR / "testfile-line" / "Dockerfile").read_bytes()).ast
    assert (ast.start_line, ast.end_line) == (5, 31)
    assert [(c.start_line, c.end_line) for c in ast.children] == [(5, 5), (11, 12), (17, 31)]
