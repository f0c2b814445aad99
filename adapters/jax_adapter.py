"""JAX adapter: jax.value_and_grad for reverse mode, jax.jvp for forward mode, jax.vmap for
batches, jax.jit over the whole computation for the compiled mode.

Over 400 lines by design: one framework's whole side of the interface (its ops vocabulary,
the transforms, compilation, precision policy, known upstream failures) in one file, so adding
or porting an adapter means reading one.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np
from jax import lax

from .base import Adapter, Ops, Unsupported, cpu_name

_DTYPES = {
    "float64": jnp.float64,
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
    "complex128": jnp.complex128,   # the complex-step derivative only
}
#: matmul precisions that compute float32 dots/convs in full float32 on a GPU
_FULL_FLOAT32 = ("highest", "float32", "f32_f32_f32")


def _dims(axis):
    return axis if axis is None or isinstance(axis, int) else tuple(axis)


def _reduction(fn):
    """A reduction op, fn(x, axis, keepdims), with the axis given as an int, a sequence or None."""
    return staticmethod(lambda x, axis=None, keepdims=False: fn(x, axis=_dims(axis), keepdims=keepdims))


def _all(xs):
    return tuple(range(len(xs)))


def _pairs(value, n):
    """An int or a sequence as an n-tuple (conv strides, padding, dilation)."""
    return (value,) * n if isinstance(value, int) else tuple(value)


def _conv(x, w, stride, padding, dilation, dims):
    """lax.conv_general_dilated in canonical layout (jax.numpy and jax.nn have no conv)."""
    n = len(dims[0]) - 2
    return lax.conv_general_dilated(
        x, w, window_strides=_pairs(stride, n), padding=[(p, p) for p in _pairs(padding, n)],
        rhs_dilation=_pairs(dilation, n), dimension_numbers=dims)


def _pool(x, kernel, stride, init, op):
    k, s = _pairs(kernel, 2), _pairs(kernel if stride is None else stride, 2)
    return lax.reduce_window(x, init, op, (1, 1) + k, (1, 1) + s, "VALID")


class JaxOps(Ops):
    framework = "jax"

    add = staticmethod(jnp.add)
    sub = staticmethod(jnp.subtract)
    mul = staticmethod(jnp.multiply)
    div = staticmethod(jnp.divide)
    neg = staticmethod(jnp.negative)
    pow = staticmethod(jnp.power)
    square = staticmethod(jnp.square)
    sqrt = staticmethod(jnp.sqrt)
    rsqrt = staticmethod(lax.rsqrt)
    abs = staticmethod(jnp.abs)
    sign = staticmethod(jnp.sign)
    maximum = staticmethod(jnp.maximum)
    minimum = staticmethod(jnp.minimum)
    floor = staticmethod(jnp.floor)
    round = staticmethod(jnp.round)
    exp = staticmethod(jnp.exp)
    expm1 = staticmethod(jnp.expm1)
    log = staticmethod(jnp.log)
    log1p = staticmethod(jnp.log1p)
    sin = staticmethod(jnp.sin)
    cos = staticmethod(jnp.cos)
    tan = staticmethod(jnp.tan)
    tanh = staticmethod(jnp.tanh)
    sigmoid = staticmethod(jax.nn.sigmoid)
    erf = staticmethod(jax.scipy.special.erf)
    atan2 = staticmethod(jnp.arctan2)
    relu = staticmethod(jax.nn.relu)
    relu6 = staticmethod(jax.nn.relu6)
    selu = staticmethod(jax.nn.selu)
    silu = staticmethod(jax.nn.silu)
    softplus = staticmethod(jax.nn.softplus)
    mish = staticmethod(jax.nn.mish)
    greater = staticmethod(jnp.greater)
    where = staticmethod(jnp.where)
    matmul = staticmethod(jnp.matmul)
    einsum = staticmethod(jnp.einsum)
    solve = staticmethod(jnp.linalg.solve)
    inv = staticmethod(jnp.linalg.inv)
    det = staticmethod(jnp.linalg.det)
    cholesky = staticmethod(jnp.linalg.cholesky)
    svdvals = staticmethod(jnp.linalg.svdvals)

    @staticmethod
    def clip(x, lo, hi):
        return jnp.clip(x, lo, hi)

    @staticmethod
    def leaky_relu(x, negative_slope):
        return jax.nn.leaky_relu(x, negative_slope)

    @staticmethod
    def elu(x, alpha):
        return jax.nn.elu(x, alpha)

    @staticmethod
    def gelu(x, approximate):
        return jax.nn.gelu(x, approximate=approximate)

    @staticmethod
    def hardtanh(x, min_val, max_val):
        if (min_val, max_val) != (-1, 1):
            raise Unsupported("jax.nn.hard_tanh has fixed bounds [-1, 1]")
        return jax.nn.hard_tanh(x)

    # ---- reductions ------------------------------------------------------------------
    sum = _reduction(jnp.sum)
    mean = _reduction(jnp.mean)
    prod = _reduction(jnp.prod)
    max = _reduction(jnp.max)
    min = _reduction(jnp.min)
    amax, amin = max, min  # jnp.amax is jnp.max: one reduction, ties shared evenly
    logsumexp = _reduction(jax.nn.logsumexp)

    @staticmethod
    def var(x, ddof, axis=None, keepdims=False):
        return jnp.var(x, axis=_dims(axis), ddof=ddof, keepdims=keepdims)

    @staticmethod
    def std(x, ddof, axis=None, keepdims=False):
        return jnp.std(x, axis=_dims(axis), ddof=ddof, keepdims=keepdims)

    @staticmethod
    def norm(x, ord, axis=None, keepdims=False):
        return jnp.linalg.vector_norm(x, ord=ord, axis=_dims(axis), keepdims=keepdims)

    @staticmethod
    def cumsum(x, axis):
        return jnp.cumsum(x, axis=axis)

    @staticmethod
    def cumprod(x, axis):
        return jnp.cumprod(x, axis=axis)

    # ---- indexing and shape -----------------------------------------------------------
    @staticmethod
    def gather(x, indices, axis):
        return jnp.take(x, indices, axis=axis)

    @staticmethod
    def take_along_axis(x, indices, axis):
        return jnp.take_along_axis(x, indices, axis=axis)

    @staticmethod
    def concat(xs, axis):
        return jnp.concatenate(list(xs), axis=axis)

    @staticmethod
    def stack(xs, axis):
        return jnp.stack(list(xs), axis=axis)

    @staticmethod
    def pad(x, pad_width, value=0.0):
        return jnp.pad(x, [tuple(p) for p in pad_width], constant_values=value)

    @staticmethod
    def transpose(x, axes=None):
        return jnp.transpose(x, None if axes is None else tuple(axes))

    @staticmethod
    def reshape(x, shape):
        return jnp.reshape(x, tuple(shape))

    # ---- linear algebra ------------------------------------------------------------------
    @staticmethod
    def slogdet(a):
        return jnp.linalg.slogdet(a).logabsdet

    @staticmethod
    def eigh(a):
        return tuple(jnp.linalg.eigh(a))

    @staticmethod
    def svd(a):
        return tuple(jnp.linalg.svd(a, full_matrices=False))

    @staticmethod
    def qr(a):
        return tuple(jnp.linalg.qr(a, mode="reduced"))

    # ---- nn functional --------------------------------------------------------------
    @staticmethod
    def softmax(x, axis=-1):
        return jax.nn.softmax(x, axis=axis)

    @staticmethod
    def log_softmax(x, axis=-1):
        return jax.nn.log_softmax(x, axis=axis)

    @staticmethod
    def mse(pred, target):
        # JAX has no built-in mse loss (optax is not a dependency); this is its definition.
        return jnp.mean(jnp.square(jnp.subtract(pred, target)))

    @staticmethod
    def cross_entropy(logits, labels, label_smoothing):
        """Composed: JAX's core has no cross-entropy (optax has); jax.nn.log_softmax and
        jax.nn.one_hot with the smoothing of torch and Keras."""
        classes = logits.shape[-1]
        target = jax.nn.one_hot(labels, classes, dtype=logits.dtype)
        target = target * (1.0 - label_smoothing) + label_smoothing / classes
        return -jnp.mean(jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1))

    @staticmethod
    def conv1d(x, w, stride=1, padding=0, dilation=1):
        return _conv(x, w, stride, padding, dilation, ("NCH", "OIH", "NCH"))

    @staticmethod
    def conv2d(x, w, stride=1, padding=0, dilation=1):
        return _conv(x, w, stride, padding, dilation, ("NCHW", "OIHW", "NCHW"))

    @staticmethod
    def max_pool2d(x, kernel, stride=None):
        """Composed: jax.nn has no pooling; lax.reduce_window is the primitive flax pools with."""
        return _pool(x, kernel, stride, -jnp.inf, lax.max)

    @staticmethod
    def avg_pool2d(x, kernel, stride=None):
        """Composed: a lax.reduce_window sum over the window, divided by its size."""
        k = _pairs(kernel, 2)
        return _pool(x, kernel, stride, 0.0, lax.add) / (k[0] * k[1])

    @staticmethod
    def layer_norm(x, weight, bias, eps):
        """Composed: JAX's core has no layer norm (flax has); jax.nn.standardize over the last
        axis, its default (one-pass, mean(x^2) - mean^2) variance, then the affine map."""
        return jax.nn.standardize(x, axis=-1, epsilon=eps) * weight + bias

    @staticmethod
    def batch_norm(x, weight, bias, eps, mean=None, var=None):
        """Composed: jax.nn.standardize over every axis but the channel axis 1, with the batch's
        statistics or the given running ones, then the affine map."""
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if mean is not None:
            mean, var = jnp.reshape(mean, shape), jnp.reshape(var, shape)
        y = jax.nn.standardize(x, axis=axes, mean=mean, variance=var, epsilon=eps)
        return y * jnp.reshape(weight, shape) + jnp.reshape(bias, shape)

    @staticmethod
    def dropout(x, mask, p):
        """Composed: JAX has no dropout function (flax has); the scaling and masking with jnp.where."""
        return jnp.where(mask, x * (1.0 / (1.0 - p)), 0.0)

    @staticmethod
    def embedding(table, ids):
        return jnp.take(table, ids, axis=0)

    @staticmethod
    def scaled_dot_product_attention(q, k, v, mask=None):
        # jax.nn.dot_product_attention is (batch, seq, heads, dim)
        swap = lambda t: jnp.swapaxes(t, 1, 2)  # noqa: E731
        return swap(jax.nn.dot_product_attention(swap(q), swap(k), swap(v), mask=mask))


class JaxAdapter(Adapter):
    name = "jax"
    UNSUPPORTED_PATTERNS = ("can't apply forward-mode autodiff", "custom_vjp", "not supported for forward-mode")

    def __init__(self):
        super().__init__()
        self.ops = JaxOps()
        self._device = None  # None: JAX's default device, until setup() picks one
        self._threads = 0

    def version(self) -> str:
        return jax.__version__

    def devices(self) -> list[str]:
        found = ["cpu"]
        for backend, label in (("gpu", "cuda"), ("tpu", "tpu")):
            try:
                found += [f"{label}:{i}" for i in range(len(jax.devices(backend)))]
            except Exception:  # noqa: BLE001 - backend absent or failed to initialise (RuntimeError, AssertionError)
                pass
        return found

    def setup(self, device: str, threads: int, precision: str) -> dict:
        if device == "cpu":
            self._device = jax.devices("cpu")[0]
        elif device == "cuda":
            self._device = self._first_gpu()
        else:
            raise Unsupported(f"the jax adapter runs on 'cpu' or 'cuda', not {device!r}")
        self.device = device
        jax.config.update("jax_enable_x64", True)
        # arrays a loss creates itself (jnp.ones, ...) then land where its inputs are
        jax.config.update("jax_default_device", self._device)
        # JAX has no runtime thread API: the runner sets XLA_FLAGS before import; record it.
        self._threads = threads
        if precision == "highest":
            jax.config.update("jax_default_matmul_precision", "highest")
        return self.precision_policy()

    @staticmethod
    def _first_gpu():
        why = ""
        for backend in ("gpu", "cuda"):
            try:
                found = jax.devices(backend)
                if found:
                    return found[0]
            except Exception as exc:  # noqa: BLE001 - a CPU-only jaxlib under JAX_PLATFORMS=cuda fails an
                # assert inside xla_bridge rather than raising RuntimeError: either way, no GPU here
                why = why or str(exc).strip().split("\n")[0]
        raise Unsupported("this jax install sees no GPU (install jax[cuda12] or jax[cuda13] and check "
                          "JAX_PLATFORMS / CUDA_VISIBLE_DEVICES)" + (f": {why}" if why else ""))

    def precision_policy(self) -> dict:
        matmul = jax.config.jax_default_matmul_precision
        matmul = "default" if matmul is None else str(matmul)
        backend = self._device.platform if self._device is not None else jax.default_backend()
        return {
            "jax_default_matmul_precision": matmul,
            "backend": backend,
            "threads": self._threads,
            # on Ampere+ GPUs DEFAULT precision runs float32 dots and convs in TF32; CPUs never do
            "reduced_precision_float32": bool(
                backend in ("gpu", "cuda", "rocm") and matmul.lower() not in _FULL_FLOAT32),
        }

    def device_name(self) -> str:
        device = self._device if self._device is not None else jax.devices()[0]
        if device.platform == "cpu":  # device_kind is just "cpu": report the model, as torch does
            return cpu_name(device.device_kind)
        return device.device_kind

    # ---- conversion ------------------------------------------------------------------
    def asarray(self, array, dtype):
        array = np.asarray(array)
        target = self._cast_target(array, dtype, _DTYPES)
        if target is not None:
            array = array.astype(target)
        return jax.device_put(array, self._device)

    def to_numpy(self, tensor) -> np.ndarray:
        a = np.asarray(tensor)
        # jnp.issubdtype, not np's: numpy does not count bfloat16 as floating
        return a.astype(np.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a

    def dtype_of(self, tensor) -> str:
        return np.dtype(tensor.dtype).name

    # ---- differentiation ---------------------------------------------------------------
    def _jit(self, f, kind, build):
        """jax.jit(build()) cached per (f, kind): a fresh jit of a fresh transform re-traces."""
        return self._memo((f, kind), lambda: jax.jit(build()))

    def forward_fn(self, f, compiled):
        return self._jit(f, "forward", lambda: f) if compiled else f

    def grad_fn(self, f, compiled):
        def scalar_f(xs):
            # a size-1 output counts as a scalar, as in torch; jax.grad wants shape ()
            y = f(*xs)
            return jnp.reshape(y, ()) if jnp.size(y) == 1 else y

        # one tuple argument (one pytree), so one transform serves every arity; the grads come
        # back as a tuple, one per x
        build = lambda: jax.value_and_grad(scalar_f)  # noqa: E731
        vg = self._jit(f, "grad", build) if compiled else build()

        def value_and_grad(*xs):
            try:
                return vg(xs)
            except TypeError:
                # jax refuses non-scalar (or non-float) outputs with a TypeError; return the
                # output so base.scalar() reports it as a ScalarError, as for every framework
                y = f(*xs)
                if jnp.size(y) == 1 and jnp.issubdtype(jnp.result_type(y), jnp.floating):
                    raise  # the output was fine: a genuine error inside f or its inputs
                return y, ()
        return value_and_grad

    def custom_gradients(self, f, xs):
        """custom_vjp / custom_jvp calls in f's jaxpr whose rule is defined outside JAX and the
        libraries built on it (jax.nn's own custom_jvp rules are the framework's)."""
        import sys

        packages = [m for name in ("jax", "flax", "equinox", "optax", "keras") if (m := sys.modules.get(name))]
        found = set()

        def walk(jaxpr):
            for eqn in jaxpr.eqns:
                if eqn.primitive.name.startswith(("custom_vjp", "custom_jvp")):
                    info = getattr(getattr(eqn.params.get("call_jaxpr"), "jaxpr", None), "debug_info", None)
                    where = getattr(info, "func_src_info", "") or ""
                    name, _, path = where.partition(" at ")
                    if self.defined_outside(path.rsplit(":", 1)[0], packages):
                        found.add(f"jax.{eqn.primitive.name.removesuffix('_call')} {name or '?'}")
                for value in eqn.params.values():
                    for sub in value if isinstance(value, (tuple, list)) else (value,):
                        inner = getattr(sub, "jaxpr", sub)
                        if hasattr(inner, "eqns"):
                            walk(inner)
        walk(jax.make_jaxpr(f)(*xs).jaxpr)
        return sorted(found)

    def jvp_fn(self, f, compiled):
        def jvp(xs, vs):
            return jax.jvp(f, xs, vs)
        fn = self._jit(f, "jvp", lambda: jvp) if compiled else jvp
        return lambda xs, vs: fn(tuple(xs), tuple(vs))  # tuples: one pytree, one trace

    def hvp_fn(self, f, compiled, method):
        if method == "fwd-over-rev":
            def hvp(xs, vs):
                return jax.jvp(jax.grad(f, argnums=_all(xs)), xs, vs)[1]
        elif method == "rev-over-rev":
            def hvp(xs, vs):
                def dot(*p):
                    grads = jax.grad(f, argnums=_all(p))(*p)
                    return sum(jnp.sum(g * v) for g, v in zip(grads, vs))
                return jax.grad(dot, argnums=_all(xs))(*xs)
        else:
            raise Unsupported(f"unknown HVP method {method}")
        fn = self._jit(f, ("hvp", method), lambda: hvp) if compiled else hvp
        return lambda xs, vs: fn(tuple(xs), tuple(vs))

    def batched_fn(self, f, in_axes):
        # always jitted: finite differences call it many times, and one fused batch is far faster
        return self._jit(f, ("vmap", tuple(in_axes)), lambda: jax.vmap(f, in_axes=in_axes))

    def shifted_fn(self, f, i, n_args):
        # perturb fused into the jitted vmap: no eager scatter, no batch handed between calls
        def build():
            def at_shifted(x, j, d, *others):
                args = list(others)
                args.insert(i, x.reshape(-1).at[j].add(d).reshape(x.shape))
                return f(*args)
            return jax.vmap(at_shifted, in_axes=(None, 0, 0) + (None,) * (n_args - 1))
        fused = self._jit(f, ("shifted", i, n_args), build)
        return lambda x, flat_index, delta, *others: fused(
            x, jnp.asarray(flat_index.astype(np.int64)), jnp.asarray(delta.astype(x.dtype)), *others)

    def perturb(self, x, flat_index, delta):
        n = len(flat_index)
        idx = jnp.asarray(np.asarray(flat_index, dtype=np.int64))
        d = jnp.asarray(np.asarray(delta).astype(x.dtype))
        batch = jnp.broadcast_to(x.reshape(1, -1), (n, x.size)).at[jnp.arange(n), idx].add(d)
        return batch.reshape((n,) + tuple(x.shape))

    def sync(self, result=None) -> None:
        if result is not None:
            jax.block_until_ready(result)
        barrier = getattr(jax, "effects_barrier", None)  # waits for side-effecting computations
        if barrier is not None:
            barrier()
