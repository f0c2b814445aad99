"""One task in a worker: build the case on the adapter, differentiate it every way asked,
and return an observation (JSON-able dict) plus named numpy arrays.

Observations are raw facts (values, gradients, FD estimates, JVPs); verdicts are made later,
in the parent, by harness/judge/verdicts.py, which sees every framework at once.
"""
from __future__ import annotations

import time

import numpy as np

from harness.case import Case, ModuleCase, input_digest
from harness.define.seeding import case_rng
from harness.judge.tolerance import gradient_norm, gradient_scale, lookup
from harness.vocab import HVP_METHODS, SECOND_ORDER_TAG
from harness.worker import fd, quiet
from harness.worker.module_problem import ModuleProblem
from harness.worker import warning_log

#: above this many differentiated elements, `auto` FD switches from full to directional
FULL_FD_LIMIT = 20_000
#: random directions for directional FD and for the forward-mode check
DIRECTIONS = 4


class Problem:
    """A case bound to one adapter and dtype: native tensors and the function of the wrt params."""

    def __init__(self, adapter, case: Case, dtype: str, seed: int, made=None):
        self.adapter, self.case, self.dtype = adapter, case, dtype
        fw = adapter.name
        # ``made``: another Problem's (params, inputs, wrt), so a second dtype sees the same point
        self.made = made or case.build(case_rng(seed, case.name))
        params, inputs, self.wrt = self.made
        self.digest = input_digest(params, inputs)
        self.canonical = {n: params[n] for n in self.wrt}
        kind, impl = case.implementation(fw)
        native = {k: adapter.asarray(case.to_native_layout(fw, k, v), dtype) for k, v in params.items()}
        tensors_in = {k: adapter.asarray(v, dtype) for k, v in inputs.items()}
        self.xs = [native[n] for n in self.wrt]
        wrt = self.wrt
        ops = adapter.ops

        if kind == "neutral":
            def f(*ws):
                return impl(ops, {**native, **dict(zip(wrt, ws))}, tensors_in)
        else:
            def f(*ws):
                return impl({**native, **dict(zip(wrt, ws))}, tensors_in)
        self.f = f

    def to_canonical(self, arrays):
        return [self.case.from_native_layout(self.adapter.name, n, a) for n, a in zip(self.wrt, arrays)]

    def to_native(self, arrays, dtype=None):
        fw = self.adapter.name
        return [self.adapter.asarray(self.case.to_native_layout(fw, n, a), dtype or self.dtype)
                for n, a in zip(self.wrt, arrays)]


def make_problem(adapter, case: Case, dtype: str, seed: int, made=None, reference=None):
    """A Problem, or a ModuleProblem for a module case (``reference``: framework -> adapter, in
    a process that holds every framework)."""
    if isinstance(case, ModuleCase):
        return ModuleProblem(adapter, case, dtype, seed, reference=reference, made=made)
    return Problem(adapter, case, dtype, seed, made=made)


def run(adapter, case: Case, task: dict, warnings_seen: list | None = None, reference=None) -> tuple[dict, dict]:
    """Compute what ``task`` asks for. Returns (observation, arrays).

    Every warning raised meanwhile (the framework's own, or the case's) is recorded, never raised
    (harness/worker/warning_log.py): in the observation's ``warnings`` and, failed or not, appended to
    ``warnings_seen`` when given."""
    with warning_log.capture() as caught:
        try:
            obs, arrays = _run(adapter, case, task, reference)
        finally:
            seen = caught.rows(warning_log.case_files(case))
            if warnings_seen is not None:
                warnings_seen.extend(seen)
    if seen:
        obs["warnings"] = seen
    return obs, arrays


