"""Typed Dockerfile instructions: the parse tree of :mod:`.parser` checked and turned into dataclasses.

This is the layer the builder reads. It validates what BuildKit validates before a build starts
(unknown instructions and flags, argument counts, JSON-only SHELL, mount specs, stage names) so a
bad Dockerfile fails at once with ``file:line`` instead of halfway through a build. Variables are
*not* expanded here: that needs the build-time environment; the builder calls :func:`expand` /
:func:`expand_words` (and :func:`parse_mount` with ``expand=`` for mounts that use variables).
Sequences are tuples so that every instruction is immutable and hashable into a cache key.
"""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from layerkit.build.dockerfile.parser import Directive, Node, parse, parse_heredoc
from layerkit.build.dockerfile.shell import Expansion, Lex, ShellExpansionError
from layerkit.errors import DockerfileSyntaxError, UnsupportedInstructionError

__all__ = [
    "Add",
    "Arg",
    "Cmd",
    "Copy",
    "Dockerfile",
    "Entrypoint",
    "Env",
    "Expose",
    "From",
    "Healthcheck",
    "InlineFile",
    "Instruction",
    "Label",
    "Maintainer",
    "Mount",
    "Onbuild",
    "Run",
    "Shell",
    "Stage",
    "Stopsignal",
    "User",
    "Volume",
    "Workdir",
    "dump",
    "expand",
    "expand_words",
    "parse_dockerfile",
    "parse_mount",
]


# -- the instruction types -------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Instruction:
    """Common to every instruction: where it is (1-based, inclusive) and its text as written."""

    line: int
    end_line: int
    original: str

    @property
    def keyword(self) -> str:
        return type(self).__name__.upper()


@dataclass(frozen=True)
class InlineFile:
    """A heredoc body as an instruction uses it (``<<-`` tabs already stripped)."""

    name: str
    content: str
    expand: bool = True
    file_descriptor: int = 0


@dataclass(frozen=True, kw_only=True)
class Mount:
    """One ``RUN --mount=...``; ``spec`` is the raw text so the builder can re-parse it after expansion."""

    type: str = "bind"
    target: str = ""
    source: str = ""
    from_: str = ""
    id: str = ""
    sharing: str = ""
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    readonly: bool = False
    required: bool = False
    env: str | None = None
    size: int | None = None
    spec: str = ""
    needs_expansion: bool = False


@dataclass(frozen=True, kw_only=True)
class From(Instruction):
    """``FROM [--platform=…] image [AS name]``."""

    image: str
    platform: str | None = None
    stage_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class Run(Instruction):
    """``RUN``: a command in shell or exec form, with its heredocs, mounts and options."""

    command: tuple[str, ...] | str
    shell_form: bool
    heredocs: tuple[InlineFile, ...] = ()
    mounts: tuple[Mount, ...] = ()
    network: str | None = None
    security: str | None = None


@dataclass(frozen=True, kw_only=True)
class _FileCopy(Instruction):
    """What COPY and ADD share; heredoc sources are in ``heredocs``, not ``sources``."""

    sources: tuple[str, ...]
    dest: str
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    checksum: str | None = None
    keep_git_dir: bool = False
    heredocs: tuple[InlineFile, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Copy(_FileCopy):
    """``COPY``: files from the context, a stage or an image."""


@dataclass(frozen=True, kw_only=True)
class Add(_FileCopy):
    """``ADD``: like ``COPY``, plus URLs, git sources and local archives unpacked."""


@dataclass(frozen=True, kw_only=True)
class Env(Instruction):
    """``pairs`` keep values raw (quotes, escapes, ``$VAR``): they are expanded at build time."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True)
class Label(Instruction):
    """``LABEL key=value …``."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True)
class Arg(Instruction):
    """``pairs`` are (name, default); default is None for a bare ``ARG name``."""

    pairs: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, kw_only=True)
class User(Instruction):
    """``USER user[:group]``."""

    user: str


@dataclass(frozen=True, kw_only=True)
class Workdir(Instruction):
    """``WORKDIR path``."""

    path: str


