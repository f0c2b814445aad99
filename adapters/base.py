"""The one interface every framework adapter implements.

An adapter turns a framework into four kinds of callable over *native* tensors (forward,
value-and-gradient, JVP, HVP), each eager or compiled, plus batched evaluation for finite
differences and a ``sync`` for timing. Everything that crosses into ``harness/`` is numpy:
the ``*_np`` helpers defined here do that conversion once, for all frameworks.

A subclass imports its framework at module top; this module imports none, so the registry
(adapters/__init__.py) and the framework-free core can use it freely.
"""
from __future__ import annotations

import contextlib
import platform
from collections import OrderedDict

import numpy as np

from adapters.batched import BatchedEvaluation
from adapters.errors import ScalarError, ShapeError, Unsupported

#: compiled callables kept per adapter (``Adapter._memo``); bounded so a long-lived worker does
#: not hoard executables
_CACHE_SIZE = 64


def cpu_name(fallback: str = "cpu") -> str:
    """The CPU model for ``device_name``, as the OS reports it; ``fallback`` where it does not."""
    return platform.processor() or platform.machine() or fallback


class Ops:
    """Base of each adapter's neutral vocabulary (harness/define/ops_spec.py lists the names).

    Missing names raise Unsupported, so a case that uses an op a framework lacks is skipped
    with a reason rather than crashing the worker.
    """

    framework = "?"

    def __getattr__(self, name):
        raise Unsupported(f"op '{name}' is not available in {self.framework}")


