"""The completeness invariant: a run's records cover exactly the checks its observations imply.

Derived from the observation rows and the cases alone, independently of how harness/judge/verdicts.py builds
its records, so a check that was quietly dropped (a `continue`, a missing branch, a record lost
in a merge) shows up as a gap. A gap becomes an `error` record naming the check, which fails
the run: a gate must never pass because a comparison was not made.

What each observation implies (param: every canonical parameter of the task):
  a task that did not run      run
  every task that ran          determinism, jvp, timing forward and forward+backward (when timed)
  the reference task           fd per param; complex per param (--fd complex); hvp per method and
                               param (cases tagged twice-differentiable)
  every other task             reference per param
  a compiled task              compiled per param (when its eager twin was planned)
  two frameworks, one setting  pairwise per param and forward (when at least one of them ran)
A record with param `*` (a check made over all parameters at once, or one that could not be
made, with its reason) covers its check for every parameter, and for every method without one.
"""
from __future__ import annotations

from itertools import combinations

from harness.plan.tasks import is_reference
from harness.vocab import (HVP_METHODS, RECORD_FIELDS, SECOND_ORDER_TAG, TASK_FIELDS, TIMING_PHASES, record_key,
                           task_key)


class _Row:
    def __init__(self, row: dict):
        self.row = row
        for k in TASK_FIELDS:
            setattr(self, k, row.get(k))

    @property
    def ok(self) -> bool:
        return self.row.get("status") == "ok"

    @property
    def params(self) -> list:
        return list(self.row.get("params") or {})

    def planned(self, what: str):
        """A task setting (fd, fd_mode, timing): as planned where the row carries its task."""
        task = self.row.get("task")
        if isinstance(task, dict):
            return task.get(what)
        return {"fd": bool(self.row.get("fd")), "fd_mode": (self.row.get("fd") or {}).get("mode"),
                "timing": self.row.get("timing")}[what]

    def key(self, check, param="*", method=None, other=None) -> tuple:
        return (self.case, self.framework, self.device, self.dtype, self.mode, self.precision, check, param,
                method, other)


def implied(rows: list, cases: dict) -> list:
    """Every check key the observation ``rows`` imply, in a deterministic order."""
    rows = [_Row(r) for r in rows]
    by_setting = {task_key(r.row): r for r in rows}
    keys = []
    for r in rows:
        if not r.ok:
            keys.append(r.key("run"))
            continue
        keys += [r.key("determinism"), r.key("jvp")]
        if r.planned("timing"):
            keys += [r.key("timing", phase) for phase in TIMING_PHASES]
        if is_reference(r):
            if r.planned("fd"):
                keys += [r.key("fd", p) for p in r.params]
                if r.planned("fd_mode") == "complex":
                    keys += [r.key("complex", p) for p in r.params]
                case = cases.get(r.case)
                if (SECOND_ORDER_TAG in case.tags) if case is not None else "hvp" in r.row:
                    keys += [r.key("hvp", p, m) for m in HVP_METHODS for p in r.params]
        else:
            keys += [r.key("reference", p) for p in r.params]
        if r.mode == "compiled" and task_key({**r.row, "mode": "eager"}) in by_setting:
            keys += [r.key("compiled", p) for p in r.params]
    groups: dict = {}
    for r in rows:
        groups.setdefault(task_key(r.row, drop=("framework",)), []).append(r)
    for members in groups.values():
        for a, b in combinations(sorted(members, key=lambda r: r.framework), 2):
            if a.ok or b.ok:
                params = list(dict.fromkeys((a.params if a.ok else []) + (b.params if b.ok else [])))
                keys += [a.key("pairwise", p, other=b.framework) for p in params]
                keys.append(a.key("forward", other=b.framework))
    return keys


def _covers(k: tuple, have: set) -> bool:
    star = k[:7] + ("*",) + k[8:]
    return k in have or star in have or star[:8] + (None,) + star[9:] in have


def gaps(records: list, rows: list, cases: dict) -> list:
    """The implied check keys no record covers."""
    have = {record_key(r) for r in records}
    return [k for k in implied(rows, cases) if not _covers(k, have)]


def extras(records: list, rows: list, cases: dict) -> list:
    """Records of checks the observations do not imply (records of tasks not run, and of cases
    with no implementation, are outside this: they have no observation)."""
    want = set(implied(rows, cases))
    wanted_checks = {k[:7] + k[8:] for k in want} | {k[:7] + (None,) + k[9:] for k in want}
    observed = {(r.get("case"), r.get("framework"), r.get("device"), r.get("dtype"), r.get("mode"),
                 r.get("precision")) for r in rows}
    out = []
    for r in records:
        k = record_key(r)
        if k[:6] not in observed:
            continue
        if k in want or (k[7] == "*" and (k[:7] + k[8:] in wanted_checks)):
            continue
        out.append(k)
    return out


def gap_records(records: list, rows: list, cases: dict) -> list:
    """One `error` record per gap: the run fails rather than pass on a check never made."""
    out = []
    for k in gaps(records, rows, cases):
        rec = dict(zip(RECORD_FIELDS, k))
        rec.update(framework_version=None, verdict="error", cause=None,
                   message=f"planned check not recorded: {k[6]} of {k[7]!r} has no record "
                           "(a gradharness bug: please report it with this run's observations.jsonl)")
        out.append({f: v for f, v in rec.items() if v is not None or f in RECORD_FIELDS[:8]})
    return out


__all__ = ["extras", "gap_records", "gaps", "implied"]