@dataclass(frozen=True, kw_only=True)
class Expose(Instruction):
    """``EXPOSE port[/proto] …``."""

    ports: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Volume(Instruction):
    """``VOLUME path …``."""

    paths: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Cmd(Instruction):
    """``CMD``: the default command, in shell or exec form."""

    command: tuple[str, ...] | str
    shell_form: bool


@dataclass(frozen=True, kw_only=True)
class Entrypoint(Instruction):
    """``ENTRYPOINT``, in shell or exec form."""

    command: tuple[str, ...] | str
    shell_form: bool


@dataclass(frozen=True, kw_only=True)
class Shell(Instruction):
    """``SHELL ["executable", "params"]``."""

    shell: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Stopsignal(Instruction):
    """``STOPSIGNAL signal``."""

    signal: str


@dataclass(frozen=True, kw_only=True)
class Healthcheck(Instruction):
    """``test`` as in the image config: ``("NONE",)``, ``("CMD", *argv)`` or ``("CMD-SHELL", cmd)``.

    Durations are seconds (None when not given); ``retries`` None when not given.
    """

    test: tuple[str, ...]
    interval: float | None = None
    timeout: float | None = None
    start_period: float | None = None
    start_interval: float | None = None
    retries: int | None = None


@dataclass(frozen=True, kw_only=True)
class Onbuild(Instruction):
    """``expression`` is the trigger text stored in the image; ``instruction`` it, parsed."""

    expression: str
    instruction: Instruction


@dataclass(frozen=True, kw_only=True)
class Maintainer(Instruction):
    """``MAINTAINER name`` (deprecated; recorded as the image author)."""

    name: str


@dataclass(frozen=True)
class Stage:
    """One build stage: its ``FROM`` and the instructions after it."""

    name: str | None
    index: int
    from_: From
    instructions: tuple[Instruction, ...] = ()


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile: directives, escape token, global ``ARG``s and stages."""

    file: str
    directives: tuple[Directive, ...]
    escape_token: str
    global_args: tuple[Arg, ...]
    stages: tuple[Stage, ...]
    warnings: tuple[str, ...] = field(default=())


# -- flags (BuildKit's BFlags) ---------------------------------------------------------------------
_STRING, _BOOL, _LIST = "string", "bool", "list"
_FLAGS: dict[str, dict[str, str]] = {
    "from": {"platform": _STRING},
    "run": {"mount": _LIST, "network": _STRING, "security": _STRING},
    "copy": {"from": _STRING, "chown": _STRING, "chmod": _STRING, "link": _BOOL, "parents": _BOOL, "exclude": _LIST},
    "add": {
        "chown": _STRING,
        "chmod": _STRING,
        "link": _BOOL,
        "keep-git-dir": _BOOL,
        "checksum": _STRING,
        "exclude": _LIST,
    },
    "healthcheck": {
        "interval": _STRING,
        "timeout": _STRING,
        "start-period": _STRING,
        "start-interval": _STRING,
        "retries": _STRING,
    },
}

FlagValue = str | bool | tuple[str, ...]
_I = TypeVar("_I", bound="Instruction")


class _Context:
    """Helpers bound to one node: flag parsing and errors located at its line."""

    def __init__(self, node: Node, file: str, escape_token: str) -> None:
        self.node = node
        self.file = file
        self.escape_token = escape_token
        self.keyword = node.value.upper()

    def error(self, message: str) -> DockerfileSyntaxError:
        return DockerfileSyntaxError(message, file=self.file, line=self.node.start_line)

    def make(self, cls: type[_I], **fields: Any) -> _I:
        """Build ``cls`` with this node's location filled in."""
        return cls(line=self.node.start_line, end_line=self.node.end_line, original=self.node.original, **fields)

    def args(self) -> list[str]:
        return self.node.arg_values()

    def flags(self) -> dict[str, FlagValue]:
        known = _FLAGS.get(self.node.keyword, {})
        values: dict[str, FlagValue] = {}
        for raw in self.node.flags:
            name, has_value, value = raw[2:].partition("=")
            kind = known.get(name)
            if kind is None:
                hint = (f"; {self.keyword} accepts " + ", ".join(f"--{k}" for k in known)) if known else ""
                raise self.error(f"unknown flag: --{name} for {self.keyword}{hint}")
            if kind == _LIST:
                if not has_value:
                    raise self.error(f"missing a value on flag --{name}: write --{name}=VALUE")
                prior = values.get(name, ())
                assert isinstance(prior, tuple)
                values[name] = (*prior, value)
                continue
            if name in values:
                raise self.error(f"duplicate flag specified: --{name}; give it once")
            if kind == _BOOL:
                if has_value and value.lower() not in ("true", "false"):
                    raise self.error(f"expecting boolean value for flag --{name}, not: {value!r}")
                values[name] = not has_value or value.lower() == "true"
            else:
                if not has_value:
                    raise self.error(f"missing a value on flag --{name}: write --{name}=VALUE")
                values[name] = value
        return values

    def require_args(self, minimum: int = 1) -> list[str]:
        args = self.args()
        if len(args) < minimum:
            what = "one argument" if minimum == 1 else f"{minimum} arguments"
            raise self.error(f"{self.keyword} requires at least {what}")
        return args

    def heredocs(self) -> dict[str, InlineFile]:
        return {
            doc.name: InlineFile(doc.name, doc.body, doc.expand, doc.file_descriptor) for doc in self.node.heredocs
        }