class Adapter(BatchedEvaluation):
    """Base class; see adapters/torch_adapter.py for the reference implementation. The batched
    evaluation finite differences use is written once for all (adapters/batched.py)."""

    name: str = "?"

    def __init__(self):
        self.device = "cpu"
        self.ops = Ops()
        self._memos = OrderedDict()  # (f, kind) -> compiled callable, least recently used first

    # ---- lifecycle -------------------------------------------------------------------
    def version(self) -> str:
        raise NotImplementedError

    def devices(self) -> list[str]:
        """Devices this framework can see in this process: 'cpu', 'cuda:0', 'mps', 'tpu:0'..."""
        raise NotImplementedError

    def setup(self, device: str, threads: int, precision: str) -> dict:
        """Select the device ('cpu' or 'cuda', index 0 of what the worker may see), pin
        threads, enable float64, apply the precision policy ('default' keeps the framework's
        defaults, 'highest' forces full float32) and return the policy now in force."""
        raise NotImplementedError

    def precision_policy(self) -> dict:
        """The reduced-precision settings in force (TF32 flags, default matmul precision)."""
        raise NotImplementedError

    def device_name(self) -> str:
        """Human name of the selected device (CPU model or GPU name)."""
        raise NotImplementedError

    def seeded_build(self, builder, seed: int):
        """``builder()`` with this framework's global generator seeded by the task (a module's
        initial weights), the generator's state restored afterwards."""
        return builder()

    # ---- conversion ------------------------------------------------------------------
    def asarray(self, array: np.ndarray, dtype: str | None):
        """numpy -> native on the selected device; floating arrays cast to ``dtype``,
        integer and boolean arrays kept as they are."""
        raise NotImplementedError

    def _cast_target(self, array: np.ndarray, dtype: str | None, dtypes: dict):
        """The native dtype (from ``dtypes``, name -> native) ``asarray`` casts ``array`` to;
        None where it is kept as it is (no dtype asked for, or not a floating array)."""
        if dtype is None or not np.issubdtype(array.dtype, np.floating):
            return None
        if dtype not in dtypes:
            raise Unsupported(f"{self.name} has no dtype {dtype}")
        return dtypes[dtype]

    def to_numpy(self, tensor) -> np.ndarray:
        """native -> numpy float64 (or the integer/bool type it holds)."""
        raise NotImplementedError

    # ---- differentiation, over native tensors -----------------------------------------
    def _memo(self, key, build):
        """build() cached per ``key`` (least recently used dropped past _CACHE_SIZE entries): a
        fresh compile of a fresh transform re-traces. An unhashable key builds uncached."""
        try:
            value = self._memos.get(key)
        except TypeError:  # unhashable callable in the key: build without caching
            return build()
        if value is None:
            value = self._memos[key] = build()
            if len(self._memos) > _CACHE_SIZE:
                self._memos.popitem(last=False)
        else:
            self._memos.move_to_end(key)
        return value

    def forward_fn(self, f, compiled: bool):
        """callable(*xs) -> native scalar."""
        raise NotImplementedError

    def grad_fn(self, f, compiled: bool):
        """callable(*xs) -> (native scalar, tuple of native gradients, one per x)."""
        raise NotImplementedError

    def jvp_fn(self, f, compiled: bool):
        """callable(xs, vs) -> (native scalar, native scalar directional derivative),
        by forward-mode AD."""
        raise NotImplementedError

    def hvp_fn(self, f, compiled: bool, method: str):
        """callable(xs, vs) -> tuple of native (Hessian @ v) per x. ``method`` is
        'fwd-over-rev' or 'rev-over-rev'; Unsupported where the framework lacks one."""
        raise NotImplementedError

    def batched_fn(self, f, in_axes: tuple):
        """callable(*xs) -> native vector: f mapped over axis 0 of the xs whose in_axes is 0
        (others shared), vectorised (vmap / vectorized_map). Raise if it cannot be."""
        raise NotImplementedError

    @staticmethod
    def _on_mapped(f, in_axes, xs):
        """(g, rows) for a ``batched_fn``: g(*rows) calls f with the batched arguments (in_axes
        not None) replaced by ``rows`` and the shared ones taken from ``xs``; rows are the
        batched xs. Mapping g over rows maps only those, the shared ones being closed over."""
        mapped = [k for k, a in enumerate(in_axes) if a is not None]

        def g(*rows):
            args = list(xs)
            for k, row in zip(mapped, rows):
                args[k] = row
            return f(*args)
        return g, tuple(xs[k] for k in mapped)

    def perturb(self, x, flat_index: np.ndarray, delta: np.ndarray):
        """A native batch (B, *x.shape): row b is x with element flat_index[b] shifted by
        delta[b], built on the device so finite differences never ship dense batches."""
        raise NotImplementedError

    @contextlib.contextmanager
    def perturbed(self, x, flat_index: np.ndarray, delta: np.ndarray):
        """``perturb``'s batch, valid only inside the ``with`` block, so an adapter whose tensors
        are mutable may reuse one set of copies between calls (see the torch adapter)."""
        yield self.perturb(x, flat_index, delta)

    def sync(self, result=None) -> None:
        """Block until all queued device work (and ``result``) is complete."""
        raise NotImplementedError

    #: fragments of framework error messages that mean "this transform is not supported for
    #: this function" (e.g. forward mode through a reverse-only custom gradient)
    UNSUPPORTED_PATTERNS: tuple = ()

    def unsupported_reason(self, exc: Exception) -> str | None:
        """A one-line reason when ``exc`` says a transform is unsupported, else None."""
        if isinstance(exc, Unsupported):
            return str(exc)
        text = str(exc)
        for pattern in self.UNSUPPORTED_PATTERNS:
            if pattern in text:
                return f"{self.name} cannot apply this transform here: {text.strip().splitlines()[0][:300]}"
        return None

    #: fragment of a framework error message -> the upstream report of that framework bug
    KNOWN_FAILURES: dict = {}

    def known_failure(self, exc: Exception) -> str:
        """The upstream reference when ``exc`` is a known bug of the framework itself, else ''."""
        text = str(exc)
        return next((ref for fragment, ref in self.KNOWN_FAILURES.items() if fragment in text), "")

    def custom_gradients(self, f, xs) -> list:
        """The custom-gradient rules the function uses that were defined outside the framework
        itself (a torch autograd.Function, a jax.custom_vjp/custom_jvp, a tf.custom_gradient),
        as short names: a transform that fails through one is the case's doing, not the
        framework's. Frameworks that cannot tell return []."""
        return []

    def equivalent_kernels(self, exc: Exception):
        """A context manager selecting equivalent kernels that support the transform ``exc``
        says a fused kernel lacks (e.g. the math attention backend), with a description, as
        (context, description); None where there is none."""
        return None

    def with_equivalent_kernels(self, call):
        """``call()``, retried once under equivalent kernels when a fused kernel lacks the
        transform; returns (result, description of the kernels used, or '')."""
        try:
            return call(), ""
        except Exception as exc:  # noqa: BLE001 - re-raised unless an equivalent kernel exists
            fallback = self.equivalent_kernels(exc)
            if fallback is None:
                raise
            context, description = fallback
            with context:
                return call(), description

    # ---- numpy boundary, shared by all frameworks --------------------------------------
    def scalar(self, y) -> float:
        a = self.to_numpy(y)
        if a.shape != () and a.size != 1:
            raise ScalarError(f"loss must return a scalar, got shape {tuple(a.shape)}")
        if not np.issubdtype(a.dtype, np.floating):
            raise ScalarError(f"loss must return a floating scalar, got {a.dtype}")
        return float(a.reshape(()))

    def value_and_grad_np(self, f, xs, compiled=False):
        return self.grad_result_np(self.grad_fn(f, compiled)(*xs), xs)

    def grad_result_np(self, result, xs):
        """(value, grads) of a grad_fn call at ``xs``, as a float and numpy arrays shaped exactly
        like the xs (a 0-d parameter gets a 0-d gradient)."""
        y, grads = result
        return self.scalar(y), self.shaped_np(grads, xs, "gradient")

    def jvp_np(self, f, xs, vs, compiled=False):
        y, t = self.jvp_fn(f, compiled)(xs, vs)
        return self.scalar(y), self.scalar(t)

    @staticmethod
    def defined_outside(path, packages) -> bool:
        """Is the source file ``path`` outside every one of the framework ``packages`` (modules)?"""
        import os

        if not path:
            return False
        path = os.path.realpath(path)
        roots = [os.path.realpath(os.path.dirname(getattr(m, "__file__", "") or "")) for m in packages]
        return not any(r and path.startswith(r + os.sep) for r in roots)

    def hvp_np(self, f, xs, vs, compiled=False, method="fwd-over-rev"):
        return self.shaped_np(self.hvp_fn(f, compiled, method)(xs, vs), xs, f"{method} HVP")

    def shaped_np(self, tensors, xs, what: str) -> list:
        """numpy copies of ``tensors``, one per x, each in exactly x's shape. A framework that
        returns a size-1 array for a 0-d parameter (or drops a unit axis) is reshaped; one whose
        element count differs raises ShapeError, so no comparison is ever made on a wrong shape."""
        tensors = list(tensors)
        if len(tensors) != len(xs):
            raise ShapeError(f"{self.name} returned {len(tensors)} {what}(s) for {len(xs)} parameter(s)")
        out = []
        for k, (t, x) in enumerate(zip(tensors, xs)):
            a, shape = self.to_numpy(t), tuple(int(d) for d in x.shape)
            if a.shape != shape:
                if a.size != int(np.prod(shape)):
                    raise ShapeError(f"{self.name}'s {what} of parameter {k} has shape {a.shape}, "
                                     f"the parameter {shape}")
                a = a.reshape(shape)
            out.append(a)
        return out

    def evaluate_np(self, f, xs, compiled=False) -> float:
        return self.scalar(self.forward_fn(f, compiled)(*xs))

    def shifted_fn(self, f, i: int, n_args: int):
        """callable(x, flat_index, delta, *other_xs) -> native vector: f with element
        flat_index[b] of argument i shifted by delta[b], shifting and evaluating fused in one
        vectorised call (numpy index and delta in). None where the adapter has no such path:
        ``perturbed`` and ``batched_fn`` then do it in two steps."""
        return None

    def dtype_of(self, tensor) -> str:
        """Canonical dtype name of a native tensor ('float64', ...)."""
        raise NotImplementedError


__all__ = ["Adapter", "Ops", "ScalarError", "ShapeError", "Unsupported", "cpu_name"]
