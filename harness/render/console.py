"""The console summary `harness run` and `harness merge` print at the end: the checks x
verdicts table, the worst divergences, the verdict counts and, where an expected table was used,
how many failures are new.

Plain text (tabulate's "simple" format) for a terminal; it shows the same rows as the report's
summary (harness.render.selection.verdict_rows), so the two never disagree on a count.
"""
from __future__ import annotations

from tabulate import tabulate

from harness.render import markdown as md
from harness.render.selection import diverging, known_line, verdict_rows
from harness.vocab import VERDICTS
from harness.vocab import CHECK_ORDER


def console_summary(records, meta, limit=10) -> str:
    """The summary for ``records`` and ``meta`` (run.json); at most ``limit`` divergences listed."""
    rows, total = verdict_rows(records)
    lines = [_verdicts_table(rows, total)] + _worst_lines(diverging(records), limit)
    lines.append("")
    lines.append(", ".join(f"{n} {v}" for v, n in zip(VERDICTS, total)))
    split = known_line(records, meta)
    if split:
        lines.append(split)
    return "\n".join(lines)


def _verdicts_table(rows, total) -> str:
    """``rows``, ``total``: verdict_rows(records); numbers stay numbers, so tabulate right-aligns them.
    Only the checks of CHECK_ORDER are listed: the report also lists checks unknown to this version
    (from an older results file), the console does not."""
    table = [[check] + numbers for check, numbers in rows if check in CHECK_ORDER] + [["all"] + total]
    return tabulate(table, headers=["check"] + list(VERDICTS), tablefmt="simple")


def _worst_lines(worst, limit) -> list:
    """The first ``limit`` of ``worst`` (diverging(records)), and how many more the report has."""
    shown = worst[:limit]
    if not shown:
        return []
    short = [[r["case"], r["param"], md.check_label(r), md.who(r), r["dtype"], r["device"], md.max_rel(r),
              r.get("cause") or ""] for r in shown]
    lines = ["", tabulate(short, headers=["case", "param", "check", "frameworks", "dtype", "device",
                                          "max rel err", "cause"], tablefmt="simple")]
    more = len(worst) - limit
    if more > 0:
        lines.append(f"... and {more} more in the report")
    return lines


__all__ = ["console_summary"]
