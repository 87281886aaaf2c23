"""``.dockerignore`` semantics, with cases taken from moby/patternmatcher's own tests
(``patternmatcher_test.go``: TestMatches, TestWildcardMatches, TestPatternMatches…) and
``ignorefile_test.go``, plus Go ``filepath.Match`` cases from Go's ``match_test.go``."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerkit.build.dockerignore import (
    BadPatternError,
    PatternMatcher,
    go_match,
    ignore_file_for,
    parse_ignore,
    read_ignore_file,
)

# (pattern, text, matches) from patternmatcher_test.go TestMatches (Unix rows)
MOBY_MATCHES = [
    ("**", "file", True),
    ("**", "file/", True),
    ("**/", "file", True),
    ("**/", "file/", True),
    ("**", "/", True),
    ("**/", "/", True),
    ("**", "dir/file", True),
    ("**/", "dir/file", True),
    ("**", "dir/file/", True),
    ("**/", "dir/file/", True),
    ("**/**", "dir/file", True),
    ("**/**", "dir/file/", True),
    ("dir/**", "dir/file", True),
    ("dir/**", "dir/file/", True),
    ("dir/**", "dir/dir2/file", True),
    ("dir/**", "dir/dir2/file/", True),
    ("**/dir", "dir", True),
    ("**/dir", "dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/*", "dir/dir2/file/", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**/dir2/**", "dir/dir2/dir3/file/", True),
    ("**file", "file", True),
    ("**file", "dir/file", True),
    ("**/file", "dir/file", True),
    ("**file", "dir/dir/file", True),
    ("**/file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True),
    ("**/file*.txt", "dir/dir/file.txt", True),
    ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True),
    ("**/**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True),
    ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False),
    ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True),
    (".*", ".foo", True),
    (".*", "foo", False),
    ("abc.def", "abcdef", False),
    ("abc.def", "abc.def", True),
    ("abc.def", "abcZdef", False),
    ("abc?def", "abcZdef", True),
    ("abc?def", "abcdef", False),
    ("a\\\\", "a\\", True),
    ("**/foo/bar", "foo/bar", True),
    ("**/foo/bar", "dir/foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("abc/**", "abc", False),
    ("abc/**", "abc/def", True),
    ("abc/**", "abc/def/ghi", True),
    ("**/.foo", ".foo", True),
    ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True),
    ("a(b)c/def", "a(b)c/xyz", False),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
]


@pytest.mark.parametrize(("pattern", "text", "expected"), MOBY_MATCHES)
def test_moby_pattern_cases(pattern: str, text: str, expected: bool) -> None:
    assert PatternMatcher.from_patterns([pattern]).matches(text) is expected


def test_a_matching_parent_directory_excludes_everything_below() -> None:
    pm = PatternMatcher.from_patterns(["docs", "*.tmp"])
    assert pm.matches("docs/readme.md")
    assert pm.matches("docs/a/b/c")
    assert pm.matches("x.tmp")
    assert not pm.matches("sub/x.tmp")  # `*` never crosses a `/`
    assert not pm.matches("documentation")


def test_exceptions_and_last_match_wins() -> None:
    pm = PatternMatcher.from_patterns(["*.md", "!README*.md", "README-secret.md"])
    assert pm.matches("CHANGES.md")
    assert not pm.matches("README.md")
    assert pm.matches("README-secret.md")
    assert pm.exclusions


def test_exception_inside_an_excluded_directory_keeps_the_walk_going() -> None:
    pm = PatternMatcher.from_patterns(["vendor", "!vendor/keep"])
    assert pm.matches("vendor/other")
    assert not pm.matches("vendor/keep")
    assert pm.may_include_below("vendor")
    assert not PatternMatcher.from_patterns(["vendor"]).may_include_below("vendor")


@pytest.mark.parametrize("pattern", ["[", "a[", "[^", "a\\", "[]a]"[:2] + "["])
def test_bad_patterns_are_rejected(pattern: str) -> None:
    with pytest.raises(BadPatternError):
        PatternMatcher.from_patterns([pattern])


def test_lone_exclamation_mark_is_illegal() -> None:
    with pytest.raises(BadPatternError, match="illegal exclusion"):
        PatternMatcher.from_patterns(["!"])


def test_read_all_rules() -> None:
    # ignorefile_test.go: comments only in column 1, trimming, cleaning, leading "/" stripped
    text = "\ufefftest1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n ! /inverted/abs/path\n!\n! \n"
    assert parse_ignore(text) == ["test1", "test2", "a/file/here", "lastfile", "!inverted/abs/path", "!", "!"]
    assert parse_ignore("  # not a comment\n./a/../b//c/\n") == ["# not a comment", "b/c"]


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("*.a\n")
    df = tmp_path / "build.Dockerfile"
    df.write_text("FROM scratch\n")
    assert ignore_file_for(tmp_path, df) == tmp_path / ".dockerignore"
    (tmp_path / "build.Dockerfile.dockerignore").write_text("*.b\n")
    chosen = ignore_file_for(tmp_path, df)
    assert chosen == tmp_path / "build.Dockerfile.dockerignore"
    pm = read_ignore_file(chosen)
    assert pm.matches("x.b") and not pm.matches("x.a")
    assert not read_ignore_file(None)


# Go's filepath.Match (match_test.go)
GO_MATCH = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", False),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("*x", "xxx", True),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), GO_MATCH)
def test_go_filepath_match(pattern: str, name: str, expected: bool) -> None:
    assert go_match(pattern, name) is expected


@pytest.mark.parametrize("pattern", ["[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a["])
def test_go_filepath_match_bad_patterns(pattern: str) -> None:
    with pytest.raises(BadPatternError):
        go_match(pattern, "x")
