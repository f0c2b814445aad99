"""Known vs new divergences: an expected-divergence table explains failing records, `--fail-on
new` gates on the rest, a vanished entry is reported, and `--expected FILE` adds a project's own."""
import json
import subprocess
import sys
from argparse import Namespace

import pytest

from cases import expected
from harness.cli import commands
from harness.errors import UsageError
from harness.judge import known
from harness.render import report
from harness.render.console import console_summary

from tests.helpers import harness_env, results


def _rec(**kw):
    rec = {"case": "c", "framework": "jax", "other_framework": "torch", "framework_version": "0.10.2",
           "other_framework_version": "2.13.0+cpu", "device": "cpu", "dtype": "float64", "mode": "eager",
           "precision": "default", "check": "pairwise", "param": "w", "verdict": "diverge", "cause": "ad-bug",
           "max_rel_err": 0.5, "rtol": 1e-7, "atol": 1e-9, "message": ""}
    rec.update(kw)
    return rec


def _entry(tmp_path, text):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return expected.load(path)


ENTRY = '[[divergence]]\ncase = "c"\nframeworks = ["jax", "torch"]\ncheck = "pairwise"\ncause = "ad-bug"\n' \
        'reason = "our custom op"\n'


def test_apply_splits_new_from_known_and_finds_vanished(tmp_path):
    entries = _entry(tmp_path, ENTRY + ENTRY.replace('case = "c"', 'case = "d"').replace("our custom op", "fixed?"))
    records = [_rec(), _rec(param="b"), _rec(case="e"), _rec(case="d", verdict="pass")]
    summary = known.apply(records, entries)
    assert [r.get("known") for r in records] == ["our custom op", "our custom op", None, None]
    assert summary["new"] == 1 and summary["known"] == 2
    # d's pairwise check was made and passed: its entry is no longer seen
    assert len(summary["vanished"]) == 1 and summary["vanished"][0].startswith("d [jax, torch, check pairwise]")


def test_an_entry_pinned_to_other_versions_does_not_explain(tmp_path):
    pinned = _entry(tmp_path, ENTRY + 'versions = {torch = "2.13.*"}\n')
    records = [_rec(), _rec(other_framework_version="2.14.0")]
    known.apply(records, pinned)
    assert [bool(r.get("known")) for r in records] == [True, False]
    with pytest.raises(ValueError, match="versions"):
        _entry(tmp_path, ENTRY + 'versions = {tensorflow = "2.*"}\n')   # not a framework of the entry


def test_fail_on_new_and_vanished():
    def failed(fail_on, records, vanished=()):
        return commands.failed(records, Namespace(fail_on=fail_on), {"expected": {"vanished": list(vanished)}})

    known_only = [_rec(known="explained"), _rec(verdict="pass")]
    assert failed("diverge,nan,error", known_only)            # the default still fails on any divergence
    assert not failed("new", known_only)                      # ... the new-only gate does not
    assert failed("new", known_only + [_rec(param="b")])
    assert not failed("new", known_only, vanished=["x"]) and failed("new,vanished", known_only, vanished=["x"])
    # a known upstream framework bug never keeps the default gate red
    assert not failed("diverge,nan,error", [_rec(verdict="error", known="bug", upstream="pytorch#1")])
    with pytest.raises(UsageError, match="did you mean 'new'"):
        commands.fail_on_verdicts("nwe")


def test_report_and_console_split_new_and_known():
    records = [_rec(known="explained"), _rec(param="b"), _rec(case="e", verdict="pass", cause=None)]
    meta = {"expected": {"files": ["mine.toml"], "new": 1, "known": 1, "vanished": ["d [jax, torch] ad-bug: gone"]}}
    text = report.render(records, meta)
    assert "1 new, 1 known (explained), 1 no longer seen" in text
    assert "d [jax, torch] ad-bug: gone" in text
    console = console_summary(records, meta)
    assert "1 new, 1 known (explained), 1 no longer seen" in console


def _harness(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=harness_env())


def test_run_gates_on_new_with_the_builtin_table_and_a_projects_own(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    base = ["run", "--cases", "op_abs_at_zero", "--frameworks", "jax,torch", "--dtypes", "float64",
            "--timing", "off", "--quiet"]
    plain = _harness(*base, "--out", tmp_path / "a")
    assert plain.returncode == 1, plain.stderr                 # abs'(0) differs: a divergence
    gated = _harness(*base, "--fail-on", "new", "--out", tmp_path / "b")
    assert gated.returncode == 0, gated.stdout + gated.stderr  # ... but a known one
    assert "0 new, " in gated.stdout and "known (explained)" in gated.stdout
    recs = results(tmp_path / "b")
    assert all(r.get("known") for r in recs if r["verdict"] in ("diverge", "nan", "error"))
    meta = json.loads((tmp_path / "b" / "run.json").read_text())
    assert meta["expected"]["new"] == 0 and meta["expected"]["known"] > 0
    # a malformed project table is refused before anything runs: one line, exit 2, no folder
    bad = tmp_path / "bad.toml"
    bad.write_text('[[divergence]]\ncase = "x"\n')
    refused = _harness(*base, "--expected", bad, "--out", tmp_path / "c")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "missing" in refused.stderr and not (tmp_path / "c").exists()
