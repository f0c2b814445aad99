"""The report's per-case details: each case's status, its failing checks in words, the
agreement matrix (framework or pair x setting) and its timings."""
from __future__ import annotations

from collections import Counter, defaultdict

from harness.render import markdown as md
from harness.render.selection import describe, frameworks_of, rel_err, sort_key
from harness.render.timings import TIMING_MARKS, case_timing_table
from harness.vocab import FAILING, cell_rank

MARK = {"pass": "✓", "diverge": "✗", "nan": "NaN", "error": "error", "skipped": "skipped"}


def agreement_matrix(case_records) -> str:
    """Rows: device/dtype/mode/precision. Columns: each framework's own checks, then each pair.
    A cell is the worst verdict there and the largest relative error."""
    cells: dict = defaultdict(dict)
    skipped: Counter = Counter()
    columns: list = []
    for r in case_records:
        if r["check"] == "timing" or r.get("device") == "-":
            continue
        col = f"{r['framework']} ~ {r['other_framework']}" if r.get("other_framework") else r["framework"]
        if col not in columns:
            columns.append(col)
        row = (r["device"], r["dtype"], r["mode"], r["precision"])
        if r["verdict"] == "skipped":
            skipped[(row, col)] += 1
        prev = cells[row].get(col)
        if prev is None or cell_rank(r["verdict"]) < cell_rank(prev[0]) or (
                r["verdict"] == prev[0] and rel_err(r) > prev[1]):
            cells[row][col] = (r["verdict"], rel_err(r))
    singles = sorted(c for c in columns if "~" not in c)
    pairs = sorted(c for c in columns if "~" in c)
    columns = singles + pairs
    rows = []
    for row in sorted(cells):
        out = list(row)
        for col in columns:
            cell = cells[row].get(col)
            if cell is None:
                out.append("")
            elif cell[0] in ("error", "skipped"):
                out.append(MARK[cell[0]])
            else:
                extra = skipped[(row, col)]
                out.append(f"{MARK[cell[0]]} {cell[1]:.0e}" + (f" (+{extra} skipped)" if extra else ""))
        rows.append(out)
    return md.table(rows, ["device", "dtype", "mode", "precision"] + columns)


#: how _tolerance_note names the tolerance of the fd and hvp checks
_FD_TOLERANCE_LABEL = "fd and hvp (float64, plus 10× the FD error estimate)"


def _tolerance_note(case_records) -> str:
    """The tolerances the matrix's numbers are held to, per dtype (fd has its own)."""
    per = {}
    for r in case_records:
        if r.get("rtol") is None or r["check"] in ("determinism", "timing"):
            continue
        kind = "fd" if r["check"] in ("fd", "hvp") else r["dtype"]
        per.setdefault(kind, md.tolerance(r))
    order = ["float64", "float32", "bfloat16", "float16"]
    parts = [f"{_FD_TOLERANCE_LABEL if k == 'fd' else k}: {per[k]}"
             for k in sorted(per, key=lambda k: (k == "fd", order.index(k) if k in order else 9, k))]
    return "Tolerances — " + "; ".join(parts) + "." if parts else ""


def _case_status(case_records) -> str:
    checks = [r for r in case_records if r["check"] != "timing"]
    c = Counter(r["verdict"] for r in checks)
    bad = sum(c[v] for v in FAILING)
    if bad:
        causes = sorted({r.get("cause") for r in checks if r["verdict"] in FAILING and r.get("cause")})
        text = f"✗ **{bad} of {len(checks)} checks fail**"
        if causes:
            text += " (" + ", ".join(f"`{x}`" for x in causes) + ")"
    else:
        text = f"✓ all {c['pass']} checks pass" if c.get("pass") else "no check ran"
    if c.get("skipped"):
        text += f"; {c['skipped']} skipped"
    return text + "."


def _fd_kind(case_records) -> list:
    """A line saying where fd was not elementwise (a large case): its verdict covers random
    directions, not every element, and a reader of the matrix must know that."""
    kinds = defaultdict(set)
    for r in case_records:
        if r["check"] == "fd" and r.get("fd_mode") == "directional":
            kinds[r.get("message") or "random directions"].add(r["framework"])
    return [f"fd ran as a directional check ({what}) for {', '.join(sorted(fws))}: it compares the gradient "
            "along those directions, not element by element." for what, fws in sorted(kinds.items())] + (
        [""] if kinds else [])


def cases_section(records, meta) -> list:
    """The "Cases" section: per case, its failing checks in words, its matrix and its timings."""
    by_case = defaultdict(list)
    for r in records:
        by_case[r["case"]].append(r)
    if not by_case:
        return []
    frameworks = frameworks_of(records, meta)
    lines = ["## Cases", "",
             "Per case: its failing checks in words, the agreement matrix (each cell: the worst verdict and "
             "largest relative error of that framework's own checks — fd, jvp, hvp, determinism, reference, "
             "compiled — or of that pair of frameworks), and its timings.", ""]
    for case in sorted(by_case):
        lines += _case_lines(case, by_case[case], frameworks)
    return lines


def _case_lines(case, recs, frameworks) -> list:
    """One case: a failing case shows its matrix open and its timings folded; a passing one folds both."""
    lines = [f"### {case}", "", _case_status(recs), ""] + _fd_kind(recs)
    bad = sorted((r for r in recs if r["verdict"] in FAILING), key=sort_key)
    if bad:
        shown = bad[:md.FOLD_ROWS]
        lines += [f"- {describe(r)}" for r in shown]
        if len(bad) > len(shown):
            lines.append(f"- … and {len(bad) - len(shown)} more (see [Divergences](#divergences))")
        lines.append("")
    note = _tolerance_note(recs)
    body = [agreement_matrix(recs)] + (["", note] if note else [])
    timing, _rows = case_timing_table(recs, frameworks)
    if bad:
        lines += body + [""]
        if timing:
            lines += [f"<details><summary>timings ({TIMING_MARKS})</summary>", "",
                      timing, "", "</details>", ""]
    else:
        summary = "agreement matrix" + (" and timings" if timing else "")
        inner = body + ([""] + [f"Timings ({TIMING_MARKS}):", "", timing]
                        if timing else [])
        lines += [f"<details><summary>{summary}</summary>", ""] + inner + ["", "</details>", ""]
    return lines


__all__ = ["MARK", "agreement_matrix", "cases_section"]
