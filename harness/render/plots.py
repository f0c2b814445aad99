"""Plots linked from the report (matplotlib, PNG, headless): a heatmap of relative gradient
error per case x (framework or pair of frameworks, device, dtype, mode) with failing cells
marked, and grouped timing bars per case (eager JAX/TF and contended bars marked as in
the report's tables)."""
from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from harness.judge import speed
from harness.store.records import as_float


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def render_all(records, run_dir: Path) -> list:
    """Write every plot that has data; return their paths relative to run_dir. The plots are drawn in
    a hidden staging folder and renamed into run_dir, so a plot is there whole or not at all
    (matplotlib writes in place)."""
    staging = run_dir / f".plots.tmp.{os.getpid()}"
    staging.mkdir(exist_ok=True)
    try:
        written = _draw_all(records, staging)
        for name in written:
            os.replace(staging / name, run_dir / name)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _draw_all(records, folder: Path) -> list:
    """Draw every plot that has data into ``folder``; return the names written."""
    written = []
    for name, draw in (("error_heatmap.png", error_heatmap), ("timing.png", timing_bars)):
        try:
            if draw(records, folder / name):
                written.append(name)
        except Exception as exc:  # noqa: BLE001 - a plot must never cost the report
            print(f"warning: plot {name} failed: {exc}")
    return written


def _heat_column(r) -> str:
    setting = f"{r['device']} {r['dtype']}\n{r['mode']}" + ("" if r["precision"] == "default" else f" {r['precision']}")
    who = f"{r['framework']}~{r['other_framework']}" if r.get("other_framework") else r["framework"]
    return f"{who}\n{setting}"


def heat_cells(records) -> dict:
    """(case, column) -> (worst relative error, worst verdict there): one column per framework
    and setting (its fd/reference checks: against the float64 reference, or FD for the
    reference itself) and one per pair of frameworks (their pairwise checks). The verdict is
    the cell's, not the colour's: a float64 pair 1e-9 apart is green and may still fail."""
    cells: dict = {}
    rank = {"pass": 0, "diverge": 1, "nan": 2}
    for r in records:
        if r["check"] not in ("fd", "reference", "pairwise") or r["verdict"] not in rank:
            continue
        err = as_float(r.get("max_rel_err"))
        err = 1.0 if r["verdict"] == "nan" or not isinstance(err, float) or not np.isfinite(err) else err
        key = (r["case"], _heat_column(r))
        old_err, old_verdict = cells.get(key, (0.0, "pass"))
        cells[key] = (max(old_err, err), max(old_verdict, r["verdict"], key=rank.get))
    return cells


def error_heatmap(records, path: Path) -> bool:
    """log10 of the worst relative error per case and column (heat_cells); a failing cell is
    marked ✗, a NaN one reads NaN."""
    cells = heat_cells(records)
    if not cells:
        return False
    cases = sorted({c for c, _ in cells})
    cols = sorted({k for _, k in cells}, key=lambda k: ("~" in k.split("\n")[0], k))
    grid = np.full((len(cases), len(cols)), np.nan)
    for (c, k), (v, _) in cells.items():
        grid[cases.index(c), cols.index(k)] = np.log10(max(v, 1e-17))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cols) + 2), max(3, 0.35 * len(cases) + 1.5)))
    image = ax.imshow(grid, cmap="viridis", vmin=-17, vmax=0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, fontsize=7)
    ax.set_yticks(range(len(cases)), cases, fontsize=8)
    for (c, k), (_, verdict) in cells.items():
        i, j = cases.index(c), cols.index(k)
        text = {"pass": f"{grid[i, j]:.0f}", "diverge": f"✗{grid[i, j]:.0f}", "nan": "NaN"}[verdict]
        ax.text(j, i, text, ha="center", va="center", fontsize=6,
                color="red" if verdict != "pass" else ("white" if grid[i, j] < -8 else "black"),
                fontweight="bold" if verdict != "pass" else "normal")
    fig.colorbar(image, ax=ax, label="log10 max relative error")
    ax.set_title("Gradient error: each framework vs its float64 reference (fd for the reference itself), "
                 "and each pair of frameworks (a~b); ✗ fails", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def timing_cells(records) -> dict:
    """panel (device, dtype, precision) -> {(case, label): (median s, IQR s, marks)}: the
    forward+backward timings, one bar per framework and mode named as its users name it
    (speed.label), marks as the report's tables: † not the mode the framework is run for speed
    (eager JAX or TF, op-by-op dispatch), ‡ contended."""
    data = defaultdict(dict)
    for r in records:
        if r["check"] == "timing" and r["param"] == "forward+backward" and r.get("median_s"):
            marks = ("" if speed.is_speed_mode(r["framework"], r.get("mode")) else "†") + ("‡" if r.get("contended") else "")
            panel = (r["device"], r["dtype"], r["precision"])
            data[panel][(r["case"], speed.label(r["framework"], r["mode"]))] = (
                float(r["median_s"]), float(r.get("iqr_s") or 0.0), marks)
    return dict(data)


def timing_bars(records, path: Path) -> bool:
    """Forward+backward median per case, one bar per framework and mode, one panel per
    device/dtype/precision. A † bar (eager JAX or TF) is hatched and a ‡ (contended) one drawn
    pale with its mark above, so neither reads as the framework's speed."""
    data = timing_cells(records)
    if not data:
        return False
    plt = _pyplot()
    panels = sorted(data)
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        cells = data[panel]
        cases = sorted({c for c, _ in cells})
        labels = sorted({b for _, b in cells})
        width = 0.8 / max(1, len(labels))
        for k, bar in enumerate(labels):
            present = [(i, c) for i, c in enumerate(cases) if (c, bar) in cells]
            xs = [i + k * width for i, _ in present]
            ys = [cells[(c, bar)][0] * 1e3 for _, c in present]
            err = [cells[(c, bar)][1] * 1e3 / 2 for _, c in present]
            marks = [cells[(c, bar)][2] for _, c in present]
            eager = any("†" in m for m in marks)
            drawn = ax.bar(xs, ys, width, yerr=err, label=bar + (" †" if eager else ""),
                           hatch="//" if eager else None)
            for rect, m in zip(drawn, marks):
                if "‡" in m:
                    rect.set_alpha(0.35)
                    ax.annotate("‡", (rect.get_x() + rect.get_width() / 2, rect.get_height()), ha="center",
                                va="bottom", fontsize=8, color="red")
        ax.set_xticks([i + width * (len(labels) - 1) / 2 for i in range(len(cases))], cases, fontsize=8,
                      rotation=20)
        ax.set_yscale("log")
        ax.set_ylabel("ms per call")
        ax.set_title(f"forward+backward — {' '.join(p for p in panel if p != 'default')}"
                     "   († eager JAX/TF: op-by-op dispatch, not its speed; ‡ contended)", fontsize=9)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))   # beside the bars, never over them
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


__all__ = ["error_heatmap", "heat_cells", "render_all", "timing_bars", "timing_cells"]
