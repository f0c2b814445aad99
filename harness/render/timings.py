"""The report's timings: the per-case timing tables, the summary's speed gaps and the "Timings"
section (compile times, timing divergences, contended cells).

A claim about speed compares each framework only in the mode it is run for speed, and never a
contended cell (harness.judge.speed decides both); every table here marks the cells left out, so
a reader sees why a number is not compared.
"""
from __future__ import annotations

from collections import defaultdict

from harness.judge import speed
from harness.render import markdown as md

#: what a per-case timing table shows
TIMING_MARKS = ("median per call, × the fastest framework; `~` noisy, † eager JAX or TF: op-by-op dispatch, not "
                "the mode it is run for speed, ‡ contended")
#: the headline's rule, in words (harness/judge/speed.py)
SPEED_RULE = "torch eager or torch.compile, jax.jit, tf.function; contended cells left out"
#: a framework this many times slower than the fastest on the same cell is a timing divergence
SLOWER_THAN_FASTEST = 2.0

_INTRO = ("Median time per call with inputs already on the device (blocked autorange, synchronised; first "
          "call timed separately), per case under [Cases](#cases) and in `timing.png`. Threads are pinned "
          "equally for every framework (see [Run and environment](#run-and-environment)); `~` marks a noisy "
          "cell (IQR > 10% of the median). A claim about speed (the summary's gaps, the divergences below) "
          f"compares each framework in the mode it is run for speed ({SPEED_RULE}); † marks eager JAX and "
          "eager TF, op-by-op dispatch. ‡ marks a contended cell: its threads queued for a CPU behind other "
          "processes, a calibration loop run before and after it lost its CPUs, or its median block was far "
          "from its fastest; it was measured again and is shown, never compared.")


def timing_cells(records) -> dict:
    """(device, case, dtype, mode, precision, phase) -> {framework: timing record}."""
    cells = defaultdict(dict)
    for r in records:
        if r["check"] == "timing" and r.get("median_s"):
            cells[(r["device"], r["case"], r["dtype"], r["mode"], r["precision"], r["param"])][r["framework"]] = r
    return cells


def _speed_groups(cells, phase) -> dict:
    """(device, case, dtype, precision, phase) -> {framework: its fastest claimable record}."""
    groups = defaultdict(dict)
    for (device, case, dtype, mode, precision, ph), row in cells.items():
        if ph == phase:
            groups[(device, case, dtype, precision, ph)][mode] = row
    return {key: speed.fastest(by_mode) for key, by_mode in groups.items()}


def _plain_setting(device, dtype, precision) -> str:
    """The setting of a speed comparison, which spans modes: so no mode in it."""
    return md.setting({"dtype": dtype, "device": device, "precision": precision})


# ---- the summary's gaps ------------------------------------------------------------------------------
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
    return f"{speed.label(fw, r['mode'])} {md.ms(r['median_s'])}{' ~' if r.get('noisy') else ''}"


def gaps_table(gaps, limit=md.SUMMARY_ROWS) -> str:
    """The first ``limit`` of ``gaps`` (timing_gaps) as a table; each time names its mode."""
    rows = []
    for ratio, key, fast_fw, fast, slow_fw, slow in gaps[:limit]:
        device, case, dtype, precision, phase = key
        rows.append([case, _plain_setting(device, dtype, precision),
                     _timing_text(fast_fw, fast), _timing_text(slow_fw, slow), f"×{ratio:.1f}"])
    return md.table(rows, ["case", "setting", "fastest (median per call)", "slowest (median per call)", "gap"])


# ---- per case ----------------------------------------------------------------------------------------
def case_timing_table(case_records, frameworks) -> tuple:
    """One case's timings (setting x phase rows, a column per framework in ``frameworks``' order),
    each × the fastest on its row: (table, number of rows); ("", 0) where it has none."""
    cells = timing_cells(case_records)
    if not cells:
        return "", 0
    fws = [fw for fw in frameworks if any(fw in row for row in cells.values())]
    rows = []
    for key in sorted(cells):
        device, _case, dtype, mode, precision, phase = key
        row = cells[key]
        fastest = min(float(r["median_s"]) for r in row.values())
        out = [md.setting({"dtype": dtype, "device": device, "mode": mode, "precision": precision}), phase]
        for fw in fws:
            r = row.get(fw)
            out.append("" if r is None else
                       f"{md.ms(r['median_s'])} (×{float(r['median_s']) / fastest:.1f}){_marks(r)}")
        rows.append(out)
    return md.table(rows, ["setting", "phase"] + fws), len(rows)


def _marks(r) -> str:
    """A timing cell's marks: ~ noisy, † not the mode its framework is run for speed (eager JAX or
    TF: op-by-op dispatch), ‡ contended (other processes held the CPUs)."""
    return ((" ~" if r.get("noisy") else "") + ("" if speed.is_speed_mode(r["framework"], r.get("mode")) else " †")
            + (" ‡" if r.get("contended") else ""))


