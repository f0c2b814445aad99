"""A directional finite-difference check of a ~1e7-parameter float64 model on CPU.

Full per-element FD would need 4e7 evaluations; the directional check needs 4 per random
direction, independent of the parameter count. The timed region is the whole reference task
the harness runs (gradient twice for determinism, forward-mode JVP, directional FD and its
verdict). Last line: seconds=<t> (target < 30 on a 2-core machine).
"""
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import Case  # noqa: E402
from harness.define import seeding  # noqa: E402
from harness.run import inprocess  # noqa: E402
from harness.worker import observe  # noqa: E402

WIDTH, DEPTH, BATCH = 1580, 4, 16     # 4 x 1580^2 + biases = 9.99e6 parameters


def make(rng):
    params = {}
    for k in range(DEPTH):
        params[f"w{k}"] = rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)
        params[f"b{k}"] = 0.1 * rng.standard_normal(WIDTH)
    return params, {"x": rng.standard_normal((BATCH, WIDTH)), "y": rng.standard_normal((BATCH, WIDTH))}


def loss(ops, p, i):
    h = i["x"]
    for k in range(DEPTH):
        h = ops.add(ops.matmul(h, p[f"w{k}"]), p[f"b{k}"])
        if k < DEPTH - 1:
            h = ops.tanh(h)
    return ops.mse(h, i["y"])


def main():
    framework = sys.argv[1] if len(sys.argv) > 1 else "torch"
    case = Case(name="mlp_1e7", make=make, loss=loss)
    params, _, _ = case.build(seeding.case_rng(0, case.name))
    n = sum(a.size for a in params.values())
    print(f"{framework}: MLP {DEPTH}x{WIDTH}, {n:,} float64 parameters")
    adapter = inprocess.adapter(framework)
    start = time.perf_counter()
    obs, arrays = observe.run(adapter, case, {"mode": "eager", "dtype": "float64", "seed": 0, "fd": True,
                                         "fd_mode": "directional"})
    seconds = time.perf_counter() - start
    estimate = arrays["fd_directional/estimate"]
    projected = np.array([sum(float(np.sum(arrays[f"grad/{p}"] * arrays[f"fd_direction{k}/{p}"])) for p in params)
                          for k in range(len(estimate))])
    rel = float(np.max(np.abs(projected - estimate)) / np.max(np.abs(projected)))
    print(f"<grad, d> vs directional FD over {len(estimate)} directions: max rel err {rel:.1e}")
    assert rel < 1e-6 and "fd_localised/index" not in arrays
    print(f"directional FD: {obs['fd']['evaluations']} evaluations in {obs['fd']['seconds']:.2f}s; "
          f"whole task {seconds:.2f}s")
    print(f"seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
