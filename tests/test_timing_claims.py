"""Timing claims an expert accepts: the headline compares the modes people run for speed and
names them, never eager JAX; contended cells are shown marked and left out of every claim, and
out of `compare`'s slowdown verdicts; cases sized for timing come first."""
import copy
import json
from pathlib import Path

from harness.render import diff_report, report, timings
from harness.render import run_diff
from harness.store import runs

DATA = Path(__file__).parent / "data" / "golden"


def timing(case, framework, mode, median, dtype="float32", phase="forward+backward", **extra):
    return {"case": case, "framework": framework, "mode": mode, "dtype": dtype, "device": "cpu",
            "precision": "default", "check": "timing", "param": phase, "verdict": "pass", "median_s": median,
            "times": [median] * 5, "first_call_s": median, **extra}


def every_mode(case="c", **extra):
    return [timing(case, "torch", "eager", 100e-6), timing(case, "torch", "compiled", 80e-6),
            timing(case, "jax", "eager", 10e-3), timing(case, "jax", "compiled", 50e-6),
            timing(case, "tensorflow", "eager", 5e-3), timing(case, "tensorflow", "compiled", 200e-6, **extra)]


def test_the_headline_compares_each_framework_in_its_speed_mode_and_names_it():
    gaps = timings.headline_gaps(timings.timing_cells(every_mode()))
    assert len(gaps) == 1
    ratio, key, fast_fw, fast, slow_fw, slow = gaps[0]
    assert (fast_fw, fast["mode"], slow_fw, slow["mode"]) == ("jax", "compiled", "tensorflow", "compiled")
    assert ratio == 4.0
    table = timings.gaps_table(gaps)
    assert "jax.jit 50 µs" in table and "tf.function 200 µs" in table and "eager" not in table
    # torch's own speed is the faster of its two modes; the gap above is the widest of the three
    divergences = timings.timing_divergences(timings.timing_cells(every_mode()))
    assert ["c", "float32 cpu", "forward+backward", "tf.function", "jax.jit", "×4.0"] in divergences


def test_eager_jax_is_never_presented_as_its_speed():
    records = [r for r in every_mode() if r["mode"] == "eager"]
    cells = timings.timing_cells(records)
    assert timings.headline_gaps(cells) == []
    assert not [row for row in timings.timing_divergences(cells) if "jax" in " ".join(row)]
    summary = "\n".join(report.gaps_summary(records, cells))
    assert "Widest timing gaps" not in summary
    assert "jax and tensorflow were timed eager only" in summary and "--modes eager,compiled" in summary
    table, _ = timings.case_timing_table(records, ["torch", "jax", "tensorflow"])
    assert "10.00 ms (×100.0) †" in table   # shown, marked as dispatch


def test_the_default_report_labels_eager_rows_and_shows_no_eager_gap():
    records = [json.loads(line) for line in (DATA / "results.jsonl").read_text().splitlines()]
    meta = json.loads((DATA / "run.json").read_text())
    text = report.render(records, meta)
    summary = text[:text.index("## Divergences")]
    assert "Widest timing gaps" not in summary and "jax was timed eager only" in summary
    assert "7.02 ms (×150.6) †" in text   # op_relu's eager jax dispatch, in its case table, marked


def test_contended_cells_are_marked_and_left_out_of_every_claim():
    reason = "1.20 of its threads were queued for a CPU, on average (other processes held the CPUs)"
    records = every_mode(contended=True, contention=[reason], attempts=2)
    cells = timings.timing_cells(records)
    ratio, _, fast_fw, _, slow_fw, slow = timings.headline_gaps(cells)[0]
    assert (fast_fw, slow_fw, slow["mode"]) == ("jax", "torch", "compiled")   # tf.function's contended cell left out
    assert not [row for row in timings.timing_divergences(cells) if "tf.function" in row]
    sections = "\n".join(timings.timing_sections(cells))
    assert "### Contended timings" in sections and reason in sections
    table, _ = timings.case_timing_table(records, ["torch", "jax", "tensorflow"])
    assert "200 µs (×4.0) ‡" in table
    assert "1 contended timing cell(s)" in "\n".join(report.gaps_summary(records, cells))


def test_cases_sized_for_timing_lead_the_headline():
    records = every_mode("op_tiny") + [dict(r, case="timing_mlp", timing_case=True, median_s=r["median_s"] * 10)
                                       for r in every_mode() if r["mode"] == "compiled"][:2]
    cells = timings.timing_cells(records)
    gaps = timings.headline_gaps(cells)
    assert [g[1][1] for g in gaps] == ["timing_mlp"]   # narrower (×1.6) than op_tiny's ×4.0, and preferred
    summary = "\n".join(report.gaps_summary(records, cells))
    assert "dispatch overhead" not in summary
    small = timings.timing_cells(every_mode("op_tiny"))
    assert "dispatch overhead" in "\n".join(report.gaps_summary(every_mode("op_tiny"), small))


def _runs(tmp_path, contended: bool):
    base = [json.loads(line) for line in (DATA / "results.jsonl").read_text().splitlines()]
    meta = json.loads((DATA / "run.json").read_text())
    steady = [1e-3 * (1 + 0.01 * (i % 5)) for i in range(15)]
    old = copy.deepcopy(base)
    cell = next(r for r in old if r["case"] == "linear_mse" and r["framework"] == "torch" and r["check"] == "timing"
                and r["dtype"] == "float32" and r["param"] == "forward+backward")
    cell["times"] = steady
    new = copy.deepcopy(old)
    slow = next(r for r in new if r["case"] == "linear_mse" and r["framework"] == "torch" and r["check"] == "timing"
                and r["dtype"] == "float32" and r["param"] == "forward+backward")
    slow.update(times=[t * 3 for t in steady], contended=contended)
    out = []
    for name, records in (("old", old), ("new", new)):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps(dict(meta, run_id=name)))
        (folder / "results.jsonl").write_text("".join(json.dumps(dict(r, run_id=name)) + "\n" for r in records))
        out.append(runs.load(folder))
    return out


def test_compare_gives_a_contended_cell_no_slowdown_verdict(tmp_path):
    plain = run_diff.compare_runs(*_runs(tmp_path / "plain", contended=False), arrays=False)
    assert len(plain.slower) == 1 and run_diff.failures(plain, {"slowdown": None})
    marked = run_diff.compare_runs(*_runs(tmp_path / "marked", contended=True), arrays=False)
    assert marked.slower == [] and marked.timings_contended == 1
    assert run_diff.failures(marked, {"slowdown": None}) == []
    assert "1 of them contended" in diff_report.render(marked)