def _str_flag(flags: Mapping[str, FlagValue], name: str) -> str | None:
    value = flags.get(name)
    return value if isinstance(value, str) else None


def _list_flag(flags: Mapping[str, FlagValue], name: str) -> tuple[str, ...]:
    value = flags.get(name, ())
    return value if isinstance(value, tuple) else ()


# -- per-instruction builders ----------------------------------------------------------------------
_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")


def _from(c: _Context) -> From:
    flags = c.flags()
    args = c.args()
    if len(args) not in (1, 3) or (len(args) == 3 and args[1].lower() != "as"):
        raise c.error("FROM requires either one or three arguments: FROM image [AS name]")
    name = args[2].lower() if len(args) == 3 else None
    if name is not None and not _STAGE_NAME.fullmatch(name):
        raise c.error(
            f"invalid name for build stage: {args[2]!r}; it must start with a letter and use only "
            "letters, digits, '-', '_' and '.'"
        )
    return c.make(From, image=args[0], platform=_str_flag(flags, "platform"), stage_name=name)


def _command(c: _Context) -> tuple[tuple[str, ...] | str, bool]:
    """Exec form as a tuple, shell form as the raw text (``handleJSONArgs``)."""
    if c.node.is_json:
        return tuple(c.args()), False
    return " ".join(c.args()), True


_NETWORKS = ("default", "none", "host")
_SECURITY = ("sandbox", "insecure")


def _run(c: _Context) -> Run:
    flags = c.flags()
    c.require_args()
    command, shell_form = _command(c)
    network = _str_flag(flags, "network")
    if network is not None and network not in _NETWORKS:
        raise c.error(f"unsupported --network={network}: use one of {', '.join(_NETWORKS)}")
    security = _str_flag(flags, "security")
    if security is not None and security not in _SECURITY:
        raise c.error(f"unsupported --security={security}: use one of {', '.join(_SECURITY)}")
    try:
        mounts = tuple(parse_mount(spec) for spec in _list_flag(flags, "mount"))
    except ValueError as exc:
        raise c.error(f"invalid --mount: {exc}") from None
    return c.make(
        Run,
        command=command,
        shell_form=shell_form,
        heredocs=tuple(c.heredocs().values()),
        mounts=mounts,
        network=network,
        security=security,
    )


_OCTAL_MODE = re.compile(r"[0-7]{1,4}")
_SYMBOLIC_MODE = re.compile(r"[ugoa]*[-+=]([rwxXst]*|[ugo])([-+=]([rwxXst]*|[ugo]))*")


def _check_chmod(c: _Context, chmod: str | None) -> None:
    if chmod is None or "$" in chmod:  # variables are validated after expansion
        return
    if _OCTAL_MODE.fullmatch(chmod) or all(_SYMBOLIC_MODE.fullmatch(part) for part in chmod.split(",")):
        return
    raise c.error(f"invalid --chmod={chmod}: use an octal mode like 0755 or a symbolic one like u+rwx,go+rx")