def _run(adapter, case: Case, task: dict, reference=None) -> tuple[dict, dict]:
    compiled = task["mode"] == "compiled"
    problem = make_problem(adapter, case, task["dtype"], task["seed"], reference=reference)
    # what make built, for the judge: observations of differing inputs are never compared
    obs = {"params": {n: list(a.shape) for n, a in problem.canonical.items()}, "inputs_digest": problem.digest}
    if isinstance(problem, ModuleProblem):
        # the module's kind and the weight mapping it was checked through, for the report
        obs["module"] = {"kind": problem.glue.kind, "reference": case.reference_framework(),
                         "mapping": problem.mapping_rows(), "param_layers": problem.param_layers}
    arrays = {}

    grad_call = adapter.grad_fn(problem.f, compiled)
    start = time.perf_counter()
    try:
        result = grad_call(*problem.xs)
        adapter.sync(result)
    except Exception as exc:
        if _explain_loss_output(adapter, problem, exc):
            # the forward runs: the framework's autodiff itself failed (or a custom gradient)
            why = failure(adapter, problem, exc, declared=False)
            if why["status"] == "error" and why["cause"]:
                raise AutodiffError(why["reason"], why["cause"]) from exc
        raise
    # a one-shot duration: any quiet window of another worker that stopped this one is left out
    first_grad_call = _elapsed_running(start)
    value, native_grads = adapter.grad_result_np(result, problem.xs)
    if not np.isfinite(value):
        raise NonFiniteLoss(f"the loss itself is not finite ({value}) at the case's point in {task['dtype']}, "
                            f"so its gradient means nothing and no gradient check was made")
    grads = problem.to_canonical(native_grads)
    obs["value"] = value
    # the size of the terms the loss sums, to first order: the scale its rounding is measured on
    obs["value_scale"] = float(sum(np.nansum(np.abs(g * x)) for g, x in zip(grads, problem.canonical.values())))
    for name, g in zip(problem.wrt, grads):
        arrays[f"grad/{name}"] = g

    if task.get("determinism", True):
        # the same callable again: a compiled function is not rebuilt, only re-run
        _, again = adapter.grad_result_np(grad_call(*problem.xs), problem.xs)
        again = problem.to_canonical(again)
        obs["nondeterminism"] = max(_difference(a, g) for a, g in zip(again, grads))

    if task.get("timing"):
        obs["timing"] = _guarded(adapter, _timing, problem, task, compiled, grad_call, first_grad_call)

    if task.get("jvp", True):
        obs["jvp"] = _guarded(adapter, _jvp, problem, case, task, grads, compiled)

    if isinstance(problem, ModuleProblem) and not compiled:
        # each layer's output and output gradient, for the first diverging layer (eager: hooks)
        obs["layers"] = _guarded(adapter, lambda _adapter, p: p.layers(arrays), problem)

    if task.get("fd"):
        obs["fd"] = _guarded(adapter, _finite_differences, problem, case, task, value, arrays, native_grads)
        if SECOND_ORDER_TAG in case.tags:
            obs["hvp"] = _guarded(adapter, _hvp, problem, case, task, arrays)
    return obs, arrays


class AutodiffError(RuntimeError):
    """The gradient itself failed where the forward runs: ``cause`` says whose doing it is
    (framework-error, custom-gradient), so the task's `run` record carries it."""

    def __init__(self, reason: str, cause: str):
        super().__init__(reason)
        self.cause = cause


class NonFiniteLoss(ArithmeticError):
    """The loss is NaN or inf at the case's point: a fault of the case (or of the dtype's range),
    reported as an `error` record saying so rather than as NaN gradients everywhere."""


def _explain_loss_output(adapter, problem, exc) -> bool:
    """Autodiff failed: if that is because the loss is not a real scalar (a vector, an integer,
    a complex number), raise that plain statement instead of the framework's own message.
    Returns whether the forward itself runs."""
    from adapters.base import ScalarError

    try:
        adapter.evaluate_np(problem.f, problem.xs)
    except ScalarError as bad:
        raise bad from exc
    except Exception:  # noqa: BLE001 - the forward fails too: the original error says more
        return False
    return True


