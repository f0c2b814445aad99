"""`harness fuzz`: generate programs for a time budget, filter, confirm and minimise what diverges.

One loop of rounds, each a few batched runs (harness.fuzz.batch), so worker processes start once
per step rather than once per program:

1. a round's programs run in packs (harness.fuzz.program.pack_case: several programs as one case
   over disjoint leaves) on every framework, device, dtype and mode asked (on a GPU the reference
   check holds each gradient against the framework's CPU float64 one: CPU vs GPU);
2. each failing record is triaged (harness.fuzz.triage): precision differences are dropped,
   conventions, shared NaN and errors are kept apart, the rest make their member a suspect (a
   record of the whole pack, ``*``, makes every member one); a suspect whose check, frameworks and
   ops an earlier finding already covers is counted as its duplicate;
3. suspects are confirmed alone, in one run restricted to their frameworks and settings: at their
   point (a divergence no member shows alone is dropped), and at two perturbed points (one that
   vanishes at both sits on a non-differentiable point: a convention, kept apart); a finding is
   shown at the perturbed point that reproduces it;
4. findings are minimised together (harness.fuzz.shrink): each step runs the smallest reductions
   of every open finding at their point and at a perturbed copy, and keeps for each the smallest
   that still shows the same divergence at both.

A round is sized to half the time left at the last round's measured cost, and every batch's
workers are limited to the time left, so the budget holds. Ctrl-C stops at once and keeps every
finding so far, minimised as far as it got.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.fuzz import batch as batches
from harness.fuzz import extra_ops
from harness.fuzz.generate import Generator, invalid
from harness.fuzz.program import Point, Program, member_of
from harness.fuzz.shrink import reductions, smaller
from harness.fuzz.triage import Verdict, judge, misused_semantics, signature, triage
from harness.run.local import Interrupted
from harness.vocab import DIVERGING

#: reductions of one finding tried per step, smallest first (each at its point and a perturbed one)
REDUCTIONS_PER_STEP = 8
#: seconds a batch may run past the budget: a worker's start and its last task's answer
GRACE = 15.0


@dataclass
class FuzzSettings:
    budget: float                    # seconds
    frameworks: list
    dtypes: list
    modes: list
    out: Path
    devices: list = field(default_factory=lambda: ["cpu"])
    seed: int = 0
    jobs: int = 2
    round_size: int = 48
    pack_size: int = 8
    max_ops: int = 6
    ops: list | None = None
    max_steps: int = 8
    quiet: bool = False
    extra_ops: str | None = None     # a user's ops file (harness.fuzz.extra_ops)


@dataclass
class Finding:
    """A confirmed divergence: the program and point that show it (smallest so far), the failing
    record there, and where it came from."""
    id: str
    signature: tuple
    label: str
    program: Program
    point: Point
    record: dict
    batch: object                    # the Batch whose run holds the record's arrays
    case: str                        # its name in that batch
    original: tuple                  # the program's size when found
    steps: int = 0
    minimised: bool = False
    duplicates: int = 0
    offset: int = 0                  # reductions of the current program already tried
    untried: int = 0
    wrt: tuple = ()                  # the leaves differentiated (all, unless a traced case's)

    @property
    def ops(self) -> tuple:
        return tuple(sorted(set(self.program.ops())))

    @property
    def key(self) -> tuple:
        """What deduplicates findings: the ops, the check, the frameworks, the cause, the device (a
        GPU kernel's divergence is not the CPU's, whatever the ops share)."""
        return (self.ops, self.signature[0], self.signature[1], self.signature[2], self.label, self.signature[5])


@dataclass
class Observed:
    """A failing record the filters kept apart or dropped, with the program it came from."""
    kind: str
    label: str
    record: dict
    program: Program
    why: str = ""


@dataclass
class Outcome:
    settings: FuzzSettings
    findings: list = field(default_factory=list)
    observed: list = field(default_factory=list)
    programs: int = 0
    rounds: int = 0
    discarded: Counter = field(default_factory=Counter)
    not_run: Counter = field(default_factory=Counter)   # (framework, device, reason) -> tasks skipped
    seconds: float = 0.0
    interrupted: bool = False
    signal: int = 2                  # the signal that interrupted it (SIGINT, SIGTERM, SIGHUP)


def perturbed(program: Program, point: Point, rng, scale: float = 1e-3, numpy=None):
    """The point moved a little off any tie, kink or exact zero (relative where the value is large);
    None where the move makes the program invalid."""
    params = {k: v + scale * rng.standard_normal(v.shape) * np.maximum(np.abs(v), 1e-2) for k, v in point.params.items()}
    moved = Point(params, point.weights, point.styles)
    return None if invalid(program, moved, *([numpy] if numpy is not None else [])) else moved


class Fuzzer:
    def __init__(self, settings: FuzzSettings, progress=None):
        self.s = settings
        self.progress = progress
        self.rng = np.random.default_rng(settings.seed)
        self.extras = extra_ops.load(settings.extra_ops) if settings.extra_ops else {}
        self.generator = Generator(settings.ops, settings.max_ops, self.extras)
        self.numpy = self.generator.numpy
        self.outcome = Outcome(settings)
        self.start = time.monotonic()
        self.deadline = self.start + settings.budget
        self.batch_count = 0
        self.finding_count = 0
        self.per_program = None      # seconds a round's screen took per program (the last round's)

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> Outcome:
        try:
            while self._room_for_a_round():
                self._round()
        except (KeyboardInterrupt, Interrupted) as exc:
            self.outcome.interrupted = True
            self.outcome.signal = getattr(exc, "signum", 2)
        self.outcome.seconds = time.monotonic() - self.start
        self.outcome.discarded = self.generator.stats.discarded
        return self.outcome

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def _room_for_a_round(self) -> bool:
        return self.left() > (0 if self.per_program is None else min(self.s.pack_size, 6) * self.per_program * 2)

    def _round_size(self) -> int:
        """The first round small (to measure), then what half the time left allows (the rest is for
        confirming and minimising), at most --round-size."""
        if self.per_program is None:
            return min(self.s.round_size, 2 * self.s.pack_size)
        fits = int(0.5 * self.left() / self.per_program)
        return max(min(self.s.round_size, fits), min(self.s.pack_size, self.s.round_size))

    def _tell(self, stage: str) -> None:
        if self.progress is not None:
            o = self.outcome
            self.progress(stage, programs=o.programs, findings=len(o.findings), left=max(self.left(), 0.0))

    def _batch(self, label: str, items: list, frameworks, dtypes, modes, devices):
        self.batch_count += 1
        folder = Path(self.s.out) / "batches" / f"{self.batch_count:03d}-{label}"
        # a worker's limit counts from its own start: workers (one per framework and device) run in
        # waves of --jobs
        # (the plan adds the CPU float64 reference to any device list)
        waves = -(-len(set(frameworks)) * len(set(devices) | {"cpu"}) // self.s.jobs)
        return batches.run(folder, items, sorted(frameworks), _ordered(dtypes), _ordered(modes), seed=self.s.seed,
                           jobs=self.s.jobs, within=max(self.left(), 0.0) / waves + GRACE, extra_ops=self.s.extra_ops,
                           devices=_ordered(devices))

    def _round(self) -> None:
        k = self.outcome.rounds
        made, size = [], self._round_size()
        while len(made) < size:
            program = self.generator.program(self.rng)
            if program is not None:
                made.append(program)
        per = self.s.pack_size
        packs = [batches.Item(f"r{k}k{j}", None, None, members=tuple(made[i:i + per]))
                 for j, i in enumerate(range(0, len(made), per))]
        self._tell(f"round {k + 1}: running {len(made)} programs in {len(packs)} packs")
        began = time.monotonic()
        result = self._batch(f"round-{k}", packs, self.s.frameworks, self.s.dtypes, self.s.modes, self.s.devices)
        self.per_program = (time.monotonic() - began) / len(made)
        self.outcome.rounds += 1
        self.outcome.programs += len(made)
        by_name = {p.name: p for p in packs}
        for r in result.records:   # a framework that cannot run on a device (a CPU-only build): said, not hidden
            if r["check"] == "run" and r["verdict"] == "skipped":
                self.outcome.not_run[(r["framework"], r.get("device") or "cpu", r.get("message") or "")] += 1
        suspects: dict = {}       # (pack, member) -> {(signature, label)}
        for record, verdict in triage(result.records):
            pack = by_name.get(record["case"])
            if pack is None:
                continue
            member = member_of(record["param"])
            record = dict(record, param=member[1]) if member else record
            if verdict.kind != "candidate":
                program = pack.members[member[0]][0] if member else None
                self.outcome.observed.append(Observed(verdict.kind, verdict.label, record, program, verdict.why))
                continue
            for i in ([member[0]] if member else range(len(pack.members))):
                known = self._covered(signature(record), verdict.label, pack.members[i][0])
                if known is not None:
                    known.duplicates += 1
                    continue
                suspects.setdefault((pack.name, i), set()).add((signature(record), verdict.label, record["check"],
                                                                 pack.name))
        picked = self._one_per_signature(suspects, by_name)
        self._tell(f"round {k + 1}: confirming {len(picked)} program(s) alone")
        self._minimise(self._confirm(picked))

    def _covered(self, sig: tuple, label: str, program: Program):
        """An earlier finding of this check, frameworks and device whose ops the program all has."""
        ops = set(program.ops())
        for f in self.outcome.findings:
            same = f.signature[:3] == sig[:3] and f.signature[5] == sig[5]
            if same and f.label == label and set(f.ops) <= ops:
                return f
        return None

    @staticmethod
    def _one_per_signature(suspects: dict, packs: dict) -> list:
        """(program, point, {(signature, label, check)}) to run alone: of the members that show the same
        divergence with the same ops, the smallest (the others are likely it again)."""
        best: dict = {}
        for (pack, i), sigs in suspects.items():
            program, point = packs[pack].members[i]
            for sig in sigs:
                key = (sig, tuple(sorted(set(program.ops()))))
                if key not in best or program.size() < best[key][0].size():
                    best[key] = (program, point)
        merged: dict = {}
        for (sig, _), (program, point) in best.items():
            merged.setdefault(id(program), (program, point, set()))[2].add(sig)
        return list(merged.values())

    # ---- confirmation -------------------------------------------------------------------
    def _confirm(self, picked: list) -> list:
        """Each suspect alone at its point and at two perturbed points: a finding where it shows the
        divergence at its point and at a perturbed one; kept apart where it does not recur alone
        (nondeterministic, or only inside its pack) or vanishes when perturbed (a kink or tie)."""
        if not picked:
            return []
        items, plans = [], []
        for n, (program, point, sigs) in enumerate(picked):
            alone = batches.Item(f"c{n}", program, point)
            moved = [p for p in (perturbed(program, point, self.rng, numpy=self.numpy) for _ in range(2))
                     if p is not None]
            shifted = [batches.Item(f"c{n}p{j}", program, p) for j, p in enumerate(moved)]
            items += [alone, *shifted]
            plans.append((alone, shifted, sigs))
        records = [{"framework": s[0][1], "other_framework": s[0][2], "dtype": s[0][3], "mode": s[0][4],
                    "device": s[0][5]} for _, _, sigs in plans for s in sigs]
        result = self._batch("confirm", items, *_settings_of(records))
        confirmed, alone_too, screened = [], set(), {}
        for alone, shifted, sigs in plans:
            for sig, label, check, pack in sorted(sigs, key=str):
                screened[(pack, sig)] = check
                rec = _matching(result, alone.name, sig, None)
                if rec is None:
                    continue
                alone_too.add((pack, sig))
                label = judge(rec, result.records, result.context).label
                semantics = misused_semantics(alone.program)
                if semantics:
                    self.outcome.observed.append(Observed("apart", "default-semantics", rec, alone.program, semantics))
                    continue
                if shifted and not any(_shows(result, s.name, sig, None) for s in shifted):
                    self.outcome.observed.append(Observed(
                        "apart", "nondiff-convention", rec, alone.program,
                        "vanishes at perturbed points: the point is (near) a non-differentiable one"))
                    continue
                known = self._covered(sig, label, alone.program)
                if known is not None:
                    known.duplicates += 1
                    continue
                # shown at a perturbed point where one shows it: away from any tie or kink of the edge point
                near = next((s for s in shifted if _shows(result, s.name, sig, None)), alone)
                finding = Finding(f"F{self.finding_count + 1:03d}", sig, label, near.program, near.point,
                                  _matching(result, near.name, sig, None), result, near.name, near.program.size())
                self.finding_count += 1
                self.outcome.findings.append(finding)
                confirmed.append(finding)
        for (pack, sig), check in sorted(screened.items(), key=str):
            if (pack, sig) not in alone_too:   # no member alone shows what the pack showed
                stub = {"case": pack, "check": check, "framework": sig[1], "other_framework": sig[2],
                        "dtype": sig[3], "mode": sig[4], "device": sig[5], "param": "*", "verdict": "diverge",
                        "message": ""}
                self.outcome.observed.append(Observed("dropped", "not-alone", stub, None,
                                                      "no member of the pack shows it alone (nondeterministic)"))
        return confirmed

    # ---- minimisation -------------------------------------------------------------------
    def _minimise(self, findings: list) -> None:
        open_ = [f for f in findings if not f.minimised]
        while open_ and self.left() > 0:
            items, plans = [], []
            for n, f in enumerate(open_):
                same = np.random.default_rng([self.s.seed, int(f.id[1:]), f.steps])   # the same list per step
                tried = sorted(reductions(f.program, f.point, same, self.numpy), key=lambda r: r[0].size())
                f.untried = max(len(tried) - f.offset - REDUCTIONS_PER_STEP, 0)
                for j, (program, point) in enumerate(tried[f.offset:f.offset + REDUCTIONS_PER_STEP]):
                    if misused_semantics(program):   # a reduction that leaves eigh unsymmetrised: another class
                        continue
                    moved = perturbed(program, point, self.rng, numpy=self.numpy)
                    if moved is None:
                        continue
                    at, near = batches.Item(f"m{n}r{j}", program, point), batches.Item(f"m{n}r{j}p", program, moved)
                    items += [at, near]
                    plans.append((f, at, near))
            if not items:
                break
            self._tell(f"minimising {len(open_)} finding(s): {len(plans)} reductions")
            result = self._batch("minimise", items, *_settings_of([f.record for f in open_]))
            best = {}
            for f, at, near in plans:
                if _shows(result, at.name, f.signature, f.label) and _shows(result, near.name, f.signature, None):
                    if f.id not in best or smaller((at.program, at.point), (best[f.id].program, best[f.id].point)):
                        best[f.id] = at
            still = []
            for f in open_:
                chosen = best.get(f.id)
                if chosen is None:          # none of these shows it: the next reductions, or done
                    f.offset += REDUCTIONS_PER_STEP
                    if f.untried:
                        still.append(f)
                    else:
                        f.minimised = True
                    continue
                f.program, f.point, f.steps, f.offset = chosen.program, chosen.point, f.steps + 1, 0
                f.record, f.batch, f.case = _matching(result, chosen.name, f.signature, f.label), result, chosen.name
                if f.steps >= self.s.max_steps:
                    f.minimised = True
                else:
                    still.append(f)
            open_ = still
        self._dedupe()

    def _dedupe(self) -> None:
        """One finding per key (ops, check, frameworks, cause): the smallest."""
        kept = {}
        for f in self.outcome.findings:
            other = kept.get(f.key)
            if other is None or smaller((f.program, f.point), (other.program, other.point)):
                if other is not None:
                    f.duplicates += other.duplicates + 1
                kept[f.key] = f
            else:
                other.duplicates += f.duplicates + 1
        self.outcome.findings = list(kept.values())


def _ordered(values) -> list:
    """float64 / eager / cpu first: the reference settings."""
    rank = {"float64": 0, "eager": 0, "cpu": 0}
    return sorted(set(values), key=lambda v: (rank.get(v, 1), v))


def _settings_of(records: list) -> tuple:
    """The frameworks, dtypes, modes and devices that reproduce these records: theirs, plus the
    float64 eager CPU reference each check is made against."""
    frameworks = {r["framework"] for r in records} | {r["other_framework"] for r in records if r.get("other_framework")}
    dtypes = {r["dtype"] for r in records} | {"float64"}
    modes = {r["mode"] for r in records} | {"eager"}
    devices = {r.get("device") or "cpu" for r in records} | {"cpu"}
    return frameworks, dtypes, modes, devices


def _matching(result, name: str, sig: tuple, label) -> dict | None:
    """The worst record of case ``name`` in ``result`` with this signature that is still a candidate
    (of the same label, unless ``label`` is None), or None."""
    rows = [r for r in result.failing(name) if r["verdict"] in DIVERGING and signature(r) == sig]
    fits = []
    for r in rows:
        v: Verdict = judge(r, result.records, result.context)
        if v.kind == "candidate" and (label is None or v.label == label):
            fits.append(r)
    return max(fits, key=lambda r: r.get("max_rel_err") or 0.0) if fits else None


def _shows(result, name: str, sig: tuple, label) -> bool:
    return _matching(result, name, sig, label) is not None


__all__ = ["Finding", "FuzzSettings", "Fuzzer", "Observed", "Outcome", "perturbed"]
