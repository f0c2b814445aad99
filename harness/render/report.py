"""The markdown report (GitHub-flavoured): its summary and per-case sections, and `render`, which
puts report.md together from every section.

Layout of report.md, top to bottom:

1. a one-screen summary: the headline, what ran (frameworks × devices × dtypes, with each cell's
   verdicts), counts by check and verdict, the worst divergences with their causes, and the widest
   slowest-vs-fastest timing gaps;
2. every divergence (one row each), errors and skipped checks (harness.render.divergences);
3. details per case: its failing checks in words, the agreement matrix, its timings;
4. timings across cases (harness.render.timings), plots, the run's settings and environment
   (harness.render.run_info), and "How to read this report".

Rendering is a pure function of (records, meta): no clock, no environment, stable ordering, so
the same results file always renders the same bytes (`harness report` relies on it, and the
golden-file test pins it). Long tables are folded into <details>. The markdown primitives are
harness.render.markdown's; the console summary is harness.render.console's. `summary_markdown` is
the report's first screen alone (through the Summary), for a CI job summary.

"""
from __future__ import annotations

from collections import Counter, defaultdict

from harness.judge import speed
from harness.render import markdown as md
from harness.render.cases import cases_section
from harness.render.divergences import divergences_section, problems_section
from harness.render.run_info import interrupted_banner, partial_banner, run_section
from harness.render.layers import porting_section
from harness.render.selection import check_rank, counts, diverging, frameworks_of, known_line, sort_key, verdict_rows
from harness.render.timings import SPEED_RULE, gaps_table, headline_gaps, timing_cells, timing_sections
from harness.vocab import CAUSES, CHECK_ORDER, CHECKS, FAILING, VERDICTS

# ---- the summary -----------------------------------------------------------------------------------
def summary_table(records) -> str:
    """The summary's "Verdicts by check" (verdict_rows) as a markdown table, the totals in bold."""
    rows, total = verdict_rows(records)
    table = [[f"`{check}`"] + [str(n) for n in numbers] for check, numbers in rows]
    table.append(["**all**"] + [f"**{n}**" for n in total])
    return md.table(table, ["check"] + list(VERDICTS))


def coverage_table(records, meta) -> str:
    """Rows: frameworks (with version); columns: device · dtype. A cell counts the correctness checks
    that framework took part in there: ✓ all pass, ✗ k of n failed (diverge, NaN or error)."""
    versions = meta.get("frameworks") or {}
    columns = _coverage_columns(records, meta)
    cells = defaultdict(Counter)
    for r in records:
        if r["check"] == "timing":
            continue
        for fw in {r.get("framework"), r.get("other_framework")} - {None}:
            cells[(fw, r.get("device"), r.get("dtype"))][r["verdict"]] += 1
    rows = []
    for fw in frameworks_of(records, meta):
        version = versions.get(fw) or next((r.get("framework_version") for r in records
                                            if r.get("framework") == fw and r.get("framework_version")), "")
        missing = next((r for r in records if r["framework"] == fw and r.get("device") == "-"), None)
        rows.append([f"{fw} {version or ''}".strip()]
                    + [_coverage_cell(cells.get((fw, device, dtype)), missing) for device, dtype in columns])
    return md.table(rows, ["framework"] + [f"{d} · {t}" for d, t in columns])


def _coverage_columns(records, meta) -> list:
    """(device, dtype) the run asked for, then any others its correctness records have."""
    columns = []
    for device in meta.get("devices") or []:
        for dtype in meta.get("dtypes") or []:
            columns.append((device, dtype))
    for r in records:
        key = (r.get("device"), r.get("dtype"))
        if r["check"] != "timing" and "-" not in key and key not in columns:
            columns.append(key)
    return columns


def _coverage_cell(c, missing) -> str:
    """``c``: Counter of verdicts there (None: no check); ``missing``: the framework could not run."""
    if not c:
        return "skipped" if missing else "—"
    n = sum(c.values())
    bad = sum(c[v] for v in FAILING)
    text = f"✓ {n}" if not bad else f"✗ {bad} of {n}"
    if c.get("skipped"):
        text += f" ({c['skipped']} skipped)"
    return text


def _groups_of_failures(records, bad) -> list:
    """Failing records grouped by (case, cause), worst group first: (case, cause, records).
    ``bad``: diverging(records)."""
    groups = {}
    for r in bad + sorted((r for r in records if r["verdict"] == "error"), key=sort_key):
        groups.setdefault((r["case"], r.get("cause") or ""), []).append(r)
    return sorted(((c, cause, rs) for (c, cause), rs in groups.items()),
                  key=lambda g: sort_key(g[2][0]))


