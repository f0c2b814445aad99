"""The markdown report (GitHub-flavoured, tables via tabulate) and the console summary.

Layout of report.md, top to bottom:

1. a one-screen summary: the headline, what ran (frameworks × devices × dtypes, with each cell's
   verdicts), counts by check and verdict, the worst divergences with their causes, and the widest
   slowest-vs-fastest timing gaps;
2. every divergence (one row each), errors and skipped checks;
3. details per case: its failing checks in words, the agreement matrix, its timings;
4. timings across cases (compile times, timing divergences), plots, the run's settings and
   environment, and "How to read this report".

Rendering is a pure function of (records, meta): no clock, no environment, stable ordering, so
the same results file always renders the same bytes (`harness report` relies on it, and the
golden-file test pins it). Long tables are folded into <details>.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from tabulate import tabulate

from harness.judge import speed
from harness.judge.causes import CAUSES
from harness.judge.known import split as known_split
from harness.store.records import VERDICTS, as_float

CHECK_ORDER = ("run", "fd", "complex", "jvp", "hvp", "determinism", "reference", "compiled", "pairwise", "forward")
SEVERITY = {"nan": 0, "error": 1, "diverge": 2, "skipped": 3, "pass": 4}
FAILING = ("diverge", "nan", "error")
#: which verdict a matrix cell shows when its checks differ: the worst, but a pass over a skip
CELL_ORDER = {"nan": 0, "error": 1, "diverge": 2, "pass": 3, "skipped": 4}
MARK = {"pass": "✓", "diverge": "✗", "nan": "NaN", "error": "error", "skipped": "skipped"}

#: tables longer than this are folded into <details>
FOLD_ROWS = 12
#: rows in the summary's "worst divergences" and "timing gaps"
SUMMARY_ROWS = 5

CHECK_HELP = {
    "run": "a task that could not run at all (worker crash, timeout, framework missing); the reason is given",
    "fd": "reverse-mode gradient vs central finite differences (float64, CPU, eager): one step per element "
          "first, Richardson-extrapolated two steps with an error estimate wherever the first does not settle "
          "the element; the FD error estimate is added to the tolerance, and non-differentiable elements are "
          "judged by their one-sided limits",
    "jvp": "forward-mode derivative along a seeded random direction vs ⟨reverse-mode gradient, direction⟩",
    "hvp": "Hessian-vector products (forward-over-reverse, reverse-over-reverse) vs finite differences of "
           "the gradient, for cases tagged `twice-differentiable`",
    "determinism": "the same gradient computed twice in the same process (bitwise on CPU)",
    "reference": "a gradient at another dtype, device or mode vs the same framework's float64 CPU gradient",
    "complex": "the reverse-mode gradient vs the complex-step derivative Im f(x + ih) / h, exact to rounding "
               "where the function is complex-analytic (`--fd complex`)",
    "compiled": "a compiled gradient (torch.compile, jax.jit, tf.function(jit_compile=True)) vs the eager one",
    "pairwise": "two frameworks at the same device, dtype, mode and precision",
    "forward": "the two frameworks' forward values (the loss) in each pairwise setting: where these differ, "
               "the frameworks compute different functions",
    "timing": "forward and forward+backward median time per call: a measurement, not a verdict",
}


# ---- small formatting helpers ---------------------------------------------------------------------
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


def _index_text(rec) -> str:
    index = rec.get("worst_index")
    return f"({', '.join(map(str, index))})" if index else "(scalar)"


def _where(rec) -> str:
    return f"{_index_text(rec)}: got {_num(rec.get('got'), '.6g')}, expected {_num(rec.get('expected'), '.6g')}"


def _err(rec, fmt=".1e") -> str:
    """The max relative error as the verdict reads: a NaN verdict is NaN, whatever the finite
    elements' error was."""
    return "NaN" if rec.get("verdict") == "nan" else _num(rec.get("max_rel_err"), fmt)


def _check(rec) -> str:
    """The check's name, with the kind of fd made where it was not elementwise."""
    mode = rec.get("fd_mode")
    return f"{rec['check']} ({mode})" if rec["check"] == "fd" and mode and mode != "full" else rec["check"]


def _tolerance(rec) -> str:
    if rec.get("rtol") is None:
        return ""
    return f"rtol {_num(rec['rtol'], '.0e')}, atol {_num(rec['atol'], '.0e')}"


def _setting(rec) -> str:
    """dtype, device, and mode/precision where not the default: 'float32 cuda:0 compiled highest'."""
    parts = [rec.get("dtype"), rec.get("device")]
    if rec.get("mode") not in (None, "eager", "-"):
        parts.append(rec["mode"])
    if rec.get("precision") not in (None, "default", "-"):
        parts.append(f"precision={rec['precision']}")
    return " ".join(p for p in parts if p and p != "-")


def _rel(r) -> float:
    v = as_float(r.get("max_rel_err"))
    return v if isinstance(v, float) else 0.0


