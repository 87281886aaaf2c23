"""atheris: ``parse_reference`` and ``DockerReference.parse`` on arbitrary text."""

from __future__ import annotations

from _harness import fuzz, only_layerkit_errors

from layerkit.reference import DockerReference, parse_reference


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    only_layerkit_errors(lambda: parse_reference(text))
    only_layerkit_errors(lambda: DockerReference.parse(text))


if __name__ == "__main__":
    fuzz(test_one_input)