def _difference(a, b) -> float:
    """Largest elementwise difference of two computations of the same gradient; equal NaNs and
    equal infinities count as equal, a NaN or inf against a number as infinitely different."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(a - b))
    return float(np.max(np.nan_to_num(diff, nan=np.inf, posinf=np.inf), initial=0.0))


def _timing(adapter, problem, task, compiled, grad_call, first_grad_call):
    """Forward and forward+backward, inputs already on the device, blocked autorange, each
    bracketed by a calibration loop and taken again or marked contended (harness.worker.timing.measure)."""
    from harness.worker.timing import TIMING_TAG, measure

    preset = task["timing"]
    xs = problem.xs
    forward_call = adapter.forward_fn(problem.f, compiled)
    start = time.perf_counter()   # the first call (a compile) outside the window: others go on meanwhile
    adapter.sync(forward_call(*xs))
    first_forward_call = _elapsed_running(start)
    with quiet.window():   # the other workers of the run stopped while this one times
        forward = measure(lambda: forward_call(*xs), adapter.sync, preset, first_call=first_forward_call)
        backward = measure(lambda: grad_call(*xs), adapter.sync, preset, first_call=first_grad_call, after=forward)
    return {"forward": forward.as_dict(), "forward+backward": backward.as_dict(), "preset": preset,
            "timing_case": TIMING_TAG in problem.case.tags}


def _elapsed_running(start: float) -> float:
    """Seconds since ``start`` that this worker ran: less other workers' quiet windows meanwhile."""
    end = time.perf_counter()
    return max(0.0, end - start - quiet.paused(start, end))


def _guarded(adapter, check, problem, *args):
    """One check failing must not cost the task its other results: each failure becomes the
    check's own `skipped` or `error` status with its reason (see ``failure``)."""
    try:
        return check(adapter, problem, *args)
    except Exception as exc:  # noqa: BLE001
        return failure(adapter, problem, exc, declared=False)


def failure(adapter, problem, exc, declared: bool) -> dict:
    """Why a transform failed, as {status, reason, cause}:

    - through a custom gradient the case defines (autograd.Function, custom_vjp,
      tf.custom_gradient): the case's doing: an `error` with cause `custom-gradient` when the
      case ``declared`` the transform must work (twice-differentiable), else `skipped` where the
      framework says the rule lacks the transform;
    - raised inside the case's own code: an `error` with the framework's message;
    - a transform the framework does not offer here (forward mode through a fused kernel with no
      equivalent kernel): `skipped`, saying which;
    - anything else is the framework's own autodiff raising on its standard ops: an `error` with
      cause `framework-error` (and the upstream report where the adapter knows the bug).
    """
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:400].strip()
    unsupported = adapter.unsupported_reason(exc)
    try:
        custom = adapter.custom_gradients(problem.f, problem.xs)
    except Exception:  # noqa: BLE001 - the graph cannot be inspected: no custom gradient is named
        custom = []
    if custom:
        status = "error" if declared or not unsupported else "skipped"
        return {"status": status, "cause": "custom-gradient" if status == "error" else None,
                "reason": f"through the case's custom gradient ({', '.join(custom)}): {text}"}
    if _raised_in(exc, problem.case):
        return {"status": "error", "cause": None, "reason": f"raised in the case's code: {text}"}
    if unsupported:
        return {"status": "skipped", "cause": None, "reason": unsupported}
    upstream = adapter.known_failure(exc)
    return {"status": "error", "cause": "framework-error",
            "reason": f"{adapter.name}'s own autodiff raised on standard ops: {text}"
                      + (f" (known upstream bug: {upstream})" if upstream else ""),
            **({"upstream": upstream} if upstream else {})}


def _raised_in(exc, case) -> bool:
    """Did ``exc`` come out of a frame of the case's own functions' source files?"""
    files = warning_log.case_files(case)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in files:
            return True
        tb = tb.tb_next
    return False


def _random_direction(problem, case, task, purpose) -> list:
    """One seeded random unit direction over all parameters (canonical layout)."""
    shapes = [a.shape for a in problem.canonical.values()]
    return [d[0] for d in fd.random_directions(case_rng(task["seed"], case.name, purpose), shapes, 1)]


def _jvp(adapter, problem, case, task, grads, compiled):
    """Forward mode along one seeded random direction vs <reverse-mode gradient, v>."""
    direction = _random_direction(problem, case, task, "jvp")
    (value, tangent), kernels = adapter.with_equivalent_kernels(
        lambda: adapter.jvp_np(problem.f, problem.xs, problem.to_native(direction), compiled))
    # what the reverse-mode gradient predicts, and the scale a rounding error is measured against
    expected = float(sum(np.sum(g * d) for g, d in zip(grads, direction)))
    scale = gradient_norm(grads)
    return {"tangent": tangent, "expected": expected, "scale": scale, "value": value,
            **({"kernels": kernels} if kernels else {})}


