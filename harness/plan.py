"""Planning: case x framework x device x dtype x mode x precision -> tasks, grouped by worker.

Every (case, framework) also gets its *reference* task, float64 on CPU, eager, default
precision, which carries the finite-difference check: each other task of that framework is
held against it, so it is planned even when the user's --dtypes or --devices leave it out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

REFERENCE = {"device": "cpu", "dtype": "float64", "mode": "eager", "precision": "default"}


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
    def group(self) -> tuple:
        """Tasks that share one worker process: the precision policy is process-wide."""
        return (self.framework, self.device, self.precision)

    @property
    def is_reference(self) -> bool:
        return all(getattr(self, k) == v for k, v in REFERENCE.items())

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