# ---- the "Timings" section ---------------------------------------------------------------------------
def timing_sections(cells) -> list:
    """The "Timings" section; ``cells``: timing_cells(records)."""
    if not cells:
        return []
    return (["## Timings", "", _INTRO, ""] + _compile_times(cells) + _divergence_lines(cells)
            + _contended_lines(cells))


def _compile_times(cells) -> list:
    """First forward+backward call vs steady state of each compiled cell."""
    first = [[r["case"], r["framework"], md.setting(r), md.ms(r["first_call_s"]), md.ms(r["median_s"])]
             for row in cells.values() for r in row.values()
             if r["param"] == "forward+backward" and r.get("first_call_s") is not None and r["mode"] == "compiled"]
    if not first:
        return []
    return ["### Compile time (first forward+backward call)", ""] + md.fold(
        f"{len(first)} compiled cells",
        [md.table(sorted(first), ["case", "framework", "setting", "first call", "steady state"])], len(first))


def _divergence_lines(cells) -> list:
    """The timing divergences, or why there are none (nothing to compare, or all close)."""
    divergences = timing_divergences(cells)
    lines = ["### Timing divergences", ""]
    if divergences:
        lines += [f"{len(divergences)} cell(s) where a framework, in the mode it is run for speed, is more than "
                  f"{SLOWER_THAN_FASTEST:g}× slower than the fastest, or compiled is more than 10% slower than "
                  "eager (ratio of medians; contended cells left out):", ""]
        lines += md.fold(f"{len(divergences)} timing divergences",
                         [md.table(divergences, ["case", "setting", "phase", "slower", "vs", "ratio"])],
                         len(divergences))
    elif not any(len(best) > 1 for phase in ("forward", "forward+backward")
                 for best in _speed_groups(cells, phase).values()):
        lines += ["None to compare: no case has two frameworks timed, uncontended, in the mode each is run for "
                  "speed.", ""]
    else:
        lines += [f"None: no framework, in the mode it is run for speed, is more than {SLOWER_THAN_FASTEST:g}× "
                  "slower than the fastest, and compiled is never slower than eager (contended cells left out).", ""]
    return lines


def _contended_lines(cells) -> list:
    """The contended cells: shown, but left out of every comparison, so listed with why."""
    marked = [r for row in cells.values() for r in row.values() if r.get("contended")]
    contended = sorted([r["case"], speed.label(r["framework"], r["mode"]), md.setting({**r, "mode": None}),
                        r["param"], md.ms(r["median_s"]), str(r.get("attempts") or 1),
                        md.cell("; ".join(r.get("contention") or []))]
                       for r in marked)
    if not contended:
        return []
    return ["### Contended timings", "",
            f"{len(contended)} cell(s) measured while other processes held the CPUs, still so when measured "
            "again: shown in the tables (‡), left out of every comparison here and of `harness compare`'s "
            "slowdown verdicts. Rerun them on a quiet machine.", ""] + md.fold(
        f"{len(contended)} contended cells",
        [md.table(contended, ["case", "timed as", "setting", "phase", "median", "attempts", "why"])], len(contended))


def timing_divergences(cells) -> list:
    """Rows where a framework in its speed mode is > SLOWER_THAN_FASTEST x the fastest, or compiled
    is > 10% slower than eager, contended cells left out. ``cells``: timing_cells(records)."""
    return _slower_than_fastest(cells) + _compiled_slower_than_eager(cells)


def _slower_than_fastest(cells) -> list:
    out = []
    for phase in ("forward", "forward+backward"):
        for (device, case, dtype, precision, _), best in sorted(_speed_groups(cells, phase).items()):
            if len(best) < 2:
                continue
            fastest_fw = min(sorted(best), key=lambda fw: float(best[fw]["median_s"]))
            fastest = best[fastest_fw]
            setting = _plain_setting(device, dtype, precision)
            for fw, r in sorted(best.items()):
                ratio = float(r["median_s"]) / float(fastest["median_s"])
                if ratio > SLOWER_THAN_FASTEST:
                    out.append([case, setting, phase, speed.label(fw, r["mode"]),
                                speed.label(fastest_fw, fastest["mode"]), f"×{ratio:.1f}"])
    return out


def _compiled_slower_than_eager(cells) -> list:
    out = []
    for (device, case, dtype, mode, precision, phase), row in sorted(cells.items()):
        if mode != "compiled":
            continue
        eager = cells.get((device, case, dtype, "eager", precision, phase), {})
        for fw, r in sorted(row.items()):
            e = eager.get(fw)
            quiet = e and not (r.get("contended") or e.get("contended"))
            if quiet and float(r["median_s"]) > float(e["median_s"]) * 1.1:
                out.append([case, _plain_setting(device, dtype, precision), phase,
                            speed.label(fw, "compiled"), speed.label(fw, "eager"),
                            f"×{float(r['median_s']) / float(e['median_s']):.1f}"])
    return out


__all__ = ["SLOWER_THAN_FASTEST", "SPEED_RULE", "TIMING_MARKS", "case_timing_table", "gaps_table", "headline_gaps",
           "timing_cells", "timing_divergences", "timing_gaps", "timing_sections"]
