"""Low-level Dockerfile parser: a port of BuildKit's ``frontend/dockerfile/parser``.

Text in, a tree of :class:`Node` out: parser directives, line continuations (with comments and
blank lines inside), heredocs, JSON vs shell form and builder flags are resolved here; variable
expansion and the meaning of each instruction are not (see :mod:`.instructions` and :mod:`.shell`).
The tree and :meth:`Node.dump` match BuildKit's byte for byte, which is what the conformance
fixtures check, so behaviour stays identical to ``docker build`` including its quirks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from layerkit.build.dockerfile.shell import Lex, ShellExpansionError, is_go_space
from layerkit.errors import DockerfileSyntaxError

__all__ = [
    "DEFAULT_ESCAPE_TOKEN",
    "Directive",
    "Heredoc",
    "Node",
    "ParseResult",
    "go_quote",
    "parse",
    "parse_heredoc",
]

DEFAULT_ESCAPE_TOKEN = "\\"
# bufio.Scanner's default limit: BuildKit refuses longer physical lines.
MAX_LINE_LENGTH = 64 * 1024 - 1

_RE_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
# Go's `\s` is ASCII [\t\n\f\r ]; Python's would also match Unicode spaces.
_RE_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*", re.DOTALL)
_RE_HEREDOC = re.compile(r"([0-9]*)<<(-?)([^<]*)", re.DOTALL)
_RE_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_VALID_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_HEREDOC_INSTRUCTIONS = frozenset({"add", "copy", "run"})
_HEREDOC_COMPOUND = frozenset({"onbuild"})


class _ArgError(Exception):
    """Internal: a line parser's complaint, located by :func:`parse`."""


class _NotStringArray(_ArgError):
    pass


@dataclass
class Heredoc:
    """One ``<<NAME`` body attached to a RUN/COPY/ADD; ``content`` is raw (tabs kept even for ``<<-``)."""

    name: str
    file_descriptor: int = 0
    expand: bool = True
    chomp: bool = False
    content: str = ""

    @property
    def body(self) -> str:
        """The content as the instruction sees it: ``<<-`` strips leading tabs of every line."""
        return _RE_LEADING_TABS.sub("", self.content) if self.chomp else self.content


@dataclass(eq=False)
class Node:
    """BuildKit's parse-tree node: an instruction, its flags and a linked list of arguments.

    ``value`` keeps the keyword as written (BuildKit lints casing); compare it lower-cased.
    """

    value: str = ""
    next: Node | None = None
    children: list[Node] = field(default_factory=list)
    heredocs: list[Heredoc] = field(default_factory=list)
    attributes: dict[str, bool] = field(default_factory=dict)
    original: str = ""
    flags: list[str] = field(default_factory=list)
    start_line: int = 0
    end_line: int = 0
    prev_comment: list[str] = field(default_factory=list)

    @property
    def keyword(self) -> str:
        return self.value.lower()

    @property
    def is_json(self) -> bool:
        return self.attributes.get("json", False)

    def args(self) -> Iterator[Node]:
        """Iterate over the argument nodes (the ``next`` chain)."""
        node = self.next
        while node is not None:
            yield node
            node = node.next

    def arg_values(self) -> list[str]:
        return [n.value for n in self.args()]

    def dump(self) -> str:
        """BuildKit's ``Node.Dump()``: s-expressions, arguments as Go string literals."""
        out = self.value.lower()
        if self.flags:
            out += " [" + " ".join(go_quote(f) for f in self.flags) + "]"
        for child in self.children:
            out += "(" + child.dump() + ")\n"
        for arg in self.args():
            out += " " + (arg.dump() if arg.children else go_quote(arg.value))
        return _go_trim_space(out)

    def _can_contain_heredoc(self) -> bool:
        node: Node = self
        if node.keyword in _HEREDOC_COMPOUND and node.next is not None and node.next.children:
            node = node.next.children[0]
        return node.keyword in _HEREDOC_INSTRUCTIONS and not node.is_json


