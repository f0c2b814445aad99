"""The fuzzer's ops in float64 numpy, with the vocabulary's canonical semantics
(harness/define/ops_spec.py): what a generated program's shapes are and whether its forward is
finite, found before any framework runs it. Forward values only: gradients are the frameworks'
job. Framework-free."""
from __future__ import annotations

import math

import numpy as np

_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


def _softplus(x):
    return np.logaddexp(x, 0.0)


class NumpyOps:
    """The subset of the ops vocabulary that programs are generated from (harness.fuzz.generate.OPSET)."""

    add, sub, mul, div = staticmethod(np.add), staticmethod(np.subtract), staticmethod(np.multiply), staticmethod(np.divide)
    neg, square, sqrt, abs = staticmethod(np.negative), staticmethod(np.square), staticmethod(np.sqrt), staticmethod(np.abs)
    sign, floor, round = staticmethod(np.sign), staticmethod(np.floor), staticmethod(np.round)
    exp, expm1, log, log1p = staticmethod(np.exp), staticmethod(np.expm1), staticmethod(np.log), staticmethod(np.log1p)
    sin, cos, tan, tanh = staticmethod(np.sin), staticmethod(np.cos), staticmethod(np.tan), staticmethod(np.tanh)
    maximum, minimum, atan2 = staticmethod(np.maximum), staticmethod(np.minimum), staticmethod(np.arctan2)
    greater, where, matmul = staticmethod(np.greater), staticmethod(np.where), staticmethod(np.matmul)

    @staticmethod
    def pow(x, y):
        return np.power(x, y)

    @staticmethod
    def rsqrt(x):
        return 1.0 / np.sqrt(x)

    @staticmethod
    def clip(x, lo, hi):
        return np.minimum(np.maximum(x, lo), hi)

    @staticmethod
    def sigmoid(x):
        return 1.0 / (1.0 + np.exp(-x))

    erf = staticmethod(_erf)

    @staticmethod
    def relu(x):
        return np.maximum(x, 0.0)

    @staticmethod
    def relu6(x):
        return np.minimum(np.maximum(x, 0.0), 6.0)

    @staticmethod
    def leaky_relu(x, negative_slope):
        return np.where(x > 0, x, negative_slope * x)

    @staticmethod
    def elu(x, alpha):
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))

    @staticmethod
    def selu(x):
        return _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))

    @staticmethod
    def gelu(x, approximate):
        if approximate:
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)))

    @staticmethod
    def silu(x):
        return x / (1.0 + np.exp(-x))

    @staticmethod
    def softplus(x):
        return _softplus(x)

    # ---- reductions ------------------------------------------------------------------
    @staticmethod
    def sum(x, axis=None, keepdims=False):
        return np.sum(x, axis=_axis(axis), keepdims=keepdims)

    @staticmethod
    def mean(x, axis=None, keepdims=False):
        return np.mean(x, axis=_axis(axis), keepdims=keepdims)

    @staticmethod
    def prod(x, axis=None, keepdims=False):
        return np.prod(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def max(x, axis=None, keepdims=False):
        return np.max(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def min(x, axis=None, keepdims=False):
        return np.min(x, axis=axis, keepdims=keepdims)

    amax, amin = max, min

    @staticmethod
    def logsumexp(x, axis=None, keepdims=False):
        m = np.max(x, axis=_axis(axis), keepdims=True)
        out = np.log(np.sum(np.exp(x - m), axis=_axis(axis), keepdims=True)) + m
        return out if keepdims else np.squeeze(out, axis=_axis(axis)) if axis is not None else out.reshape(())

    @staticmethod
    def var(x, ddof, axis=None, keepdims=False):
        return np.var(x, ddof=ddof, axis=_axis(axis), keepdims=keepdims)

    @staticmethod
    def std(x, ddof, axis=None, keepdims=False):
        return np.std(x, ddof=ddof, axis=_axis(axis), keepdims=keepdims)

    @staticmethod
    def norm(x, ord, axis=None, keepdims=False):
        a = np.abs(x)
        if ord == float("inf"):
            return np.max(a, axis=_axis(axis), keepdims=keepdims)
        return np.sum(a ** ord, axis=_axis(axis), keepdims=keepdims) ** (1.0 / ord)

    @staticmethod
    def cumsum(x, axis):
        return np.cumsum(x, axis=axis)

    @staticmethod
    def cumprod(x, axis):
        return np.cumprod(x, axis=axis)

    @staticmethod
    def softmax(x, axis=-1):
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)

    @staticmethod
    def log_softmax(x, axis=-1):
        m = np.max(x, axis=axis, keepdims=True)
        return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))

    @staticmethod
    def transpose(x, axes=None):
        return np.transpose(x, axes)

    # ---- linear algebra --------------------------------------------------------------
    inv = staticmethod(np.linalg.inv)
    det = staticmethod(np.linalg.det)
    solve = staticmethod(np.linalg.solve)

    @staticmethod
    def slogdet(a):
        return np.linalg.slogdet(a)[1]

    @staticmethod
    def cholesky(a):
        return np.linalg.cholesky(a)

    @staticmethod
    def eigh(a):
        return tuple(np.linalg.eigh(a))

    @staticmethod
    def svdvals(a):
        return np.linalg.svd(a, compute_uv=False)

    @staticmethod
    def layer_norm(x, weight, bias, eps):
        mu = np.mean(x, axis=-1, keepdims=True)
        var = np.mean((x - mu) ** 2, axis=-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * weight + bias

    @staticmethod
    def scaled_dot_product_attention(q, k, v, mask=None):
        s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
        if mask is not None:
            s = np.where(mask, s, -np.inf)
        e = np.exp(s - np.max(s, axis=-1, keepdims=True))
        return (e / np.sum(e, axis=-1, keepdims=True)) @ v


NUMPY_OPS = NumpyOps()

__all__ = ["NUMPY_OPS", "NumpyOps"]
