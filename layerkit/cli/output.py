"""What the commands print on stdout: rich on a terminal, plain aligned text anywhere else.

Piped output is read by grep, awk and scripts: no colour, no box drawing, no wrapping to 80
columns, nothing cropped but what a column caps on purpose. It also never imports rich, which costs
about 40 ms of every run (a third of a small command). Callers describe lines, tables and trees;
text is never parsed as markup, so paths with brackets print as they are.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, Literal

import click

__all__ = ["Column", "Output", "Span", "Table", "Tree"]

#: a piece of a line: plain text, or ``(text, rich style)`` (the style only shows on a terminal)
Span = str | tuple[str, str]


class Column:
    __slots__ = ("justify", "max_width", "name", "wrap")

    def __init__(self, name: str, justify: Literal["left", "right"] = "left", *, wrap: bool = False,
                 max_width: int | None = None) -> None:
        self.name = name
        self.justify = justify
        self.wrap = wrap  # on a terminal: fold long cells (else they are kept on one line)
        self.max_width = max_width  # cells longer than this end in "…" (in every mode)


class Table:
    """Rows of cells under named columns; ``header=False`` for a key/value grid."""

    def __init__(self, *columns: Column | str, title: str | None = None, header: bool = True) -> None:
        self.columns = [c if isinstance(c, Column) else Column(c) for c in columns]
        self.title = title
        self.header = header
        self.rows: list[list[str]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append([_cap(cell.replace("\n", " "), col.max_width) for cell, col in zip(cells, self.columns)])


class Tree:
    def __init__(self, *label: Span) -> None:
        self.label = label
        self.children: list[Tree] = []

    def add(self, *label: Span) -> Tree:
        child = Tree(*label)
        self.children.append(child)
        return child


def _cap(text: str, width: int | None) -> str:
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def _plain(spans: Iterable[Span]) -> str:
    return "".join(s if isinstance(s, str) else s[0] for s in spans)


class Output:
    """stdout for one command. ``terminal`` decides the form (a TTY: rich)."""

    def __init__(self, terminal: bool | None = None) -> None:
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self._console: Any = None

    def line(self, *spans: Span) -> None:
        if not self.terminal:
            click.echo(_plain(spans))
            return
        from rich.text import Text

        self._rich().print(Text.assemble(*spans))

    def table(self, table: Table) -> None:
        if self.terminal:
            self._rich().print(self._rich_table(table))
            return
        rows = ([[c.name for c in table.columns]] if table.header else []) + table.rows
        if table.title:
            click.echo(table.title)
        widths = [max((len(r[i]) for r in rows), default=0) for i in range(len(table.columns))]
        for row in rows:
            cells = [cell.rjust(w) if col.justify == "right" else cell.ljust(w)
                     for cell, w, col in zip(row, widths, table.columns)]
            click.echo("  ".join(cells).rstrip())

    def tree(self, tree: Tree) -> None:
        if self.terminal:
            self._rich().print(self._rich_tree(tree))
            return

        stack = [(tree, 0)]  # not recursive: a layer may nest paths thousands deep
        while stack:
            node, depth = stack.pop()
            click.echo("    " * depth + _plain(node.label))
            stack.extend((child, depth + 1) for child in reversed(node.children))

    # -- rich, on a terminal only -----------------------------------------------------------------

    def _rich(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(highlight=False, soft_wrap=True)
        return self._console

    @staticmethod
    def _rich_table(table: Table) -> Any:
        from rich import box
        from rich.table import Table as RichTable

        if table.header:
            out = RichTable(title=table.title, title_justify="left", box=box.SIMPLE_HEAD, header_style="bold")
        else:
            out = RichTable.grid(padding=(0, 2))
        for c in table.columns:
            # columns that may give way when the terminal is narrow: folded ones and capped ones
            # (which end in "…"); the rest (figures, digests) keep their width
            out.add_column(c.name, justify=c.justify, no_wrap=not (c.wrap or c.max_width),
                           overflow="fold" if c.wrap else "ellipsis")
        for row in table.rows:
            out.add_row(*_texts(row, table.columns))
        return out

    @staticmethod
    def _rich_tree(tree: Tree) -> Any:
        from rich.text import Text
        from rich.tree import Tree as RichTree

        root = RichTree(Text.assemble(*tree.label))
        stack = [(tree, root)]
        while stack:
            node, into = stack.pop()
            stack.extend((child, into.add(Text.assemble(*child.label))) for child in node.children)
        return root


def _texts(row: list[str], columns: list[Column]) -> list[Any]:
    from rich.text import Text

    # Text, not str: cells are never parsed as markup; only folded columns take several lines
    return [Text(cell, no_wrap=not c.wrap, overflow="fold" if c.wrap else "ellipsis") for cell, c in zip(row, columns)]
