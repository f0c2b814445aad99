"""A CI gate that cannot be fooled: every command's errors are one line and exit 2 with nothing
half-written, a missing shard fails the merge, `--fail-on` takes no ambiguous or empty value,
`compare` refuses runs of different inputs, and `FILE.py::NAME` picks one case of a file."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.render import run_diff

from harness.define import loader

from harness.store import runs
from harness.case import CaseError
from tests.conftest import FRAMEWORKS
from tests.helpers import ROOT, harness, harness_env, planted_runs, results

GOLDEN = Path(__file__).parent / "data" / "golden"
INSTALLED = [fw for fw, info in FRAMEWORKS.items() if info.installed()]

MY_CASES = """\
from harness import Case


def make(rng):
    return {"w": rng.normal(size=3)}, {}


square = Case(name="square_sum", make=make, loss=lambda o, p, i: o.sum(o.square(p["w"])), tags=("mine",),
              doc="Sum of squares.")
other = Case(name="tanh_sum", make=make, loss=lambda o, p, i: o.sum(o.tanh(p["w"])), doc="Sum of tanh.")
"""


def one_line_error(proc, needle=""):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert needle in lines[0], (needle, lines[0])
    return lines[0]


def tree(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def case_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cases") / "my_cases.py"
    path.write_text(MY_CASES)
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory, case_file):
    """Two real shard runs (one framework, float64, no timing), started together."""
    if not INSTALLED:
        pytest.skip("needs one framework")
    root = tmp_path_factory.mktemp("shards")
    args = ["run", "--cases", f"op_relu,{case_file}::square_sum", "--frameworks", INSTALLED[0], "--dtypes",
            "float64", "--timing", "off", "--quiet"]
    procs = [subprocess.Popen([sys.executable, "-m", "harness", *args, "--shard", f"{k}/2", "--out",
                               str(root / f"s{k}")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=harness_env()) for k in (1, 2)]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode in (0, 1), out + err
    return root / "s1", root / "s2"


# ---- 1. one error path: one line, exit 2, nothing half-written ----------------------------------------
def test_list_into_a_closed_pipe_ends_quietly():
    """`harness list | head -1`: the reader gone before the first write, deterministically."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "harness", "list"], cwd=ROOT, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_run_out_that_is_a_file_or_under_one(tmp_path):
    afile = tmp_path / "a_file"
    afile.write_text("keep me")
    for out, needle in ((afile, "is a file, not a folder"), (afile / "run", "cannot write the run folder")):
        one_line_error(harness("run", "--cases", "linear_mse", "--timing", "off", "--out", out), needle)
    assert afile.read_text() == "keep me" and tree(tmp_path) == ["a_file"]


def test_merge_out_that_cannot_be_written(shards, tmp_path):
    afile = tmp_path / "a_file"
    afile.write_text("keep me")
    one_line_error(harness("merge", *shards, "--out", afile / "merged"), "cannot write the merged run folder")
    one_line_error(harness("merge", *shards, "--out", afile), "is a file, not a folder")
    if Path("/sys").is_dir():        # no one may create folders in sysfs, root included
        one_line_error(harness("merge", *shards, "--out", "/sys/merged"), "cannot write the merged run folder")
        assert not Path("/sys/merged").exists()
    assert afile.read_text() == "keep me" and tree(tmp_path) == ["a_file"]


def test_a_merge_that_fails_midway_leaves_nothing(shards, tmp_path):
    broken = tmp_path / "s2"
    shutil.copytree(shards[1], broken)
    for npz in (broken / "arrays").iterdir():
        npz.unlink()                  # observations name arrays that are gone: found while copying
    one_line_error(harness("merge", shards[0], broken, "--out", tmp_path / "deep" / "merged"), "is missing")
    assert not (tmp_path / "deep").exists()


def test_compare_keeps_its_exit_code_when_stdout_closes(tmp_path):
    old, new = _two_runs(tmp_path)
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "harness", "compare", old, new, "--out", tmp_path / "d.md"],
                              cwd=ROOT, stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr     # the planted flip still fails
    assert "**Fails**" in (tmp_path / "d.md").read_text()


