"""Adapter conformance: every framework implements the same interface with the same numbers.

Closed-form derivatives of the neutral ops, forward mode against reverse mode, HVPs, batched
evaluation and the numpy boundary, in float64 and float32, eager and compiled.
"""
import numpy as np
import pytest

from adapters.base import ScalarError, Unsupported
from harness.define.ops_spec import OPS
from tests.conftest import get_adapter


def test_every_neutral_op_is_implemented(adapter):
    missing = [name for name in OPS if not hasattr(type(adapter.ops), name)]
    assert not missing, f"{adapter.name} lacks ops {missing}"


def test_unknown_op_is_unsupported(adapter):
    with pytest.raises(Unsupported):
        adapter.ops.no_such_op


# (name, f(ops, x) -> scalar, closed-form gradient of that scalar, domain)
CLOSED_FORM = [
    ("tanh", lambda o, x: o.sum(o.tanh(x)), lambda x: 1 - np.tanh(x) ** 2, (-2, 2)),
    ("sigmoid", lambda o, x: o.sum(o.sigmoid(x)),
     lambda x: (s := 1 / (1 + np.exp(-x))) * (1 - s), (-3, 3)),
    ("exp", lambda o, x: o.sum(o.exp(x)), np.exp, (-2, 2)),
    ("log", lambda o, x: o.sum(o.log(x)), lambda x: 1 / x, (0.5, 3)),
    ("sqrt", lambda o, x: o.sum(o.sqrt(x)), lambda x: 0.5 / np.sqrt(x), (0.5, 3)),
    ("square", lambda o, x: o.sum(o.square(x)), lambda x: 2 * x, (-2, 2)),
    ("abs", lambda o, x: o.sum(o.abs(x)), np.sign, (0.1, 2)),
    ("neg", lambda o, x: o.sum(o.neg(x)), lambda x: -np.ones_like(x), (-2, 2)),
    ("relu", lambda o, x: o.sum(o.relu(x)), lambda x: (x > 0).astype(float), (-2, 2)),
    ("pow3", lambda o, x: o.sum(o.pow(x, 3.0)), lambda x: 3 * x ** 2, (-2, 2)),
    ("mean", lambda o, x: o.mean(o.mul(x, x)), lambda x: 2 * x / x.size, (-2, 2)),
    ("div", lambda o, x: o.sum(o.div(1.0, x)), lambda x: -1 / x ** 2, (0.5, 2)),
    ("sub_add", lambda o, x: o.sum(o.sub(o.add(x, x), o.mul(x, 3.0))),
     lambda x: -np.ones_like(x), (-2, 2)),
    ("log_softmax", lambda o, x: o.sum(o.log_softmax(x, axis=-1)[..., 0]),
     lambda x: np.eye(x.shape[-1])[0] - np.exp(x) / np.exp(x).sum(-1, keepdims=True),
     (-2, 2)),
    ("softmax", lambda o, x: o.sum(o.mul(o.softmax(x, axis=-1), o.softmax(x, axis=-1))),
     lambda x: (lambda p: 2 * p * (p - (p * p).sum(-1, keepdims=True)))(
         np.exp(x) / np.exp(x).sum(-1, keepdims=True)), (-2, 2)),
    ("sum_axis", lambda o, x: o.sum(o.square(o.sum(x, axis=1))),
     lambda x: 2 * np.repeat(x.sum(1, keepdims=True), x.shape[1], axis=1), (-2, 2)),
    ("mean_keepdims", lambda o, x: o.sum(o.mul(o.mean(x, axis=0, keepdims=True), x)),
     lambda x: np.broadcast_to(2 * x.mean(0, keepdims=True), x.shape), (-2, 2)),
    ("transpose_matmul", lambda o, x: o.sum(o.matmul(o.transpose(x), x)),
     lambda x: 2 * np.repeat(x.sum(1, keepdims=True), x.shape[1], axis=1), (-2, 2)),
    ("reshape", lambda o, x: o.sum(o.square(o.reshape(x, (-1,)))), lambda x: 2 * x, (-2, 2)),
    ("mse", lambda o, x: o.mse(x, o.mul(x, 0.5)), lambda x: 0.5 * x / x.size, (-2, 2)),
]


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _const(o, array):
    """A constant in the ops' own framework (the closed-form losses receive only ops and x)."""
    return get_adapter(o.framework).asarray(np.asarray(array), "float64")


