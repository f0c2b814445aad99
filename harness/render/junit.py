"""A run's records as JUnit XML, the format every CI test reporter reads (GitHub Actions through a
JUnit action, GitLab's `artifacts: reports: junit:`, Jenkins' JUnit and xUnit plugins), so a
divergence shows up as a red test with its one-line description where CI shows failing tests.

Layout::

    <testsuites name="gradharness RUN_ID" tests= failures= errors= time=>
      <testsuite name="CASE" tests= failures= errors= skipped= time=>      one per case
        <properties>  run_id, seed, command, one `version.<framework>` each  </properties>
        <testcase classname="gradharness.CASE" name="FRAMEWORK DEVICE DTYPE MODE[ PRECISION]" time=>
          <failure message= type=>  every diverge / nan line of that testcase  </failure>
          <error message= type=>    every error line, with its message and traceback  </error>
          <skipped message=/>       only when all its records are skipped

One testcase per task: a case on one framework in one setting (harness.vocab.TASK_FIELDS); its
checks are that test's assertions. A pairwise, forward or layer record (it has an
`other_framework`) belongs to the testcase of its `framework` side. `timing` records are
measurements, not assertions: they make no testcase and fail none. The file agrees with the
exit code: a failing check is a <failure> or <error> where the run's `--fail-on` fails on it
(``gated``); one it lets pass (a known divergence under `--fail-on new`, a known upstream
framework bug) is listed in the testcase's <system-out>, its line ending ``(known: REASON)``, and a
testcase with nothing else failing is <skipped> saying so, as pytest writes an xfail.

One <testsuite> per case, not per framework: a case is what a user writes and what the report
is organised by, so a reporter's table of suites reads as the report's Cases section, one row
per case with its counts; shards are whole cases, so a suite is never split across shard jobs;
and a per-framework suite would count a pairwise divergence (two frameworks) under one of them
only. Jenkins builds its tree from `classname` (package `gradharness`, class CASE), GitLab and
the GitHub actions list `classname` and `name`, so every UI groups by case the same way.

The root carries tests, failures, errors and time, the suites also skipped: the Jenkins/Ant
schema (xunit-plugin's junit-10.xsd) has no `skipped` on <testsuites>, and the file validates
against it (tests/data/junit-10.xsd). Counts are of result elements, as junitparser and the
schema's consumers count them: a testcase with divergences and errors has one <failure> and one
<error>. Times are the tasks' own seconds (observations.jsonl, `task_seconds`) where known, else
left out. Like the report, a pure function of its inputs: stable ordering, no clock.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict

from harness.render.selection import describe, frameworks_of, sort_key
from harness.vocab import FAILING, TASK_FIELDS, task_key

#: what the classname of a testcase starts with (Jenkins' package)
PACKAGE = "gradharness"
#: characters XML 1.0 cannot hold, even escaped (control characters from a traceback, e.g. ANSI colours)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def task_seconds(observations) -> dict:
    """task_key -> the seconds its worker spent on it, from observations.jsonl rows."""
    seconds = {}
    for row in observations:
        value = row.get("seconds")
        if isinstance(value, (int, float)) and value >= 0:
            seconds[task_key(row)] = float(value)
    return seconds


def render(records, meta: dict, seconds: dict | None = None, gated=None) -> str:
    """JUnit XML text for ``records`` (results.jsonl) and ``meta`` (run.json); ``seconds``:
    task_seconds(observations), for the testcases' times; ``gated``: record -> does the run's gate
    fail on it (default: every diverge, nan and error). Deterministic."""
    records = [r for r in records if r.get("check") != "timing"]
    gated = gated or (lambda r: r["verdict"] in FAILING)
    seconds = seconds or {}
    groups = defaultdict(list)
    for r in records:
        groups[task_key(r)].append(r)
    order = _orders(records, meta)
    by_case = defaultdict(list)
    for key in sorted(groups, key=lambda k: tuple(_rank(v, o) for v, o in zip(k, order))):
        by_case[key[0]].append(key)
    root = ET.Element("testsuites", name=f"{PACKAGE} {meta.get('run_id') or ''}".strip())
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    total_time = None
    properties = _properties(records, meta)
    for case in sorted(by_case, key=str):
        suite = ET.SubElement(root, "testsuite", name=_text(case))
        props = ET.SubElement(suite, "properties")
        for name, value in properties:
            ET.SubElement(props, "property", name=name, value=value)
        counts = dict.fromkeys(totals, 0)
        suite_time = None
        for key in by_case[case]:
            outcome = _testcase(suite, key, groups[key], seconds.get(key), gated)
            counts["tests"] += 1
            for kind in outcome:
                counts[kind] += 1
            if key in seconds:
                suite_time = (suite_time or 0.0) + seconds[key]
        _counts(suite, counts, suite_time, skipped=True)
        totals = {k: totals[k] + counts[k] for k in totals}
        if suite_time is not None:
            total_time = (total_time or 0.0) + suite_time
    _counts(root, totals, total_time, skipped=False)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _orders(records, meta) -> list:
    """Per TASK_FIELDS, the order values sort in: the run's own (frameworks, devices, dtypes, modes,
    precisions as asked), anything else after it by name."""
    named = {"framework": frameworks_of(records, meta), "device": meta.get("devices") or [],
             "dtype": meta.get("dtypes") or [], "mode": meta.get("modes") or [],
             "precision": meta.get("precisions") or []}
    return [list(named.get(field, [])) for field in TASK_FIELDS]


def _rank(value, order) -> tuple:
    return (order.index(value) if value in order else len(order), "" if value is None else str(value))


def _testcase(suite, key, records, seconds, gated) -> list:
    """One <testcase> for a task's records; returns the outcomes counted: failures, errors, skipped."""
    case, framework, device, dtype, mode, precision = key
    setting = [v for v in (device, dtype, mode) if v not in (None, "-")]
    if precision not in (None, "-", "default"):
        setting.append(precision)
    test = ET.SubElement(suite, "testcase", classname=_text(f"{PACKAGE}.{case}"),
                         name=_text(" ".join([str(framework)] + [str(v) for v in setting])))
    if seconds is not None:
        test.set("time", _seconds(seconds))
    records = sorted(records, key=sort_key)
    bad = [r for r in records if r["verdict"] in FAILING]
    failing = [r for r in bad if r["verdict"] != "error" and gated(r)]
    errors = [r for r in bad if r["verdict"] == "error" and gated(r)]
    excused = [r for r in bad if not gated(r)]
    outcome = []
    if failing:
        _result(test, "failure", failing[0]["verdict"], [_line(r) for r in failing])
        outcome.append("failures")
    if errors:
        _result(test, "error", "error", [_error_text(r) for r in errors])
        outcome.append("errors")
    if all(r["verdict"] == "skipped" for r in records):
        reason = (records[0].get("message") or "").strip().splitlines()
        ET.SubElement(test, "skipped", message=_text(reason[0] if reason else "skipped"))
        outcome.append("skipped")
    elif excused and not outcome:
        ET.SubElement(test, "skipped", message=_text(f"not gated: {' '.join(_line(excused[0]).split())}"),
                      type="known")
        outcome.append("skipped")
    if excused:
        ET.SubElement(test, "system-out").text = _text("\n".join(
            ["failing checks the gate (--fail-on) lets pass:"] + [_line(r) for r in excused]))
    return outcome


