"""--junit-xml and the GitHub job summary: the run's checks as CI test reporters read them.

The XML is checked by real consumers, not by string matching: junitparser (what many CI tools
use to read it) for the counts and texts, and an XML Schema validator against the Jenkins/Ant
junit-10 structure (tests/data/junit-10.xsd). Records are planted or taken from the golden run, so
only the end-to-end test runs a framework."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from adapters import FRAMEWORKS
from harness.cli import commands
from harness.render import junit, selection
from harness.store import runs
from tests.helpers import GOLDEN, ROOT, harness, harness_env

XSD = Path(__file__).parent / "data" / "junit-10.xsd"


@pytest.fixture(scope="module")
def schema():
    xmlschema = pytest.importorskip("xmlschema")
    return xmlschema.XMLSchema(str(XSD))


def parsed(text: str) -> JUnitXml:
    return JUnitXml.fromstring(text.encode("utf-8"))


def cases_of(xml: JUnitXml) -> dict:
    """'classname :: name' -> the testcase."""
    return {f"{c.classname} :: {c.name}": c for suite in xml for c in suite}


def outcomes(case) -> list:
    return [type(r).__name__ for r in case.result]


def record(**kw):
    rec = {"case": "c", "framework": "torch", "other_framework": None, "device": "cpu", "dtype": "float64",
           "mode": "eager", "precision": "default", "check": "fd", "param": "w", "verdict": "pass", "cause": None,
           "max_abs_err": 1e-12, "max_rel_err": 1e-12, "atol": 1e-8, "rtol": 1e-6, "worst_index": [0], "got": 1.0,
           "expected": 1.0, "message": None}
    rec.update(kw)
    return rec


META = {"run_id": "r1", "seed": 0, "frameworks": {"torch": "2.13.0", "jax": "0.10.2"}, "devices": ["cpu"],
        "dtypes": ["float64", "float32"], "modes": ["eager"], "precisions": ["default"]}

#: a planted run: per testcase, what it must become
PLANTED = [
    # torch float64: one fd divergence, one NaN (worst: the message), one pass, one timing (no effect)
    record(param="w", verdict="diverge", cause="ad-bug", max_rel_err=3.3e-4, worst_index=[0, 1], got=-0.197092,
           expected=-0.197036),
    record(param="b", verdict="nan", cause="nan-propagation", got=float("nan"), expected=2.0),
    record(check="jvp", param="*"),
    record(check="timing", param="forward+backward", median_s=1e-3),
    # torch float32: a pairwise divergence is the testcase of its framework side (torch), known
    record(dtype="float32", check="pairwise", other_framework="jax", verdict="diverge", cause="nondiff-convention",
           max_rel_err=0.3, known="ties: each framework picks its own subgradient"),
    # jax float64: an error with a multi-line message and a traceback, and a divergence beside it
    record(framework="jax", check="hvp", param="*", method="fwd-over-rev", verdict="error",
           message="ValueError: boom\nsecond line of the message", traceback="Traceback ...\n  File x, line 1\x1b[0m"),
    record(framework="jax", check="determinism", verdict="diverge", cause="nondeterminism", max_rel_err=1e-3),
    # jax float32: everything skipped
    record(framework="jax", dtype="float32", check="fd", verdict="skipped", message="fd runs in float64 only"),
    record(framework="jax", dtype="float32", check="jvp", verdict="skipped", message="no jvp here"),
    # case d, tensorflow: not installed (a whole case x framework, device "-"): skipped
    record(case="d", framework="tensorflow", device="-", dtype="-", mode="-", precision="-", check="run", param="*",
           verdict="skipped", message="tensorflow is not installed"),
    # case d, torch: timing only: measurements make no testcase
    record(case="d", check="timing", param="forward", median_s=2e-3),
]


def test_the_file_agrees_with_the_gate(schema):
    """Under --fail-on new a known divergence fails no test: its testcase is skipped saying why (as
    pytest writes an xfail) and the line is kept in <system-out>; a new one beside a known one
    still fails, and the known line stays in <system-out>."""
    from harness.cli.commands import gate

    known = record(dtype="float32", check="pairwise", other_framework="jax", verdict="diverge",
                   cause="nondiff-convention", max_rel_err=0.3, known="ties")
    new = record(check="fd", verdict="diverge", cause="ad-bug", max_rel_err=0.5)
    also_known = record(check="jvp", param="*", verdict="diverge", max_rel_err=0.2, known="a known jvp gap")
    text = junit.render([known, new, also_known], META, gated=gate("new"))
    schema.validate(text)
    got = cases_of(parsed(text))
    [skipped] = got["gradharness.c :: torch cpu float32 eager"].result
    assert isinstance(skipped, Skipped) and skipped.message.startswith("not gated: ")
    assert skipped.message.endswith("(known: ties)")
    mixed = got["gradharness.c :: torch cpu float64 eager"]
    [failure] = mixed.result
    assert isinstance(failure, Failure) and failure.message == selection.describe(new)
    assert "(known: a known jvp gap)" in mixed.system_out
    # the default gate fails on every divergence, known or not
    got = cases_of(parsed(junit.render([known, new, also_known], META, gated=gate("diverge,nan,error"))))
    assert [outcomes(c) for c in got.values()] == [["Failure"], ["Failure"]]


def test_planted_run_maps_each_verdict(schema):
    text = junit.render(PLANTED, META, seconds={("c", "torch", "cpu", "float64", "eager", "default"): 1.25})
    schema.validate(text)
    xml = parsed(text)
    got = cases_of(xml)
    assert list(got) == ["gradharness.c :: torch cpu float64 eager", "gradharness.c :: torch cpu float32 eager",
                         "gradharness.c :: jax cpu float64 eager", "gradharness.c :: jax cpu float32 eager",
                         "gradharness.d :: tensorflow"]
    # worst first: the NaN's line is the message, every failing line is in the body
    first = got["gradharness.c :: torch cpu float64 eager"]
    [failure] = first.result
    nan, diverge = PLANTED[1], PLANTED[0]
    assert isinstance(failure, Failure) and failure.type == "nan"
    assert failure.message == selection.describe(nan)
    assert failure.text.splitlines() == [selection.describe(nan), selection.describe(diverge)]
    assert "worst at (0, 1): got -0.197092, expected -0.197036, cause ad-bug" in failure.text
    assert first.time == 1.25
    # a known divergence is still a failure, and says why it is known
    [known] = got["gradharness.c :: torch cpu float32 eager"].result
    assert isinstance(known, Failure) and known.message.endswith("(known: ties: each framework picks its own subgradient)")
    assert "pairwise torch vs jax float32 cpu" in known.message
    # an error and a divergence in one testcase: one <error>, one <failure>
    both = got["gradharness.c :: jax cpu float64 eager"]
    assert sorted(outcomes(both)) == ["Error", "Failure"]
    error = next(r for r in both.result if isinstance(r, Error))
    assert error.message == selection.describe(PLANTED[5])
    assert "second line of the message" in error.text and "File x, line 1\\x1b[0m" in error.text
    # all skipped: <skipped> with the first reason; a framework that could not run reads by its name
    assert isinstance(got["gradharness.c :: jax cpu float32 eager"].result[0], Skipped)
    [missing] = got["gradharness.d :: tensorflow"].result
    assert isinstance(missing, Skipped) and missing.message == "tensorflow is not installed"
    # the counts a consumer computes from the testcases are the ones written
    for suite in xml:
        written = (suite.tests, suite.failures, suite.errors, suite.skipped)
        suite.update_statistics()
        assert written == (suite.tests, suite.failures, suite.errors, suite.skipped)
    suites = {s.name: (s.tests, s.failures, s.errors, s.skipped) for s in xml}
    assert suites == {"c": (4, 3, 1, 1), "d": (1, 0, 0, 1)}
    assert (xml.tests, xml.failures, xml.errors) == (5, 3, 1)
    props = {p.name: p.value for p in next(iter(xml)).properties()}
    assert props["version.torch"] == "2.13.0" and props["version.jax"] == "0.10.2" and props["run_id"] == "r1"


def test_golden_run_as_junit(schema):
    run = runs.load(GOLDEN)
    text = junit.render(run.records, run.meta)
    schema.validate(text)
    xml = parsed(text)
    assert [s.name for s in xml] == ["crashes", "linear_mse", "op_max_ties", "op_relu"]
    assert (xml.tests, xml.failures, xml.errors) == (15, 2, 2)
    got = cases_of(xml)
    diverging = [r for r in run.records if r["verdict"] == "diverge"]
    for rec in diverging:
        [failure] = got[f"gradharness.{rec['case']} :: {rec['framework']} cpu {rec['dtype']} eager"].result
        assert failure.message == selection.describe(rec)
    crash = got["gradharness.crashes :: torch cpu float64 eager"]
    assert outcomes(crash) == ["Error"] and "Fatal Python error: Aborted" in crash.result[0].text
    # no time where no observation gave one
    assert all(c.time in (None, 0) for c in got.values())
    # a pure function of the records: their order does not matter
    assert junit.render(list(reversed(run.records)), run.meta) == text


def test_the_schema_rejects_what_junit_10_does_not_allow(schema):
    """The negative control: the validator does fail, e.g. on skipped at the root (not in junit-10)."""
    assert not schema.is_valid('<testsuites skipped="1"/>')
    assert not schema.is_valid('<testsuites><testsuite name="x"/></testsuites>')   # counts are required
    assert schema.is_valid('<testsuites><testsuite name="x" tests="0" failures="0" errors="0"/></testsuites>')


def test_report_writes_junit_xml(tmp_path):
    proc = harness("report", GOLDEN, "--out", tmp_path / "r", "--no-plots", "--junit-xml", tmp_path / "j" / "x.xml")
    assert proc.returncode == 0, proc.stderr
    assert parsed((tmp_path / "j" / "x.xml").read_text(encoding="utf-8")).failures == 2


@pytest.mark.parametrize("command", ["run", "merge", "report"])
def test_a_bad_junit_path_is_exit_2_and_nothing_written(command, tmp_path):
    afile = tmp_path / "a_file"
    afile.write_text("keep me")
    target = {"run": ("--cases", "linear_mse", "--timing", "off"), "merge": (tmp_path / "nowhere",),
              "report": (GOLDEN,)}[command]
    for bad, needle in ((tmp_path, "is a folder, not a file"), (afile / "x.xml", f"{afile} is a file"), ("", "empty")):
        proc = harness(command, *target, "--out", tmp_path / "out", "--junit-xml", bad)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: --junit-xml"), proc.stderr
        assert needle in lines[0]
    assert afile.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_an_unwritable_job_summary_is_a_warning(tmp_path, capsys):
    run = runs.load(GOLDEN)
    commands.append_job_summary(tmp_path, run.records, run.meta, environ={"GITHUB_STEP_SUMMARY": str(tmp_path)})
    assert "warning: cannot append the summary to GITHUB_STEP_SUMMARY" in capsys.readouterr().err
    commands.append_job_summary(tmp_path, run.records, run.meta, environ={})   # not on GitHub: nothing
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not FRAMEWORKS["torch"].installed(), reason="needs torch")
def test_run_writes_junit_and_the_job_summary_even_when_it_fails(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    out, xml_path = tmp_path / "run", tmp_path / "ci" / "junit.xml"
    env = harness_env(GITHUB_STEP_SUMMARY=str(summary))
    # --fail-on pass too: exit 1 whatever the checks say, to show the file is written at exit 1
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--cases", "linear_mse", "--frameworks", "torch",
                           "--dtypes", "float64", "--timing", "off", "--fail-on", "pass,diverge,nan,error",
                           "--junit-xml", str(xml_path),
                           "--out", str(out), "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    xml = parsed(xml_path.read_text(encoding="utf-8"))
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    checks = [r for r in records if r["check"] != "timing"]
    assert xml.tests == 1 and [s.name for s in xml] == ["linear_mse"]
    [case] = list(next(iter(xml)))
    assert (case.classname, case.name) == ("gradharness.linear_mse", "torch cpu float64 eager") and case.time > 0
    # failures and errors are what the gate fails on (a known upstream framework bug it lets pass)
    assert xml.errors == int(any(r["verdict"] == "error" and not r.get("upstream") for r in checks))
    assert xml.failures == int(any(r["verdict"] in ("diverge", "nan") and not r.get("upstream") for r in checks))
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("earlier step\n")                    # appended, not replaced
    meta = json.loads((out / "run.json").read_text())
    assert f"# gradharness report — {meta['run_id']}" in text and "## Summary" in text
    assert "in 1 case(s)" in text and f"Full report: `{out / 'report.md'}`" in text
    assert "## Divergences" not in text                         # the first screen only
    assert f"junit: {xml_path}" in proc.stdout
