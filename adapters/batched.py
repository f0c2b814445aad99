"""Batched evaluation for finite differences, written once for every adapter (as Keras keeps
backend/common/): f at many perturbed points in one vectorised call where the framework can
vectorise f, one point at a time where it cannot, over the interface's own primitives
(``batched_fn``, ``perturbed``, ``shifted_fn``, ``forward_fn``, ``to_numpy``, ``asarray``)."""
from __future__ import annotations

import numpy as np

from adapters.errors import Unsupported


class BatchedEvaluation:
    """Mixed into adapters.base.Adapter; numpy in and out."""

    def _vectorised_or_loop(self, f, vectorised, loop):
        """vectorised() where f can be vectorised; loop() otherwise. A failure is remembered
        per f, so a function that cannot be vmapped is tried only once."""
        if getattr(f, "_harness_no_vmap", False) is False:
            try:
                return vectorised()
            except Unsupported:
                raise
            except Exception:  # noqa: BLE001 - any vmap failure falls back to the loop
                try:
                    f._harness_no_vmap = True
                except AttributeError:
                    pass
        return loop()

    def _loop_np(self, f, xs, batched: dict, kind) -> np.ndarray:
        """evaluate_batch_np one row at a time, eagerly."""
        n = next(iter(batched.values())).shape[0]
        forward = self.forward_fn(f, compiled=False)
        out = np.empty(n, dtype=kind)
        for b in range(n):
            row = [batched[i][b] if i in batched else x for i, x in enumerate(xs)]
            value = forward(*row)
            out[b] = np.asarray(self.to_numpy(value)).reshape(()) if kind is np.complex128 else self.scalar(value)
        return out

    def evaluate_batch_np(self, f, xs, batched: dict, complex_values: bool = False) -> np.ndarray:
        """f at B points: xs[i] replaced by row b of batched[i] (native (B, ...) tensors) for
        each i in batched. Vectorised where the framework can; a Python loop otherwise. With
        ``complex_values`` the values stay complex (the complex-step derivative)."""
        kind = np.complex128 if complex_values else np.float64
        in_axes = tuple(0 if i in batched else None for i in range(len(xs)))
        args = [batched.get(i, x) for i, x in enumerate(xs)]
        return self._vectorised_or_loop(
            f, lambda: np.asarray(self.to_numpy(self.batched_fn(f, in_axes)(*args)), dtype=kind).reshape(-1),
            lambda: self._loop_np(f, xs, batched, kind))

    def complex_step_np(self, f, xs, i, flat_index, h) -> np.ndarray:
        """Im f(x + i h e_j) / h for each flat index j of xs[i]: the complex-step derivative,
        exact to rounding (no subtraction) where f is complex-analytic. f and xs must be
        complex128 (a Problem built with that dtype)."""
        delta = np.full(len(flat_index), 1j * h)
        with self.perturbed(xs[i], np.asarray(flat_index), delta) as batch:
            return np.imag(self.evaluate_batch_np(f, xs, {i: batch}, complex_values=True)) / h

    def evaluate_elementwise_np(self, f, xs, i, flat_index, delta) -> np.ndarray:
        """f with element flat_index[b] of xs[i] shifted by delta[b], for each b."""
        flat_index, delta = np.asarray(flat_index), np.asarray(delta, dtype=np.float64)
        shifted = self.shifted_fn(f, i, len(xs))
        if shifted is None:
            with self.perturbed(xs[i], flat_index, delta) as batch:
                return self.evaluate_batch_np(f, xs, {i: batch})

        def loop():
            with self.perturbed(xs[i], flat_index, delta) as batch:
                return self._loop_np(f, xs, {i: batch}, np.float64)
        others = list(xs[:i]) + list(xs[i + 1:])
        return self._vectorised_or_loop(
            f, lambda: np.asarray(self.to_numpy(shifted(xs[i], flat_index, delta, *others)),
                                  dtype=np.float64).reshape(-1), loop)

    def evaluate_directions_np(self, f, xs, directions, steps, points=None) -> np.ndarray:
        """f(xs + steps[b] * directions[.][b]): directions is a list (one per x) of numpy
        (B, *shape) arrays; steps a (B,) array. ``points``, where given, are xs as numpy (what
        ``to_numpy`` returns), so a caller evaluating many times converts them only once."""
        batched = {}
        for i, (x, d) in enumerate(zip(xs, directions)):
            shape = (len(steps),) + (1,) * (d.ndim - 1)
            at = self.to_numpy(x) if points is None else np.asarray(points[i])
            point = at[None] + np.asarray(steps).reshape(shape) * d
            batched[i] = self.asarray(point, self.dtype_of(x))
        return self.evaluate_batch_np(f, xs, batched)


__all__ = ["BatchedEvaluation"]