def _finite_differences(adapter, problem, case, task, value, arrays, native_grads):
    n = sum(a.size for a in problem.canonical.values())
    mode = task.get("fd_mode", "auto")
    with_complex_step = mode == "complex"
    if mode == "auto":
        mode = "full" if n <= FULL_FD_LIMIT else "directional"
    elif with_complex_step:
        mode = "full"
    start = time.perf_counter()
    native_points = [adapter.to_numpy(x) for x in problem.xs]
    info = {"mode": mode, "elements": n}
    if mode == "full":
        result = fd.full(
            lambda i, idx, delta: adapter.evaluate_elementwise_np(problem.f, problem.xs, i, idx, delta),
            native_points, value, accept=_elementwise_judge(case, native_grads))
        for part in ("estimate", "error", "left", "right", "nondiff", "refined"):
            for name, a in zip(problem.wrt, problem.to_canonical(getattr(result, part))):
                arrays[f"fd_{part}/{name}"] = a
        info["evaluations"] = result.evaluations
    else:
        shapes = [a.shape for a in problem.canonical.values()]
        directions = fd.random_directions(case_rng(task["seed"], case.name, "fd"), shapes, DIRECTIONS)
        native_dirs = [np.stack([case.to_native_layout(adapter.name, name, row) for row in d])
                       for name, d in zip(problem.wrt, directions)]
        estimate, error = fd.directional(
            lambda dirs, steps: adapter.evaluate_directions_np(problem.f, problem.xs, dirs, steps, native_points),
            native_points, value, native_dirs)
        for k in range(DIRECTIONS):
            for name, d in zip(problem.wrt, directions):
                arrays[f"fd_direction{k}/{name}"] = d[k]
        arrays["fd_directional/estimate"] = estimate
        arrays["fd_directional/error"] = error
        info["evaluations"] = 4 * DIRECTIONS
        fails = _directional_judge(case, native_grads)
        projected = [sum(float(np.sum(g * d[k])) for g, d in zip(native_grads, native_dirs))
                     for k in range(DIRECTIONS)]
        if max(fails(p, e, r) for p, e, r in zip(projected, estimate, error)) > 1.0:
            found = fd.localise(
                lambda dirs, steps: adapter.evaluate_directions_np(problem.f, problem.xs, dirs, steps, native_points),
                lambda i, idx, delta: adapter.evaluate_elementwise_np(problem.f, problem.xs, i, idx, delta),
                native_points, value, native_grads, fails, case_rng(task["seed"], case.name, "localise"))
            if found is not None:
                name = problem.wrt[found["param"]]
                info["localised"] = {"param": name, "probes": found["probes"]}
                canonical_index = _canonical_flat_index(case, adapter.name, name, native_points[found["param"]].shape,
                                                        found["flat_index"])
                arrays["fd_localised/index"] = canonical_index
                for part in ("estimate", "error", "left", "right", "nondiff"):
                    arrays[f"fd_localised/{part}"] = found[part]
                info["evaluations"] += 4 * found["probes"] + 4 * len(found["flat_index"])
    sigma = fd.noise_level(
        lambda dirs, steps: adapter.evaluate_directions_np(problem.f, problem.xs, dirs, steps, native_points),
        native_points, case_rng(task["seed"], case.name, "noise"))
    # relative to the loss and to the terms it sums (a loss that cancels to ~0 is not noisier)
    scale = max(abs(value), float(sum(np.nansum(np.abs(g * x)) for g, x in zip(native_grads, native_points))))
    info["noise"] = {"sigma": sigma, "relative": sigma / scale if scale > 0 else sigma}
    if with_complex_step:
        info["complex"] = _complex_step(adapter, problem, case, task, arrays, native_points)
    info["seconds"] = time.perf_counter() - start
    return info


