"""TensorFlow adapter: GradientTape for reverse mode, ForwardAccumulator for forward mode and
HVPs, tf.vectorized_map for batches, tf.function(jit_compile=True) (XLA) for the compiled mode."""
from __future__ import annotations

import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before the import: silence C++ INFO/WARNING

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from .base import Adapter, Ops, Unsupported  # noqa: E402

_DTYPES = {
    "float64": tf.float64,
    "float32": tf.float32,
    "bfloat16": tf.bfloat16,
    "float16": tf.float16,
}
_ZERO = tf.UnconnectedGradients.ZERO


def _like(a, b):
    """A python number takes the other operand's dtype: TF does not promote python floats
    against float64 tensors in every op (tf.math.add(0.5, x64) fails)."""
    if isinstance(a, (int, float)) and not isinstance(a, bool) and tf.is_tensor(b):
        return tf.constant(a, dtype=b.dtype)
    return a


def _binary(fn):
    return staticmethod(lambda a, b: fn(_like(a, b), _like(b, a)))


class TensorflowOps(Ops):
    framework = "tensorflow"

    add = _binary(tf.math.add)
    sub = _binary(tf.math.subtract)
    mul = _binary(tf.math.multiply)
    div = _binary(tf.math.divide)
    pow = _binary(tf.math.pow)
    neg = staticmethod(tf.math.negative)
    square = staticmethod(tf.math.square)
    sqrt = staticmethod(tf.math.sqrt)
    abs = staticmethod(tf.math.abs)
    exp = staticmethod(tf.math.exp)
    log = staticmethod(tf.math.log)
    tanh = staticmethod(tf.math.tanh)
    sigmoid = staticmethod(tf.math.sigmoid)
    relu = staticmethod(tf.nn.relu)

    @staticmethod
    def matmul(a, b):
        # tf.linalg.matmul wants rank >= 2; rank-1 operands follow numpy/torch semantics.
        if a.shape.rank == 1 and b.shape.rank == 1:
            return tf.tensordot(a, b, axes=1)
        if b.shape.rank == 1:
            return tf.linalg.matvec(a, b)
        if a.shape.rank == 1:
            return tf.linalg.matvec(b, a, transpose_a=True)
        return tf.linalg.matmul(a, b)

    @staticmethod
    def transpose(x, axes=None):
        return tf.transpose(x, perm=None if axes is None else list(axes))

    @staticmethod
    def reshape(x, shape):
        return tf.reshape(x, tuple(shape))

    @staticmethod
    def sum(x, axis=None, keepdims=False):
        return tf.reduce_sum(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def mean(x, axis=None, keepdims=False):
        return tf.reduce_mean(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def softmax(x, axis=-1):
        return tf.nn.softmax(x, axis=axis)

    @staticmethod
    def log_softmax(x, axis=-1):
        return tf.nn.log_softmax(x, axis=axis)

    @staticmethod
    def mse(pred, target):
        # Mean over *all* elements (keras.losses.MeanSquaredError averages the last axis first).
        return tf.reduce_mean(tf.math.squared_difference(pred, _like(target, pred)))


class TensorflowAdapter(Adapter):
    name = "tensorflow"
    extra = "tensorflow"
    UNSUPPORTED_PATTERNS = ("ForwardAccumulator", "forward-mode", "not supported in forward")

    def __init__(self):
        super().__init__()
        self.ops = TensorflowOps()
        self._device = "/CPU:0"
        self._cache = {}  # (f, kind) -> tf.function, so repeated calls do not retrace

    def version(self) -> str:
        return tf.__version__

    def devices(self) -> list[str]:
        gpus = tf.config.list_physical_devices("GPU")
        return ["cpu"] + [f"cuda:{i}" for i in range(len(gpus))]

    def setup(self, device: str, threads: int, precision: str) -> dict:
        if device not in ("cpu", "cuda"):
            raise Unsupported(f"tensorflow adapter has no device {device}")
        gpus = tf.config.list_physical_devices("GPU")
        if device == "cuda" and not gpus:
            raise Unsupported("this tensorflow build sees no GPU")
        for gpu in gpus:
            try:  # grab memory as needed, not all of it up front; fails once the runtime is up
                tf.config.experimental.set_memory_growth(gpu, True)
            except (RuntimeError, ValueError):
                pass
        self.device = device
        self._device = "/GPU:0" if device == "cuda" else "/CPU:0"
        if threads:
            try:  # RuntimeError once the runtime is initialised
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass
        if precision == "highest":
            tf.config.experimental.enable_tensor_float_32_execution(False)
        return self.precision_policy()

    def precision_policy(self) -> dict:
        tf32 = bool(tf.config.experimental.tensor_float_32_execution_enabled())
        return {
            "tensor_float_32_execution": tf32,
            "threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "reduced_precision_float32": bool(tf32 and self.device == "cuda"),
        }

    def device_name(self) -> str:
        if self.device == "cuda":
            gpu = tf.config.list_physical_devices("GPU")[0]
            return tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
        return platform.processor() or platform.machine() or "cpu"

    # ---- conversion ------------------------------------------------------------------
    def asarray(self, array, dtype):
        array = np.asarray(array)
        with tf.device(self._device):
            t = tf.constant(array)
            if dtype is not None and np.issubdtype(array.dtype, np.floating):
                if dtype not in _DTYPES:
                    raise Unsupported(f"tensorflow has no dtype {dtype}")
                t = tf.cast(t, _DTYPES[dtype])
            return t

    def to_numpy(self, tensor) -> np.ndarray:
        t = tf.convert_to_tensor(tensor)
        if t.dtype.is_floating:
            t = tf.cast(t, tf.float64)  # also sidesteps numpy's lack of bfloat16
        return t.numpy()

    def dtype_of(self, tensor) -> str:
        return tensor.dtype.name

    # ---- differentiation ---------------------------------------------------------------
    def _maybe_compile(self, fn, f, kind, compiled):
        """Eager as is; compiled = one XLA graph for the whole callable, cached per (f, kind)
        because a fresh tf.function would retrace on every call."""
        if not compiled:
            return fn
        key = (f, kind)
        if key not in self._cache:
            self._cache[key] = tf.function(fn, jit_compile=True)
        return self._cache[key]

    def forward_fn(self, f, compiled):
        def forward(*xs):
            with tf.device(self._device):
                return f(*xs)
        return self._maybe_compile(forward, f, "forward", compiled)

    def grad_fn(self, f, compiled):
        def value_and_grad(*xs):
            with tf.device(self._device):
                xs = list(xs)
                with tf.GradientTape() as tape:
                    tape.watch(xs)
                    y = f(*xs)
                if y.shape.num_elements() != 1:
                    return y, ()
                grads = tape.gradient(y, xs, unconnected_gradients=_ZERO)
                return y, tuple(grads)
        return self._maybe_compile(value_and_grad, f, "grad", compiled)

    def jvp_fn(self, f, compiled):
        def jvp(xs, vs):
            with tf.device(self._device):
                with tf.autodiff.ForwardAccumulator(primals=list(xs), tangents=list(vs)) as acc:
                    y = f(*xs)
                return y, acc.jvp(y, unconnected_gradients=_ZERO)
        return self._maybe_compile(jvp, f, "jvp", compiled)

    def hvp_fn(self, f, compiled, method):
        def grads_of(xs):
            with tf.GradientTape() as tape:
                tape.watch(xs)
                y = f(*xs)
            return tape.gradient(y, xs, unconnected_gradients=_ZERO)

        if method == "fwd-over-rev":
            def hvp(xs, vs):
                xs = list(xs)
                with tf.device(self._device):
                    with tf.autodiff.ForwardAccumulator(primals=xs, tangents=list(vs)) as acc:
                        grads = grads_of(xs)
                    return tuple(acc.jvp(grads, unconnected_gradients=_ZERO))
        elif method == "rev-over-rev":
            def hvp(xs, vs):
                xs = list(xs)
                with tf.device(self._device):
                    with tf.GradientTape() as outer:
                        outer.watch(xs)
                        grads = grads_of(xs)
                        dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vs)])
                    return tuple(outer.gradient(dot, xs, unconnected_gradients=_ZERO))
        else:
            raise Unsupported(f"unknown HVP method {method}")
        return self._maybe_compile(hvp, f, f"hvp:{method}", compiled)

    def batched_fn(self, f, in_axes):
        key = (f, ("batched", in_axes))
        if key not in self._cache:
            mapped = [i for i, a in enumerate(in_axes) if a == 0]

            def batched(*xs):
                def row(elems):
                    args = list(xs)
                    for i, e in zip(mapped, elems):
                        args[i] = e
                    return f(*args)
                with tf.device(self._device):
                    # No while_loop fallback: a failure raises and base.py loops in Python.
                    return tf.vectorized_map(row, tuple(xs[i] for i in mapped),
                                             fallback_to_while_loop=False)
            # A plain graph (pfor output is not always XLA-friendly), traced once per f.
            self._cache[key] = tf.function(batched)
        return self._cache[key]

    def perturb(self, x, flat_index, delta):
        n = len(flat_index)
        with tf.device(self._device):
            batch = tf.tile(tf.reshape(x, (1, -1)), (n, 1))
            idx = tf.stack([tf.range(n, dtype=tf.int64),
                            tf.constant(np.asarray(flat_index), dtype=tf.int64)], axis=1)
            d = tf.cast(tf.constant(np.asarray(delta)), x.dtype)
            batch = tf.tensor_scatter_nd_add(batch, idx, d)
            return tf.reshape(batch, (n,) + tuple(x.shape))

    def sync(self, result=None) -> None:
        if self.device == "cuda" and hasattr(tf.test.experimental, "sync_devices"):
            tf.test.experimental.sync_devices()
        if result is not None:  # eager ops may still be queued behind the result's handle
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
