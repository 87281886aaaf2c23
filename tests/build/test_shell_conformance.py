"""BuildKit's own expansion fixtures (``envVarTest``, ``wordsTest``) run against layerkit's lexer.

The fixtures live next to the repository (``../shared/conformance/dockerfile-shell``) and are not
redistributed with layerkit; the module skips when they are absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from layerkit.build.dockerfile.shell import Lex, ShellExpansionError

SHELL_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "dockerfile-shell"

if not SHELL_DIR.is_dir():
    pytest.skip(
        "BuildKit conformance fixtures not found at ../shared/conformance (they are not redistributed with layerkit)",
        allow_module_level=True,
    )

# The environment lex_test.go uses for envVarTest.
ENV_VAR_TEST_ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _env_var_cases() -> list[Any]:
    cases = []
    text = (SHELL_DIR / "envVarTest").read_text(encoding="utf-8")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        tag, source, expected = (part.strip() for part in line.split("|"))
        if tag == "W":  # Windows-only rows: env names are case-insensitive there
            continue
        cases.append(pytest.param(source, expected, id=f"L{lineno}:{source}"))
    return cases


def _words_cases() -> list[Any]:
    cases = []
    env: dict[str, str] = {}
    text = (SHELL_DIR / "wordsTest").read_text(encoding="utf-8")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("ENV "):
            name, _, value = line[4:].lstrip(" ").partition("=")
            env[name] = value
            continue
        source, expected = line.split("|")
        cases.append(pytest.param(source.strip(), expected.lstrip(" ").split(","), dict(env), id=f"L{lineno}"))
    return cases


@pytest.mark.parametrize(("source", "expected"), _env_var_cases())
def test_env_var_expansion(source: str, expected: str) -> None:
    lex = Lex()
    if expected == "error":
        with pytest.raises(ShellExpansionError):
            lex.process_word(source, ENV_VAR_TEST_ENV)
    else:
        assert lex.process_word(source, ENV_VAR_TEST_ENV) == expected


@pytest.mark.parametrize(("source", "expected", "env"), _words_cases())
def test_word_splitting(source: str, expected: list[str], env: dict[str, str]) -> None:
    lex = Lex()
    if expected == ["error"]:
        with pytest.raises(ShellExpansionError):
            lex.process_words(source, env)
    else:
        assert lex.process_words(source, env) == expected
