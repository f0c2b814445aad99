"""Finite differences: closed forms, kinks, and agreement with each framework's own checker."""
import numpy as np
import pytest

from harness.worker import fd
from tests.conftest import get_adapter
from tests.planted import torch_square, wrong_at


def _elementwise(f):
    """evaluate_elementwise over a numpy function of a list of arrays."""
    def evaluate(params):
        def run(i, flat_index, delta):
            out = []
            for j, d in zip(flat_index, delta):
                shifted = [p.copy() for p in params]
                shifted[i].reshape(-1)[j] += d
                out.append(f(*shifted))
            return np.array(out)
        return run
    return evaluate


def test_full_fd_matches_closed_form_to_high_accuracy():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (3, 4))
    f = lambda a: float(np.sum(np.sin(a) * np.exp(a / 3)))  # noqa: E731
    result = fd.full(_elementwise(f)([x]), [x], f(x))
    exact = np.cos(x) * np.exp(x / 3) + np.sin(x) * np.exp(x / 3) / 3
    np.testing.assert_allclose(result.estimate[0], exact, rtol=0, atol=1e-10)
    # the error estimate bounds the actual error
    assert np.all(np.abs(result.estimate[0] - exact) <= 10 * result.error[0] + 1e-13)
    assert not result.nondiff[0].any()
    assert result.evaluations == 4 * x.size


def test_kinks_and_jumps_are_flagged_nondiff_with_one_sided_limits():
    x = np.array([0.0, 0.7, -1.3, 2.0])
    f = lambda a: float(np.abs(a[0]) + np.maximum(a[1] - 0.7, 0) + a[2] ** 2 + np.floor(a[3]))  # noqa: E731
    result = fd.full(_elementwise(f)([x]), [x], f(x))
    assert result.nondiff[0].tolist() == [True, True, False, True]
    assert result.left[0][0] == pytest.approx(-1) and result.right[0][0] == pytest.approx(1)
    assert result.left[0][1] == pytest.approx(0, abs=1e-9) and result.right[0][1] == pytest.approx(1)
    assert result.estimate[0][2] == pytest.approx(-2.6, rel=1e-10)


def test_directional_fd_matches_gradient_projection():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=5)
    f = lambda a, b: float(np.sum(np.tanh(a)) * np.sum(b ** 3))  # noqa: E731
    dirs = fd.random_directions(rng, [x.shape, y.shape], 3)
    norms = [np.sqrt(sum(np.sum(d[k] ** 2) for d in dirs)) for k in range(3)]
    np.testing.assert_allclose(norms, 1.0)

    def evaluate(directions, steps):
        return np.array([f(x + s * directions[0][b], y + s * directions[1][b]) for b, s in enumerate(steps)])
    est, err = fd.directional(evaluate, [x, y], f(x, y), dirs)
    gx = (1 - np.tanh(x) ** 2) * np.sum(y ** 3)
    gy = np.sum(np.tanh(x)) * 3 * y ** 2
    exact = [np.sum(gx * dirs[0][k]) + np.sum(gy * dirs[1][k]) for k in range(3)]
    np.testing.assert_allclose(est, exact, rtol=1e-9, atol=1e-11)
    assert np.all(err < 1e-7)


def test_steps_are_exactly_representable():
    x = np.array([0.1, 3.3, -7e5, 1e-12])
    h = fd.steps_for(x)
    assert np.all((x + h) - x == h)


# ---- agreement with the frameworks' own gradient checkers, on the same functions ----------

def _mlp_numpy_inputs():
    rng = np.random.default_rng(5)
    return rng.normal(size=(4, 3)), rng.normal(size=(3,))


def _harness_fd(adapter, f, arrays):
    xs = [adapter.asarray(a, "float64") for a in arrays]
    value = adapter.evaluate_np(f, xs)
    return fd.full(lambda i, idx, d: adapter.evaluate_elementwise_np(f, xs, i, idx, d), arrays, value)


