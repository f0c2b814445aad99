"""Timing the way torch.utils.benchmark does, for any framework: framework-free.

The measured callable runs on inputs already on the device. The first call (trace/compile)
is timed on its own. Then blocked autorange: the block size (calls between two clock reads)
grows until a block takes long enough that the clock and the sync are negligible (measured:
at most 1% of the block, and at least ``min_block_time``), and blocks are run until a minimum
total time. A call that is long enough is timed alone, each call synced: a longer block than
the overhead requires lets an asynchronous framework overlap one call's dispatch with the
previous call's work, and so measures something else. ``sync`` (the adapter's: cuda
synchronize, block_until_ready, materialising TF results) closes every block, so asynchronous
devices are timed to completion. Raw per-call times are kept; median and IQR are derived.

``measure`` is what a worker runs: blocked autorange bracketed by harness.worker.contention's
calibration loop, the load average and the process's CPU time per block recorded with it; a
contended measurement is taken again (RETRIES) and, still contended, kept and marked so: the
report leaves it out of every claim and `compare` out of its slowdown verdicts.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from harness.worker import contention

#: named presets for --timing. ``quick`` is adaptive, as torch.utils.benchmark's adaptive_autorange:
#: blocks until the interquartile range is within ``target_iqr`` of the median (at least
#: ``min_blocks`` blocks and ``min_run_time``), else until ``max_run_time``; a quiet machine settles
#: a cell in ~5 blocks (~12 ms), a noisy one gets the whole 50 ms it always had. ``full`` runs its
#: fixed second.
PRESETS = {
    "quick": {"min_run_time": 0.01, "max_run_time": 0.05, "target_iqr": 0.05, "min_block_time": 2e-3,
              "min_blocks": 5},
    "full": {"min_run_time": 1.0, "min_block_time": 2e-3, "min_blocks": 15},
}
#: the most that a block's clock reads and sync may add to it
MAX_OVERHEAD = 0.01
#: a cell whose IQR exceeds this fraction of its median is flagged noisy in the report
NOISY_IQR = 0.10
#: how often a contended measurement is taken again, per preset, before it is kept marked
RETRIES = {"quick": 1, "full": 2}
#: cases with this tag are sized so kernels, not dispatch, dominate: the headline prefers them
TIMING_TAG = "timing"


@dataclass
class Measurement:
    times: list = field(default_factory=list)   # seconds per call, one per block
    block: int = 1                               # calls per block
    first_call: float = 0.0                      # seconds of the very first call (trace/compile)
    overhead: float = 0.0                        # seconds a clock read and a sync of finished work cost
    cpu: list = field(default_factory=list)      # process CPU seconds per call, one per block (all threads)
    load: list = field(default_factory=list)     # 1-minute load average before and after
    calibration: dict = field(default_factory=dict)   # contention.calibrate() at "start" and "end"
    cpu_wait: float | None = None                # threads queued for a CPU, on average (Linux run-queue account)
    cpu_others: float | None = None              # CPUs other processes used meanwhile, on average (/proc/stat)
    cpu_stolen: float | None = None              # CPUs the hypervisor gave other machines meanwhile (steal)
    contention: list = field(default_factory=list)    # why the figures are not the machine's own
    attempts: int = 1                            # measurements taken (a contended one is taken again)

    @property
    def median(self) -> float:
        return float(np.median(self.times))

    @property
    def iqr(self) -> float:
        q1, q3 = np.percentile(self.times, [25, 75])
        return float(q3 - q1)

    @property
    def noisy(self) -> bool:
        return self.iqr > NOISY_IQR * self.median

    @property
    def contended(self) -> bool:
        return bool(self.contention)

    @property
    def cpu_per_wall(self) -> float | None:
        """Process CPU time over wall time across the blocks: ~threads busy on a quiet CPU."""
        wall = float(np.sum(self.times))
        return float(np.sum(self.cpu)) / wall if self.cpu and wall > 0 else None

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(median=self.median, iqr=self.iqr, noisy=self.noisy, contended=self.contended,
                   cpu_per_wall=self.cpu_per_wall)
        return out


def measure(call, sync, preset="quick", first_call: float | None = None, retries: int | None = None,
            calibrate=contention.calibrate, tasks=contention.tasks, usage=contention.usage,
            after: Measurement | None = None) -> Measurement:
    """blocked_autorange with ``preset`` (a PRESETS name or its settings), bracketed by the
    calibration loop and the load average; taken again up to ``retries`` times (RETRIES) while
    contended. Returns the first quiet measurement, else the quietest, ``contention`` saying why.
    ``calibrate``, ``tasks`` (the run-queue account), ``usage`` (the CPUs' idle time):
    harness.worker.contention's, replaceable in tests. ``after``: the measurement taken just before
    this one with nothing between: its closing calibration is this one's opening one."""
    settings = PRESETS[preset] if isinstance(preset, str) else dict(preset)
    if retries is None:
        retries = RETRIES.get(preset, 1) if isinstance(preset, str) else 1
    if first_call is None:   # timed here, so a compile is outside what the probes watch
        began = time.perf_counter()
        sync(call())
        first_call = time.perf_counter() - began
    best = None
    opening = (after.calibration or {}).get("end") if after is not None else None
    for attempt in range(1, retries + 2):
        with contention.Watch(calibrate, tasks, usage, start=opening if attempt == 1 else None) as watch:
            m = blocked_autorange(call, sync, first_call=first_call, **settings)
        m.load, m.calibration = watch.loads, {"start": watch.start, "end": watch.end}
        m.cpu_wait, m.cpu_others, m.cpu_stolen = watch.cpu_wait, watch.cpu_others, watch.cpu_stolen
        m.contention = watch.assess(m.times)
        if best is None or _quieter(m, best):
            best = m
        if not m.contended:
            break
    best.attempts = attempt
    return best


def _quieter(a: Measurement, b: Measurement) -> bool:
    """Is ``a`` the better of two measurements to keep: quiet, or with fewer reasons, or with the
    calibration loop's larger share of the CPUs."""
    def share(m):
        return min((c["share"] for c in m.calibration.values() if c and c.get("share") is not None), default=0.0)
    return (len(a.contention), a.cpu_wait or 0.0, -share(a)) < (len(b.contention), b.cpu_wait or 0.0, -share(b))


def blocked_autorange(call, sync, min_run_time=0.2, min_block_time=2e-3, min_blocks=5,
                      max_block=1 << 20, clock=time.perf_counter, first_call: float | None = None,
                      cpu_clock=time.process_time, max_run_time: float | None = None,
                      target_iqr: float | None = None) -> Measurement:
    """Measure ``call()`` (whose result ``sync(result)`` completes). ``first_call``: seconds the
    caller already measured for the first call; otherwise the first call here is timed alone.
    Blocks are run until ``min_run_time`` and ``min_blocks``; with ``target_iqr`` (adaptive), then on
    until the blocks' IQR is within that fraction of their median or ``max_run_time`` has passed."""
    if first_call is None:
        start = clock()
        sync(call())
        first_call = clock() - start
    result = call()  # warm-up beyond the first call (allocators, caches)
    sync(result)
    overhead = _overhead(sync, result, clock)
    block_time = max(min_block_time, overhead / MAX_OVERHEAD)
    block = 1
    while True:
        before = cpu_clock()   # read outside the clock's interval: it adds nothing to the block
        elapsed = _block(call, sync, block, clock)
        used = cpu_clock() - before
        if elapsed >= block_time or block >= max_block:
            break
        block = min(max_block, block * 2 if elapsed <= 0 else max(block * 2, int(block * block_time / elapsed)))
    times, cpu = [elapsed / block], [used / block]
    total = elapsed
    while total < min_run_time or len(times) < min_blocks or not _settled(times, total, target_iqr, max_run_time):
        before = cpu_clock()
        elapsed = _block(call, sync, block, clock)
        cpu.append((cpu_clock() - before) / block)
        times.append(elapsed / block)
        total += elapsed
    return Measurement(times=times, block=block, first_call=first_call, overhead=overhead, cpu=cpu)


def _settled(times, total, target_iqr, max_run_time) -> bool:
    """Enough blocks beyond the minimum: not adaptive (no ``target_iqr``), the IQR within target, or
    out of time."""
    if target_iqr is None:
        return True
    if max_run_time is not None and total >= max_run_time:
        return True
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return q3 - q1 <= target_iqr * median


def _overhead(sync, result, clock, samples=5) -> float:
    """What closing a block costs beyond the work: two clock reads around a sync of a result
    that is already complete (median of a few)."""
    costs = []
    for _ in range(samples):
        start = clock()
        sync(result)
        costs.append(clock() - start)
    return float(np.median(costs))


def _block(call, sync, n, clock) -> float:
    start = clock()
    result = None
    for _ in range(n):
        result = call()
    sync(result)
    return clock() - start


__all__ = ["MAX_OVERHEAD", "Measurement", "NOISY_IQR", "PRESETS", "RETRIES", "TIMING_TAG", "blocked_autorange",
           "measure"]