def _excess(rec) -> float:
    """How far beyond tolerance: the sort key of the divergence table."""
    rel = as_float(rec.get("max_rel_err"))
    tol = max(as_float(rec.get("atol") or 0.0), as_float(rec.get("rtol") or 0.0), 1e-300)
    return float("inf") if rel is None or isinstance(rel, str) else rel / tol


def _ms(seconds) -> str:
    seconds = float(seconds)
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def _table(rows, headers) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _fold(summary: str, body: list, rows: int, open_: bool = False) -> list:
    """``body`` (markdown lines) as is when short, inside <details> when it has many rows."""
    if rows <= FOLD_ROWS and not open_:
        return body + [""]
    return [f"<details{' open' if open_ else ''}><summary>{summary}</summary>", ""] + body + ["", "</details>", ""]


def _md(text) -> str:
    """Free text inside a table cell: one line, no pipes."""
    return " ".join(str(text or "").split()).replace("|", "\\|")


def describe(rec) -> str:
    """A failing (or any) record in one line, the way reports, the console and the pytest helper
    say it: ``case X, param w, fd torch float64 cpu: max_rel=3.3e-01 (rtol 1e-06, atol 1e-08),
    worst at (3, 2): got 0.5, expected -0.5, cause ad-bug``."""
    head = f"case {rec['case']}, param {rec.get('param', '*')}, {_check(rec)} {_who(rec)} {_setting(rec)}".rstrip()
    if rec.get("method"):
        head += f" ({rec['method']})"
    verdict = rec.get("verdict")
    if verdict in ("error", "skipped"):
        reason = (rec.get("message") or "").strip().splitlines()
        return f"{head}: {verdict}: {reason[0] if reason else 'no reason given'}"
    text = f"{head}: max_rel={_err(rec, '.2e')}"
    if rec.get("rtol") is not None:
        text += f" (tolerance {_tolerance(rec)})"
    if rec.get("worst_index") is not None or rec.get("got") is not None:
        text += f", worst at {_where(rec)}"
    if verdict != "pass":
        text += f", cause {rec.get('cause') or 'not established'}"
        if rec.get("message"):
            text += f" ({rec['message']})"
    return text


# ---- selections ------------------------------------------------------------------------------------
def counts(records) -> Counter:
    """Verdicts of the correctness checks (timings are measurements, not verdicts)."""
    return Counter(r["verdict"] for r in records if r["check"] != "timing")


def _sort_key(r):
    return (SEVERITY.get(r["verdict"], 9), -_excess(r), r["case"], r["check"], str(r.get("param")),
            r["framework"], r.get("other_framework") or "", str(r.get("dtype")), str(r.get("device")),
            str(r.get("mode")), str(r.get("precision")), str(r.get("method") or ""))


def check_rank(check) -> int:
    """Where ``check`` comes in CHECK_ORDER (a framework's own checks before the pairs); unknown last."""
    return CHECK_ORDER.index(check) if check in CHECK_ORDER else 99


def failing(records) -> list:
    bad = [r for r in records if r["verdict"] in ("diverge", "nan")]
    return sorted(bad, key=_sort_key)


def _by_check(records) -> defaultdict:
    """check -> Counter of verdicts, over the correctness checks (not timings)."""
    by_check = defaultdict(Counter)
    for r in records:
        if r["check"] != "timing":
            by_check[r["check"]][r["verdict"]] += 1
    return by_check


def summary_table(records) -> str:
    by_check = _by_check(records)
    checks = [c for c in CHECK_ORDER if c in by_check] + sorted(c for c in by_check if c not in CHECK_ORDER)
    rows = [[f"`{check}`"] + [str(by_check[check].get(v, 0)) for v in VERDICTS] for check in checks]
    total = counts(records)
    rows.append(["**all**"] + [f"**{total.get(v, 0)}**" for v in VERDICTS])
    return _table(rows, ["check"] + list(VERDICTS))


# ---- the summary -----------------------------------------------------------------------------------
def _frameworks(records, meta) -> list:
    names = list((meta.get("frameworks") or {}).keys())
    for r in records:
        for fw in (r.get("framework"), r.get("other_framework")):
            if fw and fw not in names:
                names.append(fw)
    return names