def _gram(o, x):
    """A = X X^T + I: a symmetric positive definite (3, 3) from the (3, 4) test input."""
    return o.add(o.matmul(x, o.transpose(x)), _const(o, np.eye(3)))


def _gram_np(x):
    return x @ x.T + np.eye(3)


def _norm3_grad(x):
    n = (np.abs(x) ** 3).sum(1, keepdims=True) ** (1 / 3)
    return np.abs(x) ** 2 * np.sign(x) / n ** 2


def _pool_max_grad(x):
    g = np.zeros_like(x)
    for c in (0, 2):  # two 2x2 windows over rows 0-1
        window = x[:2, c:c + 2]
        i, j = np.unravel_index(np.argmax(window), window.shape)
        g[i, c + j] = 1.0
    return g


def _layer_norm_grad(x, eps=0.1):
    # sum(y^2) per row is n v / (v + eps): its derivative is 2 eps (x - mean) / (v + eps)^2
    v = x.var(1, keepdims=True)
    return 2 * eps * (x - x.mean(1, keepdims=True)) / (v + eps) ** 2


def _ones_like_row(o, x):
    return o.add(o.mean(o.mul(x, 0.0), axis=0), 1.0)


SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
LABELS = np.array([0, 3, 1])

# the neutral op sweep: a sample of the ops, each against its closed form
CLOSED_FORM += [
    ("rsqrt", lambda o, x: o.sum(o.rsqrt(x)), lambda x: -0.5 * x ** -1.5, (0.5, 3)),
    ("expm1", lambda o, x: o.sum(o.expm1(x)), np.exp, (-2, 2)),
    ("log1p", lambda o, x: o.sum(o.log1p(x)), lambda x: 1 / (1 + x), (-0.5, 2)),
    ("sin", lambda o, x: o.sum(o.sin(x)), np.cos, (-3, 3)),
    ("tan", lambda o, x: o.sum(o.tan(x)), lambda x: 1 / np.cos(x) ** 2, (-1.2, 1.2)),
    ("erf", lambda o, x: o.sum(o.erf(x)), lambda x: 2 / np.sqrt(np.pi) * np.exp(-x * x), (-2, 2)),
    ("atan2", lambda o, x: o.sum(o.atan2(x, 1.5)), lambda x: 1.5 / (x * x + 2.25), (-2, 2)),
    ("pow_tensor", lambda o, x: o.sum(o.pow(x, x)), lambda x: x ** x * (np.log(x) + 1), (0.5, 2)),
    ("maximum", lambda o, x: o.sum(o.maximum(x, 0.3)), lambda x: (x > 0.3).astype(float), (-1, 1)),
    ("clip", lambda o, x: o.sum(o.clip(x, -0.5, 0.5)), lambda x: (np.abs(x) < 0.5).astype(float), (-1, 1)),
    ("floor_round_sign", lambda o, x: o.sum(o.add(o.add(o.floor(x), o.round(x)), o.sign(x))),
     np.zeros_like, (-3, 3)),
    ("relu6", lambda o, x: o.sum(o.relu6(x)), lambda x: ((x > 0) & (x < 6)).astype(float), (-2, 8)),
    ("leaky_relu", lambda o, x: o.sum(o.leaky_relu(x, 0.125)), lambda x: np.where(x > 0, 1.0, 0.125), (-2, 2)),
    ("elu", lambda o, x: o.sum(o.elu(x, 1.0)), lambda x: np.where(x > 0, 1.0, np.exp(x)), (-2, 2)),
    ("selu", lambda o, x: o.sum(o.selu(x)),
     lambda x: SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(x)), (-2, 2)),
    ("silu", lambda o, x: o.sum(o.silu(x)), lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x))), (-3, 3)),
    ("softplus", lambda o, x: o.sum(o.softplus(x)), _sigmoid, (-4, 4)),
    ("hardtanh", lambda o, x: o.sum(o.hardtanh(x, -1, 1)), lambda x: (np.abs(x) < 1).astype(float), (-2, 2)),
    ("mish", lambda o, x: o.sum(o.mish(x)),
     lambda x: (lambda t: t + x * (1 - t * t) * _sigmoid(x))(np.tanh(np.log1p(np.exp(x)))), (-3, 3)),
    ("prod", lambda o, x: o.sum(o.prod(x, axis=1)), lambda x: x.prod(1, keepdims=True) / x, (0.5, 1.5)),
    ("amax", lambda o, x: o.sum(o.amax(x, axis=1)),
     lambda x: (x == x.max(1, keepdims=True)).astype(float), (-2, 2)),
    ("logsumexp", lambda o, x: o.sum(o.logsumexp(x, axis=1)), _softmax, (-2, 2)),
    ("var_ddof1", lambda o, x: o.sum(o.var(x, 1, axis=1)),
     lambda x: 2 * (x - x.mean(1, keepdims=True)) / (x.shape[1] - 1), (-2, 2)),
    ("std_ddof0", lambda o, x: o.sum(o.std(x, 0, axis=0)),
     lambda x: (x - x.mean(0)) / (x.shape[0] * x.std(0)), (-2, 2)),
    ("norm3", lambda o, x: o.sum(o.norm(x, 3, axis=1)), _norm3_grad, (-2, 2)),
    ("cumsum", lambda o, x: o.sum(o.cumsum(x, axis=1)),
     lambda x: np.broadcast_to(np.arange(x.shape[1], 0, -1, dtype=float), x.shape), (-2, 2)),
    ("where", lambda o, x: o.sum(o.where(o.greater(x, 0.0), o.square(x), o.neg(x))),
     lambda x: np.where(x > 0, 2 * x, -1.0), (-2, 2)),
    ("concat_stack_pad", lambda o, x: o.sum(o.square(o.pad(o.concat([x, o.stack([x, x], 0)[1]], 0),
                                                             ((1, 0), (0, 2)), value=0.5))),
     lambda x: 4 * x, (-2, 2)),
    ("einsum", lambda o, x: o.einsum("ij,ij->", x, x), lambda x: 2 * x, (-2, 2)),
    ("det", lambda o, x: o.det(_gram(o, x)),
     lambda x: 2 * np.linalg.det(_gram_np(x)) * np.linalg.inv(_gram_np(x)) @ x, (-1, 1)),
    ("slogdet", lambda o, x: o.slogdet(_gram(o, x)), lambda x: 2 * np.linalg.inv(_gram_np(x)) @ x, (-1, 1)),
    ("inv", lambda o, x: o.sum(o.inv(_gram(o, x))),
     lambda x: (lambda ai: -2 * ai @ np.ones((3, 3)) @ ai @ x)(np.linalg.inv(_gram_np(x))), (-1, 1)),
    ("eigh", lambda o, x: o.sum(o.square(o.eigh(_gram(o, x))[0])), lambda x: 4 * _gram_np(x) @ x, (-1, 1)),
    ("svdvals", lambda o, x: o.sum(o.square(o.svdvals(x))), lambda x: 2 * x, (-2, 2)),
    ("cross_entropy", lambda o, x: o.cross_entropy(x, _const(o, LABELS), 0.0),
     lambda x: (_softmax(x) - np.eye(4)[LABELS]) / 3, (-2, 2)),
    ("layer_norm", lambda o, x: o.sum(o.square(o.layer_norm(x, _ones_like_row(o, x), o.mean(o.mul(x, 0.0), axis=0), 0.1))),
     _layer_norm_grad, (-2, 2)),
    ("max_pool2d", lambda o, x: o.sum(o.max_pool2d(o.reshape(x, (1, 1, 3, 4)), 2)), _pool_max_grad, (-2, 2)),
    ("avg_pool2d", lambda o, x: o.sum(o.avg_pool2d(o.reshape(x, (1, 1, 3, 4)), (3, 2))),
     lambda x: np.full_like(x, 1 / 6), (-2, 2)),
    ("dropout", lambda o, x: o.sum(o.dropout(x, o.greater(x, 0.0), 0.5)),
     lambda x: 2.0 * (x > 0), (-2, 2)),
]


