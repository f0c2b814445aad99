"""The markdown report (GitHub-flavoured tables via tabulate) and the console summary."""
from __future__ import annotations

from collections import Counter, defaultdict

from tabulate import tabulate

from .compare import CAUSES
from .records import VERDICTS, as_float

CHECK_ORDER = ("run", "fd", "jvp", "hvp", "determinism", "reference", "compiled", "pairwise")
SEVERITY = {"nan": 0, "error": 1, "diverge": 2, "skipped": 3, "pass": 4}


def _num(value, fmt=".1e"):
    value = as_float(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, fmt)
    return str(value)


def _who(rec) -> str:
    other = rec.get("other_framework")
    return f"{rec['framework']} vs {other}" if other else rec["framework"]


def _where(rec) -> str:
    index = rec.get("worst_index")
    at = f"[{', '.join(map(str, index))}]" if index else "(scalar)"
    return f"{at}: {_num(rec.get('got'), '.6g')} vs {_num(rec.get('expected'), '.6g')}"


def _tolerance(rec) -> str:
    if rec.get("rtol") is None:
        return ""
    return f"rtol {_num(rec['rtol'], '.0e')}, atol {_num(rec['atol'], '.0e')}"


def _excess(rec) -> float:
    """How far beyond tolerance: the sort key of the divergence table."""
    rel = as_float(rec.get("max_rel_err"))
    tol = max(as_float(rec.get("atol") or 0.0), as_float(rec.get("rtol") or 0.0), 1e-300)
    return float("inf") if rel is None or isinstance(rel, str) else rel / tol


def counts(records) -> Counter:
    """Verdicts of the correctness checks (timings are measurements, not verdicts)."""
    return Counter(r["verdict"] for r in records if r["check"] != "timing")


def failing(records) -> list:
    bad = [r for r in records if r["verdict"] in ("diverge", "nan")]
    return sorted(bad, key=lambda r: (SEVERITY[r["verdict"]], -_excess(r), r["case"], r["check"]))


def summary_table(records) -> str:
    by_check = defaultdict(Counter)
    for r in records:
        if r["check"] != "timing":
            by_check[r["check"]][r["verdict"]] += 1
    rows = [[check] + [by_check[check].get(v, 0) for v in VERDICTS]
            for check in CHECK_ORDER if check in by_check]
    total = counts(records)
    rows.append(["**all**"] + [total.get(v, 0) for v in VERDICTS])
    return tabulate(rows, headers=["check"] + list(VERDICTS), tablefmt="github")


def divergence_rows(records, limit=None):
    rows = []
    for r in failing(records)[:limit]:
        rows.append([r["case"], r["param"], r["check"], _who(r), r["dtype"], r["device"], r["mode"],
                     _num(r.get("max_rel_err")), _tolerance(r), _where(r), r.get("cause") or "",
                     r.get("message") or ""])
    return rows


DIVERGENCE_HEADERS = ["case", "param", "check", "frameworks", "dtype", "device", "mode", "max rel err",
                      "tolerance", "worst element: got vs expected", "cause", "note"]


def agreement_matrix(case_records) -> str:
    """Rows: device/dtype/mode/precision. Columns: each framework's own checks, then each pair.
    A cell is the worst verdict there and the largest relative error."""
    cells: dict = defaultdict(dict)
    columns: list = []
    for r in case_records:
        if r["check"] == "run":
            col = r["framework"]
        elif r["check"] == "pairwise":
            col = f"{r['framework']} ~ {r['other_framework']}"
        else:
            col = r["framework"]
        if col not in columns:
            columns.append(col)
        row = (r["device"], r["dtype"], r["mode"], r["precision"])
        prev = cells[row].get(col)
        if prev is None or SEVERITY[r["verdict"]] < SEVERITY[prev[0]] or (
                r["verdict"] == prev[0] and _rel(r) > prev[1]):
            cells[row][col] = (r["verdict"], _rel(r))
    singles = sorted(c for c in columns if "~" not in c)
    pairs = sorted(c for c in columns if "~" in c)
    columns = singles + pairs
    mark = {"pass": "✓", "diverge": "✗", "nan": "NaN", "error": "error", "skipped": "skipped"}
    rows = []
    for row in sorted(cells):
        out = list(row)
        for col in columns:
            cell = cells[row].get(col)
            if cell is None:
                out.append("")
            elif cell[0] in ("error", "skipped"):
                out.append(mark[cell[0]])
            else:
                out.append(f"{mark[cell[0]]} {cell[1]:.0e}")
        rows.append(out)
    return tabulate(rows, headers=["device", "dtype", "mode", "precision"] + columns, tablefmt="github")


#: a framework this many times slower than the fastest on the same cell is a timing divergence
SLOWER_THAN_FASTEST = 2.0


