"""The report's full listings: every divergence (one row each, with the tolerance it was held to
and its worst element), the known divergences a run no longer sees, and the errors and skipped
checks with their reasons.

The summary shows the worst few; these are where a reader finds any one of them.
"""
from __future__ import annotations

from harness.render import markdown as md
from harness.vocab import CAUSES

_NONE = "None: every gradient agrees with its reference and across frameworks within tolerance."


def divergences_section(bad, vanished=(), mark=False) -> list:
    """``bad``: diverging(records), worst first; new ones are listed before known (explained) ones.
    ``vanished``: expected entries no longer seen; ``mark``: say new/known per row."""
    lines = ["## Divergences", ""]
    if not bad:
        return lines + [_NONE, ""] + _vanished_lines(vanished)
    bad = sorted(bad, key=lambda r: bool(r.get("known")))
    rows = [[r["case"], r["param"], md.check_label(r), md.who(r), md.setting(r) or "-",
             f"{md.max_rel(r)} ({md.tolerance(r)})" if r.get("rtol") is not None else md.max_rel(r),
             md.where(r), (f"`{r['cause']}`" if r.get("cause") else "") + (
                 (" (known)" if r.get("known") else " (new)") if mark else ""),
             md.cell(r.get("message"))] for r in bad]
    body = [md.table(rows, ["case", "param", "check", "frameworks", "setting", "max rel err (tolerance)",
                            "worst element", "cause", "note"])]
    if len(rows) <= 2 * md.FOLD_ROWS:
        lines += body + [""]
    else:
        lines += md.fold(f"{len(rows)} divergences, worst first", body, len(rows))
    causes = sorted({r["cause"] for r in bad if r.get("cause")})
    lines += _vanished_lines(vanished)
    if causes:
        lines += ["Causes found here:", ""] + [f"- `{c}`: {CAUSES.get(c, '')}." for c in causes] + [""]
    return lines


def _vanished_lines(vanished) -> list:
    if not vanished:
        return []
    return (["**Known divergences no longer seen** (their comparison was made and passed: a framework changed a "
             "convention or fixed a bug — update the expected table):", ""]
            + [f"- {md.cell(v)}" for v in vanished] + [""])


def problems_section(records) -> list:
    """The checks that could not run (error) or did not apply (skipped), each with its reason."""
    problems = [r for r in records if r["verdict"] in ("error", "skipped")]
    if not problems:
        return []
    rows = [[r["case"], r["check"], r["framework"], r["device"], r["dtype"], r["mode"], r["verdict"],
             md.cell((r.get("message") or "").splitlines()[0][:240] if r.get("message") else "")]
            for r in sorted(problems, key=lambda r: (r["verdict"], r["case"], r["framework"], r["check"],
                                                      str(r.get("dtype")), str(r.get("device")), str(r.get("mode")),
                                                      str(r.get("method") or "")))]
    errors = sum(r["verdict"] == "error" for r in problems)
    title = f"{errors} error(s), {len(problems) - errors} skipped"
    return ["## Errors and skipped", ""] + md.fold(
        title, [md.table(rows, ["case", "check", "framework", "device", "dtype", "mode", "verdict", "reason"])],
        len(rows))


__all__ = ["divergences_section", "problems_section"]
