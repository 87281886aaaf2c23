"""The dependency rules of the package, checked on the source (the Python counterpart of ggcr's
depcheck test): lower layers never import higher ones, and each third-party client lives in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "layerkit"

#: lowest first; a module may import its own layer and those before it
LAYERS = [
    {"errors", "lazy", "streams", "digest", "mediatypes", "reference", "spec"},
    {"tarfs"},
    {"image"},
    {"store"},
    {"sources"},
    {"transport"},
    {"ops", "union"},
    {"analyze", "build"},
    {"api"},
    {"cli", "__main__", "__init__"},
]

#: third-party package -> the only modules allowed to import it
EXTERNAL = {
    "click": ("cli",),
    "rich": ("cli",),
    "oras": ("sources/registry.py",),
    "requests": ("sources/registry.py", "sources/daemon.py"),  # the docker SDK raises requests errors
    "docker": ("sources/daemon.py", "build/executors/docker.py"),
    "zstandard": ("tarfs/compression.py",),
    "isal": ("tarfs/compression.py",),
}


def _layer_of(top: str) -> int:
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"layerkit/{top} is in no layer of tests/test_architecture.py: add it")


def _is_module(package: str, name: str) -> bool:
    base = PACKAGE.parent.joinpath(*package.split("."), name)
    return base.with_suffix(".py").is_file() or base.is_dir()


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path``, function-level ones included."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                if not node.module:  # `from .. import x`: x is a submodule, or a name of the package itself
                    out += [(node.lineno, f"{mod}.{a.name}" if _is_module(mod, a.name) else f"{mod}.__init__")
                            for a in node.names]
                    continue
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
    return out


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    rel = path.relative_to(PACKAGE)
    mine = _layer_of(rel.parts[0].removesuffix(".py"))
    bad = []
    for line, module in _imports(path):
        parts = module.split(".")
        if parts[0] == "layerkit" and len(parts) > 1:
            if _layer_of(parts[1].removesuffix(".py")) > mine:
                bad.append(f"{rel}:{line} imports {module}")
        elif parts[0] in EXTERNAL:
            allowed = EXTERNAL[parts[0]]
            if not any(str(rel) == a or rel.parts[0] == a for a in allowed):
                bad.append(f"{rel}:{line} imports {parts[0]} (only {', '.join(allowed)} may)")
    assert not bad, "\n".join(bad)
