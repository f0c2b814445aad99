"""Module glue for flax.linen and Equinox: the module's tensors by name with their layout roles
in its own order, a pure function of them that reproduces the module's own output exactly,
layers traced in call order, taps whose gradient is the gradient with respect to a layer's
output (checked in closed form), and gradients with respect to the values checked numerically."""
import numpy as np
import pytest


def _jax():
    pytest.importorskip("jax")
    from adapters import load

    load("jax").setup("cpu", 0, "default")   # float64 on, as in a worker
    import jax

    return jax


def _x(shape, seed=0):
    import jax.numpy as jnp

    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


# ---- flax.linen ---------------------------------------------------------------------------
def _linen_mlp():
    from flax import linen as nn

    class Mlp(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.BatchNorm(use_running_average=True)(nn.Dense(4)(x))
            return nn.Dense(2)(nn.relu(h))

    return Mlp()


def _linen_glue(module, x, **kw):
    from adapters.modules.flax_linen import LinenGlue

    glue = LinenGlue(None, module, **kw)
    glue.prepare({"x": x})
    return glue


def _with_stats(glue, seed=1):
    """The glue's values with batch statistics that are not init's zeros and ones."""
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    values = {k: jnp.asarray(v) for k, v in glue.values().items()}
    values["BatchNorm_0/mean"] = jnp.asarray(rng.uniform(-1, 1, 4))
    values["BatchNorm_0/var"] = jnp.asarray(rng.uniform(0.5, 2, 4))
    return values


def _variables(values):
    """linen's variables dict for the MLP from the glue's flat values."""
    from flax import traverse_util

    params = {k: v for k, v in values.items() if not k.endswith(("/mean", "/var"))}
    stats = {k: v for k, v in values.items() if k.endswith(("/mean", "/var"))}
    return {"params": traverse_util.unflatten_dict(params, sep="/"),
            "batch_stats": traverse_util.unflatten_dict(stats, sep="/")}


def test_linen_glue_has_nothing_until_prepared_then_lists_params_then_state_in_init_order():
    pytest.importorskip("flax")
    _jax()
    from adapters.modules.flax_linen import LinenGlue

    glue = LinenGlue(None, _linen_mlp())
    with pytest.raises(RuntimeError, match="prepare"):
        glue.params()
    glue.prepare({"x": _x((5, 3))})
    rows = [(p.path, p.shape, p.layer, p.layer_type, p.role, p.trainable) for p in glue.params()]
    assert rows == [
        ("Dense_0/kernel", (3, 4), "Dense_0", "Dense", "dense.in_out", True),
        ("Dense_0/bias", (4,), "Dense_0", "Dense", "bias", True),
        ("BatchNorm_0/scale", (4,), "BatchNorm_0", "BatchNorm", "scale", True),
        ("BatchNorm_0/bias", (4,), "BatchNorm_0", "BatchNorm", "bias", True),
        ("Dense_1/kernel", (4, 2), "Dense_1", "Dense", "dense.in_out", True),
        ("Dense_1/bias", (2,), "Dense_1", "Dense", "bias", True),
        ("BatchNorm_0/mean", (4,), "BatchNorm_0", "BatchNorm", "stat", False),
        ("BatchNorm_0/var", (4,), "BatchNorm_0", "BatchNorm", "stat", False),
    ]
    values = glue.values()
    assert all(v.dtype == np.float64 for v in values.values())
    assert np.array_equal(values["BatchNorm_0/var"], np.ones(4))          # init's statistics
    before = {k: v.copy() for k, v in values.items()}
    glue.prepare({"x": _x((7, 3), seed=3)})                                 # a second prepare keeps them
    assert all(np.array_equal(before[k], v) for k, v in glue.values().items())


def test_linen_glue_reproduces_apply_exactly_in_float64_and_float32():
    pytest.importorskip("flax")
    _jax()
    import jax.numpy as jnp

    module, x = _linen_mlp(), _x((5, 3))
    glue = _linen_glue(module, x)
    values = _with_stats(glue)
    out, _, _ = glue.traced(values, {"x": x}, None)
    assert out.dtype == jnp.float64                                         # float32 init, float64 values
    assert np.array_equal(out, module.apply(_variables(values), x))
    v32 = {k: v.astype(jnp.float32) for k, v in values.items()}
    out32 = glue.apply(v32, {"x": x.astype(jnp.float32)})
    assert out32.dtype == jnp.float32
    assert np.array_equal(out32, module.apply(_variables(v32), x.astype(jnp.float32)))


def test_linen_glue_traces_submodule_calls_in_order_and_taps_give_layer_output_gradients():
    pytest.importorskip("flax")
    jax = _jax()
    import jax.numpy as jnp

    x = _x((5, 3))
    glue = _linen_glue(_linen_mlp(), x)
    values = _with_stats(glue)
    out, events, tensors = glue.traced(values, {"x": x}, None)
    assert [(e.layer, e.layer_type, e.at, e.index) for e in events] == [
        (n, t, a, 2 * i + j) for i, (n, t) in enumerate([("Dense_0", "Dense"), ("BatchNorm_0", "BatchNorm"),
                                                          ("Dense_1", "Dense")])
        for j, a in enumerate(("in", "out"))]
    d0 = x @ values["Dense_0/kernel"] + values["Dense_0/bias"]
    bn_scale = values["BatchNorm_0/scale"] / jnp.sqrt(values["BatchNorm_0/var"] + 1e-5)
    h = (d0 - values["BatchNorm_0/mean"]) * bn_scale + values["BatchNorm_0/bias"]
    assert tensors[0] is x
    assert np.allclose(tensors[1], d0, rtol=0, atol=1e-14) and tensors[2] is tensors[1]
    assert np.allclose(tensors[3], h, rtol=0, atol=1e-14)
    assert np.allclose(tensors[4], jnp.maximum(h, 0), rtol=0, atol=1e-14)    # relu is no layer
    assert tensors[5] is out

    taps = {e.layer: jnp.zeros_like(t) for e, t in zip(events, tensors) if e.at == "out"}
    grads = jax.grad(lambda t: jnp.sum(glue.traced(values, {"x": x}, t)[0] ** 2))(taps)
    dh = (2 * out) @ values["Dense_1/kernel"].T * (h > 0)
    assert np.allclose(grads["Dense_1"], 2 * out, rtol=0, atol=1e-13)       # d sum(y^2) / dy
    assert np.allclose(grads["BatchNorm_0"], dh, rtol=0, atol=1e-13)        # back through Dense and relu
    assert np.allclose(grads["Dense_0"], dh * bn_scale, rtol=0, atol=1e-13)  # and through BatchNorm
    tapped, _, tapped_tensors = glue.traced(values, {"x": x}, {"Dense_1": jnp.ones((5, 2))})
    assert np.allclose(tapped, out + 1) and tapped_tensors[-1] is tapped     # the caller gets the tapped output


def test_linen_glue_rejects_unknown_names_and_its_gradients_match_finite_differences():
    pytest.importorskip("flax")
    jax = _jax()
    import jax.numpy as jnp
    from jax.test_util import check_grads

    x = _x((5, 3))
    glue = _linen_glue(_linen_mlp(), x)
    values = _with_stats(glue)
    with pytest.raises(KeyError, match="Dense_0/kernle"):
        glue.traced({"Dense_0/kernle": values["Dense_0/kernel"]}, {"x": x}, None)

    def loss(v):
        return jnp.sum(jnp.tanh(glue.apply(v, {"x": x})))

    check_grads(loss, (values,), order=1, modes=["rev", "fwd"])
    grads = jax.grad(loss)(values)
    assert np.allclose(jax.jit(jax.grad(loss))(values)["Dense_0/kernel"], grads["Dense_0/kernel"])
    assert np.allclose(jax.jit(loss)(values), loss(values))


def test_linen_conv_glue_roles_layout_and_output():
    pytest.importorskip("flax")
    _jax()
    import jax.numpy as jnp
    from flax import linen as nn
    from jax import lax

    class ConvNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            y = nn.relu(nn.Conv(3, (3, 3), name="stem_conv")(x))
            return nn.Dense(1, name="head")(y.reshape(y.shape[0], -1))

    module, x = ConvNet(), _x((2, 5, 5, 2))
    glue = _linen_glue(module, x)
    rows = [(p.path, p.shape, p.layer_type, p.role) for p in glue.params()]
    assert rows == [("stem_conv/kernel", (3, 3, 2, 3), "Conv", "conv.spatial_in_out"),
                    ("stem_conv/bias", (3,), "Conv", "bias"),
                    ("head/kernel", (75, 1), "Dense", "dense.in_out"),
                    ("head/bias", (1,), "Dense", "bias")]
    values = {k: jnp.asarray(v) for k, v in glue.values().items()}
    out, events, tensors = glue.traced(values, {"x": x}, None)
    assert [(e.layer, e.at) for e in events] == [("stem_conv", "in"), ("stem_conv", "out"),
                                                 ("head", "in"), ("head", "out")]
    conv = lax.conv_general_dilated(x, values["stem_conv/kernel"], (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC")) + values["stem_conv/bias"]
    assert np.allclose(tensors[1], conv, rtol=0, atol=1e-13)                 # spatial + (in, out), SAME
    params = {k.split("/")[0]: {} for k in values}
    for k, v in values.items():
        params[k.split("/")[0]][k.split("/")[1]] = v
    assert np.array_equal(out, module.apply({"params": params}, x))


def test_linen_glue_in_train_mode_uses_batch_statistics_and_leaves_the_modules_own():
    pytest.importorskip("flax")
    _jax()
    from flax import linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            return nn.Dense(2)(nn.BatchNorm(use_running_average=not train)(nn.Dense(4)(x)))

    module, x = Net(), _x((6, 3))
    glue = _linen_glue(module, x, call=lambda m, inputs: m(inputs["x"], train=True), train=True)
    values = _with_stats(glue)
    before = glue.values()
    out = glue.apply(values, {"x": x})
    expected, _ = module.apply(_variables(values), x, True, mutable=["batch_stats"])
    assert np.array_equal(out, expected)
    eval_out = module.apply(_variables(values), x, False)
    assert not np.allclose(out, eval_out)                                    # batch statistics, not running ones
    assert all(np.array_equal(before[k], v) for k, v in glue.values().items())


def test_linen_glue_adopts_given_variables_and_is_what_glue_for_picks():
    pytest.importorskip("flax")
    jax = _jax()
    import jax.numpy as jnp

    from adapters import load
    from adapters.modules import glue_for
    from adapters.modules.flax_linen import LinenGlue

    module, x = _linen_mlp(), _x((5, 3))
    trained = jax.tree_util.tree_map(lambda v: v + 0.5, module.init(jax.random.key(7), x))
    glue = glue_for(load("jax"), module)
    assert isinstance(glue, LinenGlue)
    glue.prepare({"x": x}, variables=trained)
    assert np.array_equal(glue.values()["Dense_1/kernel"], trained["params"]["Dense_1"]["kernel"])
    assert [p.path for p in glue.params()][-2:] == ["BatchNorm_0/mean", "BatchNorm_0/var"]
    values = {k: jnp.asarray(v) for k, v in glue.values().items()}
    assert np.array_equal(glue.apply(values, {"x": x}), module.apply(_variables(values), x))


# ---- equinox ------------------------------------------------------------------------------
def _eqx_mlp():
    import equinox as eqx
    import jax

    return eqx.nn.MLP(3, 2, 4, 2, key=jax.random.key(0))   # Linear 3->4, relu, 4->4, relu, 4->2


def _eqx_values(glue):
    import jax.numpy as jnp

    return {k: jnp.asarray(v) for k, v in glue.values().items()}


def test_equinox_glue_lists_arrays_by_path_with_their_layers_and_roles():
    pytest.importorskip("equinox")
    jax = _jax()
    import equinox as eqx

    from adapters import load
    from adapters.modules import glue_for
    from adapters.modules.equinox_module import EquinoxGlue

    glue = glue_for(load("jax"), _eqx_mlp())
    assert isinstance(glue, EquinoxGlue)
    glue.prepare({"x": _x(3)})                                              # nothing to do, but accepted
    rows = [(p.path, p.shape, p.layer, p.layer_type, p.role, p.trainable) for p in glue.params()]
    assert rows == [(f"layers/{i}/{n}", s, f"layers/{i}", "Linear", r, True)
                    for i, (o, k) in enumerate([(4, 3), (4, 4), (2, 4)])
                    for n, s, r in (("weight", (o, k), "dense.out_in"), ("bias", (o,), "bias"))]

    class Net(eqx.Module):
        emb: eqx.nn.Embedding
        norm: eqx.nn.LayerNorm
        conv: eqx.nn.Conv1d
        gain: jax.Array
        steps: jax.Array

        def __init__(self, key):
            k1, k2 = jax.random.split(key)
            self.emb = eqx.nn.Embedding(10, 4, key=k1)
            self.norm = eqx.nn.LayerNorm(4)
            self.conv = eqx.nn.Conv1d(4, 2, 3, key=k2)
            self.gain = jax.numpy.ones(2)
            self.steps = jax.numpy.arange(3)                                # an integer array is no parameter

        def __call__(self, tokens):
            h = jax.vmap(self.norm)(jax.vmap(self.emb)(tokens))
            return self.gain * self.conv(h.T).sum(-1)

    net = EquinoxGlue(None, Net(jax.random.key(1)))
    rows = [(p.path, p.shape, p.layer, p.layer_type, p.role) for p in net.params()]
    assert rows == [("emb/weight", (10, 4), "emb", "Embedding", "embedding"),
                    ("norm/weight", (4,), "norm", "LayerNorm", "scale"),
                    ("norm/bias", (4,), "norm", "LayerNorm", "bias"),
                    ("conv/weight", (2, 4, 3), "conv", "Conv1d", "conv.out_in"),
                    ("conv/bias", (2, 1), "conv", "Conv1d", "bias"),
                    ("gain", (2,), "", "Net", "plain")]


def test_equinox_glue_reproduces_the_call_traces_layers_and_taps_give_layer_output_gradients():
    pytest.importorskip("equinox")
    jax = _jax()
    import equinox as eqx
    import jax.numpy as jnp

    from adapters.modules.equinox_module import EquinoxGlue

    model, x = _eqx_mlp(), _x(3)
    linear_call = eqx.nn.Linear.__dict__["__call__"]
    glue = EquinoxGlue(None, model)
    values = _eqx_values(glue)
    out, events, tensors = glue.traced(values, {"x": x}, None)
    assert out.dtype == jnp.float64 and np.array_equal(out, model(x))
    assert [(e.layer, e.layer_type, e.at) for e in events] == [
        (f"layers/{i}", "Linear", a) for i in range(3) for a in ("in", "out")]
    h1 = values["layers/0/weight"] @ x + values["layers/0/bias"]
    assert tensors[0] is x and np.allclose(tensors[1], h1, rtol=0, atol=1e-14)
    assert np.allclose(tensors[2], jnp.maximum(h1, 0), rtol=0, atol=1e-14)
    assert np.array_equal(tensors[5], out)                                    # MLP's final activation: identity

    taps = {e.layer: jnp.zeros_like(t) for e, t in zip(events, tensors) if e.at == "out"}
    grads = jax.grad(lambda t: jnp.sum(glue.traced(values, {"x": x}, t)[0] ** 2))(taps)
    assert np.allclose(grads["layers/2"], 2 * out, rtol=0, atol=1e-13)
    h2 = tensors[3]
    assert np.allclose(grads["layers/1"], values["layers/2/weight"].T @ (2 * out) * (h2 > 0), rtol=0, atol=1e-13)
    assert eqx.nn.Linear.__dict__["__call__"] is linear_call and "__call__" in eqx.nn.MLP.__dict__   # restored

    v32 = {k: v.astype(jnp.float32) for k, v in values.items()}
    out32 = glue.apply(v32, {"x": x.astype(jnp.float32)})
    model32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, model)
    assert out32.dtype == jnp.float32 and np.array_equal(out32, model32(x.astype(jnp.float32)))


def test_equinox_glue_rejects_unknown_names_and_its_gradients_match_finite_differences():
    pytest.importorskip("equinox")
    jax = _jax()
    import jax.numpy as jnp
    from jax.test_util import check_grads

    from adapters.modules.equinox_module import EquinoxGlue

    x = _x((5, 3))
    glue = EquinoxGlue(None, _eqx_mlp(), call=lambda m, inputs: jnp.stack([m(row) for row in inputs["x"]]))
    values = _eqx_values(glue)
    with pytest.raises(KeyError, match="layers/0/wieght"):
        glue.traced({"layers/0/wieght": values["layers/0/weight"]}, {"x": x}, None)

    def loss(v):
        return jnp.sum(jnp.tanh(glue.apply(v, {"x": x})))

    check_grads(loss, (values,), order=1, modes=["rev", "fwd"])
    assert np.allclose(jax.jit(jax.grad(loss))(values)["layers/1/weight"], jax.grad(loss)(values)["layers/1/weight"])
    _, events, _ = glue.traced(values, {"x": x}, None)
    assert len(events) == 5 * 3 * 2                                          # each row's call of each layer


def test_equinox_glue_logs_an_inherited_call_once_and_restores_the_classes_after_an_error():
    pytest.importorskip("equinox")
    jax = _jax()
    import equinox as eqx
    import jax.numpy as jnp

    from adapters.errors import Unsupported
    from adapters.modules.equinox_module import EquinoxGlue

    class Scale(eqx.Module):
        w: jax.Array

        def __call__(self, x):
            return self.w * x

    class Shifted(Scale):
        b: jax.Array

        def __call__(self, x):
            return super().__call__(x) + self.b

    class Plain(Scale):
        pass

    class Net(eqx.Module):
        a: Shifted
        b: Plain

        def __call__(self, x):
            if x.ndim > 1:
                raise ValueError("one example at a time")
            return self.b(self.a(x))

    model = Net(Shifted(jnp.full(2, 2.0), jnp.ones(2)), Plain(jnp.full(2, 3.0)))
    glue = EquinoxGlue(None, model)
    assert [(p.path, p.layer_type) for p in glue.params()] == [("a/w", "Shifted"), ("a/b", "Shifted"),
                                                               ("b/w", "Plain")]
    values = _eqx_values(glue)
    out, events, _ = glue.traced(values, {"x": jnp.ones(2)}, None)
    assert np.array_equal(out, jnp.full(2, 9.0))
    assert [(e.layer, e.layer_type, e.at) for e in events] == [("a", "Shifted", "in"), ("a", "Shifted", "out"),
                                                               ("b", "Plain", "in"), ("b", "Plain", "out")]
    assert "__call__" not in Plain.__dict__
    with pytest.raises(ValueError, match="one example"):
        glue.traced(values, {"x": jnp.ones((2, 2))}, None)
    assert "__call__" not in Plain.__dict__ and Scale.__dict__["__call__"].__name__ == "__call__"
    assert Scale.__dict__["__call__"].__qualname__.endswith("Scale.__call__")

    bn, _state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(4, "batch", mode="batch")
    with pytest.raises(Unsupported, match="State"):
        EquinoxGlue(None, eqx.nn.Sequential([eqx.nn.Linear(3, 4, key=jax.random.key(0)), bn]))