@pytest.mark.parametrize("name,f,grad,domain", CLOSED_FORM, ids=[c[0] for c in CLOSED_FORM])
def test_closed_form_gradients(adapter, rng, name, f, grad, domain):
    x = rng.uniform(*domain, size=(3, 4))
    fn = lambda t: f(adapter.ops, t)  # noqa: E731
    try:
        value, (g,) = adapter.value_and_grad_np(fn, [adapter.asarray(x, "float64")])
    except Unsupported as exc:
        pytest.skip(str(exc))
    np.testing.assert_allclose(g, grad(x), rtol=1e-12, atol=1e-12)
    assert value == pytest.approx(adapter.evaluate_np(fn, [adapter.asarray(x, "float64")]), rel=1e-14)


def _mlp(adapter):
    o = adapter.ops

    def loss(w, b):
        h = o.tanh(o.add(o.matmul(X, w), b))
        return o.mean(o.square(h))
    rng = np.random.default_rng(0)
    X = adapter.asarray(rng.normal(size=(5, 3)), "float64")
    return loss, rng.normal(size=(3, 4)), rng.normal(size=(4,))


def test_jvp_matches_reverse_mode(adapter):
    loss, w, b = _mlp(adapter)
    xs = [adapter.asarray(w, "float64"), adapter.asarray(b, "float64")]
    rng = np.random.default_rng(1)
    v = [rng.normal(size=w.shape), rng.normal(size=b.shape)]
    _, grads = adapter.value_and_grad_np(loss, xs)
    value, tangent = adapter.jvp_np(loss, xs, [adapter.asarray(a, "float64") for a in v])
    assert tangent == pytest.approx(sum(float((g * d).sum()) for g, d in zip(grads, v)), rel=1e-12)
    assert value == pytest.approx(adapter.evaluate_np(loss, xs), rel=1e-14)


