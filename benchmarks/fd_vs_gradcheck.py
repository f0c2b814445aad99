"""Full per-element finite differences: the harness vs torch.autograd.gradcheck(fast_mode=False).

A float64 MLP with ~1e5 parameters, the same function for both. gradcheck perturbs one element at
a time in a Python loop (2 evaluations each) and compares with autograd's Jacobian. The harness
checks the way `harness run --fd full` does: chunks of perturbed points in one vmapped call, a
first pass of one central difference per element (2 evaluations) judged against autograd, and
the full Richardson stencil with its error estimate and kink test (4 more) for every element the
first pass cannot settle. Both must agree with autograd. Both use the same torch thread count.
For comparison it also times the full stencil on every element (4 evaluations each).
Last line: speedup_vs_gradcheck=<x> (target >= 10).
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapters.torch_adapter import TorchAdapter  # noqa: E402
from harness.judge.tolerance import gradient_scale, lookup  # noqa: E402
from harness.worker import fd  # noqa: E402

SIZES = (100,) * 9 + (10,)   # eight tanh layers of width 100 and a head: 81,810 parameters
BATCH = 4


def main():
    rng = np.random.default_rng(0)
    params = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        params += [rng.standard_normal((n_in, n_out)) / np.sqrt(n_in), 0.1 * rng.standard_normal(n_out)]
    x = torch.tensor(rng.standard_normal((BATCH, SIZES[0])))
    y = torch.tensor(rng.standard_normal((BATCH, SIZES[-1])))

    def f(*ps):
        h = x
        for k in range(0, len(ps), 2):
            h = h @ ps[k] + ps[k + 1]
            if k + 2 < len(ps):
                h = torch.tanh(h)
        return torch.mean((h - y) ** 2)

    n = sum(p.size for p in params)
    print(f"MLP {SIZES}: {n} float64 parameters, threads={torch.get_num_threads()}")
    adapter = TorchAdapter()
    adapter.setup("cpu", threads=0, precision="default")
    xs = [adapter.asarray(p, "float64") for p in params]
    _, grads = adapter.value_and_grad_np(f, xs)

    tol = lookup("float64", None, key="fd")
    scale = gradient_scale(dict(enumerate(grads)))

    def accept(i, estimate, error):   # the verdict compare.py gives, element by element
        return np.abs(grads[i].reshape(-1) - estimate) <= tol.allowed(estimate, scale, error)

    timings = {}
    for label, judge in (("every element on the full stencil", None), ("adaptive, as `harness run`", accept)):
        start = time.perf_counter()
        value = adapter.evaluate_np(f, xs)
        result = fd.full(lambda i, idx, d: adapter.evaluate_elementwise_np(f, xs, i, idx, d), params, value,
                         accept=judge)
        timings[label] = time.perf_counter() - start
        worst = max(float(np.max(np.abs(e - g) / (np.abs(g).max()))) for e, g in zip(result.estimate, grads))
        passed = all(accept(i, e.reshape(-1), r.reshape(-1)).all()
                     for i, (e, r) in enumerate(zip(result.estimate, result.error)))
        print(f"harness FD, {label}: {timings[label]:.2f}s ({result.evaluations} evaluations, "
              f"{sum(int(r.sum()) for r in result.refined)} elements on the full stencil), "
              f"max rel err vs autograd {worst:.1e}, nondiff flagged {sum(int(m.sum()) for m in result.nondiff)}")
        assert passed and worst < 1e-8, "harness FD disagrees with autograd"
    harness_s = timings["adaptive, as `harness run`"]

    leaves = [torch.tensor(p, requires_grad=True) for p in params]
    start = time.perf_counter()
    ok = torch.autograd.gradcheck(f, leaves, fast_mode=False, eps=1e-6, atol=1e-5, rtol=1e-4)
    gradcheck_s = time.perf_counter() - start
    print(f"torch.autograd.gradcheck(fast_mode=False): {gradcheck_s:.2f}s, passed={ok}")
    assert ok
    print(f"full stencil everywhere: {gradcheck_s / timings['every element on the full stencil']:.1f}x gradcheck")
    print(f"speedup_vs_gradcheck={gradcheck_s / harness_s:.1f}")


if __name__ == "__main__":
    main()
