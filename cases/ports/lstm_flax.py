"""A hand-written Flax nnx port of ``lstm_torch.SeqModel``.

``embed`` nnx.Embed(20, 8) -> ``lstm`` (a custom LSTM: ``w_ih`` (in, 4H), ``w_hh`` (H, 4H) and one
bias ``b`` (4H,), i.e. torch's weight_ih_l0 / weight_hh_l0 transposed and b_ih + b_hh summed)
-> ``head`` nnx.Linear(12, 5) on the last step. The four gate blocks of the 4H axis are torch's
order i, f, g, o. The computation follows the dtype of the parameters.

Planted-mistake knob: ``gate_order`` "ifgo" (correct) or "ifog" (reads the chunks as i, f, o, g).
"""
import math

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes


def _follow_params(args, /, *, dtype=None, inexact=True):
    # nnx.Embed pins its compute dtype to the initial embedding dtype (float32) at construction;
    # infer it from the arrays instead so float64 parameters give a float64 forward
    return dtypes.promote_dtype(args, dtype=None, inexact=inexact)


class LSTM(nnx.Module):

    def __init__(self, in_features, hidden, rngs, gate_order="ifgo", param_dtype=jnp.float32):
        if gate_order not in ("ifgo", "ifog"):
            raise ValueError(f"gate_order must be 'ifgo' or 'ifog', not {gate_order!r}")
        bound = 1.0 / math.sqrt(hidden)  # torch's init: U(-1/sqrt(H), 1/sqrt(H)) for everything
        uniform = nnx.initializers.uniform(scale=2 * bound)

        def init(shape):
            return uniform(rngs.params(), shape, param_dtype) - bound

        self.w_ih = nnx.Param(init((in_features, 4 * hidden)))
        self.w_hh = nnx.Param(init((hidden, 4 * hidden)))
        # torch has two biases of this init; their sum is what the cell sees
        self.b = nnx.Param(init((4 * hidden,)) + init((4 * hidden,)))
        self.hidden = hidden
        self.gate_order = gate_order

    def __call__(self, x):
        """x: (B, T, in) -> all hidden states (B, T, H)."""
        w_ih, w_hh, b = self.w_ih[...], self.w_hh[...], self.b[...]
        B, T, _ = x.shape
        dtype = jnp.result_type(x, w_ih, w_hh, b)
        h = jnp.zeros((B, self.hidden), dtype)
        c = jnp.zeros((B, self.hidden), dtype)
        outs = []
        for t in range(T):
            z = x[:, t] @ w_ih + h @ w_hh + b
            if self.gate_order == "ifgo":
                i, f, g, o = jnp.split(z, 4, axis=-1)
            else:
                i, f, o, g = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            outs.append(h)
        return jnp.stack(outs, axis=1)


class SeqModel(nnx.Module):

    def __init__(self, rngs, vocab=20, embed=8, hidden=12, classes=5, gate_order="ifgo"):
        # torch's nn.Embedding init is N(0, 1); nn.Linear's is U(-1/sqrt(in), 1/sqrt(in))
        self.embed = nnx.Embed(vocab, embed, embedding_init=nnx.initializers.normal(stddev=1.0),
                               promote_dtype=_follow_params, rngs=rngs)
        self.lstm = LSTM(embed, hidden, rngs, gate_order=gate_order)
        bound = 1.0 / math.sqrt(hidden)
        uniform = nnx.initializers.uniform(scale=2 * bound)
        self.head = nnx.Linear(hidden, classes,
                               kernel_init=lambda k, s, d=jnp.float32: uniform(k, s, d) - bound,
                               bias_init=lambda k, s, d=jnp.float32: uniform(k, s, d) - bound,
                               rngs=rngs)

    def __call__(self, ids):
        x = self.embed(ids)
        return self.head(self.lstm(x)[:, -1])
