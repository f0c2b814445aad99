"""TensorFlow adapter: GradientTape for reverse mode, ForwardAccumulator for forward mode and
HVPs, tf.vectorized_map for batches, tf.function(jit_compile=True) (XLA) for the compiled mode.

Over 400 lines by design: one framework's whole side of the interface (its ops vocabulary,
the transforms, compilation, precision policy, known upstream failures) in one file, so adding
or porting an adapter means reading one.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before the import: silence C++ INFO/WARNING

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from .base import Adapter, Ops, Unsupported, cpu_name  # noqa: E402

_DTYPES = {
    "float64": tf.float64,
    "float32": tf.float32,
    "bfloat16": tf.bfloat16,
    "float16": tf.float16,
    "complex128": tf.complex128,   # the complex-step derivative only
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


def _reduction(fn):
    """A reduction op, fn(x, axis, keepdims)."""
    return staticmethod(lambda x, axis=None, keepdims=False: fn(x, axis=axis, keepdims=keepdims))


def _keras_ops():
    """keras.ops, for the few ops TensorFlow itself lacks; only under Keras' TF backend."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise Unsupported(f"keras runs the {keras.backend.backend()} backend here, not tensorflow "
                          f"(set KERAS_BACKEND=tensorflow)")
    return keras.ops


def _nhwc(x):
    return tf.transpose(x, (0, 2, 3, 1))


def _nchw(x):
    return tf.transpose(x, (0, 3, 1, 2))


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _conv(x, w, stride, padding, dilation, n):
    """tf.nn.convolution in canonical layout: x and w moved channels-last (NWC/NHWC, WIO/HWIO),
    explicit zero padding by tf.pad. Not tf.nn.conv1d/conv2d: with dilation > 1 those have no
    CPU gradient ("Current CPU implementations do not yet support dilation rates larger than
    1"), while tf.nn.convolution dilates by space-to-batch, which has one but refuses
    strides > 1 together with dilation > 1: that combination is Unsupported."""
    spatial = list(range(2, 2 + n))
    pads = [(p, p) for p in ((padding,) * n if isinstance(padding, int) else padding)]
    x = tf.transpose(x, [0] + spatial + [1])
    if any(p for pair in pads for p in pair):
        x = tf.pad(x, [[0, 0]] + [list(p) for p in pads] + [[0, 0]])
    try:
        y = tf.nn.convolution(x, tf.transpose(w, spatial + [1, 0]), strides=stride, padding="VALID",
                              dilations=dilation)
    except ValueError as exc:
        raise Unsupported(f"tensorflow: {exc}") from None
    return tf.transpose(y, [0, n + 1] + list(range(1, n + 1)))


def _pool(fn, x, kernel, stride):
    k = _pair(kernel)
    s = k if stride is None else _pair(stride)
    # TF's CPU pooling kernels are NHWC only
    return _nchw(fn(_nhwc(x), ksize=k, strides=s, padding="VALID"))