@dataclass(frozen=True)
class Directive:
    """A parser directive (``# syntax=...``, ``# escape=...``, ``# check=...``) and its line."""

    name: str
    value: str
    line: int


@dataclass
class ParseResult:
    """The root node (its children are the instructions), the escape token in force, and warnings."""

    ast: Node
    escape_token: str
    directives: list[Directive]
    warnings: list[str]


# -- Go compatibility helpers --------------------------------------------------------------------
def _go_trim_space(s: str) -> str:
    start, end = 0, len(s)
    while start < end and is_go_space(s[start]):
        start += 1
    while end > start and is_go_space(s[end - 1]):
        end -= 1
    return s[start:end]


def _go_trim_left_space(s: str) -> str:
    i = 0
    while i < len(s) and is_go_space(s[i]):
        i += 1
    return s[i:]


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_quote(s: str) -> str:
    """Go's ``strconv.Quote``; surrogate-escaped bytes (undecodable input) print as ``\\xNN``."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
        elif ch.isprintable():
            out.append(ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


# -- directives and line handling ----------------------------------------------------------------
class _Directives:
    """Directive state while scanning: only leading ``#`` lines can be directives, each at most once."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.escape_token = DEFAULT_ESCAPE_TOKEN
        self.continuation = _continuation_regex(DEFAULT_ESCAPE_TOKEN)
        self.done = False
        self.found: list[Directive] = []

    def possible_directive(self, token: str, line: int) -> None:
        if self.done:
            return
        if not token.startswith("#"):
            self.done = True
            return
        match = _RE_DIRECTIVE.fullmatch(_go_trim_left_space(token[1:]))
        name = match.group(1).lower() if match else ""
        if name not in _VALID_DIRECTIVES:
            self.done = True
            return
        assert match is not None
        if any(d.name == name for d in self.found):
            raise DockerfileSyntaxError(
                f"only one {name} parser directive can be used; remove the duplicate '# {name}=' line",
                file=self.file,
                line=line,
            )
        value = match.group(2)
        self.found.append(Directive(name, value, line))
        if name == "escape":
            if value not in ("`", "\\"):
                raise DockerfileSyntaxError(
                    f"invalid escape token {value!r}: use '# escape=\\' or '# escape=`'", file=self.file, line=line
                )
            self.escape_token = value
            self.continuation = _continuation_regex(value)

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        """Strip a trailing escape token (a continuation); return the text and whether the line ends."""
        match = self.continuation.search(line)
        if match is None:
            return line, True
        return line[: match.start()] + (match.group(1) or ""), False


def _continuation_regex(token: str) -> re.Pattern[str]:
    # The escape token, as the last non-blank character, continues the line, unless it is itself
    # escaped ("\\" at end of line is a literal backslash).
    e = re.escape(token)
    return re.compile(rf"([^{e}]){e}[ \t]*\Z|^{e}[ \t]*\Z")