def test_compare_and_report_out_errors(tmp_path):
    old, new = _two_runs(tmp_path)
    afile = tmp_path / "a_file"
    afile.write_text("keep me")
    one_line_error(harness("compare", old, new, "--out", afile / "d.md"), f"{afile} is a file, not a folder")
    one_line_error(harness("compare", old, new, "--out", tmp_path), "is a folder, not a file")
    one_line_error(harness("report", old, "--out", afile / "r", "--no-plots"), f"{afile} is a file")
    assert afile.read_text() == "keep me"


# ---- 2. a missing shard fails the merge -----------------------------------------------------------------
def test_merge_with_a_missing_shard_fails_unless_allow_partial(shards, tmp_path):
    out = tmp_path / "merged"
    one_line_error(harness("merge", shards[0], "--out", out), "shard 2/2 not given")
    assert not out.exists()
    proc = harness("merge", shards[0], "--out", out, "--allow-partial")
    assert proc.returncode in (0, 1), proc.stderr
    absent = json.loads((shards[1] / "run.json").read_text())["cases"]
    meta = json.loads((out / "run.json").read_text())
    assert meta["partial"] == {"missing_shards": ["2/2"], "missing_cases": absent}
    head = (out / "report.md").read_text().split("\n## ")[0]
    assert "Partial run" in head and "shard 2/2" in head and absent[0] in head
    assert harness("report", out, "--no-plots").returncode == 0        # re-rendered, still says so
    assert "Partial run" in (out / "report.md").read_text().split("\n## ")[0]


def test_merge_of_every_shard_is_whole_and_case_file_selection_held(shards, tmp_path):
    proc = harness("merge", *shards, "--out", tmp_path / "m")
    assert proc.returncode in (0, 1), proc.stderr
    assert "partial" not in json.loads((tmp_path / "m" / "run.json").read_text())
    assert "Partial run" not in (tmp_path / "m" / "report.md").read_text()
    # --cases FILE::square_sum ran that case of the file, and not its other one
    assert {r["case"] for r in results(tmp_path / "m")} == {"op_relu", "square_sum"}


# ---- 3. --fail-on: no empty, ambiguous or negative value; one spelling ------------------------------------
@pytest.mark.parametrize("command", ["run", "merge"])
def test_empty_fail_on_is_an_error_not_none(command, tmp_path):
    target = ("--cases", "linear_mse") if command == "run" else (tmp_path / "nowhere",)
    one_line_error(harness(command, *target, "--fail-on", "", "--out", tmp_path / "out"), "is empty")
    one_line_error(harness(command, *target, "--fail-on", "none,diverge", "--out", tmp_path / "out"),
                   "none cannot be combined")
    assert not (tmp_path / "out").exists()


def test_run_suggests_the_one_spelling():
    one_line_error(harness("run", "--cases", "linear_mse", "--fail-on", "divergence"), "did you mean 'diverge'")


@pytest.mark.parametrize("fail_on,code", [
    ("", 2), (",", 2), ("slowdown=10", 2), ("slowdown=1.5", 2), ("slowdown=-5%", 2), ("slowdown=", 2),
    ("slowdown=nan", 2), ("none,diverge", 2), ("diverge=1", 2),
    ("slowdown=0.10", 1), ("slowdown=10%", 1), ("slowdown=0.6", 0), ("slowdown=60%", 0),
    ("diverge", 1), ("divergence", 1), ("none", 0),
])
def test_compare_fail_on_values(tmp_path, fail_on, code):
    old, new = _two_runs(tmp_path)
    proc = harness("compare", old, new, "--fail-on", fail_on)
    if code == 2:
        one_line_error(proc, "--fail-on")
    else:
        assert proc.returncode == code, (fail_on, proc.stdout[-400:], proc.stderr)


def test_fractions_and_fail_on_parse_unambiguously():
    assert run_diff.parse_fraction("10%") == pytest.approx(0.10) == run_diff.parse_fraction("0.10")
    assert run_diff.parse_fraction("0") == 0.0 and run_diff.parse_fraction("150%") == pytest.approx(1.5)
    for bad in ("10", "1", "-5%", "-0.1", "inf", "x", "%"):
        with pytest.raises(ValueError):
            run_diff.parse_fraction(bad)
    assert run_diff.parse_fail_on("divergence,slowdown=5%") == {"diverge": None, "slowdown": pytest.approx(0.05)}
    with pytest.raises(run_diff.DiffError, match="empty"):
        run_diff.parse_fail_on("")