def _file_copy(c: _Context, cls: type[_FileCopy]) -> _FileCopy:
    flags = c.flags()
    args = c.args()
    if len(args) < 2:
        raise c.error(f"{c.keyword} requires at least two arguments (sources and a destination)")
    *srcs, dest = args
    if parse_heredoc(dest) is not None:
        raise c.error(f"{c.keyword} cannot use a heredoc as the destination")
    bodies = c.heredocs()
    sources: list[str] = []
    inline: list[InlineFile] = []
    for src in srcs:
        doc = None if c.node.is_json else parse_heredoc(src)
        if doc is not None and doc.name in bodies:
            inline.append(bodies[doc.name])
        else:
            sources.append(src)
    chmod = _str_flag(flags, "chmod")
    _check_chmod(c, chmod)
    return c.make(
        cls,
        sources=tuple(sources),
        dest=dest,
        from_=_str_flag(flags, "from"),
        chown=_str_flag(flags, "chown"),
        chmod=chmod,
        link=bool(flags.get("link", False)),
        parents=bool(flags.get("parents", False)),
        excludes=_list_flag(flags, "exclude"),
        checksum=_str_flag(flags, "checksum"),
        keep_git_dir=bool(flags.get("keep-git-dir", False)),
        heredocs=tuple(inline),
    )


def _key_values(c: _Context) -> tuple[tuple[str, str], ...]:
    """ENV/LABEL arguments come as (key, value, separator) triples from the parser."""
    c.flags()
    args = c.require_args()
    pairs = tuple((args[i], args[i + 1]) for i in range(0, len(args) - 2, 3))
    if any(not key for key, _ in pairs):
        raise c.error(f"{c.keyword} names can not be blank")
    return pairs


def _arg(c: _Context) -> Arg:
    c.flags()
    pairs: list[tuple[str, str | None]] = []
    for word in c.require_args():
        name, sep, default = word.partition("=")
        if not name:
            raise c.error("ARG names can not be blank: write ARG name[=default]")
        pairs.append((name, default if sep else None))
    return c.make(Arg, pairs=tuple(pairs))


def _single(c: _Context) -> str:
    c.flags()
    return c.require_args()[0]


def _json_only_shell(c: _Context) -> Shell:
    c.flags()
    if not c.node.is_json:
        raise c.error('SHELL requires the arguments to be in JSON form, e.g. SHELL ["/bin/sh", "-c"]')
    return c.make(Shell, shell=tuple(c.require_args()))


def _volume(c: _Context) -> Volume:
    c.flags()
    paths = c.require_args()
    if any(not p.strip() for p in paths):
        raise c.error("VOLUME specified can not be an empty string")
    return c.make(Volume, paths=tuple(paths))