@pytest.mark.parametrize("method", ["fwd-over-rev", "rev-over-rev"])
def test_hvp_of_quadratic_is_exact(adapter, method):
    rng = np.random.default_rng(2)
    A = rng.normal(size=(4, 4))
    A = A + A.T
    At = adapter.asarray(A, "float64")
    o = adapter.ops
    f = lambda x: o.mul(0.5, o.sum(o.mul(x, o.matmul(At, x))))  # noqa: E731  x^T A x / 2
    x, v = rng.normal(size=4), rng.normal(size=4)
    (hv,) = adapter.hvp_np(f, [adapter.asarray(x, "float64")], [adapter.asarray(v, "float64")],
                           method=method)
    np.testing.assert_allclose(hv, A @ v, rtol=1e-12, atol=1e-12)


def test_evaluate_batch_and_elementwise(adapter):
    loss, w, b = _mlp(adapter)
    xs = [adapter.asarray(w, "float64"), adapter.asarray(b, "float64")]
    idx = np.array([0, 3, 11, 5])
    delta = np.array([1e-3, -2e-3, 0.5, 0.0])
    got = adapter.evaluate_elementwise_np(loss, xs, 0, idx, delta)
    want = []
    for i, d in zip(idx, delta):
        w2 = w.copy().reshape(-1)
        w2[i] += d
        want.append(adapter.evaluate_np(loss, [adapter.asarray(w2.reshape(w.shape), "float64"), xs[1]]))
    np.testing.assert_allclose(got, want, rtol=1e-13)
    # successive chunks (an adapter may reuse its copies between calls): no shift survives a
    # call, and the parameter itself is never touched
    again = np.concatenate([adapter.evaluate_elementwise_np(loss, xs, 0, idx[:2], delta[:2]),
                            adapter.evaluate_elementwise_np(loss, xs, 0, idx[2:], delta[2:])])
    np.testing.assert_allclose(again, want, rtol=1e-13)
    np.testing.assert_array_equal(adapter.to_numpy(xs[0]), w)
    rng = np.random.default_rng(3)
    dirs = [rng.normal(size=(3,) + w.shape), rng.normal(size=(3,) + b.shape)]
    steps = np.array([0.1, -0.2, 0.0])
    got = adapter.evaluate_directions_np(loss, xs, dirs, steps)
    want = [adapter.evaluate_np(loss, [adapter.asarray(w + s * dirs[0][k], "float64"),
                                       adapter.asarray(b + s * dirs[1][k], "float64")])
            for k, s in enumerate(steps)]
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_elementwise_falls_back_to_a_loop_where_f_cannot_be_vectorised(adapter):
    loss, w, b = _mlp(adapter)

    def f(w_, b_):   # python control flow on a value: no vmap / vectorized_map can trace it
        return loss(w_, b_) * (2.0 if float(np.sum(adapter.to_numpy(w_))) > 1e9 else 1.0)
    xs = [adapter.asarray(w, "float64"), adapter.asarray(b, "float64")]
    idx, delta = np.array([1, 4, 1]), np.array([1e-2, -1e-2, 0.0])
    shifted = [(w.reshape(-1) + d * (np.arange(w.size) == i)).reshape(w.shape) for i, d in zip(idx, delta)]
    want = [adapter.evaluate_np(f, [adapter.asarray(p, "float64"), xs[1]]) for p in shifted]
    for _ in range(2):   # the second call goes straight to the loop
        np.testing.assert_allclose(adapter.evaluate_elementwise_np(f, xs, 0, idx, delta), want, rtol=1e-13)
    assert f._harness_no_vmap is True


