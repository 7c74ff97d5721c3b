"""What commands print: tables keep their natural width in a log, where rich would assume 80 columns."""

from __future__ import annotations

import io

from rich.table import Table

from atmorep.progress import LOG_WIDTH, command_console


def _wide_table() -> Table:
    table = Table()
    for column in range(12):
        table.add_column(f"baseline {column}")
    table.add_row(*(f"{0.0123456 * (column + 1):.5f}" for column in range(12)))
    return table


def test_a_console_that_is_not_a_terminal_prints_tables_whole(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    console = command_console()
    assert not console.is_terminal and console.width == LOG_WIDTH
    console.file = io.StringIO()
    console.print(_wide_table())
    text = console.file.getvalue()
    assert "…" not in text
    assert all(f"{0.0123456 * (column + 1):.5f}" in text for column in range(12))
    assert max(map(len, text.splitlines())) > 80


def test_columns_set_by_the_user_are_kept(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert command_console().width == 100
    assert command_console(stderr=True).width == 100
