"""The report as a pure function of the results: a golden file, `harness report`, and the
one-line description every failure is given in."""
import json
import os
import shutil
from pathlib import Path

from harness.render import cases, report, selection
from harness.store import runs
from tests.helpers import harness

DATA = Path(__file__).parent / "data" / "golden"
EXPECTED = DATA / "report.md"


def test_report_md_matches_the_golden_file(tmp_path):
    """`harness report` re-renders report.md from results.jsonl + run.json, byte for byte.

    After an intended change to the report, regenerate with
    GRADHARNESS_UPDATE_GOLDEN=1 python -m pytest tests/test_reporting.py and review the diff."""
    proc = harness("report", DATA, "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    if os.environ.get("GRADHARNESS_UPDATE_GOLDEN"):
        EXPECTED.write_text(text, encoding="utf-8")
    assert text == EXPECTED.read_text(encoding="utf-8")
    # the plots it links were rendered beside it
    for name in ("error_heatmap.png", "timing.png"):
        assert f"]({name})" in text and (tmp_path / name).stat().st_size > 1000


def test_rendering_is_deterministic_and_reads_top_down():
    run = runs.load(DATA)
    a = report.render(run.records, run.meta)
    # workers are listed in the order they happened to start (a race between worker threads)
    assert len(run.meta["workers"]) > 1
    b = report.render(list(reversed(run.records)), {**run.meta, "workers": list(reversed(run.meta["workers"]))})
    assert a == b
    order = ["## Summary", "**What ran**", "**Verdicts by check:**", "**Worst divergences**", "**Timing gaps**",
             "## Divergences", "## Errors and skipped", "## Cases", "## Timings", "### Timing divergences",
             "## Run and environment", "## How to read this report"]
    positions = [a.index(h) for h in order]
    assert positions == sorted(positions)
    # every cause label and every check present is explained in the footnote
    from harness.vocab import CAUSES
    footnote = a[a.index("## How to read this report"):]
    for cause in CAUSES:
        assert f"`{cause}`" in footnote
    for check in ("fd", "jvp", "hvp", "determinism", "reference", "pairwise", "timing"):
        assert f"- `{check}`:" in footnote


def test_report_from_a_bare_results_file_derives_the_settings(tmp_path):
    shutil.copy(DATA / "results.jsonl", tmp_path / "results.jsonl")
    proc = harness("report", tmp_path / "results.jsonl", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "settings derived from the results" in text
    assert "torch 2.13" in text or "torch" in text
    assert "op_max_ties" in text and "## Plots" not in text


def test_report_usage_errors_are_one_line(tmp_path):
    proc = harness("report", tmp_path / "nothing-here")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    bad = tmp_path / "results.jsonl"
    bad.write_text(json.dumps({"schema": 99, "case": "x", "check": "fd"}) + "\n")
    proc = harness("report", bad)
    assert proc.returncode == 2 and "schema 99" in proc.stderr


def test_describe_is_the_localised_one_liner():
    rec = {"case": "planted", "param": "w", "check": "fd", "framework": "torch", "dtype": "float64", "device": "cpu",
           "mode": "eager", "precision": "default", "verdict": "diverge", "max_rel_err": 0.347,
           "rtol": 1e-6, "atol": 1e-8, "worst_index": [2, 1], "got": 0.402597, "expected": -0.402597,
           "cause": "ad-bug", "message": ""}
    assert selection.describe(rec) == ("case planted, param w, fd torch float64 cpu: max_rel=3.47e-01 (tolerance rtol "
                                    "1e-06, atol 1e-08), worst at (2, 1): got 0.402597, expected -0.402597, "
                                    "cause ad-bug")
    pair = dict(rec, check="pairwise", other_framework="jax", dtype="float32", mode="compiled", cause=None)
    assert "pairwise torch vs jax float32 cpu compiled:" in selection.describe(pair)
    assert selection.describe(pair).endswith("cause not established")


def test_empty_run_renders():
    text = report.render([], {"run_id": "empty", "devices": ["cpu"], "dtypes": ["float64"], "modes": ["eager"]})
    assert "No divergences" in text and text.endswith("\n")


def test_matrix_cell_shows_a_pass_with_its_skipped_checks():
    run = runs.load(DATA)
    matrix = cases.agreement_matrix([r for r in run.records if r["case"] == "linear_mse"])
    torch_f64 = [line for line in matrix.splitlines() if "float64" in line][0]
    assert "(+1 skipped)" in torch_f64 and "✓" in torch_f64


def _fd_record(**kw):
    rec = {"case": "c", "framework": "torch", "other_framework": None, "device": "cpu", "dtype": "float64",
           "mode": "eager", "precision": "default", "check": "fd", "param": "w", "verdict": "pass",
           "cause": None, "max_abs_err": 1e-12, "max_rel_err": 1e-12, "atol": 1e-8, "rtol": 1e-6,
           "worst_index": [0], "got": 1.0, "expected": 1.0, "message": None}
    rec.update(kw)
    return rec


def test_a_nan_verdict_reads_nan_not_the_finite_elements_error():
    rec = _fd_record(verdict="nan", cause="nan-propagation", max_rel_err=1.2e-9, got=float("nan"),
                     expected=3729.75)
    assert "max_rel=NaN" in selection.describe(rec)
    text = report.render([rec], {})
    assert "1.2e-09" not in text and "NaN" in text


def test_a_directional_fd_says_so_in_the_report():
    recs = [_fd_record(param="*", fd_mode="directional", message="4 random directions"),
            _fd_record(framework="jax", param="*", fd_mode="directional", message="4 random directions",
                       verdict="diverge", cause="ad-bug", max_rel_err=1e-3)]
    text = report.render(recs, {})
    assert "fd ran as a directional check (4 random directions) for jax, torch" in text
    assert "fd (directional)" in selection.describe(recs[1])


def test_the_heatmap_shows_pairwise_agreement_and_failing_cells():
    from harness.render import plots
    recs = [_fd_record(), _fd_record(framework="jax"),
            _fd_record(check="pairwise", framework="jax", other_framework="torch", verdict="diverge",
                       max_rel_err=3e-9, cause="precision-loss"),
            _fd_record(check="pairwise", framework="jax", other_framework="tensorflow", verdict="nan",
                       max_rel_err=1e-12)]
    cells = plots.heat_cells(recs)
    pair = {k: v for k, v in cells.items() if "~" in k[1]}
    assert sorted(v[1] for v in pair.values()) == ["diverge", "nan"]
    assert max(v[0] for v in pair.values()) == 1.0  # NaN sits at the top of the scale


def test_the_timing_plot_marks_eager_dispatch_and_contended_bars(tmp_path):
    from harness.render import plots
    timing = dict(check="timing", param="forward+backward", verdict="pass", iqr_s=1e-6, precision="default")
    recs = [_fd_record(**timing, framework="torch", mode="eager", median_s=1e-3),
            _fd_record(**timing, framework="jax", mode="eager", median_s=5e-2),
            _fd_record(**timing, framework="jax", mode="compiled", median_s=2e-3, contended=True)]
    cells = plots.timing_cells(recs)
    [panel] = cells.values()
    marks = {label: m for (_, label), (_, _, m) in panel.items()}
    assert marks == {"torch eager": "", "jax eager": "†", "jax.jit": "‡"}
    assert plots.timing_bars(recs, tmp_path / "timing.png") and (tmp_path / "timing.png").stat().st_size > 0