_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _go_duration(text: str) -> float:
    """Parse a Go duration (``1m30s``, ``250ms``, ``0``) into seconds; ValueError if malformed."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text.startswith(("+", "-")) else text
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(body):
        match = _DURATION.match(body, pos)
        if match is None or match.group(1) in ("", "."):
            raise ValueError(text)
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not body:
        raise ValueError(text)
    return sign * total


def _healthcheck(c: _Context) -> Healthcheck:
    args = c.require_args()
    kind = args[0].upper()
    if kind == "NONE":
        if len(args) > 1 or c.node.flags:
            raise c.error("HEALTHCHECK NONE takes no arguments or flags")
        return c.make(Healthcheck, test=("NONE",))
    flags = c.flags()
    if kind != "CMD":
        raise c.error(f"unknown type {args[0]!r} in HEALTHCHECK: use HEALTHCHECK CMD ... or HEALTHCHECK NONE")
    command = args[1:] if c.node.is_json else [" ".join(args[1:])] if len(args) > 1 else []
    if not command:
        raise c.error("missing command after HEALTHCHECK CMD")
    durations: dict[str, float | None] = {}
    for name in ("interval", "timeout", "start-period", "start-interval"):
        raw = _str_flag(flags, name)
        if raw is None or raw == "":
            durations[name.replace("-", "_")] = None
            continue
        try:
            seconds = _go_duration(raw)
        except ValueError:
            raise c.error(f"invalid --{name}={raw}: use a duration like 30s, 1m30s or 500ms") from None
        if seconds < 0 or 0 < seconds < 1e-3:
            raise c.error(f"--{name}={raw} must be 0 or at least 1ms")
        durations[name.replace("-", "_")] = seconds
    retries: int | None = None
    raw_retries = _str_flag(flags, "retries")
    if raw_retries:
        if not re.fullmatch(r"-?[0-9]+", raw_retries):
            raise c.error(f"invalid --retries={raw_retries}: use a whole number")
        retries = int(raw_retries)
        if retries < 0:
            raise c.error("--retries cannot be negative")
    test = ("CMD" if c.node.is_json else "CMD-SHELL", *command)
    return c.make(Healthcheck, test=test, retries=retries, **durations)


_ONBUILD_PREFIX = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)


def _onbuild(c: _Context) -> Onbuild:
    c.flags()
    inner = c.node.next.children[0] if c.node.next is not None and c.node.next.children else None
    if inner is None:
        raise c.error("ONBUILD requires at least one argument: ONBUILD INSTRUCTION ...")
    if inner.keyword in ("onbuild", "from", "maintainer"):
        raise c.error(f"{inner.value.upper()} isn't allowed as an ONBUILD trigger")
    # The parser attaches location and heredocs to the ONBUILD node; the trigger shares them.
    inner.start_line, inner.end_line = c.node.start_line, c.node.end_line
    inner.heredocs = c.node.heredocs
    instruction = _instruction(inner, c.file, c.escape_token)
    expression = _ONBUILD_PREFIX.sub("", c.node.original, count=1)
    return c.make(Onbuild, expression=expression, instruction=instruction)


def _build(c: _Context) -> Instruction:
    kw = c.node.keyword
    if kw == "from":
        return _from(c)
    if kw == "run":
        return _run(c)
    if kw == "copy":
        return _file_copy(c, Copy)
    if kw == "add":
        return _file_copy(c, Add)
    if kw == "env":
        return c.make(Env, pairs=_key_values(c))
    if kw == "label":
        return c.make(Label, pairs=_key_values(c))
    if kw == "arg":
        return _arg(c)
    if kw == "user":
        return c.make(User, user=_single(c))
    if kw == "workdir":
        return c.make(Workdir, path=_single(c))
    if kw == "stopsignal":
        return c.make(Stopsignal, signal=_single(c))
    if kw == "maintainer":
        return c.make(Maintainer, name=_single(c))
    if kw == "expose":
        c.flags()
        return c.make(Expose, ports=tuple(c.require_args()))
    if kw == "volume":
        return _volume(c)
    if kw in ("cmd", "entrypoint"):
        c.flags()
        command, shell_form = _command(c)
        cls = Cmd if kw == "cmd" else Entrypoint
        return c.make(cls, command=command, shell_form=shell_form)
    if kw == "shell":
        return _json_only_shell(c)
    if kw == "healthcheck":
        return _healthcheck(c)
    if kw == "onbuild":
        return _onbuild(c)
    raise AssertionError(kw)


_KNOWN = ["add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label", "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir"]


def _instruction(node: Node, file: str, escape_token: str) -> Instruction:
    if node.keyword not in _KNOWN:
        close = difflib.get_close_matches(node.keyword, _KNOWN, n=1)
        hint = f" (did you mean {close[0].upper()}?)" if close else ""
        raise UnsupportedInstructionError(f"unknown instruction: {node.value.upper()}{hint}", file=file, line=node.start_line)
    return _build(_Context(node, file, escape_token))


# -- mounts ----------------------------------------------------------------------------------------
_MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_SHARING = ("shared", "private", "locked")
_BOOLS = {  # strconv.ParseBoolv: True for v in ("1", "t", "T", "TRUE", "true", "True")} | {
    v: False for v in ("0", "f", "F", "FALSE", "false", "False")
}
_RAM = re.compile(r"(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?")


def _parse_bool(key: str, value: str) -> bool:
    if value not in _BOOLS:
        raise ValueError(f"invalid value for {key}: {value}")
    return _BOOLS[value]


def _ram_in_bytes(value: str) -> int:
    match = _RAM.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid value for size: {value}")
    power = "kmgtp".find(match.group(2).lower()) + 1 if match.group(2) else 0
    return int(float(match.group(1)) * 1024**power)


def parse_mount(spec: str, *, expand: Callable[[str], str] | None = None) -> Mount:
    """Parse one ``--mount`` value (CSV ``key=value`` fields) like BuildKit's ``parseMount``.

    Values are passed through ``expand`` when given. Without it, a field whose value contains
    ``$`` is left unvalidated and the mount is flagged ``needs_expansion``: re-parse it then.
    Raises ValueError with BuildKit's reason.
    """
    try:
        fields = next(csv.reader([spec], strict=True), [])
    except csv.Error as exc:
        raise ValueError(f"malformed mount {spec!r}: {exc}") from None
    values: dict[str, Any] = {"type": "bind", "spec": spec}
    ro_auto = True
    deferred = False
    for item in fields:
        key, has_value, value = item.partition("=")
        key = key.lower()
        mount_type = str(values["type"])
        if not has_value:
            if key in ("readonly", "ro", "readwrite", "rw"):
                values["readonly"] = key in ("readonly", "ro")
                ro_auto = False
            elif key == "required" and mount_type in ("secret", "ssh"):
                values["required"] = True
            elif key == "required":
                raise ValueError(f"unexpected key 'required' for mount type '{mount_type}'")
            else:
                raise ValueError(f"invalid field '{item}' must be a key=value pair")
            continue
        if expand is not None:
            value = expand(value)
        elif "$" in value:
            if key == "from" and value.index("$") != len(value) - 1:
                raise ValueError("'from' doesn't support variable expansion, define alias stage instead")
            deferred = True
            if key in ("target", "dst", "destination", "dest", "source", "src", "id", "env"):
                values[_MOUNT_KEYS[key]] = value
            continue
        if key == "type":
            if value.lower() not in _MOUNT_TYPES:
                raise ValueError(f"unsupported mount type {value!r}: use one of {', '.join(_MOUNT_TYPES)}")
            values["type"] = value.lower()
        elif key in _MOUNT_KEYS:
            values[_MOUNT_KEYS[key]] = value
        elif key in ("readonly", "ro"):
            values["readonly"] = _parse_bool(key, value)
            ro_auto = False
        elif key in ("readwrite", "rw"):
            values["readonly"] = not _parse_bool(key, value)
            ro_auto = False
        elif key == "required":
            if mount_type not in ("secret", "ssh"):
                raise ValueError(f"unexpected key 'required' for mount type '{mount_type}'")
            values["required"] = _parse_bool(key, value)
        elif key == "size":
            if mount_type != "tmpfs":
                raise ValueError(f"unexpected key 'size' for mount type '{mount_type}'")
            values["size"] = _ram_in_bytes(value)
        elif key == "sharing":
            if value.lower() not in _SHARING:
                raise ValueError(f"unsupported sharing value {value!r}: use one of {', '.join(_SHARING)}")
            values["sharing"] = value.lower()
        elif key == "mode":
            if not re.fullmatch(r"[0-7]+", value) or int(value, 8) > 0xFFFFFFFF:
                raise ValueError(f"invalid value {value} for mode: use octal, e.g. 0644")
            values["mode"] = int(value, 8)
        elif key in ("uid", "gid"):
            if not value.isdigit() or int(value) > 0xFFFFFFFF:
                raise ValueError(f"invalid value {value} for {key}")
            values[key] = int(value)
        else:
            raise ValueError(f"unexpected key '{key}' in '{item}'")
    return _finish_mount(values, ro_auto=ro_auto, deferred=deferred)


_MOUNT_KEYS = {
    "from": "from_",
    "source": "source",
    "src": "source",
    "target": "target",
    "dst": "target",
    "destination": "target",
    "dest": "target",
    "id": "id",
    "env": "env",
}


def _finish_mount(values: dict[str, Any], *, ro_auto: bool, deferred: bool) -> Mount:
    """Cross-field checks and defaults, as at the end of BuildKit's ``parseMount``."""
    kind = str(values["type"])
    if kind not in ("secret", "ssh", "cache"):
        for key in ("mode", "uid", "gid"):
            if values.get(key) is not None:
                raise ValueError(f"{key} not allowed for {kind!r} type mounts")
    if ro_auto:
        values["readonly"] = kind not in ("cache", "tmpfs")
    if values.get("sharing") and kind != "cache":
        raise ValueError(f"invalid cache sharing set for {kind} mount")
    if kind == "secret":
        if values.get("from_"):
            raise ValueError("secret mount should not have a from")
        if not (values.get("source") or values.get("target") or values.get("id")):
            raise ValueError("invalid secret mount: one of id, source or target is required")
        if values.get("source") and values.get("id"):
            raise ValueError("both source and id can't be set")
    if kind in ("bind", "cache", "tmpfs") and not values.get("target") and not deferred:
        raise ValueError(f"mount type {kind} requires a target, e.g. target=/path")
    if kind == "cache" and not values.get("sharing"):
        values["sharing"] = "shared"
    return Mount(**values, needs_expansion=deferred)