def coverage_table(records, meta) -> str:
    """Rows: frameworks (with version); columns: device · dtype. A cell counts the correctness checks
    that framework took part in there: ✓ all pass, ✗ k of n failed (diverge, NaN or error)."""
    versions = meta.get("frameworks") or {}
    columns = []
    for device in meta.get("devices") or []:
        for dtype in meta.get("dtypes") or []:
            columns.append((device, dtype))
    for r in records:
        key = (r.get("device"), r.get("dtype"))
        if r["check"] != "timing" and "-" not in key and key not in columns:
            columns.append(key)
    cells = defaultdict(Counter)
    for r in records:
        if r["check"] == "timing":
            continue
        for fw in {r.get("framework"), r.get("other_framework")} - {None}:
            cells[(fw, r.get("device"), r.get("dtype"))][r["verdict"]] += 1
    rows = []
    for fw in _frameworks(records, meta):
        version = versions.get(fw) or next((r.get("framework_version") for r in records
                                            if r.get("framework") == fw and r.get("framework_version")), "")
        row = [f"{fw} {version or ''}".strip()]
        missing = next((r for r in records if r["framework"] == fw and r.get("device") == "-"), None)
        for device, dtype in columns:
            c = cells.get((fw, device, dtype))
            if not c:
                row.append("skipped" if missing else "—")
                continue
            n = sum(c.values())
            bad = sum(c[v] for v in FAILING)
            text = f"✓ {n}" if not bad else f"✗ {bad} of {n}"
            if c.get("skipped"):
                text += f" ({c['skipped']} skipped)"
            row.append(text)
        rows.append(row)
    return _table(rows, ["framework"] + [f"{d} · {t}" for d, t in columns])


def _groups_of_failures(records, bad) -> list:
    """Failing records grouped by (case, cause), worst group first: (case, cause, records).
    ``bad``: failing(records)."""
    groups = {}
    for r in bad + sorted((r for r in records if r["verdict"] == "error"), key=_sort_key):
        groups.setdefault((r["case"], r.get("cause") or ""), []).append(r)
    return sorted(((c, cause, rs) for (c, cause), rs in groups.items()),
                  key=lambda g: _sort_key(g[2][0]))


def worst_table(records, bad, limit=SUMMARY_ROWS) -> tuple:
    """The summary's worst divergences, grouped by case and cause; ``bad``: failing(records)."""
    groups = _groups_of_failures(records, bad)
    rows = []
    for case, cause, recs in groups[:limit]:
        worst = recs[0]
        checks = Counter(r["check"] for r in recs)
        what = ", ".join(f"{n} {c}" for c, n in sorted(checks.items(), key=lambda kv: check_rank(kv[0])))
        if worst["verdict"] == "error":
            what = ", ".join(f"{n} {c} error(s)" for c, n in sorted(checks.items()))
            rows.append([case, "error", what, f"{worst['framework']} {_setting(worst)}", "", "",
                         _md((worst.get("message") or "").splitlines()[0][:160] if worst.get("message") else "")])
            continue
        rows.append([case, f"`{cause}`" if cause else "not established", what,
                     f"{worst['param']}: {_check(worst)} {_who(worst)}, {_setting(worst)}",
                     _err(worst), _tolerance(worst), _where(worst)])
    return _table(rows, ["case", "cause", "failing checks", "worst", "max rel err", "tolerance",
                         "worst element"]), len(groups)


def timing_cells(records) -> dict:
    """(device, case, dtype, mode, precision, phase) -> {framework: timing record}."""
    cells = defaultdict(dict)
    for r in records:
        if r["check"] == "timing" and r.get("median_s"):
            cells[(r["device"], r["case"], r["dtype"], r["mode"], r["precision"], r["param"])][r["framework"]] = r
    return cells


#: what a per-case timing table shows
TIMING_MARKS = ("median per call, × the fastest framework; `~` noisy, † eager JAX or TF: op-by-op dispatch, not "
                "the mode it is run for speed, ‡ contended")
#: the headline's rule, in words (harness/judge/speed.py)
SPEED_RULE = "torch eager or torch.compile, jax.jit, tf.function; contended cells left out"


def timing_gaps(cells, phase="forward+backward") -> list:
    """The speed gaps of ``cells`` (timing_cells) at ``phase``: per case and setting (device, dtype,
    precision), each framework in the mode it is run for speed, contended cells left out
    (harness.judge.speed.fastest), two frameworks or more; cases tagged `timing` first, then the widest
    slowest/fastest ratio: (ratio, (device, case, dtype, precision, phase), fastest framework,
    its record, slowest framework, its record). Each record's mode names the mode."""
    out = []
    for key, best in _speed_groups(cells, phase).items():
        if len(best) < 2:
            continue
        ordered = sorted(best.items(), key=lambda kv: (float(kv[1]["median_s"]), kv[0]))
        (fast_fw, fast), (slow_fw, slow) = ordered[0], ordered[-1]
        out.append((float(slow["median_s"]) / float(fast["median_s"]), key, fast_fw, fast, slow_fw, slow))
    return sorted(out, key=lambda g: (not (g[3].get("timing_case") or g[5].get("timing_case")), -g[0], g[1]))


def headline_gaps(cells) -> list:
    """The summary's gaps: forward+backward speed gaps, only those of cases tagged `timing` (sized
    so kernels, not dispatch, dominate) where the run has any."""
    gaps = timing_gaps(cells)
    sized = [g for g in gaps if g[3].get("timing_case") or g[5].get("timing_case")]
    return sized or gaps


def _timing_text(fw, r) -> str:
    return f"{speed.label(fw, r['mode'])} {_ms(r['median_s'])}{' ~' if r.get('noisy') else ''}"


