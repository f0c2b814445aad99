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
#: a task's cost by framework, relative to torch's: measured over `run --all` (eager, 2-core CPU,
#: cold caches): torch 0.13-0.20 s, TensorFlow 0.22-0.48 s, JAX 0.73-1.3 s a task (eager JAX compiles
#: every primitive for every shape with XLA), the upper figures with two workers at once. Only a
#: first guess: a run balances its chunks on the seconds measured last time (harness.run.history)
FRAMEWORK_COST = {"torch": 1.0, "tensorflow": 2.0, "jax": 5.0}


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
    return cost * FRAMEWORK_COST.get(task.framework, 1.0)


def parse_shard(text: str) -> tuple:
    """'K/N' -> (K, N), 1 <= K <= N; ValueError otherwise."""
    try:
        k, n = (int(p) for p in text.split("/"))
    except (ValueError, AttributeError):
        raise ValueError(f"--shard {text!r}: give K/N, e.g. 1/4") from None
    if n < 1 or not 1 <= k <= n:
        raise ValueError(f"--shard {text!r}: K must be between 1 and N")
    return k, n


def balance(costs: dict, count: int) -> tuple:
    """Greedy longest-processing-time assignment of named costs to ``count`` bins: the largest
    first onto the least-loaded bin (ties by name and bin number), so it depends only on the set of
    names and costs, never on their order. Returns ({name: bin, 0-based}, [load per bin])."""
    loads = [0.0] * count
    owner = {}
    for name in sorted(costs, key=lambda n: (-costs[n], n)):
        k = min(range(count), key=lambda i: (loads[i], i))
        owner[name] = k
        loads[k] += costs[name]
    return owner, loads


def shard_cases(cases, index: int, count: int, plan_args: dict) -> tuple:
    """The cases of shard ``index`` (1-based) of ``count``, and every case's shard.

    Whole cases go to one shard: a case's reference task and its pairwise checks need all of its
    tasks together. Assignment is greedy by estimated cost (``balance``), so it is balanced, and it
    depends only on the set of cases and the settings, never on the order they were given in: every
    shard of a CI matrix computes the same assignment independently. ``plan_args`` are make_plan's
    keyword arguments (frameworks, devices, dtypes, modes, precisions, seed, fd_mode, timing).
    """
    tasks = make_plan(cases, **plan_args).tasks
    per_task = task_costs(tasks, {c.name: c for c in cases}, plan_args.get("seed", 0))
    costs = {c.name: 0.0 for c in cases}
    for t in tasks:
        costs[t.case] += per_task[t.id]
    owner, loads = balance({name: cost or TASK_COST for name, cost in costs.items()}, count)
    owner = {name: k + 1 for name, k in owner.items()}
    return [c for c in cases if owner[c.name] == index], owner, loads


def task_costs(tasks, cases: dict, seed: int = 0) -> dict:
    """{task id: estimated cost} (``task_cost``), each case's make() run once for its size."""
    elements, second = {}, {}
    for name, case in cases.items():
        elements[name] = case_elements(case, seed)
        second[name] = "twice-differentiable" in getattr(case, "tags", ())
    return {t.id: task_cost(t, elements.get(t.case, 1), second.get(t.case, False)) for t in tasks}


# ---- chunks: a worker group split over parallel workers (--jobs) or Ray tasks -----------------------
#: chunks per lane when a local run splits its groups (--jobs N): more than one, so the groups'
#: unequal costs even out over the lanes (list scheduling, largest first), few enough that a
#: framework's start-up (1-5 s) stays small beside a chunk's work
CHUNKS_PER_LANE = 2
#: the least estimated cost worth a chunk of its own (~6 s of work here, against a framework's start
#: of 1-5 s): a small run is not split into chunks that mostly start frameworks
MIN_CHUNK_COST = 60.0


@dataclass
class Chunk:
    """Whole cases of one worker group (``key`` = (framework, device, precision)), run by one worker
    process: ``index`` of ``count`` chunks of that group, ``cost`` their estimated cost."""
    key: tuple
    tasks: list
    index: int = 0
    count: int = 1
    cost: float = 0.0

    @property
    def log_name(self) -> str:
        """The worker log's file name in a run's logs/ folder (chunk 1, or a whole group: the group's)."""
        framework, device, precision = self.key
        part = f".{self.index + 1}" if self.index else ""
        return f"{framework}-{device.replace(':', '')}-{precision}{part}.log"

    @property
    def cases(self) -> list:
        return sorted({t.case for t in self.tasks})


def chunk_groups(groups: dict, costs: dict, parts: int, min_cost: float = MIN_CHUNK_COST) -> list:
    """Split worker groups ({key: tasks}) into about ``parts`` chunks in all, each of whole cases (a
    module case's float32 task reuses what its float64 task built, and a case's tasks then share one
    process's caches), a group's share of the chunks following its share of the cost (``costs``: task
    id -> cost), its cases balanced over them (``balance``), none below ``min_cost`` unless its whole
    group is. Largest chunk first: in that order a pool of lanes is list-scheduled. ``parts`` <= the
    number of groups: one chunk per group, in order.
    """
    def cost_of(tasks):
        return sum(costs.get(t.id, TASK_COST) for t in tasks)

    group_cost = {key: cost_of(tasks) for key, tasks in groups.items()}
    if parts <= len(groups):
        return [Chunk(key, list(tasks), 0, 1, group_cost[key]) for key, tasks in groups.items()]
    total = sum(group_cost.values()) or 1.0
    chunks = []
    for key, tasks in groups.items():
        by_case: dict = {}
        for t in tasks:
            by_case.setdefault(t.case, []).append(t)
        worth = int(group_cost[key] // min_cost) if min_cost > 0 else len(by_case)
        count = max(1, min(len(by_case), round(parts * group_cost[key] / total), worth))
        owner, loads = balance({name: cost_of(ts) for name, ts in by_case.items()}, count)
        bins: list = [[] for _ in range(count)]
        for t in tasks:
            bins[owner[t.case]].append(t)
        chunks += [Chunk(key, mine, k, count, loads[k]) for k, mine in enumerate(bins)]
    return sorted(chunks, key=lambda c: -c.cost)


__all__ = ["balance", "Chunk", "chunk_groups", "CHUNKS_PER_LANE", "FD_COST_CAP", "FD_COST_PER_ELEMENT",
           "FRAMEWORK_COST", "MIN_CHUNK_COST", "REFERENCE", "TASK_COST", "TIMING_COST", "case_elements",
           "is_reference", "make_plan", "parse_shard", "Plan", "shard_cases", "Task", "task_cost", "task_costs"]
