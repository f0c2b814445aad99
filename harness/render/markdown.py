"""The markdown primitives every rendered page shares (report.md, compare's diff, the console).

One spelling per thing: a record's setting, its tolerance, its worst element, a time, a table.
A record reads the same in the report's tables, in `describe`'s one-liner and in a diff of two
runs only because all of them format it here.
"""
from __future__ import annotations

from tabulate import tabulate

from harness.store.records import as_float

#: tables longer than this are folded into <details>
FOLD_ROWS = 12
#: rows in a summary's short tables (the report's worst divergences and timing gaps)
SUMMARY_ROWS = 5


def num(value, fmt=".1e") -> str:
    """A record's number as text ("" where absent); a string (e.g. "nan") is shown as is."""
    value = as_float(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, fmt)
    return str(value)


def who(rec) -> str:
    """The framework, or the pair of frameworks, a record compares: 'torch vs jax'."""
    other = rec.get("other_framework")
    return f"{rec['framework']} vs {other}" if other else rec["framework"]


def index_text(rec) -> str:
    """The worst element's index: '(3, 2)', or '(scalar)' for a 0-d gradient."""
    index = rec.get("worst_index")
    return f"({', '.join(map(str, index))})" if index else "(scalar)"


def where(rec) -> str:
    """The worst element and both values there: '(3, 2): got 0.5, expected -0.5'."""
    return f"{index_text(rec)}: got {num(rec.get('got'), '.6g')}, expected {num(rec.get('expected'), '.6g')}"


def max_rel(rec, fmt=".1e") -> str:
    """The max relative error as the verdict reads: a NaN verdict is NaN, whatever the finite
    elements' error was."""
    return "NaN" if rec.get("verdict") == "nan" else num(rec.get("max_rel_err"), fmt)


def check_label(rec) -> str:
    """The check's name, with the kind of fd made where it was not elementwise."""
    mode = rec.get("fd_mode")
    return f"{rec['check']} ({mode})" if rec["check"] == "fd" and mode and mode != "full" else rec["check"]


def tolerance(rec) -> str:
    """The tolerance a record was held to: 'rtol 1e-06, atol 1e-08' ("" where it had none)."""
    if rec.get("rtol") is None:
        return ""
    return f"rtol {num(rec['rtol'], '.0e')}, atol {num(rec['atol'], '.0e')}"


def setting(rec) -> str:
    """dtype, device, and mode/precision where not the default: 'float32 cuda:0 compiled highest'."""
    parts = [rec.get("dtype"), rec.get("device")]
    if rec.get("mode") not in (None, "eager", "-"):
        parts.append(rec["mode"])
    if rec.get("precision") not in (None, "default", "-"):
        parts.append(f"precision={rec['precision']}")
    return " ".join(p for p in parts if p and p != "-")


def ms(seconds) -> str:
    """A time in the unit that keeps it readable: '1.20 s', '3.40 ms', '56 µs'."""
    seconds = float(seconds)
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def table(rows, headers) -> str:
    """A GitHub table; cells are text already, so tabulate must not reformat numbers."""
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def fold(summary: str, body: list, rows: int, open_: bool = False) -> list:
    """``body`` (markdown lines) as is when short, inside <details> when it has many rows."""
    if rows <= FOLD_ROWS and not open_:
        return body + [""]
    return [f"<details{' open' if open_ else ''}><summary>{summary}</summary>", ""] + body + ["", "</details>", ""]


def cell(text) -> str:
    """Free text inside a table cell: one line, no pipes."""
    return " ".join(str(text or "").split()).replace("|", "\\|")


__all__ = ["FOLD_ROWS", "SUMMARY_ROWS", "cell", "check_label", "fold", "index_text", "max_rel", "ms", "num",
           "setting", "table", "tolerance", "where", "who"]
