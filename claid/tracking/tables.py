"""Rows of dicts as CSV, Markdown and HTML tables, written atomically: the sweep
summary's files and ``claid runs --csv``."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from pathlib import Path

from claid.artifacts import atomic_write_bytes


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically (:func:`claid.artifacts.atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_csv(rows: Sequence[dict], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """``rows`` as CSV (atomically), columns in first-seen order unless given."""
    columns = list(columns or dict.fromkeys(c for row in rows for c in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(Path(path), buffer.getvalue())


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """``rows`` as a Markdown table (floats to 3 decimals, '|' escaped)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)).replace("|", "\\|") for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def html_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """``rows`` as an HTML table (escaped, floats to 3 decimals)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table border='1' cellpadding='4'><tr>{head}</tr>{body}</table>"