def _ms(seconds) -> str:
    seconds = float(seconds)
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def timing_cells(records) -> dict:
    """(device, case, dtype, mode, precision, phase) -> {framework: timing record}."""
    cells = defaultdict(dict)
    for r in records:
        if r["check"] == "timing" and r.get("median_s"):
            cells[(r["device"], r["case"], r["dtype"], r["mode"], r["precision"], r["param"])][r["framework"]] = r
    return cells


def timing_sections(records) -> list:
    cells = timing_cells(records)
    if not cells:
        return []
    frameworks = sorted({fw for row in cells.values() for fw in row})
    lines = ["## Timings", "",
             "Median seconds per call (inputs on the device, blocked autorange, synchronised), and × the "
             "fastest framework on the row; `~` marks a noisy cell (IQR > 10% of the median). Threads are "
             "pinned equally for every framework (see Environment).", ""]
    for device in sorted({k[0] for k in cells}):
        rows = []
        for key in sorted(k for k in cells if k[0] == device):
            row = cells[key]
            fastest = min(float(r["median_s"]) for r in row.values())
            out = [key[1], key[2], key[3] + ("" if key[4] == "default" else f" {key[4]}"), key[5]]
            for fw in frameworks:
                r = row.get(fw)
                out.append("" if r is None else
                           f"{_ms(r['median_s'])} (×{float(r['median_s']) / fastest:.1f}){' ~' if r.get('noisy') else ''}")
            rows.append(out)
        lines += [f"### {device}", "", "<details><summary>timing table</summary>", "",
                  tabulate(rows, headers=["case", "dtype", "mode", "phase"] + frameworks, tablefmt="github"),
                  "", "</details>", ""]
    first = [[r["case"], r["framework"], r["device"], r["dtype"], r["mode"], _ms(r["first_call_s"]),
              _ms(r["median_s"])]
             for row in cells.values() for r in row.values()
             if r["param"] == "forward+backward" and r.get("first_call_s") is not None and r["mode"] == "compiled"]
    if first:
        lines += ["### Compile time (first forward+backward call)", "",
                  tabulate(sorted(first), headers=["case", "framework", "device", "dtype", "mode", "first call",
                                                   "steady state"], tablefmt="github"), ""]
    divergences = timing_divergences(records)
    lines += ["### Timing divergences", ""]
    if divergences:
        lines += [tabulate(divergences, headers=["case", "device", "dtype", "mode", "phase", "slower", "vs", "ratio"],
                           tablefmt="github"), ""]
    else:
        lines += [f"None: no framework is more than {SLOWER_THAN_FASTEST:g}× slower than the fastest, and "
                  "compiled is never slower than eager.", ""]
    return lines


def timing_divergences(records) -> list:
    """Rows where a framework is > SLOWER_THAN_FASTEST x the fastest, or compiled is slower than eager."""
    cells = timing_cells(records)
    out = []
    for (device, case, dtype, mode, precision, phase), row in sorted(cells.items()):
        fastest_fw = min(row, key=lambda fw: float(row[fw]["median_s"]))
        fastest = float(row[fastest_fw]["median_s"])
        for fw, r in sorted(row.items()):
            ratio = float(r["median_s"]) / fastest
            if ratio > SLOWER_THAN_FASTEST:
                out.append([case, device, dtype, mode, phase, fw, fastest_fw, f"×{ratio:.1f}"])
        if mode == "compiled":
            eager = cells.get((device, case, dtype, "eager", precision, phase), {})
            for fw, r in sorted(row.items()):
                if fw in eager and float(r["median_s"]) > float(eager[fw]["median_s"]) * 1.1:
                    out.append([case, device, dtype, mode, phase, f"{fw} compiled", f"{fw} eager",
                                f"×{float(r['median_s']) / float(eager[fw]['median_s']):.1f}"])
    return out


def _rel(r) -> float:
    v = as_float(r.get("max_rel_err"))
    return v if isinstance(v, float) else 0.0


