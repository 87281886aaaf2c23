"""What every atheris harness here shares: the one property they check, and how they start.

The property is the hypothesis tests' (tests/safety/test_safety_fuzz.py): whatever the input, the only
exception that may escape is a ``LayerkitError`` with a message. Anything else is a crash atheris
saves as ``crash-<sha1>`` with the input that caused it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "safety")]  # this checkout, and the shared corpora

with atheris.instrument_imports(include=["layerkit"]):
    import layerkit.build.dockerfile.instructions
    import layerkit.reference
    import layerkit.spec
    import layerkit.tarfs.compression
    import layerkit.tarfs.reader  # noqa: F401

from layerkit.errors import LayerkitError


def only_layerkit_errors(call: Callable[[], object]) -> None:
    try:
        call()
    except LayerkitError as exc:
        if not str(exc).strip():
            raise AssertionError(f"{type(exc).__name__} without a message") from exc


def fuzz(test_one_input: Callable[[bytes], None]) -> None:
    """Hand ``sys.argv`` (corpus dirs, ``-max_total_time=…`` and other libFuzzer flags) to atheris."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
