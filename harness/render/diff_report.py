"""The markdown `harness compare OLD NEW` prints: a Diff (harness.render.run_diff) in words.

Top to bottom: the headline, the two runs side by side (what differs in bold), the gradients
(verdicts that flipped, errors and gradient arrays that moved beyond tolerance), the cases and
checks added or removed, and the timings that changed beyond noise. Like report.md it is a pure
function of its input, so the same two runs always give the same text.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness.render import markdown as md
from harness.store.records import as_float
from harness.store.runs import Run

if TYPE_CHECKING:   # run_diff re-exports render, so it cannot be imported from here at run time
    from harness.render.run_diff import Diff


def render(d: Diff) -> str:
    """The markdown of ``d``: deterministic."""
    o, n = d.old, d.new
    lines = [f"# gradharness compare — {o.run_id} → {n.run_id}", "", _headline(d), ""]
    if d.verdicts_only:
        why = (f"the runs' inputs differ ({'; '.join(d.inputs_differ)}), so" if d.inputs_differ
               else "`--verdicts-only`:")
        lines += [f"**Verdicts only** — {why} gradients, errors and timings are not held against each other; "
                  f"only verdicts, cases and checks are compared.", ""]
    lines += _runs_table(o, n)
    lines += _gradients_section(d)
    lines += _cases_section(d)
    lines += _timings_section(d)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def _headline(d: Diff) -> str:
    parts = []
    if d.flipped:
        parts.append(f"{len(d.flipped)} verdict(s) flipped ({len(d.regressions)} worse)")
    if d.moved:
        parts.append(f"{len(d.moved)} error(s) moved beyond tolerance")
    if d.gradients:
        parts.append(f"{len(d.gradients)} gradient(s) moved beyond tolerance")
    if d.cases_added:
        parts.append(f"{len(d.cases_added)} new case(s)")
    if d.cases_removed:
        parts.append(f"{len(d.cases_removed)} removed case(s)")
    if d.checks_added or d.checks_removed:
        parts.append(f"{sum(d.checks_added.values())} check(s) added, {sum(d.checks_removed.values())} removed")
    if d.slower:
        parts.append(f"{len(d.slower)} timing(s) slower")
    if d.faster:
        parts.append(f"{len(d.faster)} timing(s) faster")
    if not parts:
        if d.verdicts_only:
            return "**✓ No verdict changed** (verdicts only)."
        return "**✓ No change**: same verdicts, no gradient or error moved beyond tolerance, no timing changed " \
               "beyond noise."
    mark = "✗" if (d.regressions or d.moved or d.gradients) else "Δ"
    return f"**{mark} " + "; ".join(parts) + ".**"


# ---- the two runs ----------------------------------------------------------------------------------------
def _versions(run: Run) -> str:
    return ", ".join(f"{fw} {v or ''}".strip() for fw, v in (run.meta.get("frameworks") or {}).items())


def _devices(run: Run) -> str:
    names = {}
    for r in run.records:
        if r.get("device") not in (None, "-") and r.get("device_name"):
            names.setdefault(r["device"], r["device_name"])
    return ", ".join(f"{d} ({names[d]})" if d in names else d for d in run.meta.get("devices") or [])


def _runs_table(o: Run, n: Run) -> list:
    """The two runs side by side, what differs in bold: a timing or gradient change reads differently
    when the machine or a framework's version changed too."""
    rows = [["run", f"`{o.run_id}`", f"`{n.run_id}`"],
            ["from", f"`{o.folder}`", f"`{n.folder}`"],
            ["started", o.meta.get("started", ""), n.meta.get("started", "")],
            ["frameworks", _versions(o), _versions(n)],
            ["devices", _devices(o), _devices(n)],
            ["dtypes", ", ".join(o.meta.get("dtypes") or []), ", ".join(n.meta.get("dtypes") or [])],
            ["seed", str(o.meta.get("seed", "?")), str(n.meta.get("seed", "?"))],
            ["cases", str(len({r['case'] for r in o.records})), str(len({r['case'] for r in n.records}))],
            ["platform", (o.meta.get("environment") or {}).get("platform", ""),
             (n.meta.get("environment") or {}).get("platform", "")]]
    marked = [[a, b, c if b == c else f"**{c}**"] for a, b, c in rows]
    return [md.table(marked, ["", "old", "new"]), "", "Values that differ are in bold.", ""]


# ---- gradients -------------------------------------------------------------------------------------------
def _gradients_section(d: Diff) -> list:
    return (["## Gradients", ""] + _flipped_lines(d) + _moved_lines(d) + _arrays_lines(d)
            + _unchanged_lines(d))


def _flipped_lines(d: Diff) -> list:
    if not d.flipped:
        return []
    rows = []
    for old, new in d.flips_worst_first():
        verdict = (f"{old['verdict']} → **{new['verdict']}**" if d.got_worse(old, new)
                   else f"{old['verdict']} → {new['verdict']}")
        worst = md.where(new) if new.get("worst_index") is not None or new.get("got") is not None else _reason(new)
        rows.append([new["case"], new["check"], str(new.get("param")), md.who(new), md.setting(new), verdict,
                     _err(old), _err(new), md.tolerance(new), worst, new.get("cause") or ""])
    return [f"### Verdicts that flipped ({len(d.flipped)})", "",
            md.table(rows, ["case", "check", "param", "frameworks", "setting", "verdict", "old max rel err",
                            "new max rel err", "tolerance", "new worst element / reason", "cause"]), ""]