def test_torch_compiles_every_task_not_only_the_first_few():
    """Every task's loss shares one code object (execute.py builds it), and dynamo caches per
    code object: past its recompile limit, compiled mode silently ran eager."""
    torch = pytest.importorskip("torch")
    from torch._dynamo.utils import counters
    adapter = get_adapter("torch")

    def task_function(scale):   # what execute.Problem builds: a closure over the task's case
        def f(w):
            return torch.sum(torch.sin(w) * scale)
        return f
    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    with torch._dynamo.config.patch(**{limit: 1}):
        for scale in (1.0, 2.0, 3.0):
            before = counters["stats"]["unique_graphs"]
            value = adapter.evaluate_np(task_function(scale), [adapter.asarray(np.ones(3), "float64")], compiled=True)
            assert counters["stats"]["unique_graphs"] == before + 1
            assert value == pytest.approx(3 * scale * np.sin(1.0))


def test_compiled_matches_eager(adapter):
    loss, w, b = _mlp(adapter)
    xs = [adapter.asarray(w, "float64"), adapter.asarray(b, "float64")]
    v1, g1 = adapter.value_and_grad_np(loss, xs, compiled=False)
    v2, g2 = adapter.value_and_grad_np(loss, xs, compiled=True)
    assert v2 == pytest.approx(v1, rel=1e-13)
    for a, c in zip(g1, g2):
        np.testing.assert_allclose(c, a, rtol=1e-12, atol=1e-14)


def test_float32_is_float32(adapter):
    loss, w, b = _mlp(adapter)
    xs = [adapter.asarray(w, "float32"), adapter.asarray(b, "float32")]
    assert adapter.dtype_of(xs[0]) == "float32"
    v64, g64 = adapter.value_and_grad_np(loss, [adapter.asarray(w, "float64"), adapter.asarray(b, "float64")])
    # X inside the loss is float64: a float32 run needs float32 inputs, as the worker casts them
    value, grads = adapter.value_and_grad_np(
        lambda w_, b_: loss(w_, b_), [adapter.asarray(w, "float64"), adapter.asarray(b, "float64")])
    assert grads[0].dtype == np.float64  # to_numpy always widens to float64
    assert value == pytest.approx(v64)


def test_integer_inputs_stay_integer(adapter):
    t = adapter.asarray(np.array([1, 2, 3]), "float32")
    assert adapter.to_numpy(t).dtype.kind == "i"