def test_compare_min_change_is_unambiguous(tmp_path):
    old, new = _two_runs(tmp_path)
    one_line_error(harness("compare", old, new, "--min-change", "5"), "ambiguous")
    assert harness("compare", old, new, "--min-change", "0.05", "--fail-on", "none").returncode == 0


# ---- 4. compare refuses runs of different inputs, or compares verdicts only ------------------------------
def test_compare_of_different_seeds_refuses_or_compares_verdicts_only(tmp_path):
    old, new = _two_runs(tmp_path, new_seed=1)
    line = one_line_error(harness("compare", old, new), "seed 0 vs 1")
    assert "--verdicts-only" in line
    proc = harness("compare", old, new, "--verdicts-only")
    assert proc.returncode == 1, proc.stderr                 # the planted verdict flip is still a regression
    assert "Verdicts only" in proc.stdout and "seed 0 vs 1" in proc.stdout
    assert "pass → **diverge**" in proc.stdout
    assert "Errors that moved" not in proc.stdout and "### Slower" not in proc.stdout
    one_line_error(harness("compare", old, new, "--verdicts-only", "--fail-on", "slowdown"), "--verdicts-only")


def test_changed_case_inputs_are_found_from_the_observations(tmp_path):
    old, new = _two_runs(tmp_path)
    for folder, shape in ((old, [3]), (new, [4])):
        (folder / "arrays").mkdir()
        row = {"id": "linear_mse/torch/cpu/float64/eager/default", "case": "linear_mse", "framework": "torch",
               "device": "cpu", "dtype": "float64", "mode": "eager", "precision": "default", "status": "ok",
               "params": {"weight": shape}}
        (folder / "observations.jsonl").write_text(json.dumps(row) + "\n")
    assert run_diff.input_differences(runs.load(old), runs.load(new)) == [
        "other parameters or inputs in case(s) linear_mse"]
    one_line_error(harness("compare", old, new), "linear_mse")
    assert run_diff.input_differences(runs.load(old), runs.load(old)) == []


# ---- 6. FILE.py::NAME, list --cases, did you mean ------------------------------------------------------------
def test_list_shows_a_case_files_cases(case_file):
    proc = harness("list", "--cases", case_file)
    assert proc.returncode == 0, proc.stderr
    assert "square_sum" in proc.stdout and "tanh_sum" in proc.stdout and "linear_mse" not in proc.stdout
    proc = harness("list", "--cases", f"{case_file}::tanh_sum")
    assert proc.returncode == 0 and "tanh_sum" in proc.stdout and "square_sum" not in proc.stdout


def test_unknown_names_suggest_the_closest(case_file):
    one_line_error(harness("list", "--cases", f"{case_file}::tanh_su"), "did you mean 'tanh_sum'")
    one_line_error(harness("list", "--cases", f"{case_file}::"), "name a case after '::'")
    one_line_error(harness("run", "--cases", "linear_mes"), "did you mean 'linear_mse'")


def test_select_one_case_of_a_file(case_file):
    assert [c.name for c in loader.select(f"{case_file}::square_sum")] == ["square_sum"]
    assert [c.name for c in loader.select(f"{case_file}::mine,linear_mse")] == ["square_sum", "linear_mse"]
    with pytest.raises(CaseError, match="did you mean 'square_sum'"):
        loader.select(f"{case_file}::square_summ")


# ---- synthetic runs for compare (results only: fast) ------------------------------------------------------
def _two_runs(tmp_path, new_seed=0):
    """OLD and NEW from the golden results: NEW has one fd verdict flipped, one error moved and one
    timing 50% slower (steady raw times)."""
    old, new = planted_runs()
    folders = []
    for name, records, seed in (("old", old, 0), ("new", new, new_seed)):
        folder = tmp_path / name
        folder.mkdir()
        meta = dict(json.loads((GOLDEN / "run.json").read_text()), run_id=name, seed=seed)
        (folder / "run.json").write_text(json.dumps(meta))
        (folder / "results.jsonl").write_text("".join(json.dumps(dict(r, run_id=name)) + "\n" for r in records))
        folders.append(folder)
    return folders