def test_fd_agrees_with_torch_gradcheck():
    torch = pytest.importorskip("torch")
    adapter = get_adapter("torch")
    w, b = _mlp_numpy_inputs()
    X = torch.tensor(np.random.default_rng(6).normal(size=(5, 4)), dtype=torch.float64)
    f = lambda w_, b_: torch.sum(torch.tanh(X @ w_ + b_) ** 2)  # noqa: E731
    result = _harness_fd(adapter, f, [w, b])
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    assert torch.autograd.gradcheck(f, (wt, bt), eps=1e-6, atol=1e-7, rtol=1e-6, fast_mode=False)
    # the autograd gradient gradcheck just validated; the harness's FD must agree far tighter
    gw, gb = torch.autograd.grad(f(wt, bt), (wt, bt))
    np.testing.assert_allclose(result.estimate[0], gw.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(result.estimate[1], gb.numpy(), rtol=1e-9, atol=1e-11)


def test_planted_bug_is_caught_by_gradcheck_and_by_harness_fd_at_the_same_element():
    torch = pytest.importorskip("torch")
    adapter = get_adapter("torch")

    WrongSquare = torch_square(wrong_at((1, 2), 1.5))   # the planted bug

    f = lambda w_: WrongSquare.apply(w_).sum()  # noqa: E731
    w = np.random.default_rng(7).normal(size=(3, 4))
    wt = torch.tensor(w, requires_grad=True)
    assert not torch.autograd.gradcheck(f, (wt,), raise_exception=False, fast_mode=False)
    result = _harness_fd(adapter, f, [w])
    (g,) = torch.autograd.grad(f(wt), (wt,))
    wrong = np.abs(g.numpy() - result.estimate[0]) > 1e-8
    assert wrong.sum() == 1 and wrong[1, 2]


def test_fd_agrees_with_jax_check_grads():
    pytest.importorskip("jax")
    adapter = get_adapter("jax")
    import jax.numpy as jnp
    from jax.test_util import check_grads
    w, b = _mlp_numpy_inputs()
    X = jnp.asarray(np.random.default_rng(6).normal(size=(5, 4)))
    f = lambda w_, b_: jnp.sum(jnp.tanh(X @ w_ + b_) ** 2)  # noqa: E731
    result = _harness_fd(adapter, f, [w, b])
    check_grads(f, (jnp.asarray(w), jnp.asarray(b)), order=2, modes=("fwd", "rev"))
    import jax
    gw, gb = jax.grad(f, argnums=(0, 1))(jnp.asarray(w), jnp.asarray(b))
    np.testing.assert_allclose(result.estimate[0], np.asarray(gw), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(result.estimate[1], np.asarray(gb), rtol=1e-9, atol=1e-11)


def test_fd_agrees_with_tf_compute_gradient():
    tf = pytest.importorskip("tensorflow")
    adapter = get_adapter("tensorflow")
    w, b = _mlp_numpy_inputs()
    X = tf.constant(np.random.default_rng(6).normal(size=(5, 4)))
    f = lambda w_, b_: tf.reduce_sum(tf.tanh(tf.matmul(X, w_) + b_) ** 2)  # noqa: E731
    result = _harness_fd(adapter, f, [w, b])
    theoretical, numerical = tf.test.compute_gradient(f, [tf.constant(w), tf.constant(b)], delta=1e-6)
    for k in range(2):
        np.testing.assert_allclose(result.estimate[k].reshape(-1), numerical[k].reshape(-1), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(result.estimate[k].reshape(-1), theoretical[k].reshape(-1), rtol=1e-9, atol=1e-11)


# ---- the adaptive first pass ----------------------------------------------------------------

def _judge(gradient, rtol=1e-6, atol=1e-8):
    """An autodiff verdict for fd.full's first pass: gradient[i] against the FD estimate."""
    def accept(i, estimate, error):
        g = gradient[i].reshape(-1)
        return np.abs(g - estimate) <= atol + rtol * np.abs(estimate) + 10 * error
    return accept


def test_adaptive_pass_settles_smooth_elements_with_two_evaluations():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (3, 4))
    f = lambda a: float(np.sum(np.sin(a) * np.exp(a / 3)))  # noqa: E731
    exact = np.cos(x) * np.exp(x / 3) + np.sin(x) * np.exp(x / 3) / 3
    result = fd.full(_elementwise(f)([x]), [x], f(x), accept=_judge([exact]))
    assert not result.refined[0].any() and result.evaluations == 2 * x.size
    np.testing.assert_allclose(result.estimate[0], exact, rtol=0, atol=1e-9)
    # the first pass's error estimate is its rounding bound, and it does bound the error here
    assert np.all(np.abs(result.estimate[0] - exact) <= 10 * result.error[0])


def test_adaptive_pass_refines_a_wrong_gradient_and_every_kink():
    x = np.array([0.0, 0.7, -1.3, 2.0, 0.4])
    f = lambda a: float(np.abs(a[0]) + np.maximum(a[1] - 0.7, 0) + a[2] ** 2 + np.floor(a[3]) + a[4] ** 3)  # noqa: E731
    # torch's conventions at the kinks (0 there), and a 1e-4 error planted at element 4
    autodiff = np.array([0.0, 0.0, -2.6, 0.0, 3 * 0.4 ** 2 * (1 + 1e-4)])
    result = fd.full(_elementwise(f)([x]), [x], f(x), accept=_judge([autodiff]))
    # |x| at 0 matches its central difference (0) exactly, yet is refined: it is a kink
    assert result.refined[0].tolist() == [True, True, False, True, True]
    assert result.nondiff[0].tolist() == [True, True, False, True, False]
    assert result.evaluations == 2 * 5 + 4 * 4
    assert result.left[0][0] == pytest.approx(-1) and result.right[0][0] == pytest.approx(1)
    # the refined value is the Richardson estimate: the planted error stands out against it
    assert result.estimate[0][4] == pytest.approx(0.48, rel=1e-10)
    assert abs(autodiff[4] - result.estimate[0][4]) > 100 * result.error[0][4]


def test_adaptive_and_full_stencil_give_the_same_verdicts_on_a_framework():
    torch = pytest.importorskip("torch")
    adapter = get_adapter("torch")
    w, b = _mlp_numpy_inputs()
    X = torch.tensor(np.random.default_rng(6).normal(size=(5, 4)), dtype=torch.float64)
    f = lambda w_, b_: torch.sum(torch.relu(X @ w_ + b_) + torch.tanh(X @ w_ + b_) ** 2)  # noqa: E731
    b[0] = -float((X @ torch.tensor(w))[2, 0])   # one pre-activation exactly at relu's kink
    xs = [adapter.asarray(a, "float64") for a in (w, b)]
    value = adapter.evaluate_np(f, xs)
    _, grads = adapter.value_and_grad_np(f, xs)
    evaluate = lambda i, idx, d: adapter.evaluate_elementwise_np(f, xs, i, idx, d)  # noqa: E731
    accept = _judge(grads)
    adaptive = fd.full(evaluate, [w, b], value, accept=accept)
    stencil = fd.full(evaluate, [w, b], value)
    # the kink is found the same way: at b[0] and at every weight feeding that pre-activation
    assert adaptive.nondiff[1].tolist() == [True, False, False] and adaptive.nondiff[0][:, 0].all()
    refined = sum(int(r.sum()) for r in adaptive.refined)
    assert adaptive.evaluations == 2 * 15 + 4 * refined and refined < 15 / 2
    for k in range(2):
        np.testing.assert_array_equal(adaptive.nondiff[k], stencil.nondiff[k])
        np.testing.assert_allclose(adaptive.estimate[k], stencil.estimate[k], rtol=1e-8, atol=1e-10)
        smooth = ~stencil.nondiff[k].reshape(-1)
        verdicts = [accept(k, r.estimate[k].reshape(-1), r.error[k].reshape(-1))[smooth] for r in (adaptive, stencil)]
        np.testing.assert_array_equal(*verdicts)