def gaps_table(gaps, limit=SUMMARY_ROWS) -> str:
    """The first ``limit`` of ``gaps`` (timing_gaps) as a table; each time names its mode."""
    rows = []
    for ratio, key, fast_fw, fast, slow_fw, slow in gaps[:limit]:
        device, case, dtype, precision, phase = key
        rows.append([case, _setting({"dtype": dtype, "device": device, "precision": precision}),
                     _timing_text(fast_fw, fast), _timing_text(slow_fw, slow), f"×{ratio:.1f}"])
    return _table(rows, ["case", "setting", "fastest (median per call)", "slowest (median per call)", "gap"])


def _gaps_summary(records, cells) -> list:
    """The summary's timing lines: the headline gaps, or why there are none."""
    if not cells:
        return []
    gaps = headline_gaps(cells)
    contended = sum(bool(r.get("contended")) for row in cells.values() for r in row.values())
    lines = []
    if gaps:
        sized = gaps[0][3].get("timing_case") or gaps[0][5].get("timing_case")
        small = "" if sized else ("; these cases take microseconds, so the gaps are dispatch overhead: "
                                  "`--cases timing` has cases sized for kernels")
        lines += [f"**Widest timing gaps** (forward+backward, slowest vs fastest framework on the same case and "
                  f"setting, each in the mode it is run for speed: {SPEED_RULE}; `~` = noisy{small}):",
                  "", gaps_table(gaps), ""]
    else:
        lines += [f"**Timing gaps**: none to show: a gap compares frameworks in the mode each is run for speed "
                  f"({SPEED_RULE})."]
        eager = speed.unclaimed(records)
        if eager:
            one = len(eager) == 1
            lines[-1] += (f" {' and '.join(eager)} {'was' if one else 'were'} timed eager only: op-by-op dispatch, "
                          f"not how {'it is' if one else 'they are'} run for speed (marked † under "
                          "[Timings](#timings)); `--modes eager,compiled` also times jax.jit, tf.function and "
                          "torch.compile.")
        lines.append("")
    if contended:
        lines += [f"{contended} contended timing cell(s) (‡: other processes held the CPUs) are left out; see "
                  "[Contended timings](#contended-timings).", ""]
    return lines


def known_line(records, meta) -> str:
    """'3 new, 220 known (explained), 1 no longer seen': failing checks no expected entry explains,
    those one does (``known``), and the entries the run no longer sees (run.json's "expected");
    empty when the run had no expected table and nothing is known."""
    info = meta.get("expected") or {}
    new, explained = known_split(records)
    vanished = info.get("vanished") or []
    if not (new and info) and not explained and not vanished and not info.get("files"):
        return ""
    return f"{len(new)} new, {len(explained)} known (explained), {len(vanished)} no longer seen"


def _headline(records, meta, bad) -> list:
    """``bad``: failing(records)."""
    total = counts(records)
    n_cases = len({r["case"] for r in records}) or len(meta.get("cases") or [])
    errors = [r for r in records if r["verdict"] == "error"]
    if bad:
        text = f"**✗ {len(bad)} divergence(s)** in {len({r['case'] for r in bad})} of {n_cases} case(s)"
    elif errors:
        text = f"**No divergences** in {n_cases} case(s)"
    else:
        text = f"**✓ No divergences** in {n_cases} case(s)"
    if errors:
        text += f", **{len(errors)} error(s)** in {len({r['case'] for r in errors})} case(s)"
    parts = [f"{total.get(v, 0)} {v}" for v in VERDICTS if total.get(v) or v == "pass"]
    text += " — checks: " + ", ".join(parts) + "."
    split = known_line(records, meta)
    if split:
        text += f"\n\n**{split}**"
    frameworks = _frameworks(records, meta)
    devices = meta.get("devices") or []
    dtypes = meta.get("dtypes") or []
    modes = meta.get("modes") or []
    scope = (f"{len(frameworks)} framework(s) × {len(devices)} device(s) × {len(dtypes)} dtype(s)"
             f"{'' if len(modes) <= 1 else f' × {len(modes)} modes'}: "
             f"{', '.join(frameworks)} · {', '.join(devices)} · {', '.join(dtypes)} · {', '.join(modes)}")
    if meta.get("precisions") and meta["precisions"] != ["default"]:
        scope += f" · precision {', '.join(meta['precisions'])}"
    run = []
    if meta.get("command"):
        run.append(f"`{meta['command']}`")
    if meta.get("seed") is not None:
        run.append(f"seed {meta['seed']}")
    if meta.get("started"):
        run.append(f"started {meta['started']}")
    if meta.get("seconds") is not None:
        run.append(f"{float(meta['seconds']):.1f} s wall")
    if meta.get("shard"):
        s = meta["shard"]
        run.append(f"shard {s.get('index')}/{s.get('count')}")
    if meta.get("merged_from"):
        run.append(f"merged from {len(meta['merged_from'])} shard run(s)")
    return [text, "", scope, ""] + ([" · ".join(run), ""] if run else [])


