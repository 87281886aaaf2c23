"""stdout of the commands: plain aligned text on a pipe (no rich), rich on a terminal; text is never markup."""

from __future__ import annotations

import subprocess
import sys

import pytest

from layerkit.cli.output import Column, Output, Table, Tree


def _table() -> Table:
    table = Table("NAME", Column("SIZE", "right"), Column("NOTE", max_width=8), title="things")
    table.add_row("a", "1 B", "short")
    table.add_row("[bold]b[/]", "10.5 MB", "a note that is long")
    table.add_row("multi\nline", "0 B", "")
    return table


def test_plain_table_is_aligned_capped_and_one_line_per_row(capsys: pytest.CaptureFixture[str]) -> None:
    Output(terminal=False).table(_table())
    assert capsys.readouterr().out.splitlines() == [
        "things",
        "NAME           SIZE  NOTE",
        "a               1 B  short",
        "[bold]b[/]  10.5 MB  a note …",
        "multi line      0 B",
    ]


def test_plain_grid_has_no_header(capsys: pytest.CaptureFixture[str]) -> None:
    grid = Table("key", "value", header=False)
    grid.add_row("digest", "sha256:x")
    grid.add_row("media type", "oci")
    Output(terminal=False).table(grid)
    assert capsys.readouterr().out == "digest      sha256:x\nmedia type  oci\n"


def test_plain_lines_and_trees_drop_styles(capsys: pytest.CaptureFixture[str]) -> None:
    out = Output(terminal=False)
    out.line(("PASS", "green"), " rule [x]")
    tree = Tree(("layer 0", "bold"), " abc")
    etc = tree.add(("+ etc", "green"), " (dir)")
    etc.add(("+ [motd]", "green"), " 5 B")
    out.tree(tree)
    assert capsys.readouterr().out == "PASS rule [x]\nlayer 0 abc\n    + etc (dir)\n        + [motd] 5 B\n"


def test_terminal_output_goes_through_rich_and_keeps_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    out = Output(terminal=True)
    out.line(("[red]not markup[/]", "bold"), " tail")
    out.table(_table())
    tree = Tree("root")
    tree.add(("[dim]child[/]", "green"))
    out.tree(tree)
    text = capsys.readouterr().out
    assert "[red]not markup[/] tail" in text
    assert "[bold]b[/]" in text and "things" in text
    assert "[dim]child[/]" in text and "└──" in text


def test_piped_commands_do_not_import_rich() -> None:
    code = (
        "import sys\n"
        "from layerkit.cli.output import Output, Table\n"
        "t = Table('a', 'b'); t.add_row('1', '2'); Output().table(t); Output().line(('x', 'bold'))\n"
        "assert 'rich' not in sys.modules, sorted(m for m in sys.modules if m.startswith('rich'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "a  b\n1  2\nx\n"


def test_trees_thousands_deep_print_in_both_modes(capsys: pytest.CaptureFixture[str]) -> None:
    tree = Tree("root")
    node = tree
    for i in range(3000):  # deeper than Python's recursion limit: a hostile layer can nest this far
        node = node.add(f"d{i}")
    tree.add("sibling")
    Output(terminal=False).tree(tree)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3002 and lines[1] == "    d0" and lines[-1] == "    sibling"
    Output(terminal=True).tree(tree)  # rich draws it without recursing either
    assert "root" in capsys.readouterr().out