def _scan_lines(text: str) -> list[str]:
    """Split on ``\\n`` only, keeping line endings (BuildKit's scanLines)."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def _trim_newline(line: str) -> str:
    return line.rstrip("\r\n")


def _is_comment(line: str) -> bool:
    return _go_trim_left_space(_trim_newline(line)).startswith("#")


def _trim_comment(token: str) -> str:
    return "" if token.startswith("#") else token


# -- line parsers (line_parsers.go) ----------------------------------------------------------------
def _split_command(line: str) -> tuple[str, list[str], str]:
    parts = _RE_WHITESPACE.split(_go_trim_space(line), maxsplit=1)
    flags: list[str] = []
    args = ""
    if len(parts) == 2:
        args, flags = _extract_builder_flags(parts[1])
    return parts[0], flags, _go_trim_space(args)


def _extract_builder_flags(line: str) -> tuple[str, list[str]]:
    """Peel leading ``--name[=value]`` words off; ``--`` ends them. Returns (rest, flags)."""
    in_spaces, in_word, in_quote = 0, 1, 2
    words: list[str] = []
    phase = in_spaces
    word = ""
    quote = ""
    blank_ok = False
    pos = 0
    n = len(line)
    while pos <= n:
        ch = line[pos] if pos < n else ""
        if phase == in_spaces:
            if pos == n:
                break
            if is_go_space(ch):
                pos += 1
                continue
            if ch != "-" or pos + 1 == n or line[pos + 1] != "-":
                return line[pos:], words
            phase = in_word
        if phase in (in_word, in_quote) and pos == n:
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if phase == in_word:
            if is_go_space(ch):
                phase = in_spaces
                if word == "--":
                    return line[pos:], words
                if blank_ok or word:
                    words.append(word)
                word = ""
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = in_quote
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word += ch
            pos += 1
            continue
        # in_quote
        if ch == quote:
            phase = in_word
            pos += 1
            continue
        if ch == "\\":
            if pos + 1 == n:
                phase = in_word
                pos += 1
                continue
            pos += 1
            ch = line[pos]
        word += ch
        pos += 1
    return "", words


def _parse_words(rest: str, escape_token: str) -> list[str]:
    """Split on unquoted whitespace keeping quotes and escapes (they are removed at expansion)."""
    in_spaces, in_word, in_quote = 0, 1, 2
    words: list[str] = []
    phase = in_spaces
    quote = ""
    blank_ok = False
    buf: list[str] = []
    pos = 0
    n = len(rest)
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if phase == in_spaces:
            if pos == n:
                break
            if is_go_space(ch):
                pos += 1
                continue
            phase = in_word
        if phase in (in_word, in_quote) and pos == n:
            if blank_ok or buf:
                words.append("".join(buf))
            break
        if phase == in_word:
            if is_go_space(ch):
                phase = in_spaces
                if blank_ok or buf:
                    words.append("".join(buf))
                buf = []
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = in_quote
            if ch == escape_token:
                if pos + 1 == n:
                    pos += 1
                    continue  # an escape token at the end of the line is dropped
                buf.append(ch)
                pos += 1
                ch = rest[pos]
            buf.append(ch)
            pos += 1
            continue
        # in_quote
        if ch == quote:
            phase = in_word
        if ch == escape_token and quote != "'":
            if pos + 1 == n:
                phase = in_word
                pos += 1
                continue
            pos += 1
            buf.append(ch)
            ch = rest[pos]
        buf.append(ch)
        pos += 1
    return words


def _chain(values: list[str]) -> Node | None:
    head: Node | None = None
    for value in reversed(values):
        head = Node(value=value, next=head)
    return head


_ParseFn = Callable[[str, "_Directives"], "tuple[Node | None, dict[str, bool]]"]


def _parse_ignore(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    # Unknown instructions keep one empty argument; the instruction layer reports them.
    return Node(), {}


def _parse_sub_command(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    if not rest:
        return None, {}
    return Node(children=[_new_node_from_line(rest, d, [])]), {}


def _parse_name_val(rest: str, key: str, d: _Directives) -> Node | None:
    words = _parse_words(rest, d.escape_token)
    if not words:
        return None
    if "=" not in words[0]:  # legacy `KEY name value...`
        parts = _RE_WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise _ArgError(f"{key} must have two arguments: write `{key} name=value` (or legacy `{key} name value`)")
        return _chain([parts[0], parts[1], ""])
    values: list[str] = []
    for word in words:
        name, sep, value = word.partition("=")
        if not sep:
            raise _ArgError(f"syntax error - can't find = in {go_quote(word)}; must be of the form name=value")
        values += [name, value, "="]
    return _chain(values)


def _parse_env(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    return _parse_name_val(rest, "ENV", d), {}


def _parse_label(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    return _parse_name_val(rest, "LABEL", d), {}


def _parse_name_or_name_val(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    return _chain(_parse_words(rest, d.escape_token)), {}


def _parse_strings_whitespace_delimited(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    if not rest:
        return None, {}
    return _chain(_RE_WHITESPACE.split(rest)), {}


def _parse_string(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    return (Node(value=rest) if rest else None), {}


def _reject_constant(name: str) -> object:
    raise ValueError(f"invalid JSON constant {name}")


def _parse_json(rest: str) -> tuple[Node | None, dict[str, bool]]:
    """Exec form; raises ValueError for malformed JSON, _NotStringArray for non-string items."""
    rest = _go_trim_left_space(rest)
    if not rest.startswith("["):
        raise ValueError("not a JSON array")
    try:
        items = json.loads(rest, parse_constant=_reject_constant, parse_float=_go_float)
    except RecursionError:  # Go's decoder has a depth limit too: malformed, not an error
        raise ValueError("JSON nested too deeply") from None
    # `rest` starts with "[", so a successful decode is always a list.
    if not all(isinstance(item, str) for item in items):
        raise _NotStringArray("when using JSON array syntax, arrays must be comprised of strings only")
    # Go replaces invalid UTF-8 and lone surrogate escapes with U+FFFD.
    return _chain([_SURROGATE.sub("\ufffd", item) for item in items]), {"json": True}


_SURROGATE = re.compile("[\ud800-\udfff]")


def _go_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")  # Go fails to unmarshal, so this is malformed JSON
    return value


def _parse_maybe_json(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    if not rest:
        return None, {}
    try:
        return _parse_json(rest)
    except ValueError:
        return Node(value=rest), {}  # malformed JSON silently means shell form


def _parse_maybe_json_to_list(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    try:
        return _parse_json(rest)
    except ValueError:
        return _parse_strings_whitespace_delimited(rest, d)


def _parse_health_config(rest: str, d: _Directives) -> tuple[Node | None, dict[str, bool]]:
    sep = 0
    while sep < len(rest) and not is_go_space(rest[sep]):
        sep += 1
    nxt = sep
    while nxt < len(rest) and is_go_space(rest[nxt]):
        nxt += 1
    if sep == 0:
        return None, {}
    cmd, attrs = _parse_maybe_json(rest[nxt:], d)
    return Node(value=rest[:sep], next=cmd), attrs


_DISPATCH: dict[str, _ParseFn] = {
    "add": _parse_maybe_json_to_list,
    "arg": _parse_name_or_name_val,
    "cmd": _parse_maybe_json,
    "copy": _parse_maybe_json_to_list,
    "entrypoint": _parse_maybe_json,
    "env": _parse_env,
    "expose": _parse_strings_whitespace_delimited,
    "from": _parse_strings_whitespace_delimited,
    "healthcheck": _parse_health_config,
    "label": _parse_label,
    "maintainer": _parse_string,
    "onbuild": _parse_sub_command,
    "run": _parse_maybe_json,
    "shell": _parse_maybe_json,
    "stopsignal": _parse_string,
    "user": _parse_string,
    "volume": _parse_maybe_json_to_list,
    "workdir": _parse_string,
}


def _new_node_from_line(line: str, d: _Directives, comments: list[str]) -> Node:
    cmd, flags, args = _split_command(line)
    fn = _DISPATCH.get(cmd.lower(), _parse_ignore)
    nxt, attrs = fn(args, d)
    return Node(value=cmd, original=line, flags=flags, next=nxt, attributes=attrs, prev_comment=comments)


# -- heredocs --------------------------------------------------------------------------------------
_HEREDOC_NAME_LEX = Lex(skip_unset_env=True)
_HEREDOC_NAME_LEX_RAW = Lex(skip_unset_env=True, raw_quotes=True)
_HEREDOC_LINE_LEX = Lex(skip_unset_env=True, raw_quotes=True, raw_escapes=True)


def parse_heredoc(word: str) -> Heredoc | None:
    """Recognise a ``[n]<<[-]NAME`` word; a quoted NAME (even partly) turns expansion off."""
    match = _RE_HEREDOC.fullmatch(word)
    if match is None or not match.group(3):
        return None
    rest = match.group(3)
    words = _HEREDOC_NAME_LEX.process_words(rest, {})
    if len(words) != 1:
        return None
    raw = _HEREDOC_NAME_LEX_RAW.process_words(rest, {})
    quotes = words[0].count("'") + words[0].count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return Heredoc(
        name=words[0],
        file_descriptor=int(match.group(1) or 0),
        expand=quotes == raw_quotes,
        chomp=match.group(2) == "-",
    )


def _heredocs_from_line(line: str) -> list[Heredoc]:
    try:
        words = _HEREDOC_LINE_LEX.process_words(line, {})
    except ShellExpansionError:
        return []  # BuildKit ignores lexing errors here: such a line simply has no heredocs
    return [doc for doc in map(parse_heredoc, words) if doc is not None]


# -- the scanner -----------------------------------------------------------------------------------
def parse(source: str | bytes, file: str = "Dockerfile") -> ParseResult:
    """Parse a whole Dockerfile; raise :class:`DockerfileSyntaxError` naming ``file:line``.

    Bytes are decoded as UTF-8 with undecodable bytes kept (as surrogate escapes), like Go strings.
    """
    text = source.decode("utf-8", "surrogateescape") if isinstance(source, bytes) else source
    lines = _scan_lines(text.removeprefix("\ufeff"))
    d = _Directives(file)
    root = Node(start_line=-1)
    warnings: list[str] = []
    comments: list[str] = []
    current = 0
    i = 0

    def read(strip_left: bool) -> tuple[str, str]:
        nonlocal i
        raw = lines[i]
        i += 1
        token = _trim_newline(raw)
        if len(token) > MAX_LINE_LENGTH:
            raise DockerfileSyntaxError(
                f"dockerfile line greater than max allowed size of {MAX_LINE_LENGTH}; split it with line continuations",
                file=file,
                line=current + 1,
            )
        if strip_left:
            token = _go_trim_left_space(token)
        d.possible_directive(token, current + 1)
        return raw, _trim_comment(token)

    while i < len(lines):
        raw, token = read(strip_left=True)
        if _is_comment(raw):
            comments.append(_go_trim_space(_go_trim_left_space(raw)[1:]))
        current += 1
        start = current
        line, end_of_line = d.trim_continuation(token)
        if end_of_line and not line:
            continue

        empty_continuation = False
        while not end_of_line and i < len(lines):
            raw, token = read(strip_left=False)
            current += 1
            if _is_comment(raw):
                continue  # comments inside a continuation are dropped
            if not _go_trim_left_space(token):
                empty_continuation = True
                continue
            more, end_of_line = d.trim_continuation(token)
            line += more
        if empty_continuation:
            warnings.append(f"{file}:{start}: empty continuation line found in: {line}")

        try:
            child = _new_node_from_line(line, d, comments)
        except _ArgError as exc:
            raise DockerfileSyntaxError(str(exc), file=file, line=start) from None

        if child._can_contain_heredoc():
            for doc in _heredocs_from_line(line):
                terminated = False
                while i < len(lines):
                    body_line = lines[i]
                    i += 1
                    current += 1
                    candidate = _trim_newline(body_line)
                    if doc.chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == doc.name:
                        terminated = True
                        break
                    doc.content += body_line
                if not terminated:
                    raise DockerfileSyntaxError(
                        f"unterminated heredoc <<{doc.name}: end it with a line containing only {doc.name}",
                        file=file,
                        line=start,
                    )
                child.heredocs.append(doc)

        child.start_line, child.end_line = start, current
        if root.start_line < 0:
            root.start_line = start
        root.end_line = current
        root.children.append(child)
        comments = []

    if root.start_line < 0:
        raise DockerfileSyntaxError("file with no instructions: a Dockerfile needs at least a FROM", file=file)
    return ParseResult(ast=root, escape_token=d.escape_token, directives=d.found, warnings=warnings)