def _complex_step(adapter, problem, case, task, arrays, native_points):
    """The complex-step derivative of every element, where the framework evaluates the function
    in complex128; a function that is not complex-analytic there (relu, abs, comparisons) is
    skipped with the framework's reason."""
    try:
        complex_problem = make_problem(adapter, case, "complex128", task["seed"], made=problem.made)
        estimate = fd.complex_step(
            lambda i, idx, h: adapter.complex_step_np(complex_problem.f, complex_problem.xs, i, idx, h),
            native_points)
    except Exception as exc:  # noqa: BLE001 - the function has no complex evaluation here
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return {"status": "skipped", "reason": f"{adapter.name} cannot evaluate this function in complex128: "
                                               f"{type(exc).__name__}: {text}"}
    if not all(np.isfinite(e).all() for e in estimate):
        return {"status": "skipped", "reason": "the complex-step derivative is not finite here"}
    for name, e in zip(problem.wrt, problem.to_canonical(estimate)):
        arrays[f"complex_step/{name}"] = e
    return {"status": "ok", "step": fd.COMPLEX_STEP}


def _elementwise_judge(case, native_grads):
    """Does autodiff pass against a first-pass FD estimate of parameter i, element by element, as
    compare.py would judge it? (fd.full refines every element where it does not.)"""
    tol = lookup("float64", case.tolerance, key="fd")
    scale = gradient_scale(dict(enumerate(native_grads)))
    flat = [np.asarray(g, dtype=np.float64).reshape(-1) for g in native_grads]

    def accept(i, estimate, error):
        with np.errstate(invalid="ignore"):
            return np.isfinite(flat[i]) & (np.abs(flat[i] - estimate) <= tol.allowed(estimate, scale, error))
    return accept


def _directional_judge(case, native_grads):
    """How far a directional FD probe is beyond tolerance (> 1 fails), as compare.py judges it."""
    tol = lookup("float64", case.tolerance, key="fd")
    norm = gradient_norm(native_grads) or 1.0

    def excess(projected, estimate, error):
        return abs(projected - estimate) / max(float(tol.allowed(estimate, norm, error)), 1e-300)
    return excess


def _canonical_flat_index(case, framework, name, native_shape, native_flat):
    """Flat indices of native-layout elements, expressed in the canonical layout."""
    positions = case.from_native_layout(framework, name, np.arange(int(np.prod(native_shape))).reshape(native_shape))
    where = np.empty(positions.size, dtype=np.int64)
    where[positions.reshape(-1)] = np.arange(positions.size)
    return where[np.asarray(native_flat)]


def _hvp(adapter, problem, case, task, arrays):
    """Hessian-vector products, each method the framework has, vs FD of the gradient."""
    direction = _random_direction(problem, case, task, "hvp")
    native_dir = problem.to_native(direction)
    info = {"methods": [], "skipped": {}, "failed": {}, "kernels": {}}
    for method in HVP_METHODS:
        try:
            hv, kernels = adapter.with_equivalent_kernels(
                lambda: adapter.hvp_np(problem.f, problem.xs, native_dir, method=method))
        except Exception as exc:  # noqa: BLE001
            # the case declares it is twice differentiable: a refusal is a failure, not a skip
            failed = failure(adapter, problem, exc, declared=True)
            info["failed" if failed["status"] == "error" else "skipped"][method] = (
                failed if failed["status"] == "error" else failed["reason"])
            continue
        hv = problem.to_canonical(hv)
        if kernels:
            info["kernels"][method] = kernels
        info["methods"].append(method)
        for name, a in zip(problem.wrt, hv):
            arrays[f"hvp_{method}/{name}"] = a

    def gradient_at(point):
        _, g = adapter.value_and_grad_np(problem.f, problem.to_native(point, "float64"))
        return problem.to_canonical(g)
    estimate, error = fd.gradient_directional(gradient_at, list(problem.canonical.values()), direction)
    for name, e, r in zip(problem.wrt, estimate, error):
        arrays[f"hvp_fd/{name}"] = e
        arrays[f"hvp_fd_error/{name}"] = r
    return info


__all__ = ["DIRECTIONS", "FULL_FD_LIMIT", "AutodiffError", "NonFiniteLoss",
           "Problem", "failure", "run"]
