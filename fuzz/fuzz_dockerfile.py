"""atheris: ``parse_dockerfile`` on arbitrary bytes (seeded with BuildKit's parser test files)."""

from __future__ import annotations

from _harness import fuzz, only_layerkit_errors

from layerkit.build.dockerfile.instructions import parse_dockerfile


def test_one_input(data: bytes) -> None:
    only_layerkit_errors(lambda: parse_dockerfile(data))


if __name__ == "__main__":
    fuzz(test_one_input)
