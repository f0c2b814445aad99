"""Op sweep, activations: random points, kinks, saturation, and the frameworks' own defaults.

The neutral ops take every semantic argument explicitly (gelu's approximation, leaky relu's
slope). The `default-semantics` cases call each framework's activation with its defaults,
natively, to show what a user who relies on them gets: jax.nn.gelu is the tanh approximation
while torch and TF are exact; tf.nn.leaky_relu's slope is 0.2 where torch's and jax's is 0.01.
"""
from ._opcase import KINKS, SINGLE_OP_FLOAT64, family, points, uniform, unary

_SATURATED = [[-100.0, -40.0, -20.0, -5.0], [0.0, 5.0, 20.0, 40.0], [100.0, 19.5, 20.0, 20.5]]

_case, _edge = family("activation", SINGLE_OP_FLOAT64)


def _native_default(name):
    """loss = sum(w * name(x)): torch.nn.functional's, jax.nn's and tf.nn's own ``name`` with
    its defaults."""
    def torch_loss(p, i):
        import torch
        return torch.sum(getattr(torch.nn.functional, name)(p["x"]) * i["w"])

    def jax_loss(p, i):
        import jax
        return (getattr(jax.nn, name)(p["x"]) * i["w"]).sum()

    def tf_loss(p, i):
        import tensorflow as tf
        return tf.reduce_sum(getattr(tf.nn, name)(p["x"]) * i["w"])
    return {"torch": torch_loss, "jax": jax_loss, "tensorflow": tf_loss}


CASES = [
    _case("relu", uniform(-2, 2), unary("relu"), "relu(x) at random points", ("default", "quick")),
    _case("relu6", uniform(-2, 8), unary("relu6"), "relu6(x) at random points in (-2, 8)"),
    _case("leaky_relu", uniform(-2, 2), unary("leaky_relu", negative_slope=0.01),
          "leaky_relu(x, 0.01): torch's and jax's default slope, explicit"),
    _case("elu", uniform(-2, 2), unary("elu", alpha=1.0), "elu(x, alpha=1)"),
    _case("elu_alpha", uniform(-2, 2), unary("elu", alpha=0.5), "elu(x, alpha=0.5) (TF: keras.ops.elu)"),
    _case("selu", uniform(-2, 2), unary("selu"), "selu(x)"),
    _case("gelu_exact", uniform(-3, 3), unary("gelu", approximate=False),
          "gelu(x) exact (x * Phi(x)), the approximation made explicit"),
    _case("gelu_tanh", uniform(-3, 3), unary("gelu", approximate=True),
          "gelu(x) tanh approximation, made explicit"),
    _case("silu", uniform(-3, 3), unary("silu"), "silu(x) = x * sigmoid(x)"),
    _case("softplus", uniform(-4, 4), unary("softplus"), "softplus(x)"),
    _case("hardtanh", uniform(-2, 2), unary("hardtanh", min_val=-1, max_val=1), "hardtanh(x, -1, 1)"),
    _case("mish", uniform(-3, 3), unary("mish"), "mish(x) = x * tanh(softplus(x))"),
    # ---- edge points --------------------------------------------------------------
    _edge("relu_at_zero", points(x=KINKS), unary("relu"), "relu at exact zeros: relu'(0) by convention",
          ("quick",)),
    _edge("relu6_at_bounds", points(x=[[0.0, 6.0, -1.0, 3.0], [6.0, 0.0, 7.0, 0.0], [2.0, 6.0, 5.9, 0.1]]),
          unary("relu6"), "relu6 at exactly 0 and 6"),
    _edge("hardtanh_at_bounds", points(x=[[-1.0, 1.0, 0.0, 2.0], [1.0, -1.0, 0.5, -2.0],
                                          [0.99, 1.0, -1.0, -0.3]]),
          unary("hardtanh", min_val=-1, max_val=1), "hardtanh at exactly -1 and 1"),
    _edge("leaky_relu_at_zero", points(x=KINKS), unary("leaky_relu", negative_slope=0.1),
          "leaky_relu(x, 0.1) at exact zeros: 1 or 0.1 there"),
    _edge("elu_at_zero", points(x=KINKS), unary("elu", alpha=0.5),
          "elu(x, alpha=0.5) at exact zeros: a kink (slopes 0.5 and 1)"),
    _edge("selu_at_zero", points(x=KINKS), unary("selu"), "selu at exact zeros: a kink"),
    _edge("sigmoid_saturated", points(x=_SATURATED), unary("sigmoid"),
          "sigmoid at +-20, +-40, +-100: no overflow, no NaN, derivative -> 0"),
    _edge("softplus_saturated", points(x=_SATURATED), unary("softplus"),
          "softplus at +-100 and around torch's linear threshold 20"),
    _edge("tanh_saturated", points(x=_SATURATED), unary("tanh"), "tanh at +-20 and beyond"),
    _edge("gelu_saturated", points(x=_SATURATED), unary("gelu", approximate=False),
          "exact gelu at large |x|: Phi underflows to 0 for x -> -inf"),
    # ---- native defaults --------------------------------------------------------------
    _case("gelu_native_default", uniform(-3, 3), None,
          "each framework's gelu with its defaults: jax.nn.gelu approximates with tanh, torch and "
          "TF are exact", ("default-semantics",), tolerance=None,
          native=_native_default("gelu")),
    _case("leaky_relu_native_default", uniform(-2, 2), None,
          "each framework's leaky relu with its default slope: torch/jax 0.01, tf.nn 0.2 "
          "(keras.layers.LeakyReLU 0.3)", ("default-semantics",), tolerance=None,
          native=_native_default("leaky_relu")),
]
