"""Planning: case x framework x device x dtype x mode x precision -> tasks, grouped by worker.

Every (case, framework) also gets its *reference* task, float64 on CPU, eager, default
precision, which carries the finite-difference check: each other task of that framework is
held against it, so it is planned even when the user's --dtypes or --devices leave it out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.define.seeding import case_rng

REFERENCE = {"device": "cpu", "dtype": "float64", "mode": "eager", "precision": "default"}


def is_reference(task) -> bool:
    """Is this (a task, or anything with its fields) the reference setting?"""
    return all(getattr(task, k) == v for k, v in REFERENCE.items())


@dataclass
class Task:
    case: str
    source: str
    framework: str
    device: str
    dtype: str
    mode: str
    precision: str
    seed: int
    fd: bool = False
    fd_mode: str = "auto"
    timing: str | None = None

    @property
    def id(self) -> str:
        return "/".join((self.case, self.framework, self.device, self.dtype, self.mode, self.precision))

    @property
    def arrays_name(self) -> str:
        """The file name of this task's gradient arrays in a run's arrays/ folder."""
        return self.id.replace("/", "__") + ".npz"

    @property
    def group(self) -> tuple:
        """Tasks that share one worker process: the precision policy is process-wide."""
        return (self.framework, self.device, self.precision)

    @property
    def is_reference(self) -> bool:
        return is_reference(self)

    @property
    def settings(self) -> dict:
        """What this task was asked to check (kept with its observation: harness.judge.coverage)."""
        return {"fd": self.fd, "fd_mode": self.fd_mode, "timing": self.timing}

    def message(self, arrays_path: str) -> dict:
        return {"id": self.id, "case": self.case, "source": self.source, "framework": self.framework,
                "device": self.device, "dtype": self.dtype, "mode": self.mode,
                "precision": self.precision, "seed": self.seed, "fd": self.fd,
                "fd_mode": self.fd_mode, "timing": self.timing, "arrays": arrays_path}


@dataclass
class Plan:
    tasks: list = field(default_factory=list)
    #: (case, framework, reason) that will be reported as skipped without running anything
    skipped: list = field(default_factory=list)

    def groups(self) -> dict:
        out: dict = {}
        for task in self.tasks:
            out.setdefault(task.group, []).append(task)
        return out


def make_plan(cases, frameworks, devices, dtypes, modes, precisions, seed, fd_mode="auto", timing=None) -> Plan:
    plan = Plan()
    for case in cases:
        for fw in frameworks:
            if fw not in case.frameworks([fw]):
                plan.skipped.append((case.name, fw, f"case has no {fw} implementation"))
                continue
            wanted = []
            for device in devices:
                for dtype in dtypes:
                    for mode in modes:
                        for precision in precisions:
                            # a precision policy only changes float32 work on accelerators
                            if precision != "default" and (device == "cpu" or dtype != "float32"):
                                continue
                            wanted.append((device, dtype, mode, precision))
            reference = tuple(REFERENCE[k] for k in ("device", "dtype", "mode", "precision"))
            if reference not in wanted:
                wanted.insert(0, reference)
            for device, dtype, mode, precision in wanted:
                task = Task(case.name, case.source, fw, device, dtype, mode, precision, seed,
                            fd_mode=fd_mode, timing=timing)
                task.fd = task.is_reference
                plan.tasks.append(task)
    return plan


# ---- cost estimates and sharding --------------------------------------------------------------------
#: relative cost of one task beyond its fixed overhead: timing, and finite differences (which grow
#: with the number of differentiated elements until `auto` switches to directional probes)
TASK_COST = 1.0
TIMING_COST = {None: 0.0, "quick": 1.0, "full": 8.0}
FD_COST_PER_ELEMENT = 1.0 / 2000
FD_COST_CAP = 10.0


def case_elements(case, seed: int = 0) -> int:
    """How many elements a case differentiates (its make() is run once, in numpy); 1 when make
    fails here (the failure is reported by the worker that runs it)."""
    try:
        params, _inputs, wrt = case.build(case_rng(seed, case.name))
        return max(1, int(sum(params[w].size for w in wrt)))
    except Exception:  # noqa: BLE001 - an estimate only
        return 1


def task_cost(task: Task, elements: int, second_order: bool = False) -> float:
    """Estimated cost of one task in arbitrary units (progress ETA weights, shard balance);
    ``second_order``: the case is tagged twice-differentiable (its reference task also checks HVPs)."""
    cost = TASK_COST + TIMING_COST.get(task.timing, 1.0)
    if task.fd:
        cost += min(FD_COST_CAP, elements * FD_COST_PER_ELEMENT) * (2.0 if second_order else 1.0)
    if task.mode == "compiled":
        cost += 2.0
    return cost


def parse_shard(text: str) -> tuple:
    """'K/N' -> (K, N), 1 <= K <= N; ValueError otherwise."""
    try:
        k, n = (int(p) for p in text.split("/"))
    except (ValueError, AttributeError):
        raise ValueError(f"--shard {text!r}: give K/N, e.g. 1/4") from None
    if n < 1 or not 1 <= k <= n:
        raise ValueError(f"--shard {text!r}: K must be between 1 and N")
    return k, n


def shard_cases(cases, index: int, count: int, plan_args: dict) -> tuple:
    """The cases of shard ``index`` (1-based) of ``count``, and every case's shard.

    Whole cases go to one shard: a case's reference task and its pairwise checks need all of its
    tasks together. Assignment is greedy by estimated cost (largest first onto the least-loaded
    shard, ties by name and shard number), so it is balanced, and it depends only on the set of
    cases and the settings, never on the order they were given in: every shard of a CI matrix
    computes the same assignment independently. ``plan_args`` are make_plan's keyword arguments
    (frameworks, devices, dtypes, modes, precisions, seed, fd_mode, timing).
    """
    costs = {}
    for case in cases:
        elements = case_elements(case, plan_args.get("seed", 0))
        tasks = make_plan([case], **plan_args).tasks
        second = "twice-differentiable" in case.tags
        costs[case.name] = sum(task_cost(t, elements, second) for t in tasks) or TASK_COST
    loads = [0.0] * count
    owner = {}
    for case in sorted(cases, key=lambda c: (-costs[c.name], c.name)):
        k = min(range(count), key=lambda i: (loads[i], i))
        owner[case.name] = k + 1
        loads[k] += costs[case.name]
    return [c for c in cases if owner[c.name] == index], owner, loads


__all__ = ["FD_COST_CAP", "FD_COST_PER_ELEMENT", "REFERENCE", "TASK_COST", "TIMING_COST", "case_elements",
           "is_reference", "make_plan", "parse_shard", "Plan", "shard_cases", "Task", "task_cost"]