class TensorflowOps(Ops):
    framework = "tensorflow"

    add = _binary(tf.math.add)
    sub = _binary(tf.math.subtract)
    mul = _binary(tf.math.multiply)
    div = _binary(tf.math.divide)
    pow = _binary(tf.math.pow)
    maximum = _binary(tf.math.maximum)
    minimum = _binary(tf.math.minimum)
    atan2 = _binary(tf.math.atan2)
    greater = _binary(tf.math.greater)
    neg = staticmethod(tf.math.negative)
    square = staticmethod(tf.math.square)
    sqrt = staticmethod(tf.math.sqrt)
    rsqrt = staticmethod(tf.math.rsqrt)
    abs = staticmethod(tf.math.abs)
    sign = staticmethod(tf.math.sign)
    floor = staticmethod(tf.math.floor)
    round = staticmethod(tf.math.round)
    exp = staticmethod(tf.math.exp)
    expm1 = staticmethod(tf.math.expm1)
    log = staticmethod(tf.math.log)
    log1p = staticmethod(tf.math.log1p)
    sin = staticmethod(tf.math.sin)
    cos = staticmethod(tf.math.cos)
    tan = staticmethod(tf.math.tan)
    tanh = staticmethod(tf.math.tanh)
    sigmoid = staticmethod(tf.math.sigmoid)
    erf = staticmethod(tf.math.erf)
    relu = staticmethod(tf.nn.relu)
    relu6 = staticmethod(tf.nn.relu6)
    selu = staticmethod(tf.nn.selu)
    silu = staticmethod(tf.nn.silu)
    softplus = staticmethod(tf.math.softplus)
    einsum = staticmethod(tf.einsum)
    solve = staticmethod(tf.linalg.solve)
    inv = staticmethod(tf.linalg.inv)
    det = staticmethod(tf.linalg.det)
    cholesky = staticmethod(tf.linalg.cholesky)

    @staticmethod
    def clip(x, lo, hi):
        return tf.clip_by_value(x, lo, hi)

    @staticmethod
    def leaky_relu(x, negative_slope):
        return tf.nn.leaky_relu(x, alpha=negative_slope)

    @staticmethod
    def elu(x, alpha):
        """tf.nn.elu has alpha 1 only; keras.ops.elu scales its negative branch for other alphas."""
        return tf.nn.elu(x) if alpha == 1 else _keras_ops().elu(x, alpha)

    @staticmethod
    def gelu(x, approximate):
        return tf.nn.gelu(x, approximate=approximate)

    @staticmethod
    def hardtanh(x, min_val, max_val):
        if (min_val, max_val) != (-1, 1):
            raise Unsupported("tensorflow has no hardtanh; keras.ops.hard_tanh has fixed bounds [-1, 1]")
        return _keras_ops().hard_tanh(x)

    @staticmethod
    def mish(x):
        raise Unsupported("tensorflow has no mish (tf.nn and keras.ops lack it)")

    # ---- reductions ------------------------------------------------------------------
    sum = _reduction(tf.reduce_sum)
    mean = _reduction(tf.reduce_mean)
    prod = _reduction(tf.reduce_prod)
    max = _reduction(tf.reduce_max)
    min = _reduction(tf.reduce_min)
    amax, amin = max, min  # one reduction in TF, ties shared evenly
    logsumexp = _reduction(tf.math.reduce_logsumexp)

    @staticmethod
    def var(x, ddof, axis=None, keepdims=False):
        """tf.math.reduce_variance is biased only; TF's numpy API takes ddof (and fails with
        ddof != 0 unless given the dtype)."""
        if ddof == 0:
            return tf.math.reduce_variance(x, axis=axis, keepdims=keepdims)
        return tf.experimental.numpy.var(x, axis=axis, ddof=ddof, keepdims=keepdims, dtype=x.dtype)

    @staticmethod
    def std(x, ddof, axis=None, keepdims=False):
        """tf.math.reduce_std is biased only and TF's numpy std has no ddof: composed as the
        square root of var with ddof."""
        if ddof == 0:
            return tf.math.reduce_std(x, axis=axis, keepdims=keepdims)
        return tf.math.sqrt(TensorflowOps.var(x, ddof, axis=axis, keepdims=keepdims))

    @staticmethod
    def norm(x, ord, axis=None, keepdims=False):
        return tf.norm(x, ord=ord, axis=axis, keepdims=keepdims)

    @staticmethod
    def cumsum(x, axis):
        return tf.math.cumsum(x, axis=axis)

    @staticmethod
    def cumprod(x, axis):
        return tf.math.cumprod(x, axis=axis)

    # ---- indexing and shape -----------------------------------------------------------
    @staticmethod
    def where(cond, a, b):
        return tf.where(cond, _like(a, b), _like(b, a))

    @staticmethod
    def gather(x, indices, axis):
        return tf.gather(x, indices, axis=axis)

    @staticmethod
    def take_along_axis(x, indices, axis):
        return tf.experimental.numpy.take_along_axis(x, indices, axis)

    @staticmethod
    def concat(xs, axis):
        return tf.concat(list(xs), axis=axis)

    @staticmethod
    def stack(xs, axis):
        return tf.stack(list(xs), axis=axis)

    @staticmethod
    def pad(x, pad_width, value=0.0):
        return tf.pad(x, [list(p) for p in pad_width], constant_values=value)

    @staticmethod
    def transpose(x, axes=None):
        return tf.transpose(x, perm=None if axes is None else list(axes))

    @staticmethod
    def reshape(x, shape):
        return tf.reshape(x, tuple(shape))

    # ---- linear algebra ------------------------------------------------------------------
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
    def slogdet(a):
        return tf.linalg.slogdet(a)[1]

    @staticmethod
    def eigh(a):
        return tuple(tf.linalg.eigh(a))

    @staticmethod
    def svd(a):
        s, u, v = tf.linalg.svd(a, full_matrices=False)  # TF returns v, not its adjoint
        return u, s, tf.linalg.adjoint(v)

    @staticmethod
    def svdvals(a):
        return tf.linalg.svd(a, compute_uv=False)

    @staticmethod
    def qr(a):
        return tuple(tf.linalg.qr(a, full_matrices=False))

    # ---- nn functional --------------------------------------------------------------
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

    @staticmethod
    def cross_entropy(logits, labels, label_smoothing):
        """tf.nn.sparse_softmax_cross_entropy_with_logits; with smoothing, the dense
        tf.nn.softmax_cross_entropy_with_logits on smoothed one-hot targets (as Keras does)."""
        if label_smoothing == 0:
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        else:
            classes = logits.shape[-1]
            target = tf.one_hot(labels, classes, dtype=logits.dtype)
            target = target * (1.0 - label_smoothing) + label_smoothing / classes
            losses = tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=logits)
        return tf.reduce_mean(losses)

    @staticmethod
    def conv1d(x, w, stride=1, padding=0, dilation=1):
        return _conv(x, w, stride, padding, dilation, 1)

    @staticmethod
    def conv2d(x, w, stride=1, padding=0, dilation=1):
        return _conv(x, w, stride, padding, dilation, 2)

    @staticmethod
    def max_pool2d(x, kernel, stride=None):
        return _pool(tf.nn.max_pool2d, x, kernel, stride)

    @staticmethod
    def avg_pool2d(x, kernel, stride=None):
        return _pool(tf.nn.avg_pool2d, x, kernel, stride)

    @staticmethod
    def layer_norm(x, weight, bias, eps):
        """TF has no layer norm function; keras.ops.layer_normalization over the last axis."""
        return _keras_ops().layer_normalization(x, weight, bias, axis=-1, epsilon=eps)

    @staticmethod
    def batch_norm(x, weight, bias, eps, mean=None, var=None):
        """tf.nn.batch_normalization, with tf.nn.moments over every axis but channel axis 1 in
        training (the pair Keras' BatchNormalization uses)."""
        shape = (1, -1) + (1,) * (len(x.shape) - 2)
        if mean is None:
            mean, var = tf.nn.moments(x, axes=[0] + list(range(2, len(x.shape))), keepdims=True)
        else:
            mean, var = tf.reshape(mean, shape), tf.reshape(var, shape)
        return tf.nn.batch_normalization(x, mean, var, offset=tf.reshape(bias, shape),
                                         scale=tf.reshape(weight, shape), variance_epsilon=eps)

    @staticmethod
    def dropout(x, mask, p):
        """Composed: tf.nn.dropout draws its own mask and accepts none; the scaling and
        masking it applies, with tf.where."""
        return tf.where(mask, x * (1.0 / (1.0 - p)), tf.zeros_like(x))

    @staticmethod
    def embedding(table, ids):
        return tf.nn.embedding_lookup(table, ids)

    @staticmethod
    def scaled_dot_product_attention(q, k, v, mask=None):
        """TF has no attention function; keras.ops.dot_product_attention, (batch, seq, heads,
        dim), the scale 1/sqrt(dim) passed as a python number, as users pass it. Keras applies it
        with tf.cast, which rounds a python float through float32 (as its default scale is a
        float32 tensor), so float64 attention carries a float32-rounded scale."""
        swap = lambda t: tf.transpose(t, (0, 2, 1, 3))  # noqa: E731
        scale = 1.0 / float(q.shape[-1]) ** 0.5
        out = _keras_ops().dot_product_attention(swap(q), swap(k), swap(v), mask=mask, scale=scale)
        return swap(out)