def _summary(records, meta, cells, bad) -> list:
    """``cells``: timing_cells(records); ``bad``: failing(records)."""
    lines = ["## Summary", "", "**What ran** — checks per framework and setting (✓ all pass; ✗ *k* of *n* "
             "failed; a pairwise check counts for both frameworks):", "", coverage_table(records, meta), "",
             "**Verdicts by check:**", "", summary_table(records), ""]
    table, groups = worst_table(records, bad)
    lines += ["**Worst divergences** (grouped by case and cause; max rel err = max |got − expected| / gradient "
              "scale):", ""]
    if groups:
        lines += [table, ""]
        if groups > SUMMARY_ROWS:
            lines += [f"… {groups - SUMMARY_ROWS} more group(s) under [Divergences](#divergences).", ""]
    else:
        lines += ["None: every gradient agrees with its reference and across frameworks within tolerance.", ""]
    lines += _gaps_summary(records, cells)
    return lines


# ---- sections --------------------------------------------------------------------------------------
def _divergences(bad, vanished=(), mark=False) -> list:
    """``bad``: failing(records), worst first; new ones are listed before known (explained) ones.
    ``vanished``: expected entries no longer seen; ``mark``: say new/known per row."""
    lines = ["## Divergences", ""]
    if not bad:
        return lines + ["None: every gradient agrees with its reference and across frameworks within tolerance.",
                        ""] + _vanished_lines(vanished)
    bad = sorted(bad, key=lambda r: bool(r.get("known")))
    rows = [[r["case"], r["param"], _check(r), _who(r), _setting(r) or "-",
             f"{_err(r)} ({_tolerance(r)})" if r.get("rtol") is not None else _err(r),
             _where(r), (f"`{r['cause']}`" if r.get("cause") else "") + (
                 (" (known)" if r.get("known") else " (new)") if mark else ""),
             _md(r.get("message"))] for r in bad]
    body = [_table(rows, ["case", "param", "check", "frameworks", "setting", "max rel err (tolerance)",
                          "worst element", "cause", "note"])]
    lines += body + [""] if len(rows) <= 2 * FOLD_ROWS else _fold(f"{len(rows)} divergences, worst first", body, len(rows))
    causes = sorted({r["cause"] for r in bad if r.get("cause")})
    lines += _vanished_lines(vanished)
    if causes:
        lines += ["Causes found here:", ""] + [f"- `{c}`: {CAUSES.get(c, '')}." for c in causes] + [""]
    return lines


def _vanished_lines(vanished) -> list:
    if not vanished:
        return []
    return ["**Known divergences no longer seen** (their comparison was made and passed: a framework changed a "
            "convention or fixed a bug — update the expected table):", ""] + [f"- {_md(v)}" for v in vanished] + [""]


def _problems(records) -> list:
    problems = [r for r in records if r["verdict"] in ("error", "skipped")]
    if not problems:
        return []
    rows = [[r["case"], r["check"], r["framework"], r["device"], r["dtype"], r["mode"], r["verdict"],
             _md((r.get("message") or "").splitlines()[0][:240] if r.get("message") else "")]
            for r in sorted(problems, key=lambda r: (r["verdict"], r["case"], r["framework"], r["check"],
                                                      str(r.get("dtype")), str(r.get("device")), str(r.get("mode")),
                                                      str(r.get("method") or "")))]
    errors = sum(r["verdict"] == "error" for r in problems)
    title = f"{errors} error(s), {len(problems) - errors} skipped"
    return ["## Errors and skipped", ""] + _fold(
        title, [_table(rows, ["case", "check", "framework", "device", "dtype", "mode", "verdict", "reason"])],
        len(rows))


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
        if prev is None or CELL_ORDER[r["verdict"]] < CELL_ORDER[prev[0]] or (
                r["verdict"] == prev[0] and _rel(r) > prev[1]):
            cells[row][col] = (r["verdict"], _rel(r))
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
    return _table(rows, ["device", "dtype", "mode", "precision"] + columns)


#: how _tolerance_note names the tolerance of the fd and hvp checks
_FD_TOLERANCE_LABEL = "fd and hvp (float64, plus 10× the FD error estimate)"


def _tolerance_note(case_records) -> str:
    """The tolerances the matrix's numbers are held to, per dtype (fd has its own)."""
    per = {}
    for r in case_records:
        if r.get("rtol") is None or r["check"] in ("determinism", "timing"):
            continue
        kind = "fd" if r["check"] in ("fd", "hvp") else r["dtype"]
        per.setdefault(kind, _tolerance(r))
    order = ["float64", "float32", "bfloat16", "float16"]
    parts = [f"{_FD_TOLERANCE_LABEL if k == 'fd' else k}: {per[k]}"
             for k in sorted(per, key=lambda k: (k == "fd", order.index(k) if k in order else 9, k))]
    return "Tolerances — " + "; ".join(parts) + "." if parts else ""