def _result(test, tag, kind, texts) -> None:
    """<failure> or <error>: the first (worst) line as its message, every one in its body."""
    element = ET.SubElement(test, tag, message=_text(" ".join(texts[0].splitlines()[0].split())), type=kind)
    element.text = _text("\n".join(texts))


def _line(rec) -> str:
    """The report's one-line description of a record, a known one marked with its reason."""
    text = describe(rec)
    return f"{text} (known: {rec['known']})" if rec.get("known") else text


def _error_text(rec) -> str:
    """An error's line, then the rest of its message and its traceback, where it has them."""
    parts = [_line(rec)]
    rest = (rec.get("message") or "").strip().splitlines()[1:]
    if rest:
        parts.append("\n".join(rest))
    if rec.get("traceback"):
        parts.append(str(rec["traceback"]).rstrip())
    return "\n".join(parts)


def _properties(records, meta) -> list:
    """(name, value) of every suite's <properties>: the run's identity and the framework versions,
    from run.json (else the records)."""
    pairs = [("run_id", meta.get("run_id")), ("seed", meta.get("seed")), ("command", meta.get("command"))]
    versions = meta.get("frameworks") or {}
    for fw in frameworks_of(records, meta):
        version = versions.get(fw) or next((r.get("framework_version") for r in records
                                            if r.get("framework") == fw and r.get("framework_version")), None)
        pairs.append((f"version.{fw}", version))
    return [(name, _text(value)) for name, value in pairs if value is not None]


def _counts(element, counts, seconds, skipped: bool) -> None:
    for name in ("tests", "failures", "errors") + (("skipped",) if skipped else ()):
        element.set(name, str(counts[name]))
    if seconds is not None:
        element.set("time", _seconds(seconds))


def _seconds(value) -> str:
    return f"{float(value):.3f}"


def _text(value) -> str:
    """``value`` as text XML can hold: a character it cannot becomes its \\x escape."""
    return _NOT_XML.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))


__all__ = ["PACKAGE", "render", "task_seconds"]
