"""``.dockerignore`` rules and Go ``filepath.Match``: a port of moby/patternmatcher and its
``ignorefile.ReadAll``, so a context excludes exactly what ``docker build`` excludes.

Rules (moby): lines starting with ``#`` in column 1 are comments; each pattern is trimmed, cleaned
(``path.Clean``) and loses a leading ``/``; ``!`` re-includes; ``**`` matches any number of
directories; a pattern matching a directory excludes everything under it; the *last* matching
pattern wins. :func:`go_match` is Go's ``filepath.Match`` (``*``, ``?``, ``[...]`` classes with
``^`` negation, ``\\`` escapes; ``*`` and ``?`` never match ``/``) — COPY wildcards use it too.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import BuildError

__all__ = [
    "BadPatternError",
    "PatternMatcher",
    "go_match",
    "has_wildcards",
    "ignore_file_for",
    "parse_ignore",
    "read_ignore_file",
]


class BadPatternError(BuildError, ValueError):
    """A malformed pattern (Go's ``filepath.ErrBadPattern``)."""


# -- Go filepath.Match ---------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _go_pattern_regex(pattern: str) -> re.Pattern[str]:
    """Translate a ``filepath.Match`` pattern to an anchored regex, validating it like Go does."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "\\":
            if i + 1 >= n:
                raise BadPatternError(f"syntax error in pattern {pattern!r}: trailing backslash")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif ch == "[":
            i += 1
            negate = i < n and pattern[i] == "^"
            if negate:
                i += 1
            parts: list[str] = []
            first = True
            while True:
                if i >= n:
                    raise BadPatternError(f"syntax error in pattern {pattern!r}: unterminated character class")
                if pattern[i] == "]" and not first:
                    i += 1
                    break
                lo, i = _class_char(pattern, i)
                hi = lo
                if i < n and pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                    if hi < lo:
                        raise BadPatternError(f"syntax error in pattern {pattern!r}: bad range {lo}-{hi}")
                parts.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
                first = False
            out.append("[" + ("^" if negate else "") + "".join(parts) + "]")
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    n = len(pattern)
    if i >= n or pattern[i] in "-]":
        raise BadPatternError(f"syntax error in pattern {pattern!r}: bad character class")
    if pattern[i] == "\\":
        i += 1
        if i >= n:
            raise BadPatternError(f"syntax error in pattern {pattern!r}: trailing backslash in class")
    return pattern[i], i + 1


def go_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match(pattern, name)`` on ``/``-separated paths (whole-string match)."""
    return _go_pattern_regex(pattern).fullmatch(name) is not None


def has_wildcards(component: str) -> bool:
    """BuildKit's ``containsWildcards``: an unescaped ``*``, ``?`` or ``[``."""
    i = 0
    while i < len(component):
        ch = component[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


# -- moby patternmatcher -----------------------------------------------------------------------------

_REGEX_SPECIAL = set(".+()|{}$")


def _clean(p: str) -> str:
    """Go's ``path.Clean`` (``""`` → ``"."``)."""
    if not p:
        return "."
    cleaned = posixpath.normpath(p)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


@dataclass
class _Pattern:
    """One ignore-file line, cleaned, with the matcher it compiles to."""

    cleaned: str
    exclusion: bool
    kind: str = ""  # exact / prefix / suffix / regexp
    regex: re.Pattern[str] | None = None

    def compile(self) -> None:
        reg = "^"
        kind = "exact"
        p = self.cleaned
        i, n = 0, len(p)
        first = True
        while i < n:
            ch = p[i]
            i += 1
            if ch == "*":
                if i < n and p[i] == "*":
                    i += 1
                    if i < n and p[i] == "/":  # treat **/ as **
                        i += 1
                    if i >= n:  # "**" at the end: accept everything below, like .gitignore
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            reg += ".*"
                            kind = "regexp"
                    else:
                        reg += "(.*/)?"
                        kind = "regexp"
                    if first:
                        kind = "suffix"
                else:
                    reg += "[^/]*"
                    kind = "regexp"
            elif ch == "?":
                reg += "[^/]"
                kind = "regexp"
            elif ch in _REGEX_SPECIAL:
                reg += "\\" + ch
            elif ch == "\\":
                if i < n:
                    reg += "\\" + p[i]
                    i += 1
                    kind = "regexp"
                else:
                    reg += "\\\\"
            elif ch in "[]":
                reg += ch
                kind = "regexp"
            else:
                reg += re.escape(ch) if ch not in "/-^" else ch
            first = False
        if kind == "regexp":
            try:
                self.regex = re.compile(reg + "$", re.DOTALL)
            except re.error as exc:
                raise BadPatternError(f"invalid .dockerignore pattern {self.cleaned!r}: {exc}") from None
        self.kind = kind

    def match(self, path: str) -> bool:
        if not self.kind:
            self.compile()
        if self.kind == "exact":
            return path == self.cleaned
        if self.kind == "prefix":
            return path.startswith(self.cleaned[:-2])
        if self.kind == "suffix":
            suffix = self.cleaned[2:]
            if path.endswith(suffix):
                return True
            return suffix[:1] == "/" and path == suffix[1:]
        assert self.regex is not None
        return self.regex.match(path) is not None


@dataclass
class PatternMatcher:
    """Ordered include/exclude patterns; ``matches(path)`` is moby's ``MatchesOrParentMatches``."""

    patterns: list[_Pattern] = field(default_factory=list)
    exclusions: bool = False

    @classmethod
    def from_patterns(cls, patterns: list[str] | tuple[str, ...]) -> PatternMatcher:
        pm = cls()
        for raw in patterns:
            p = raw.strip()
            if not p:
                continue
            p = _clean(p)
            exclusion = p.startswith("!")
            if exclusion:
                if len(p) == 1:
                    raise BadPatternError('illegal exclusion pattern: "!"')
                p = p[1:]
                pm.exclusions = True
            _go_pattern_regex(p)  # syntax check, as moby does with filepath.Match(p, ".")
            pm.patterns.append(_Pattern(p, exclusion))
        return pm

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, path: str) -> bool:
        """True when ``path`` (relative, ``/``-separated) or one of its parents is excluded and no
        later ``!`` pattern re-includes it."""
        path = _clean(path)
        matched = False
        parent = posixpath.dirname(path) or "."
        parent_dirs = parent.split("/")
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path)
            if not hit and parent != ".":
                for i in range(len(parent_dirs)):
                    if pattern.match("/".join(parent_dirs[: i + 1])):
                        hit = True
                        break
            if hit:
                matched = not pattern.exclusion
        return matched

    def may_include_below(self, dir_path: str) -> bool:
        """Whether an excluded directory can still hold re-included files (so a walk must enter it).
        Conservative, like fsutil: any ``!`` pattern that could reach below ``dir_path``."""
        if not self.exclusions:
            return False
        prefix = _clean(dir_path) + "/"
        for pattern in self.patterns:
            if not pattern.exclusion:
                continue
            head = pattern.cleaned
            literal = re.split(r"[*?\[\\]", head, maxsplit=1)[0]
            if literal.startswith(prefix) or prefix.startswith(literal) or head.startswith("**"):
                return True
        return False


def parse_ignore(text: str) -> list[str]:
    """moby ``ignorefile.ReadAll``: comments, trimming, cleaning, leading ``/`` removal."""
    out: list[str] = []
    for n, line in enumerate(text.splitlines()):
        if n == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern[0] == "!"
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = _clean(pattern)
            if len(pattern) > 1 and pattern[0] == "/":
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


def ignore_file_for(context_dir: Path, dockerfile: Path | None) -> Path | None:
    """BuildKit's choice: ``<Dockerfile>.dockerignore`` next to the Dockerfile wins over the
    context's ``.dockerignore``."""
    if dockerfile is not None:
        specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
        if specific.is_file():
            return specific
    default = context_dir / ".dockerignore"
    return default if default.is_file() else None


def read_ignore_file(path: Path | None) -> PatternMatcher:
    if path is None:
        return PatternMatcher()
    return PatternMatcher.from_patterns(parse_ignore(path.read_text(encoding="utf-8", errors="surrogateescape")))
