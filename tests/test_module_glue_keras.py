"""Module glue for a Keras 3 model, in this process on Keras's TensorFlow backend (the backend a
plain ``import keras`` gives; the other backends run in their own workers, as in
tests/test_porting_cases.py): variables by path with their layout roles and batch statistics as
non-trainable state, a float64 model built by ``build_in``, the model's own output reproduced
from given values (never its own weights), layers traced in call order, taps whose gradient is
the gradient with respect to a layer's output (closed form), and unknown names refused."""
import numpy as np
import pytest


def _keras():
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"KERAS_BACKEND is {keras.backend.backend()} in this process")
    from adapters import load

    return keras, load("tensorflow")


def _model(keras):
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="act")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="fc")(h), name="small")


def _glue(dtype="float64", seed=0):
    keras, adapter = _keras()
    from adapters.modules.keras_model import KerasGlue, build_in

    model = build_in(dtype, lambda: _model(keras), seed=seed)
    return keras, KerasGlue(adapter, model), model


def _values(glue, seed=1):
    """The glue's values with batch statistics unlike init's zeros and ones."""
    rng = np.random.default_rng(seed)
    values = glue.values()
    values["bn/moving_mean"] = rng.uniform(-1, 1, 3)
    values["bn/moving_variance"] = rng.uniform(0.5, 2, 3)
    return values


def _x(seed=2):
    return np.random.default_rng(seed).standard_normal((4, 6, 6, 2))


def test_keras_glue_lists_variables_by_path_with_roles_and_statistics_as_state():
    _, glue, _ = _glue()
    rows = [(p.path, p.shape, p.layer, p.layer_type, p.role, p.trainable) for p in glue.params()]
    assert rows == [
        ("conv/kernel", (3, 3, 2, 3), "conv", "Conv2D", "conv.spatial_in_out", True),
        ("conv/bias", (3,), "conv", "Conv2D", "bias", True),
        ("bn/gamma", (3,), "bn", "BatchNormalization", "scale", True),
        ("bn/beta", (3,), "bn", "BatchNormalization", "bias", True),
        ("fc/kernel", (3, 2), "fc", "Dense", "dense.in_out", True),
        ("fc/bias", (2,), "fc", "Dense", "bias", True),
        ("bn/moving_mean", (3,), "bn", "BatchNormalization", "stat", False),
        ("bn/moving_variance", (3,), "bn", "BatchNormalization", "stat", False),
    ]
    values = glue.values()
    assert all(v.dtype == np.float64 for v in values.values())
    assert np.array_equal(values["bn/moving_variance"], np.ones(3))


def test_build_in_makes_the_same_float64_weights_for_a_seed_and_restores_the_policy():
    keras, glue, model = _glue(seed=7)
    before = (keras.config.floatx(), keras.config.dtype_policy().name)
    assert model.get_layer("conv").kernel.dtype == "float64"
    _, again, _ = _glue(seed=7)
    _, other, _ = _glue(seed=8)
    a, b, c = glue.values(), again.values(), other.values()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv/kernel"], c["conv/kernel"])
    assert (keras.config.floatx(), keras.config.dtype_policy().name) == before == ("float32", "float32")


def test_keras_glue_output_is_the_closed_form_of_the_given_values_not_the_models_own():
    keras, glue, model = _glue()
    values, x = _values(glue), _x()
    own = keras.ops.convert_to_numpy(model(x, training=False))
    out = keras.ops.convert_to_numpy(glue.apply(values, {"x": x}))
    # the same network written out in numpy, float64 throughout (TensorFlow's backend keeps it so)
    k, b = values["conv/kernel"], values["conv/bias"]
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))   # n, 4, 4, c, kh, kw
    conv = np.einsum("nhwcij,ijco->nhwo", windows, k) + b
    bn = (conv - values["bn/moving_mean"]) / np.sqrt(values["bn/moving_variance"] + 1e-3) \
        * values["bn/gamma"] + values["bn/beta"]
    expected = np.maximum(bn, 0).mean(axis=(1, 2)) @ values["fc/kernel"] + values["fc/bias"]
    assert out.dtype == np.float64
    assert np.allclose(out, expected, rtol=0, atol=1e-13)
    assert not np.allclose(own, expected, atol=1e-3)                     # its own statistics differ
    assert np.array_equal(keras.ops.convert_to_numpy(model.get_layer("bn").moving_variance), np.ones(3))


def test_keras_glue_traces_layers_in_call_order_and_taps_give_layer_output_gradients():
    keras, glue, _ = _glue()
    import tensorflow as tf

    values, x = _values(glue), _x()
    out, events, tensors = glue.traced(values, {"x": x}, None)
    layers = ["conv", "bn", "act", "pool", "fc"]
    assert [(e.layer, e.at) for e in events] == [(n, a) for n in layers for a in ("in", "out")]
    assert [e.layer_type for e in events[::2]] == ["Conv2D", "BatchNormalization", "ReLU",
                                                   "GlobalAveragePooling2D", "Dense"]
    outputs = {e.layer: t for e, t in zip(events, tensors) if e.at == "out"}
    assert tensors[-1] is out

    taps = {n: tf.zeros_like(t) for n, t in outputs.items()}
    with tf.GradientTape() as tape:
        tape.watch(taps)
        y = glue.traced(values, {"x": x}, taps)[0]
        loss = tf.reduce_sum(y ** 2)
    grads = {n: g.numpy() for n, g in tape.gradient(loss, taps).items()}
    dy = 2 * out.numpy()
    dpool = dy @ values["fc/kernel"].T
    assert np.allclose(grads["fc"], dy, rtol=0, atol=1e-13)              # d sum(y^2) / dy
    assert np.allclose(grads["pool"], dpool, rtol=0, atol=1e-13)         # back through Dense
    relu_in = outputs["bn"].numpy()
    assert np.allclose(grads["act"], np.broadcast_to(dpool[:, None, None] / 16, relu_in.shape), rtol=0, atol=1e-13)
    assert np.allclose(grads["bn"], grads["act"] * (relu_in > 0), rtol=0, atol=1e-13)
    tapped = glue.traced(values, {"x": x}, {"fc": tf.ones_like(out)})[0]
    assert np.allclose(tapped, out.numpy() + 1, rtol=0, atol=0)          # a tap adds to the output


def test_keras_glue_refuses_unknown_names_and_another_backend():
    keras, glue, model = _glue()
    from adapters.errors import Unsupported
    from adapters.modules.keras_model import KerasGlue

    values = dict(_values(glue))
    values["fc/kernal"] = values.pop("fc/kernel")
    with pytest.raises(KeyError, match="fc/kernal"):
        glue.apply(values, {"x": _x()})

    class OtherWorker:
        name = "jax"

    with pytest.raises(Unsupported, match="jax worker"):
        KerasGlue(OtherWorker(), model)