def render(records, meta: dict) -> str:
    total = counts(records)
    bad = failing(records)
    lines = [f"# gradharness report — {meta['run_id']}", ""]
    verdict = ("**No divergences.**" if not bad else
               f"**{len(bad)} divergence(s)** across {len({r['case'] for r in bad})} case(s).")
    if total.get("error"):
        verdict += f" {total['error']} error(s)."
    lines += [verdict, ""]
    lines += _header(meta)
    lines += ["## Summary", "", summary_table(records), ""]
    lines += ["## Divergences", ""]
    if bad:
        lines += [tabulate(divergence_rows(records), headers=DIVERGENCE_HEADERS, tablefmt="github"), ""]
        causes = sorted({r["cause"] for r in bad if r.get("cause")})
        if causes:
            lines += ["Causes:", ""] + [f"- `{c}`: {CAUSES[c]}." for c in causes] + [""]
    else:
        lines += ["None: every gradient agrees with its reference and across frameworks within tolerance.", ""]
    problems = [r for r in records if r["verdict"] in ("error", "skipped")]
    if problems:
        lines += ["## Errors and skipped", ""]
        rows = [[r["case"], r["framework"], r["device"], r["dtype"], r["mode"], r["verdict"],
                 (r.get("message") or "").splitlines()[0][:240] if r.get("message") else ""]
                for r in sorted(problems, key=lambda r: (r["verdict"], r["case"], r["framework"]))]
        lines += [tabulate(rows, headers=["case", "framework", "device", "dtype", "mode", "verdict", "reason"],
                           tablefmt="github"), ""]
    lines += ["## Agreement by case", "",
              "Each cell: the worst verdict and the largest relative error (error / gradient scale) "
              "of that framework's own checks (FD, forward mode, determinism, reference) or of that "
              "pair of frameworks.", ""]
    by_case = defaultdict(list)
    for r in records:
        if r["check"] != "timing":
            by_case[r["case"]].append(r)
    for case in sorted(by_case):
        lines += [f"### {case}", "", agreement_matrix(by_case[case]), ""]
    lines += timing_sections(records)
    plots = meta.get("plots", [])
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += _environment(meta)
    lines += ["## How to read this report", "",
              "- `fd`: reverse-mode gradient vs Richardson finite differences (float64, CPU); "
              "non-differentiable elements are judged by their one-sided limits.",
              "- `jvp`: forward-mode derivative along a random direction vs ⟨gradient, direction⟩.",
              "- `hvp`: Hessian-vector products (forward-over-reverse, reverse-over-reverse) vs finite "
              "differences of the gradient, for cases tagged `twice-differentiable`.",
              "- `determinism`: the same gradient computed twice.",
              "- `compiled`: a compiled gradient (torch.compile, jax.jit, tf.function(jit_compile=True)) "
              "vs the eager one.",
              "- `reference`: a gradient at another dtype, device or mode vs the same framework's "
              "float64 CPU gradient.",
              "- `pairwise`: two frameworks at the same device, dtype, mode and precision.",
              "- max rel err = max |got − expected| / (largest |expected| over the whole gradient); "
              "an element passes when |got − expected| ≤ atol·scale + rtol·|expected|.", ""]
    return "\n".join(lines)


def _header(meta) -> list:
    rows = [["command", f"`{meta.get('command', '')}`"], ["started", meta.get("started", "")],
            ["seed", meta.get("seed")], ["cases", len(meta.get("cases", []))],
            ["frameworks", ", ".join(f"{fw} {v or ''}".strip() for fw, v in meta.get("frameworks", {}).items())],
            ["devices", ", ".join(meta.get("devices", []))], ["dtypes", ", ".join(meta.get("dtypes", []))],
            ["modes", ", ".join(meta.get("modes", []))], ["precision", ", ".join(meta.get("precisions", []))],
            ["timing", meta.get("timing") or "off"], ["threads per worker", meta.get("threads") or "framework default"],
            ["wall time", f"{meta.get('seconds', 0):.1f}s"]]
    return [tabulate(rows, headers=["run", ""], tablefmt="github"), ""]


def _environment(meta) -> list:
    lines = ["## Environment", ""]
    env = meta.get("environment", {})
    rows = [[k, v] for k, v in env.items()]
    if rows:
        lines += [tabulate(rows, headers=["", ""], tablefmt="github"), ""]
    workers = meta.get("workers", [])
    if workers:
        rows = [[w["framework"], w["device"], w["precision"], w.get("version", ""), w.get("device_name", ""),
                 ", ".join(f"{k}={v}" for k, v in (w.get("policy") or {}).items())] for w in workers]
        lines += [tabulate(rows, headers=["framework", "device", "precision", "version", "device name", "policy"],
                           tablefmt="github"), ""]
    return lines


def console_summary(records, meta, limit=10) -> str:
    total = counts(records)
    lines = [summary_table(records)]
    bad = divergence_rows(records, limit)
    if bad:
        short = [[r[0], r[1], r[2], r[3], r[4], r[5], r[7], r[10]] for r in bad]
        lines += ["", tabulate(short, headers=["case", "param", "check", "frameworks", "dtype", "device",
                                               "max rel err", "cause"], tablefmt="simple")]
        more = len(failing(records)) - limit
        if more > 0:
            lines.append(f"... and {more} more in the report")
    lines.append("")
    lines.append(", ".join(f"{total.get(v, 0)} {v}" for v in VERDICTS))
    return "\n".join(lines)