def case_timing_table(case_records, frameworks) -> tuple:
    cells = timing_cells(case_records)
    if not cells:
        return "", 0
    fws = [fw for fw in frameworks if any(fw in row for row in cells.values())]
    rows = []
    for key in sorted(cells):
        device, _case, dtype, mode, precision, phase = key
        row = cells[key]
        fastest = min(float(r["median_s"]) for r in row.values())
        out = [_setting({"dtype": dtype, "device": device, "mode": mode, "precision": precision}), phase]
        for fw in fws:
            r = row.get(fw)
            out.append("" if r is None else f"{_ms(r['median_s'])} (×{float(r['median_s']) / fastest:.1f}){_marks(r)}")
        rows.append(out)
    return _table(rows, ["setting", "phase"] + fws), len(rows)


def _marks(r) -> str:
    """A timing cell's marks: ~ noisy, † not the mode its framework is run for speed (eager JAX or
    TF: op-by-op dispatch), ‡ contended (other processes held the CPUs)."""
    return ((" ~" if r.get("noisy") else "") + ("" if speed.is_speed_mode(r["framework"], r.get("mode")) else " †")
            + (" ‡" if r.get("contended") else ""))


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


def _cases(records, meta) -> list:
    by_case = defaultdict(list)
    for r in records:
        by_case[r["case"]].append(r)
    if not by_case:
        return []
    frameworks = _frameworks(records, meta)
    lines = ["## Cases", "",
             "Per case: its failing checks in words, the agreement matrix (each cell: the worst verdict and "
             "largest relative error of that framework's own checks — fd, jvp, hvp, determinism, reference, "
             "compiled — or of that pair of frameworks), and its timings.", ""]
    for case in sorted(by_case):
        recs = by_case[case]
        status = _case_status(recs)
        lines += [f"### {case}", "", status, ""] + _fd_kind(recs)
        bad = sorted((r for r in recs if r["verdict"] in FAILING), key=_sort_key)
        if bad:
            shown = bad[:FOLD_ROWS]
            lines += [f"- {describe(r)}" for r in shown]
            if len(bad) > len(shown):
                lines.append(f"- … and {len(bad) - len(shown)} more (see [Divergences](#divergences))")
            lines.append("")
        matrix = agreement_matrix(recs)
        note = _tolerance_note(recs)
        body = [matrix] + (["", note] if note else [])
        timing, n_timing = case_timing_table(recs, frameworks)
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


#: a framework this many times slower than the fastest on the same cell is a timing divergence
SLOWER_THAN_FASTEST = 2.0


def timing_sections(cells) -> list:
    """The "Timings" section; ``cells``: timing_cells(records)."""
    if not cells:
        return []
    lines = ["## Timings", "",
             "Median time per call with inputs already on the device (blocked autorange, synchronised; first "
             "call timed separately), per case under [Cases](#cases) and in `timing.png`. Threads are pinned "
             "equally for every framework (see [Run and environment](#run-and-environment)); `~` marks a noisy "
             "cell (IQR > 10% of the median). A claim about speed (the summary's gaps, the divergences below) "
             f"compares each framework in the mode it is run for speed ({SPEED_RULE}); † marks eager JAX and "
             "eager TF, op-by-op dispatch. ‡ marks a contended cell: its threads queued for a CPU behind other "
             "processes, a calibration loop run before and after it lost its CPUs, or its median block was far "
             "from its fastest; it was measured again and is shown, never compared.", ""]
    first = [[r["case"], r["framework"], _setting(r), _ms(r["first_call_s"]), _ms(r["median_s"])]
             for row in cells.values() for r in row.values()
             if r["param"] == "forward+backward" and r.get("first_call_s") is not None and r["mode"] == "compiled"]
    if first:
        lines += ["### Compile time (first forward+backward call)", ""]
        lines += _fold(f"{len(first)} compiled cells",
                       [_table(sorted(first), ["case", "framework", "setting", "first call", "steady state"])],
                       len(first))
    divergences = timing_divergences(cells)
    lines += ["### Timing divergences", ""]
    if divergences:
        lines += [f"{len(divergences)} cell(s) where a framework, in the mode it is run for speed, is more than "
                  f"{SLOWER_THAN_FASTEST:g}× slower than the fastest, or compiled is more than 10% slower than "
                  "eager (ratio of medians; contended cells left out):", ""]
        lines += _fold(f"{len(divergences)} timing divergences",
                       [_table(divergences, ["case", "setting", "phase", "slower", "vs", "ratio"])],
                       len(divergences))
    elif not any(len(best) > 1 for phase in ("forward", "forward+backward")
                 for best in _speed_groups(cells, phase).values()):
        lines += ["None to compare: no case has two frameworks timed, uncontended, in the mode each is run for "
                  "speed.", ""]
    else:
        lines += [f"None: no framework, in the mode it is run for speed, is more than {SLOWER_THAN_FASTEST:g}× "
                  "slower than the fastest, and compiled is never slower than eager (contended cells left out).", ""]
    marked = [r for row in cells.values() for r in row.values() if r.get("contended")]
    contended = sorted([r["case"], speed.label(r["framework"], r["mode"]), _setting({**r, "mode": None}), r["param"],
                        _ms(r["median_s"]), str(r.get("attempts") or 1), _md("; ".join(r.get("contention") or []))]
                       for r in marked)
    if contended:
        lines += ["### Contended timings", "",
                  f"{len(contended)} cell(s) measured while other processes held the CPUs, still so when measured "
                  "again: shown in the tables (‡), left out of every comparison here and of `harness compare`'s "
                  "slowdown verdicts. Rerun them on a quiet machine.", ""]
        lines += _fold(f"{len(contended)} contended cells",
                       [_table(contended, ["case", "timed as", "setting", "phase", "median", "attempts", "why"])],
                       len(contended))
    return lines