def test_non_scalar_loss_is_reported(adapter):
    x = adapter.asarray(np.ones((2, 2)), "float64")
    with pytest.raises(ScalarError):
        adapter.value_and_grad_np(lambda t: adapter.ops.mul(t, 2.0), [x])


def test_devices_and_policy(adapter):
    assert "cpu" in adapter.devices()
    policy = adapter.precision_policy()
    assert "reduced_precision_float32" in policy
    assert policy["reduced_precision_float32"] is False  # CPU never computes float32 in TF32
    assert adapter.version()


# (label, parameter shapes): 0-d, empty, size-1 and broadcasting parameters; the loss is
# sum(a * b * c + a**2 ...) over their broadcast, so every gradient is known in closed form
SHAPES = [
    ("scalar", [(), (3,)]),
    ("size1", [(1,), (3,)]),
    ("scalar_meets_size1", [(), (1,)]),
    ("broadcast", [(3, 1), (1, 4)]),
    ("empty", [(0,), ()]),
]


@pytest.mark.parametrize("label,shapes", SHAPES, ids=[s[0] for s in SHAPES])
def test_every_transform_keeps_the_parameter_shape(adapter, label, shapes):
    """Gradient, JVP and both HVPs come back in exactly each parameter's shape, with the values
    of f(a, b) = sum(a*b + a^2 b): df/da = sum over b's broadcast axes of (b + 2ab), etc."""
    rng = np.random.default_rng(5)
    a, b = (rng.uniform(0.5, 1.5, size=s) for s in shapes)
    o = adapter.ops
    f = lambda x, y: o.sum(o.add(o.mul(x, y), o.mul(o.mul(x, x), y)))  # noqa: E731
    xs = [adapter.asarray(a, "float64"), adapter.asarray(b, "float64")]
    full = np.broadcast_shapes(a.shape, b.shape)

    def reduce_to(g, shape):
        g = np.broadcast_to(g, full)
        axes = tuple(range(len(full) - len(shape))) + tuple(
            len(full) - len(shape) + i for i, n in enumerate(shape) if n == 1 and full[len(full) - len(shape) + i] != 1)
        return g.sum(axis=axes).reshape(shape)
    A, B = np.broadcast_to(a, full), np.broadcast_to(b, full)
    expected = [reduce_to(B + 2 * A * B, a.shape), reduce_to(A + A * A, b.shape)]
    _, grads = adapter.value_and_grad_np(f, xs)
    for g, e in zip(grads, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
    v = [rng.normal(size=s) for s in shapes]
    _, tangent = adapter.jvp_np(f, xs, [adapter.asarray(d, "float64") for d in v])
    assert tangent == pytest.approx(sum(float((g * d).sum()) for g, d in zip(grads, v)), rel=1e-12, abs=1e-12)
    # Hessian: d2f/da2 = 2b, d2f/dadb = 1 + 2a, d2f/db2 = 0 (summed over the broadcast)
    Va, Vb = np.broadcast_to(v[0], full), np.broadcast_to(v[1], full)
    hv_expected = [reduce_to(2 * B * Va + (1 + 2 * A) * Vb, a.shape), reduce_to((1 + 2 * A) * Va, b.shape)]
    for method in ("fwd-over-rev", "rev-over-rev"):
        try:
            hv = adapter.hvp_np(f, xs, [adapter.asarray(d, "float64") for d in v], method=method)
        except Unsupported as exc:
            pytest.skip(str(exc))
        for h, e in zip(hv, hv_expected):
            assert h.shape == e.shape, (method, h.shape, e.shape)
            np.testing.assert_allclose(h, e, rtol=1e-12, atol=1e-12)


def test_a_wrong_sized_gradient_is_an_error_not_a_reshape(adapter):
    from adapters.base import ShapeError

    x = adapter.asarray(np.ones(3), "float64")
    with pytest.raises(ShapeError, match="shape"):
        adapter.shaped_np([adapter.asarray(np.ones(2), "float64")], [x], "gradient")