class TensorflowAdapter(Adapter):
    name = "tensorflow"
    UNSUPPORTED_PATTERNS = ("ForwardAccumulator", "forward-mode", "not supported in forward", "MaxPoolGradGrad")

    def __init__(self):
        super().__init__()
        self.ops = TensorflowOps()
        self._device = "/CPU:0"

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
        return cpu_name()

    # ---- conversion ------------------------------------------------------------------
    def asarray(self, array, dtype):
        array = np.asarray(array)
        with tf.device(self._device):
            t = tf.constant(array)
            target = self._cast_target(array, dtype, _DTYPES)
            if target is not None:
                t = tf.cast(t, target)
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
        """fn run under the selected device; eager as is, compiled = one XLA graph for the whole
        callable, cached per (f, kind) because a fresh tf.function would retrace on every call."""
        def placed(*args):
            with tf.device(self._device):
                return fn(*args)
        if not compiled:
            return placed
        return self._memo((f, kind), lambda: tf.function(placed, jit_compile=True))

    def forward_fn(self, f, compiled):
        return self._maybe_compile(f, f, "forward", compiled)

    def grad_fn(self, f, compiled):
        def value_and_grad(*xs):
            xs = list(xs)
            with tf.GradientTape() as tape:
                tape.watch(xs)
                y = f(*xs)
            if y.shape.num_elements() != 1:
                return y, ()
            grads = tape.gradient(y, xs, unconnected_gradients=_ZERO)
            return y, tuple(grads)
        return self._maybe_compile(value_and_grad, f, "grad", compiled)

    def custom_gradients(self, f, xs):
        """tf.custom_gradient ops in f's graph entered from outside TensorFlow and Keras (the
        frame that called the decorated function)."""
        import sys

        graph = tf.function(f, autograph=False).get_concrete_function(
            *[tf.TensorSpec(x.shape, x.dtype) for x in xs]).graph
        found = set()
        for op in graph.get_operations():
            try:
                op.get_attr("_gradient_op_type")
            except (ValueError, TypeError):
                continue
            frames = list(op.traceback)
            entry = next((k for k, fr in enumerate(frames) if fr.filename.endswith("custom_gradient.py")), 0)
            caller = frames[entry - 1] if entry > 0 else None
            if caller is not None and self.defined_outside(caller.filename, [tf] + [m for m in [sys.modules.get("keras")] if m]):
                found.add(f"tf.custom_gradient called from {caller.name}")
        return sorted(found)

    def jvp_fn(self, f, compiled):
        def jvp(xs, vs):
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
                with tf.autodiff.ForwardAccumulator(primals=xs, tangents=list(vs)) as acc:
                    grads = grads_of(xs)
                return tuple(acc.jvp(grads, unconnected_gradients=_ZERO))
        elif method == "rev-over-rev":
            def hvp(xs, vs):
                xs = list(xs)
                with tf.GradientTape() as outer:
                    outer.watch(xs)
                    grads = grads_of(xs)
                    dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vs)])
                return tuple(outer.gradient(dot, xs, unconnected_gradients=_ZERO))
        else:
            raise Unsupported(f"unknown HVP method {method}")
        return self._maybe_compile(hvp, f, f"hvp:{method}", compiled)

    def batched_fn(self, f, in_axes):
        def build():
            def batched(*xs):
                # xs are the traced function's arguments (never closed over), so a memoised
                # graph sees each call's tensors
                at_point, rows = self._on_mapped(f, in_axes, xs)
                with tf.device(self._device):
                    # No while_loop fallback: a failure raises and base.py loops in Python.
                    return tf.vectorized_map(lambda elems: at_point(*elems), rows,
                                             fallback_to_while_loop=False)
            # A plain graph (pfor output is not always XLA-friendly), traced once per f.
            return tf.function(batched)
        return self._memo((f, ("batched", in_axes)), build)

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
