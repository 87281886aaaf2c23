"""Specification of the Dockerfile instruction layer: what each instruction turns into, and what is refused."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerkit.build.dockerfile.instructions import (
    Add,
    Arg,
    Cmd,
    Copy,
    Dockerfile,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    InlineFile,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    Stopsignal,
    User,
    Volume,
    dump,
    expand,
    expand_words,
    parse_dockerfile,
    parse_mount,
)
from layerkit.build.dockerfile.parser import parse
from layerkit.build.dockerfile.shell import ShellExpansionError
from layerkit.errors import (
    DockerfileSyntaxError,
    LayerkitError,
    UnsupportedInstructionError,
)


def df(text: str) -> Dockerfile:
    return parse_dockerfile(textwrap.dedent(text).lstrip("\n"))


def only(text: str) -> Any:
    """The single instruction after ``FROM scratch`` (typed Any: each test knows which it expects)."""
    (instruction,) = df("FROM scratch\n" + textwrap.dedent(text).lstrip("\n")).stages[0].instructions
    return instruction


def fails_at(text: str, line: int, match: str) -> DockerfileSyntaxError:
    with pytest.raises(DockerfileSyntaxError, match=match) as info:
        parse_dockerfile(textwrap.dedent(text).lstrip("\n"))
    assert str(info.value).startswith(f"Dockerfile:{line}: ")
    assert info.value.line == line
    return info.value


# -- stages ---------------------------------------------------------------------------------------
def test_stages_global_args_and_directives() -> None:
    result = df(
        """
        # syntax=docker/dockerfile:1
        # check=skip=JSONArgsRecommended
        ARG BASE=alpine
        ARG VERSION
        FROM --platform=$BUILDPLATFORM ${BASE} AS Builder
        RUN make
        FROM scratch
        COPY --from=builder /out /
        """
    )
    assert [(d.name, d.value, d.line) for d in result.directives] == [
        ("syntax", "docker/dockerfile:1", 1),
        ("check", "skip=JSONArgsRecommended", 2),
    ]
    assert [a.pairs for a in result.global_args] == [(("BASE", "alpine"),), (("VERSION", None),)]
    builder, final = result.stages
    assert builder.from_ == From(
        line=5,
        end_line=5,
        original="FROM --platform=$BUILDPLATFORM ${BASE} AS Builder",
        image="${BASE}",
        platform="$BUILDPLATFORM",
        stage_name="builder",
    )
    assert (builder.name, builder.index, final.name, final.index) == ("builder", 0, None, 1)
    assert isinstance(final.instructions[0], Copy) and final.instructions[0].from_ == "builder"


def test_keywords_are_case_insensitive() -> None:
    result = df("from alpine as base\nrUn echo hi\n")
    assert result.stages[0].name == "base"
    assert result.stages[0].instructions[0] == Run(
        line=2, end_line=2, original="rUn echo hi", command="echo hi", shell_form=True
    )


def test_stage_errors() -> None:
    fails_at("RUN x\nFROM a\n", 1, "only ARG may come before FROM")
    fails_at("FROM a AS x\nFROM b AS x\n", 2, "duplicate stage name 'x'")
    fails_at("FROM a AS 1x\n", 1, "invalid name for build stage")
    fails_at("FROM a b\n", 1, "FROM requires either one or three arguments")
    with pytest.raises(DockerfileSyntaxError, match="no FROM"):
        parse_dockerfile("ARG A\n")
    with pytest.raises(DockerfileSyntaxError, match="file with no instructions"):
        parse_dockerfile("# just a comment\n\n")


# -- RUN ------------------------------------------------------------------------------------------
def test_run_shell_and_exec_form() -> None:
    assert only("RUN echo $HOME").command == "echo $HOME"
    exec_form = only('RUN ["echo", "$HOME"]')
    assert (exec_form.command, exec_form.shell_form) == (("echo", "$HOME"), False)
    malformed = only('RUN ["echo", ]')  # malformed JSON quietly means shell form, as in BuildKit
    assert (malformed.command, malformed.shell_form) == ('["echo", ]', True)


def test_run_json_with_non_strings_is_an_error() -> None:
    fails_at('FROM a\nRUN ["a", 1]\n', 2, "arrays must be comprised of strings only")


def test_run_flags_and_mounts() -> None:
    run = only(
        "RUN --mount=type=cache,target=/var/cache/pip,id=pip,sharing=locked "
        "--mount=type=secret,id=token,required,env=TOKEN "
        "--mount=type=tmpfs,target=/tmp,size=64m "
        "--mount=type=bind,from=src,source=/a,target=/b,rw "
        "--network=none --security=insecure pip install ."
    )
    assert isinstance(run, Run)
    cache, secret, tmpfs, bind = run.mounts
    assert (cache.type, cache.target, cache.id, cache.sharing, cache.readonly) == (
        "cache",
        "/var/cache/pip",
        "pip",
        "locked",
        False,
    )
    assert (secret.type, secret.id, secret.required, secret.env, secret.readonly) == ("secret", "token", True, "TOKEN", True)
    assert (tmpfs.size, tmpfs.readonly) == (64 * 1024 * 1024, False)
    assert (bind.from_, bind.source, bind.target, bind.readonly) == ("src", "/a", "/b", False)
    assert (run.network, run.security, run.command) == ("none", "insecure", "pip install .")


def test_mount_defaults_and_errors() -> None:
    assert parse_mount("target=/x").type == "bind" and parse_mount("target=/x").readonly
    assert parse_mount("type=cache,target=/c,mode=0700,uid=1000,gid=1000").mode == 0o700
    for spec, reason in [
        ("type=nfs,target=/x", "unsupported mount type"),
        ("type=bind", "requires a target"),
        ("type=bind,target=/x,mode=0700", "mode not allowed"),
        ("type=bind,target=/x,sharing=locked", "sharing"),
        ("type=secret", "one of id, source or target"),
        ("type=cache,target=/x,bogus=1", "unexpected key 'bogus'"),
        ("type=cache,target=/x,mode=9", "invalid value 9 for mode"),
        ("type=bind,target=/x,required", "unexpected key 'required'"),
        ("type=bind,from=$STAGE/x,target=/x", "doesn't support variable expansion"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_mount(spec)


def test_mount_with_variables_is_reparsed_after_expansion() -> None:
    deferred = parse_mount("type=cache,target=$DIR,uid=$UID")
    assert deferred.needs_expansion and deferred.target == "$DIR" and deferred.uid is None
    env = {"DIR": "/cache", "UID": "1000"}
    final = parse_mount(deferred.spec, expand=lambda word: expand(word, env))
    assert (final.target, final.uid, final.needs_expansion) == ("/cache", 1000, False)


def test_run_flag_errors_name_the_line() -> None:
    fails_at("FROM a\nRUN --network=bridge x\n", 2, "unsupported --network=bridge")
    fails_at("FROM a\nRUN --mount=type=nfs,target=/x x\n", 2, "invalid --mount: unsupported mount type")
    fails_at("FROM a\nRUN --bogus x\n", 2, "unknown flag: --bogus for RUN")
    fails_at("FROM a\nWORKDIR --x=1 /a\n", 2, "unknown flag: --x for WORKDIR")
    fails_at("FROM a\nRUN\n", 2, "RUN requires at least one argument")


# -- heredocs -------------------------------------------------------------------------------------
def test_run_heredoc_with_tab_stripping_and_quoted_delimiter() -> None:
    run = only("RUN <<-EOT bash && 3<<'RAW' cat\n\t\techo $HOME\n\tEOT\n$NOT_EXPANDED\nRAW\n")
    assert isinstance(run, Run)
    assert run.command == "<<-EOT bash && 3<<'RAW' cat"
    assert run.heredocs == (
        InlineFile("EOT", "echo $HOME\n", expand=True),
        InlineFile("RAW", "$NOT_EXPANDED\n", expand=False, file_descriptor=3),
    )
    assert (run.line, run.end_line) == (2, 6)


def test_copy_heredoc_sources() -> None:
    copy = only('COPY --chmod=0644 <<"CONF" extra.txt /etc/app/\nkey = "$value"\nCONF\n')
    assert isinstance(copy, Copy)
    assert copy.sources == ("extra.txt",)
    assert copy.heredocs == (InlineFile("CONF", 'key = "$value"\n', expand=False),)
    assert copy.dest == "/etc/app/"


def test_heredoc_errors() -> None:
    fails_at("FROM a\nRUN <<EOF\necho\n", 2, "unterminated heredoc <<EOF")
    fails_at("FROM a\nCOPY a <<EOF\nx\nEOF\n", 2, "heredoc as the destination")


def test_heredoc_in_json_form_is_just_text() -> None:
    run = only('RUN ["cat", "<<EOF"]\nFROM b\n')
    assert run.heredocs == () and run.command == ("cat", "<<EOF")


# -- COPY / ADD -----------------------------------------------------------------------------------
def test_copy_flags() -> None:
    copy = only(
        "COPY --from=build --chown=1000:1000 --chmod=u+rwx,go+rx --link --parents "
        "--exclude=*.md --exclude=tests a b /dst/"
    )
    assert copy == Copy(
        line=2,
        end_line=2,
        original=(
            "COPY --from=build --chown=1000:1000 --chmod=u+rwx,go+rx --link --parents "
            "--exclude=*.md --exclude=tests a b /dst/"
        ),
        sources=("a", "b"),
        dest="/dst/",
        from_="build",
        chown="1000:1000",
        chmod="u+rwx,go+rx",
        link=True,
        parents=True,
        excludes=("*.md", "tests"),
    )
    assert only('COPY ["with space", "/dst dir/"]').sources == ("with space",)
    assert only("COPY --link=false a /b").link is False


def test_add_flags() -> None:
    add = only("ADD --checksum=sha256:0123 --keep-git-dir=true --chmod=755 https://example.com/x.git /src")
    assert isinstance(add, Add)
    assert (add.checksum, add.keep_git_dir, add.chmod, add.sources) == (
        "sha256:0123",
        True,
        "755",
        ("https://example.com/x.git",),
    )


def test_copy_errors() -> None:
    fails_at("FROM a\nCOPY onlyone\n", 2, "at least two arguments")
    fails_at("FROM a\nCOPY --chmod=999 a b\n", 2, "invalid --chmod=999")
    fails_at("FROM a\nCOPY --chmod=u+q a b\n", 2, "invalid --chmod")
    fails_at("FROM a\nADD --parents a b\n", 2, "unknown flag: --parents for ADD")
    fails_at("FROM a\nCOPY --from a b\n", 2, "missing a value on flag --from")
    fails_at("FROM a\nCOPY --from=x --from=y a b\n", 2, "duplicate flag")
    fails_at("FROM a\nCOPY --link=maybe a b\n", 2, "expecting boolean value")


# -- ENV / LABEL / ARG ----------------------------------------------------------------------------
def test_env_forms_keep_raw_values_for_later_expansion() -> None:
    assert only('ENV A=1 B="two words" C=x\\ y').pairs == (("A", "1"), ("B", '"two words"'), ("C", "x\\ y"))
    assert only("ENV LEGACY value with   spaces").pairs == (("LEGACY", "value with   spaces"),)
    assert isinstance(only("ENV A=1"), Env)


def test_label_and_arg() -> None:
    assert only('LABEL org.opencontainers.image.title="my app" v=1') == Label(
        line=2,
        end_line=2,
        original='LABEL org.opencontainers.image.title="my app" v=1',
        pairs=(("org.opencontainers.image.title", '"my app"'), ("v", "1")),
    )
    assert only('ARG A B= C="x y"') == Arg(
        line=2, end_line=2, original='ARG A B= C="x y"', pairs=(("A", None), ("B", ""), ("C", '"x y"'))
    )


def test_env_label_arg_errors() -> None:
    fails_at("FROM a\nENV PATH\n", 2, "ENV must have two arguments")
    fails_at("FROM a\nENV A=1 B\n", 2, "can't find = in \"B\"")
    fails_at("FROM a\nLABEL =x\n", 2, "LABEL names can not be blank")
    fails_at("FROM a\nARG =x\n", 2, "ARG names can not be blank")
    fails_at("FROM a\nENV\n", 2, "ENV requires at least one argument")


# -- the simple ones ------------------------------------------------------------------------------
def test_single_argument_instructions() -> None:
    assert isinstance(only("USER app:app"), User) and only("USER app:app").user == "app:app"
    assert only("WORKDIR /srv/my app").path == "/srv/my app"
    assert isinstance(only("STOPSIGNAL SIGKILL"), Stopsignal)
    assert only("MAINTAINER Jane <j@example.com>") == Maintainer(
        line=2, end_line=2, original="MAINTAINER Jane <j@example.com>", name="Jane <j@example.com>"
    )
    assert only("EXPOSE 80/tcp 53/udp") == Expose(
        line=2, end_line=2, original="EXPOSE 80/tcp 53/udp", ports=("80/tcp", "53/udp")
    )
    assert only('VOLUME ["/a", "/b"]') == Volume(line=2, end_line=2, original='VOLUME ["/a", "/b"]', paths=("/a", "/b"))
    assert only("VOLUME /a /b").paths == ("/a", "/b")
    fails_at("FROM a\nWORKDIR\n", 2, "WORKDIR requires at least one argument")
    fails_at('FROM a\nVOLUME [""]\n', 2, "can not be an empty string")


def test_cmd_entrypoint_shell() -> None:
    assert only('CMD ["nginx", "-g", "daemon off;"]') == Cmd(
        line=2, end_line=2, original='CMD ["nginx", "-g", "daemon off;"]', command=("nginx", "-g", "daemon off;"), shell_form=False
    )
    assert only("ENTRYPOINT exec app --flag") == Entrypoint(
        line=2, end_line=2, original="ENTRYPOINT exec app --flag", command="exec app --flag", shell_form=True
    )
    assert only("CMD []").command == ()
    assert only('SHELL ["powershell", "-command"]') == Shell(
        line=2, end_line=2, original='SHELL ["powershell", "-command"]', shell=("powershell", "-command")
    )
    fails_at("FROM a\nSHELL /bin/bash -c\n", 2, "SHELL requires the arguments to be in JSON form")
    fails_at('FROM a\nSHELL ["/bin/sh", "-c"\n', 2, "JSON form")


def test_healthcheck() -> None:
    check = only("HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=0s --retries=3 CMD curl -f http://x/ || exit 1")
    assert check == Healthcheck(
        line=2,
        end_line=2,
        original=check.original,
        test=("CMD-SHELL", "curl -f http://x/ || exit 1"),
        interval=90.0,
        timeout=0.5,
        start_period=0.0,
        retries=3,
    )
    assert only('HEALTHCHECK CMD ["/bin/check", "-q"]').test == ("CMD", "/bin/check", "-q")
    assert only("HEALTHCHECK none").test == ("NONE",)
    fails_at("FROM a\nHEALTHCHECK NONE extra\n", 2, "NONE takes no arguments")
    fails_at("FROM a\nHEALTHCHECK CONNECT tcp\n", 2, "unknown type 'CONNECT'")
    fails_at("FROM a\nHEALTHCHECK CMD\n", 2, "missing command after HEALTHCHECK CMD")
    fails_at("FROM a\nHEALTHCHECK --interval=5 CMD x\n", 2, "invalid --interval=5")
    fails_at("FROM a\nHEALTHCHECK --timeout=1us CMD x\n", 2, "at least 1ms")
    fails_at("FROM a\nHEALTHCHECK --retries=-1 CMD x\n", 2, "cannot be negative")


def test_onbuild() -> None:
    trigger = only("ONBUILD RUN echo hi")
    assert isinstance(trigger, Onbuild)
    assert trigger.expression == "RUN echo hi"
    assert isinstance(trigger.instruction, Run) and trigger.instruction.command == "echo hi"
    fails_at("FROM a\nONBUILD ONBUILD RUN x\n", 2, "ONBUILD isn't allowed as an ONBUILD trigger")
    fails_at("FROM a\nONBUILD FROM x\n", 2, "FROM isn't allowed")
    fails_at("FROM a\nONBUILD\n", 2, "ONBUILD requires at least one argument")
    fails_at("FROM a\nONBUILD COPY --bogus a b\n", 2, "unknown flag: --bogus for COPY")


def test_unknown_instruction() -> None:
    error = fails_at("FROM a\n\nFRMO b\n", 3, "unknown instruction: FRMO")
    assert isinstance(error, UnsupportedInstructionError)
    assert "did you mean FROM?" in str(error)


# -- parser details the conformance fixtures do not cover -------------------------------------------
def test_parser_directive_rules() -> None:
    assert parse("# escape=`\nFROM a\nRUN x `\n  y\n").ast.children[1].arg_values() == ["x   y"]
    with pytest.raises(DockerfileSyntaxError, match="only one escape parser directive") as info:
        parse("# escape=`\n# escape=\\\nFROM a\n")
    assert info.value.line == 2
    with pytest.raises(DockerfileSyntaxError, match="invalid escape token"):
        parse("# escape=x\nFROM a\n")
    # A directive after an instruction or an ordinary comment is just a comment.
    assert parse("# hello\n# escape=`\nFROM a\n").escape_token == "\\"


def test_line_continuation_with_comments_and_blank_lines() -> None:
    result = parse("FROM a\nRUN one \\\n# comment\n\n  two\n")
    run = result.ast.children[1]
    assert (run.original, run.start_line, run.end_line) == ("RUN one   two", 2, 5)
    assert result.warnings and "empty continuation line" in result.warnings[0]


def test_dump_matches_buildkit_format() -> None:
    assert dump('FROM a AS b\nCOPY --link x y\nONBUILD RUN ["a"]\nFOO bar\n') == (
        '(from "a" "AS" "b")\n(copy ["--link"] "x" "y")\n(onbuild (run "a"))\n(foo "")'
    )


# -- expansion helpers ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("${FILE#*/}", "b/c.tar.gz"),
        ("${FILE##*/}", "c.tar.gz"),
        ("${FILE%.*}", "a/b/c.tar"),
        ("${FILE%%.*}", "a/b/c"),
        ("${FILE/b/X}", "a/X/c.tar.gz"),
        ("${FILE//[.]/_}", "a/b/c_tar_gz"),
        ("${UNSET-default}", "default"),
        ("${EMPTY-default}", ""),
        ("${EMPTY:-default}", "default"),
        ("${EMPTY+set}", "set"),
        ("${EMPTY:+set}", ""),
        ('"${FILE}" \\$x', "a/b/c.tar.gz $x"),
    ],
)
def test_expand(word: str, expected: str) -> None:
    assert expand(word, {"FILE": "a/b/c.tar.gz", "EMPTY": ""}) == expected


def test_expand_words_and_errors() -> None:
    assert expand_words('$A "b c" d', {"A": "x  y"}) == ["x", "y", "b c", "d"]
    with pytest.raises(ShellExpansionError, match="Dockerfile:7: .*TOKEN: set it with --build-arg") as info:
        expand("${TOKEN:?set it with --build-arg}", {}, line=7)
    assert isinstance(info.value, DockerfileSyntaxError)
    assert expand("`$A", {"A": "1"}, escape_token="`") == "$A"


# -- robustness -----------------------------------------------------------------------------------
_DOCKERFILE_ALPHABET = st.sampled_from(
    list("FROMRUNCOPYADDENVARGabc =-[]\"'\\`$#{}<>:,\t\n")
    + ["FROM ", "RUN ", "COPY ", "ONBUILD ", "HEALTHCHECK ", "<<EOF", "<<-EOF", "\nEOF\n", "--mount=", "# escape=`\n"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_DOCKERFILE_ALPHABET, max_size=40).map("".join) | st.text(max_size=200))
def test_random_text_raises_only_layerkit_errors(text: str) -> None:
    try:
        parse_dockerfile(text)
    except LayerkitError:
        pass