def _speed_groups(cells, phase) -> dict:
    """(device, case, dtype, precision, phase) -> {framework: its fastest claimable record}."""
    groups = defaultdict(dict)
    for (device, case, dtype, mode, precision, ph), row in cells.items():
        if ph == phase:
            groups[(device, case, dtype, precision, ph)][mode] = row
    return {key: speed.fastest(by_mode) for key, by_mode in groups.items()}


def timing_divergences(cells) -> list:
    """Rows where a framework in its speed mode is > SLOWER_THAN_FASTEST x the fastest, or compiled
    is > 10% slower than eager, contended cells left out. ``cells``: timing_cells(records)."""
    out = []
    for phase in ("forward", "forward+backward"):
        for (device, case, dtype, precision, _), best in sorted(_speed_groups(cells, phase).items()):
            if len(best) < 2:
                continue
            fastest_fw = min(sorted(best), key=lambda fw: float(best[fw]["median_s"]))
            fastest = best[fastest_fw]
            setting = _setting({"dtype": dtype, "device": device, "precision": precision})
            for fw, r in sorted(best.items()):
                ratio = float(r["median_s"]) / float(fastest["median_s"])
                if ratio > SLOWER_THAN_FASTEST:
                    out.append([case, setting, phase, speed.label(fw, r["mode"]),
                                speed.label(fastest_fw, fastest["mode"]), f"×{ratio:.1f}"])
    for (device, case, dtype, mode, precision, phase), row in sorted(cells.items()):
        if mode != "compiled":
            continue
        eager = cells.get((device, case, dtype, "eager", precision, phase), {})
        for fw, r in sorted(row.items()):
            e = eager.get(fw)
            quiet = e and not (r.get("contended") or e.get("contended"))
            if quiet and float(r["median_s"]) > float(e["median_s"]) * 1.1:
                out.append([case, _setting({"dtype": dtype, "device": device, "precision": precision}), phase,
                            speed.label(fw, "compiled"), speed.label(fw, "eager"),
                            f"×{float(r['median_s']) / float(e['median_s']):.1f}"])
    return out


def _run_section(meta) -> list:
    rows = [["command", f"`{meta['command']}`" if meta.get("command") else "(not recorded)"],
            ["run id", meta.get("run_id", "")], ["started", meta.get("started", "") or "(not recorded)"],
            ["seed", meta.get("seed", "")], ["cases", len(meta.get("cases", []))],
            ["frameworks", ", ".join(f"{fw} {v or ''}".strip() for fw, v in (meta.get("frameworks") or {}).items())],
            ["devices", ", ".join(meta.get("devices") or [])], ["dtypes", ", ".join(meta.get("dtypes") or [])],
            ["modes", ", ".join(meta.get("modes") or [])], ["precision", ", ".join(meta.get("precisions") or [])],
            ["timing", meta.get("timing") or "off"],
            ["threads per worker", meta.get("threads") or "framework default"]]
    if meta.get("seconds") is not None:
        rows.append(["wall time", f"{float(meta['seconds']):.1f} s"])
    if meta.get("shard"):
        rows.append(["shard", f"{meta['shard'].get('index')}/{meta['shard'].get('count')} "
                              f"({len(meta.get('cases', []))} of {len(meta['shard'].get('of_cases') or [])} cases)"])
    if meta.get("merged_from"):
        rows.append(["merged from", ", ".join(m.get("run_id", "?") for m in meta["merged_from"])])
    if meta.get("executor") and meta["executor"] != "local":
        rows.append(["executor", meta["executor"]])
    if meta.get("derived"):
        rows.append(["note", "run.json was not available: settings derived from the results"])
    for note in meta.get("notes") or []:
        rows.append(["note", _md(note)])
    lines = ["## Run and environment", "", _table([[str(a), str(b)] for a, b in rows], ["run", ""]), ""]
    env = meta.get("environment") or {}
    if env:
        lines += [_table([[str(k), str(v)] for k, v in env.items()], ["machine", ""]), ""]
    workers = meta.get("workers") or []
    if workers:
        rows = [[w.get("framework", ""), w.get("device", ""), w.get("precision", ""), str(w.get("version", "")),
                 str(w.get("device_name", "")),
                 ", ".join(f"{k}={v}" for k, v in (w.get("policy") or {}).items())] for w in workers]
        rows = sorted(rows)   # the order workers started in is a race; the report must not be
        table = _table(rows, ["framework", "device", "precision", "version", "device name", "policy"])
        if len(rows) > FOLD_ROWS:
            lines += _fold("workers and precision policies", [table], len(rows))
        else:
            lines += ["Workers and their precision policies:", "", table, ""]
    return lines