def _moved_lines(d: Diff) -> list:
    if not d.moved:
        return []
    rows = [[new["case"], new["check"], str(new.get("param")), md.who(new), md.setting(new), new["verdict"],
             _err(old), _err(new), f"{change:+.1e}", md.tolerance(new), md.where(new)]
            for old, new, change, _allowed in d.moves_largest_first()]
    return [f"### Errors that moved beyond tolerance ({len(d.moved)})", "",
            "Same verdict, but the check's max relative error changed by more than its tolerance "
            "(atol + rtol, in units of the gradient scale).", "",
            md.table(rows, ["case", "check", "param", "frameworks", "setting", "verdict", "old max rel err",
                            "new max rel err", "change", "tolerance", "new worst element"]), ""]


def _arrays_lines(d: Diff) -> list:
    """The gradient arrays that moved, or why the arrays were not compared."""
    if d.gradients_compared is None:
        return [f"Gradient arrays not compared: {d.gradients_note}.", ""]
    if not d.gradients:
        return []
    rows = []
    for g in d.gradients:
        case, fw, device, dtype, mode, precision = g["key"]
        setting = md.setting({"dtype": dtype, "device": device, "mode": mode, "precision": precision})
        if g["verdict"] == "shape":
            rows.append([case, fw, setting, g["param"], "", "", g["note"]])
            continue
        idx = md.index_text({"worst_index": g["index"]})
        rows.append([case, fw, setting, g["param"], f"{g['max_rel']:.1e}",
                     f"rtol {g['tol'].rtol:.0e}, atol {g['tol'].atol:.0e}",
                     f"{idx}: old {g['old']:.6g}, new {g['new']:.6g}"])
    return [f"### Gradients that moved ({len(d.gradients)} of {d.gradients_compared} compared)", "",
            "Each task's gradient in the new run held against the old run's: max |new − old| / old gradient "
            "scale, with the dtype's tolerance.", "",
            md.table(rows, ["case", "framework", "setting", "param", "max rel change", "tolerance",
                            "worst element"]), ""]


def _unchanged_lines(d: Diff) -> list:
    if not (d.flipped or d.moved or d.gradients):
        what = f"{d.unchanged} check(s)"
        if d.gradients_compared is not None:
            what += f" and {d.gradients_compared} gradient array(s)"
        return [f"No change: {what} compared, none moved beyond tolerance.", ""]
    return [f"{d.unchanged} other check(s) unchanged"
            + (f"; {d.gradients_compared} gradient array(s) compared." if d.gradients_compared is not None
               else "."), ""]


# ---- cases and timings -----------------------------------------------------------------------------------
def _cases_section(d: Diff) -> list:
    lines = ["## Cases", ""]
    if d.cases_added:
        lines += [f"New ({len(d.cases_added)}): " + ", ".join(f"`{c}`" for c in d.cases_added), ""]
    if d.cases_removed:
        lines += [f"Removed ({len(d.cases_removed)}): " + ", ".join(f"`{c}`" for c in d.cases_removed), ""]
    if d.checks_added or d.checks_removed:
        rows = [[c, fw, str(d.checks_added.get((c, fw), 0)), str(d.checks_removed.get((c, fw), 0))]
                for c, fw in sorted(set(d.checks_added) | set(d.checks_removed))]
        lines += ["Checks added or removed in cases both runs have (a framework, dtype or device run in one "
                  "only):", "", md.table(rows, ["case", "framework", "added", "removed"]), ""]
    if not (d.cases_added or d.cases_removed or d.checks_added or d.checks_removed):
        lines += ["Same cases and checks in both runs.", ""]
    return lines


def _timings_section(d: Diff) -> list:
    lines = ["## Timings", ""]
    if d.verdicts_only:
        return lines + ["Not compared (verdicts only).", ""]
    if not d.timings_compared:
        return lines + ["No timing in both runs (run with `--timing quick` or `full`).", ""]
    lines += [f"{d.timings_compared} timing cell(s) compared from their raw per-call times. A cell changed when "
              f"a two-sided Mann-Whitney U test gives p < {d.alpha:g}, the interquartile ranges do not overlap, "
              f"and the medians differ by more than {d.min_change:.0%}. Compare timings from the same machine.",
              ""]
    if d.timings_contended:   # harness.worker.contention
        lines += [f"{d.timings_contended} of them contended in either run (other processes held the CPUs): "
                  "no slower or faster verdict.", ""]
    for title, entries in (("Slower", d.slower), ("Faster", d.faster)):
        if entries:
            lines += [f"### {title} ({len(entries)})", "", _timings_table(entries), ""]
    if not (d.slower or d.faster):
        lines += ["No timing changed beyond noise.", ""]
    return lines


def _timings_table(entries) -> str:
    """``entries``: Diff.slower or Diff.faster; each median with its interquartile range."""
    rows = []
    for e in entries:
        r = e["new"]
        rows.append([r["case"], r["framework"], md.setting(r), r["param"],
                     f"{md.ms(e['old_q'][1])} ({md.ms(e['old_q'][0])}–{md.ms(e['old_q'][2])})",
                     f"{md.ms(e['new_q'][1])} ({md.ms(e['new_q'][0])}–{md.ms(e['new_q'][2])})",
                     f"×{e['ratio']:.2f} ({(e['ratio'] - 1) * 100:+.0f}%)", f"{e['p']:.1e}"])
    return md.table(rows, ["case", "framework", "setting", "phase", "old median (IQR)", "new median (IQR)",
                           "change", "p"])


def _err(r) -> str:
    """A max relative error as text, "" where the record has none (unlike markdown.max_rel, a NaN
    verdict shows the number it stored)."""
    v = as_float(r.get("max_rel_err"))
    return f"{v:.1e}" if isinstance(v, float) else ""


def _reason(r) -> str:
    text = (r.get("message") or "").strip().splitlines()
    return " ".join(text[0].split())[:160].replace("|", "\\|") if text else ""


__all__ = ["render"]