def worst_table(records, bad, limit=md.SUMMARY_ROWS) -> tuple:
    """The summary's worst divergences, grouped by case and cause; ``bad``: diverging(records)."""
    groups = _groups_of_failures(records, bad)
    rows = []
    for case, cause, recs in groups[:limit]:
        worst = recs[0]
        checks = Counter(r["check"] for r in recs)
        what = ", ".join(f"{n} {c}" for c, n in sorted(checks.items(), key=lambda kv: check_rank(kv[0])))
        if worst["verdict"] == "error":
            what = ", ".join(f"{n} {c} error(s)" for c, n in sorted(checks.items()))
            rows.append([case, "error", what, f"{worst['framework']} {md.setting(worst)}", "", "",
                         md.cell((worst.get("message") or "").splitlines()[0][:160] if worst.get("message") else "")])
            continue
        rows.append([case, f"`{cause}`" if cause else "not established", what,
                     f"{worst['param']}: {md.check_label(worst)} {md.who(worst)}, {md.setting(worst)}",
                     md.max_rel(worst), md.tolerance(worst), md.where(worst)])
    return md.table(rows, ["case", "cause", "failing checks", "worst", "max rel err", "tolerance",
                         "worst element"]), len(groups)


def gaps_summary(records, cells) -> list:
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


def _headline(records, meta, bad) -> list:
    """The verdicts in one line, then what ran and how; ``bad``: diverging(records)."""
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
    run = _run_line(meta)
    return [text, "", _scope_line(records, meta), ""] + ([run, ""] if run else [])


def _scope_line(records, meta) -> str:
    """'2 framework(s) × 1 device(s) × 2 dtype(s): torch, jax · cpu · float64, float32 · eager'."""
    frameworks = frameworks_of(records, meta)
    devices = meta.get("devices") or []
    dtypes = meta.get("dtypes") or []
    modes = meta.get("modes") or []
    scope = (f"{len(frameworks)} framework(s) × {len(devices)} device(s) × {len(dtypes)} dtype(s)"
             f"{'' if len(modes) <= 1 else f' × {len(modes)} modes'}: "
             f"{', '.join(frameworks)} · {', '.join(devices)} · {', '.join(dtypes)} · {', '.join(modes)}")
    if meta.get("precisions") and meta["precisions"] != ["default"]:
        scope += f" · precision {', '.join(meta['precisions'])}"
    return scope


def _run_line(meta) -> str:
    """How the run was made: its command, seed, start, wall time, shard ("" when none is known)."""
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
    return " · ".join(run)


def _summary(records, meta, cells, bad) -> list:
    """``cells``: timing_cells(records); ``bad``: diverging(records)."""
    lines = ["## Summary", "", "**What ran** — checks per framework and setting (✓ all pass; ✗ *k* of *n* "
             "failed; a pairwise check counts for both frameworks):", "", coverage_table(records, meta), "",
             "**Verdicts by check:**", "", summary_table(records), ""]
    table, groups = worst_table(records, bad)
    lines += ["**Worst divergences** (grouped by case and cause; max rel err = max |got − expected| / gradient "
              "scale):", ""]
    if groups:
        lines += [table, ""]
        if groups > md.SUMMARY_ROWS:
            lines += [f"… {groups - md.SUMMARY_ROWS} more group(s) under [Divergences](#divergences).", ""]
    else:
        lines += ["None: every gradient agrees with its reference and across frameworks within tolerance.", ""]
    lines += gaps_summary(records, cells)
    return lines


# ---- the report -----------------------------------------------------------------------------------
def _how_to_read(records) -> list:
    checks = [c for c in CHECK_ORDER if any(r["check"] == c for r in records)]
    if any(r["check"] == "timing" for r in records):
        checks.append("timing")
    lines = ["## How to read this report", "", "**Checks** (the `check` column):", ""]
    lines += [f"- `{c}`: {CHECKS[c]}." for c in (checks or CHECK_ORDER)]
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


def _top(records, meta, cells, bad) -> list:
    """The title, any banner, the headline and the Summary section: the report's first screen.
    ``cells``: timing_cells(records); ``bad``: diverging(records)."""
    lines = [f"# gradharness report — {meta.get('run_id', '')}", ""]
    if meta.get("interrupted"):
        lines += [interrupted_banner(meta["interrupted"]), ""]
    if meta.get("partial"):   # harness merge --allow-partial
        lines += [partial_banner(meta["partial"]), ""]
    return lines + _headline(records, meta, bad) + _summary(records, meta, cells, bad)


def _joined(lines) -> str:
    """Markdown lines as text: trailing blank lines dropped, one final newline."""
    lines = list(lines)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def summary_markdown(records, meta: dict) -> str:
    """The report's first screen alone (title, banners, headline, Summary), the same markdown
    report.md begins with: for a CI job summary (GITHUB_STEP_SUMMARY). Deterministic."""
    records = list(records)
    return _joined(_top(records, meta, timing_cells(records), diverging(records)))


def render(records, meta: dict) -> str:
    """report.md for ``records`` (results.jsonl) and ``meta`` (run.json): deterministic."""
    records = list(records)
    cells = timing_cells(records)   # shared by the summary's timing gaps and the timing sections
    bad = diverging(records)          # shared by the headline, the summary and the divergences
    lines = _top(records, meta, cells, bad)
    lines += divergences_section(bad, (meta.get("expected") or {}).get("vanished") or [],
                                 mark=bool(meta.get("expected")) or any(r.get("known") for r in bad))
    lines += porting_section(records)
    lines += problems_section(records)
    lines += cases_section(records, meta)
    lines += timing_sections(cells)
    plots = meta.get("plots", [])
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += run_section(meta)
    lines += _how_to_read(records)
    return _joined(lines)


__all__ = ["coverage_table", "gaps_summary", "render", "summary_markdown", "summary_table", "worst_table"]