def _how_to_read(records) -> list:
    checks = [c for c in CHECK_ORDER if any(r["check"] == c for r in records)]
    if any(r["check"] == "timing" for r in records):
        checks.append("timing")
    lines = ["## How to read this report", "", "**Checks** (the `check` column):", ""]
    lines += [f"- `{c}`: {CHECK_HELP[c]}." for c in (checks or CHECK_ORDER)]
    lines += ["", "**Verdicts**: `pass` (✓) within tolerance; `diverge` (✗) beyond it; `nan` — non-finite on "
              "one side only; `error` — the check could not run (reason given); `skipped` — not applicable "
              "(e.g. a transform the framework does not support here).", "",
              "**Cause labels** (set where the evidence allows):", ""]
    lines += [f"- `{c}`: {text}." for c, text in CAUSES.items()]
    lines += ["", "**Numbers**: max rel err = max |got − expected| / scale, where scale is the largest |expected| "
              "over the whole gradient (all differentiated parameters); an element passes when "
              "|got − expected| ≤ atol·scale + rtol·|expected| (+ 10× the finite-difference error estimate for "
              "`fd`). Every divergence shows the rtol/atol it was held to, the worst element's index (canonical "
              "layout: dense (in, out), NCHW, OIHW) and both values there. Times are medians per call in s, ms "
              "or µs; ×N is the ratio to the fastest framework on the same row.", ""]
    return lines


def _interrupted_banner(info: dict) -> str:
    """The warning under the title of an interrupted run's report; ``info``: run.json's "interrupted"
    (signal, finished, tasks, run_dir)."""
    return (f"**⚠ Interrupted ({info['signal']})**: {info['finished']} of {info['tasks']} task(s) finished "
            f"before the run was stopped; the others are listed as not run. Finish it with "
            f"`python -m harness run --resume {info.get('run_dir', 'RUN_DIR')}`.")


def _partial_banner(info: dict) -> str:
    """The warning under the title of a merge made without some shards; ``info``: run.json's "partial"."""
    cases = info.get("missing_cases") or []
    absent = f" — {len(cases)} case(s) absent: {', '.join(cases)}" if cases else ""
    return (f"**⚠ Partial run**: merged without shard {', '.join(info.get('missing_shards') or [])} "
            f"(`--allow-partial`){absent}. Its verdicts cover only the shards given.")


def render(records, meta: dict) -> str:
    """report.md for ``records`` (results.jsonl) and ``meta`` (run.json): deterministic."""
    records = list(records)
    cells = timing_cells(records)   # shared by the summary's timing gaps and the timing sections
    bad = failing(records)          # shared by the headline, the summary and the divergences
    lines = [f"# gradharness report — {meta.get('run_id', '')}", ""]
    if meta.get("interrupted"):
        lines += [_interrupted_banner(meta["interrupted"]), ""]
    if meta.get("partial"):   # harness merge --allow-partial
        lines += [_partial_banner(meta["partial"]), ""]
    lines += _headline(records, meta, bad)
    lines += _summary(records, meta, cells, bad)
    lines += _divergences(bad, (meta.get("expected") or {}).get("vanished") or [],
                          mark=bool(meta.get("expected")) or any(r.get("known") for r in bad))
    lines += _problems(records)
    lines += _cases(records, meta)
    lines += timing_sections(cells)
    plots = meta.get("plots", [])
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += _run_section(meta)
    lines += _how_to_read(records)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def console_summary(records, meta, limit=10) -> str:
    total = counts(records)
    lines = [tabulate(_summary_rows(records), headers=["check"] + list(VERDICTS), tablefmt="simple")]
    worst = failing(records)
    shown = worst[:limit]
    if shown:
        short = [[r["case"], r["param"], _check(r), _who(r), r["dtype"], r["device"], _err(r),
                  r.get("cause") or ""] for r in shown]
        lines += ["", tabulate(short, headers=["case", "param", "check", "frameworks", "dtype", "device",
                                               "max rel err", "cause"], tablefmt="simple")]
        more = len(worst) - limit
        if more > 0:
            lines.append(f"... and {more} more in the report")
    lines.append("")
    lines.append(", ".join(f"{total.get(v, 0)} {v}" for v in VERDICTS))
    split = known_line(records, meta)
    if split:
        lines.append(split)
    return "\n".join(lines)


def _summary_rows(records) -> list:
    by_check = _by_check(records)
    rows = [[check] + [by_check[check].get(v, 0) for v in VERDICTS] for check in CHECK_ORDER if check in by_check]
    total = counts(records)
    rows.append(["all"] + [total.get(v, 0) for v in VERDICTS])
    return rows