# -- the whole file --------------------------------------------------------------------------------
def parse_dockerfile(text: str | bytes, file: str = "Dockerfile") -> Dockerfile:
    """Parse and check a Dockerfile into stages; raise :class:`DockerfileSyntaxError` at ``file:line``."""
    result = parse(text, file=file)
    global_args: list[Arg] = []
    stages: list[Stage] = []
    current: list[Instruction] = []
    names: set[str] = set()

    def close_stage() -> None:
        if stages:
            last = stages[-1]
            stages[-1] = Stage(last.name, last.index, last.from_, tuple(current))

    for node in result.ast.children:
        instruction = _instruction(node, file, result.escape_token)
        if isinstance(instruction, From):
            close_stage()
            current = []
            name = instruction.stage_name
            if name is not None:
                if name in names:
                    raise DockerfileSyntaxError(
                        f"duplicate stage name {name!r}: give each stage a unique AS name", file=file, line=node.start_line
                    )
                names.add(name)
            stages.append(Stage(name, len(stages), instruction))
        elif not stages:
            if not isinstance(instruction, Arg):
                raise DockerfileSyntaxError(
                    f"{instruction.keyword} before the first FROM: only ARG may come before FROM",
                    file=file,
                    line=node.start_line,
                )
            global_args.append(instruction)
        else:
            current.append(instruction)
    close_stage()
    if not stages:
        raise DockerfileSyntaxError("the Dockerfile has no FROM: add a FROM instruction to start a stage", file=file)
    return Dockerfile(
        file=file,
        directives=tuple(result.directives),
        escape_token=result.escape_token,
        global_args=tuple(global_args),
        stages=tuple(stages),
        warnings=tuple(result.warnings),
    )


def dump(text: str | bytes, file: str = "Dockerfile") -> str:
    """BuildKit's parse-tree dump of a Dockerfile, one ``(instruction ...)`` per line (no final newline)."""
    return parse(text, file=file).ast.dump()


def expand(
    word: str,
    env: Mapping[str, str],
    *,
    escape_token: str = "\\",
    file: str = "Dockerfile",
    line: int | None = None,
) -> str:
    """Expand variables and remove quotes in one word (``ProcessWord``); errors name ``file:line``."""
    return _expansion(word, env, escape_token, file, line).result


def expand_words(
    word: str,
    env: Mapping[str, str],
    *,
    escape_token: str = "\\",
    file: str = "Dockerfile",
    line: int | None = None,
) -> list[str]:
    """Expand then split into words like a shell argument list (``ProcessWords``)."""
    return _expansion(word, env, escape_token, file, line).words


def _expansion(word: str, env: Mapping[str, str], escape_token: str, file: str, line: int | None) -> Expansion:
    try:
        return Lex(escape_token=escape_token).process(word, env)
    except ShellExpansionError as exc:
        raise ShellExpansionError(exc.reason, word=word, file=file, line=line) from None
