"""JAX adapter: jax.value_and_grad for reverse mode, jax.jvp for forward mode, jax.vmap for
batches, jax.jit over the whole computation for the compiled mode."""
from __future__ import annotations

import platform
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np

from .base import Adapter, Ops, Unsupported

_DTYPES = {
    "float64": jnp.float64,
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
}
#: matmul precisions that compute float32 dots/convs in full float32 on a GPU
_FULL_FLOAT32 = ("highest", "float32", "f32_f32_f32")
#: jitted callables kept per adapter; bounded so a long-lived worker does not hoard executables
_CACHE_SIZE = 64


def _dims(axis):
    return axis if axis is None or isinstance(axis, int) else tuple(axis)


def _all(xs):
    return tuple(range(len(xs)))


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
    abs = staticmethod(jnp.abs)
    exp = staticmethod(jnp.exp)
    log = staticmethod(jnp.log)
    tanh = staticmethod(jnp.tanh)
    sigmoid = staticmethod(jax.nn.sigmoid)
    relu = staticmethod(jax.nn.relu)
    matmul = staticmethod(jnp.matmul)

    @staticmethod
    def transpose(x, axes=None):
        return jnp.transpose(x, None if axes is None else tuple(axes))

    @staticmethod
    def reshape(x, shape):
        return jnp.reshape(x, tuple(shape))

    @staticmethod
    def sum(x, axis=None, keepdims=False):
        return jnp.sum(x, axis=_dims(axis), keepdims=keepdims)

    @staticmethod
    def mean(x, axis=None, keepdims=False):
        return jnp.mean(x, axis=_dims(axis), keepdims=keepdims)

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


class JaxAdapter(Adapter):
    name = "jax"
    extra = "jax"
    UNSUPPORTED_PATTERNS = ("can't apply forward-mode autodiff", "custom_vjp", "not supported for forward-mode")

    def __init__(self):
        super().__init__()
        self.ops = JaxOps()
        self._device = None  # None: JAX's default device, until setup() picks one
        self._threads = 0
        self._jitted = OrderedDict()

    def version(self) -> str:
        return jax.__version__

    def devices(self) -> list[str]:
        found = ["cpu"]
        for backend, label in (("gpu", "cuda"), ("tpu", "tpu")):
            try:
                found += [f"{label}:{i}" for i in range(len(jax.devices(backend)))]
            except RuntimeError:  # backend absent or failed to initialise
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
        for backend in ("gpu", "cuda"):
            try:
                return jax.devices(backend)[0]
            except (RuntimeError, IndexError):
                continue
        raise Unsupported("this jax install sees no GPU (install jax[cuda12] and check "
                          "JAX_PLATFORMS / CUDA_VISIBLE_DEVICES)")

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
            return platform.processor() or platform.machine() or device.device_kind
        return device.device_kind

    # ---- conversion ------------------------------------------------------------------
    def asarray(self, array, dtype):
        array = np.asarray(array)
        if dtype is not None and np.issubdtype(array.dtype, np.floating):
            if dtype not in _DTYPES:
                raise Unsupported(f"jax has no dtype {dtype}")
            array = array.astype(_DTYPES[dtype])
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
        try:
            key = (f, kind)
            fn = self._jitted.get(key)
        except TypeError:  # unhashable callable: compile without caching
            return jax.jit(build())
        if fn is None:
            fn = self._jitted[key] = jax.jit(build())
            if len(self._jitted) > _CACHE_SIZE:
                self._jitted.popitem(last=False)
        else:
            self._jitted.move_to_end(key)
        return fn

    def forward_fn(self, f, compiled):
        return self._jit(f, "forward", lambda: f) if compiled else f

    def grad_fn(self, f, compiled):
        def scalar_f(*xs):
            # a size-1 output counts as a scalar, as in torch; jax.grad wants shape ()
            y = f(*xs)
            return jnp.reshape(y, ()) if jnp.size(y) == 1 else y

        def make(n):
            return jax.value_and_grad(scalar_f, argnums=tuple(range(n)))

        def value_and_grad(*xs):
            vg = self._jit(f, ("grad", len(xs)), lambda: make(len(xs))) if compiled \
                else make(len(xs))
            try:
                return vg(*xs)
            except TypeError:
                # jax refuses non-scalar (or non-float) outputs with a TypeError; return the
                # output so base.scalar() reports it as a ScalarError, as for every framework
                y = f(*xs)
                if jnp.size(y) == 1 and jnp.issubdtype(jnp.result_type(y), jnp.floating):
                    raise  # the output was fine: a genuine error inside f or its inputs
                return y, ()
        return value_and_grad

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
