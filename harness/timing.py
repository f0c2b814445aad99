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
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

#: named presets for --timing
PRESETS = {
    "quick": {"min_run_time": 0.05, "min_block_time": 2e-3, "min_blocks": 5},
    "full": {"min_run_time": 1.0, "min_block_time": 2e-3, "min_blocks": 15},
}
#: the most that a block's clock reads and sync may add to it
MAX_OVERHEAD = 0.01
#: a cell whose IQR exceeds this fraction of its median is flagged noisy in the report
NOISY_IQR = 0.10


@dataclass
class Measurement:
    times: list = field(default_factory=list)   # seconds per call, one per block
    block: int = 1                               # calls per block
    first_call: float = 0.0                      # seconds of the very first call (trace/compile)
    overhead: float = 0.0                        # seconds a clock read and a sync of finished work cost

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

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(median=self.median, iqr=self.iqr, noisy=self.noisy)
        return out


def blocked_autorange(call, sync, min_run_time=0.2, min_block_time=2e-3, min_blocks=5,
                      max_block=1 << 20, clock=time.perf_counter, first_call: float | None = None) -> Measurement:
    """Measure ``call()`` (whose result ``sync(result)`` completes). ``first_call``: seconds the
    caller already measured for the first call; otherwise the first call here is timed alone."""
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
        elapsed = _block(call, sync, block, clock)
        if elapsed >= block_time or block >= max_block:
            break
        block = min(max_block, block * 2 if elapsed <= 0 else max(block * 2, int(block * block_time / elapsed)))
    times = [elapsed / block]
    total = elapsed
    while total < min_run_time or len(times) < min_blocks:
        elapsed = _block(call, sync, block, clock)
        times.append(elapsed / block)
        total += elapsed
    return Measurement(times=times, block=block, first_call=first_call, overhead=overhead)


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
