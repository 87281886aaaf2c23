"""Dockerfile variable expansion: a port of BuildKit's ``frontend/dockerfile/shell/lex.go``.

This is not a shell. It expands ``$VAR`` / ``${VAR...}``, removes quotes and honours the escape
token the way BuildKit does for ENV, COPY, WORKDIR, LABEL... so that a Dockerfile means the same
thing under layerkit as under ``docker build``. ``RUN`` strings are handed to ``/bin/sh`` as they are.

Supported parameter forms: ``$V``, ``${V}``, ``${V:-w}``, ``${V-w}``, ``${V:+w}``, ``${V+w}``,
``${V:?msg}``, ``${V?msg}``, ``${V#glob}``, ``${V##glob}``, ``${V%glob}``, ``${V%%glob}``,
``${V/glob/repl}``, ``${V//glob/repl}``. Positional and special parameters (``$1``, ``$@``...) are
never set. Errors are :class:`ShellExpansionError`, a :class:`DockerfileSyntaxError`, so callers
that know the instruction's location can pass ``file=``/``line=`` and the CLI reports it like
any other Dockerfile mistake.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from layerkit.errors import DockerfileSyntaxError

__all__ = ["Expansion", "Lex", "ShellExpansionError", "is_go_space"]

_EOF = ""
# Special parameters (POSIX 2.5.2); BuildKit recognises them so `$@x` expands to `x`.
_SPECIAL_PARAMS = frozenset("@*#?-$!0")


def is_go_space(ch: str) -> bool:
    """Go's ``unicode.IsSpace``: Python's ``isspace`` minus the ASCII separators 0x1c-0x1f."""
    return ch.isspace() and not "\x1c" <= ch <= "\x1f"


class ShellExpansionError(DockerfileSyntaxError):
    """A word that cannot be expanded (unterminated quote, bad ``${...}``, ``${V?}`` unset...)."""

    def __init__(self, message: str, *, word: str = "", file: str = "Dockerfile", line: int | None = None) -> None:
        self.word = word
        self.reason = message
        detail = f"failed to process {word!r}: {message}" if word else message
        super().__init__(detail, file=file, line=line)


class _LexError(Exception):
    """Internal: carries a bare reason up to :meth:`Lex.process`, which adds the word."""


@dataclass(frozen=True)
class Expansion:
    """Result of expanding one word: the joined text, the split words, and which names were looked up."""

    result: str
    words: list[str]
    matched: frozenset[str]
    unmatched: frozenset[str]


@dataclass(frozen=True)
class Lex:
    """Expansion settings; mirrors BuildKit's ``shell.Lex`` knobs.

    ``raw_quotes``/``raw_escapes`` keep quote and escape characters in the output (the parser
    needs that to recognise heredoc words); ``skip_unset_env`` leaves references to unset names
    as written so a later pass can expand them.
    """

    escape_token: str = "\\"
    raw_quotes: bool = False
    raw_escapes: bool = False
    skip_process_quotes: bool = False
    skip_unset_env: bool = False

    def process(self, word: str, env: Mapping[str, str]) -> Expansion:
        """Expand ``word``; raise :class:`ShellExpansionError` if it is malformed."""
        sw = _ShellWord(self, word, env)
        try:
            result, words = sw.process_stop_on_any((), raw_escapes=False)
        except _LexError as exc:
            raise ShellExpansionError(str(exc), word=word) from None
        return Expansion(result, words, frozenset(sw.matched), frozenset(sw.unmatched))

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """``ProcessWord``: one word, quotes removed, whitespace kept."""
        return self.process(word, env).result

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """``ProcessWords``: expand then split on unquoted whitespace (also whitespace from variables)."""
        return self.process(word, env).words


class _Words:
    """Word splitter fed as expansion proceeds: quoted text is raw, unquoted whitespace separates."""

    def __init__(self) -> None:
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if is_go_space(ch):
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def get_words(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class _ShellWord:
    """One expansion run over one word (BuildKit's ``shellWord``)."""

    def __init__(self, lex: Lex, source: str, env: Mapping[str, str]) -> None:
        self.lex = lex
        self.src = source
        self.pos = 0
        self.env = env
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    # -- scanner ------------------------------------------------------------------------------
    def peek(self) -> str:
        return self.src[self.pos] if self.pos < len(self.src) else _EOF

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def get_env(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            self.matched.add(name)
            return self.env[name], True
        self.unmatched.add(name)
        return "", False

    # -- grammar ------------------------------------------------------------------------------
    def process_stop_on_any(self, stops: tuple[str, ...], *, raw_escapes: bool) -> tuple[str, list[str]]:
        """Expand until one of ``stops`` (consumed) or, with no stops, the end of input."""
        result: list[str] = []
        words = _Words()
        esc = self.lex.escape_token
        quotes = not self.lex.skip_process_quotes
        while (ch := self.peek()) != _EOF:
            if ch in stops:
                self.next()
                return "".join(result), words.get_words()
            if ch == "$":
                text = self.process_dollar()
                result.append(text)
                words.add_string(text)  # unquoted expansion is subject to word splitting
            elif quotes and ch == "'":
                text = self.process_single_quote()
                result.append(text)
                words.add_raw(text)
            elif quotes and ch == '"':
                text = self.process_double_quote()
                result.append(text)
                words.add_raw(text)
            else:
                ch = self.next()
                if ch == esc:
                    if self.lex.raw_escapes or raw_escapes:
                        words.add_raw(ch)
                        result.append(ch)
                    ch = self.next()
                    if ch == _EOF:
                        break  # an escape at the very end is dropped
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stops:
            raise _LexError(f"unexpected end of statement while looking for matching {stops[0]}")
        return "".join(result), words.get_words()

    def process_single_quote(self) -> str:
        # Everything up to the next ' is literal; a ' cannot be escaped inside.
        opening = self.next()
        result = [opening] if self.lex.raw_quotes else []
        while True:
            ch = self.next()
            if ch == _EOF:
                raise _LexError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lex.raw_quotes:
                    result.append(ch)
                return "".join(result)
            result.append(ch)

    def process_double_quote(self) -> str:
        # Literal except `$` and the escape token, which escapes only `"`, `$` and itself.
        opening = self.next()
        result = [opening] if self.lex.raw_quotes else []
        esc = self.lex.escape_token
        while True:
            ch = self.peek()
            if ch == _EOF:
                raise _LexError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.lex.raw_quotes:
                    result.append(ch)
                return "".join(result)
            if ch == "$":
                result.append(self.process_dollar())
                continue
            ch = self.next()
            if ch == esc:
                if self.lex.raw_escapes:
                    result.append(ch)
                following = self.peek()
                if following == _EOF:
                    continue
                if following in ('"', "$", esc):
                    ch = self.next()
            result.append(ch)

    def process_dollar(self) -> str:
        self.next()  # the `$`
        if self.peek() != "{":
            name = self.process_name()
            if not name:
                return "$"
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "$" + name
            return value

        self.next()  # the `{`
        ch = self.peek()
        if ch == _EOF:
            raise _LexError("syntax error: missing '}'")
        if ch in "{}:":
            raise _LexError("syntax error: bad substitution")
        name = self.process_name()
        ch = self.next()
        if ch == "}":
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "${" + name + "}"
            return value
        if ch == "/":
            return self._replace(name)
        modifier = ch
        null_is_unset = ch == ":"
        if null_is_unset:
            ch = self.next()
            modifier += ch
        if ch not in ("+", "-", "?", "#", "%") or (null_is_unset and ch in "#%"):
            raise _LexError(f"unsupported modifier ({modifier}) in substitution")
        pattern_op = ch in "#%"
        word = self._stop_on_brace(raw_escapes=pattern_op)
        value, found = self.get_env(name)
        if not found and self.lex.skip_unset_env:
            return "${" + name + modifier + word + "}"
        empty = not found or (null_is_unset and value == "")
        if ch == "-":
            return word if empty else value
        if ch == "+":
            return "" if empty else word
        if ch == "?":
            if not found:
                raise _LexError(f"{name}: {word or 'is not allowed to be unset'}")
            if empty:
                raise _LexError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        # `#`/`%` strip the shortest matching prefix/suffix, `##`/`%%` the longest.
        greedy = word.startswith(ch)
        if greedy:
            word = word[1:]
        return _trim(value, word, suffix=ch == "%", greedy=greedy, esc=self.lex.escape_token)

    def _stop_on_brace(self, *, raw_escapes: bool) -> str:
        try:
            word, _ = self.process_stop_on_any(("}",), raw_escapes=raw_escapes)
        except _LexError:
            if self.peek() == _EOF:
                raise _LexError("syntax error: missing '}'") from None
            raise
        return word

    def _replace(self, name: str) -> str:
        """``${V/pat/repl}`` (first match) and ``${V//pat/repl}`` (every match)."""
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        try:
            pattern, _ = self.process_stop_on_any(("/", "}"), raw_escapes=True)
        except _LexError:
            raise _LexError("syntax error: missing '}'") from None
        replacement = ""
        if self.src[self.pos - 1] == "/":
            replacement = self._stop_on_brace(raw_escapes=False)
        value, found = self.get_env(name)
        if not found and self.lex.skip_unset_env:
            sep = "//" if replace_all else "/"
            return "${" + name + sep + pattern + "/" + replacement + "}"
        if not pattern:
            return value
        regex = re.compile(_glob_to_regex(pattern, self.lex.escape_token), re.DOTALL)
        return _sub(regex, replacement, value, replace_all=replace_all)

    def process_name(self) -> str:
        """Read a variable name: letters/digits/_; a run of digits; or one special parameter."""
        ch = self.peek()
        if ch and ch.isdecimal():
            start = self.pos
            while self.peek() and self.peek().isdecimal():
                self.next()
            return self.src[start:self.pos]
        if ch in _SPECIAL_PARAMS and ch:
            return self.next()
        start = self.pos
        while (ch := self.peek()) and (ch.isalpha() or ch.isdecimal() or ch == "_"):
            self.next()
        return self.src[start:self.pos]


def _glob_to_regex(pattern: str, esc: str) -> str:
    """Translate a shell glob (``*``, ``?``, ``[...]``, escape) to an anchorless regex (greedy)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == esc and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def _sub(regex: re.Pattern[str], replacement: str, value: str, *, replace_all: bool) -> str:
    """Replace the first or every match, skipping empty matches right after a match (as Go does)."""
    out: list[str] = []
    pos = 0
    last_end = -1
    for m in regex.finditer(value):
        if m.start() == m.end() == last_end:
            continue
        out.append(value[pos : m.start()])
        out.append(replacement)
        pos = last_end = m.end()
        if not replace_all:
            break
    out.append(value[pos:])
    return "".join(out)


def _trim(value: str, pattern: str, *, suffix: bool, greedy: bool, esc: str) -> str:
    """Remove the shortest (or longest) prefix/suffix of ``value`` matching the glob."""
    regex = re.compile(_glob_to_regex(pattern, esc), re.DOTALL)
    lengths = range(len(value), -1, -1) if greedy else range(len(value) + 1)
    for n in lengths:
        part = value[len(value) - n :] if suffix else value[:n]
        if regex.fullmatch(part):
            return value[: len(value) - n] if suffix else value[n:]
    return value
