"""A Flax nnx port of the nanoGPT model in ``gpt_torch.py``, as a careful porter would write it.

Attribute names mirror nanoGPT without the ``transformer`` container: ``wte``, ``wpe``, ``drop``,
``h/{i}/{ln_1,attn/{c_attn,c_proj,attn_dropout,resid_dropout},ln_2,mlp/{c_fc,c_proj,dropout}}``,
``ln_f``. Dense kernels are (in, out) (torch's Linear weight transposed); the LM head is tied to
``wte`` through ``wte.attend``. The computation follows the dtype of the parameters (float64
parameters give a float64 forward).

The config's extra fields are planted porting mistakes; their defaults give a correct port:
``ln_eps`` (torch's LayerNorm uses 1e-5; Flax defaults to 1e-6), ``causal`` (False drops the
mask), ``attn_scale`` ("head_dim" is right; "n_embd" scales by 1/sqrt(n_embd)),
``gelu_approximate`` (torch's nn.GELU is the exact erf form; True is JAX's tanh default),
``transpose_c_proj`` (True applies attn.c_proj's kernel transposed, ``y @ kernel.T``).
"""
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes


@dataclass
class GPTConfig:
    block_size: int = 16
    vocab_size: int = 64
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    dropout: float = 0.0
    bias: bool = True
    # planted-mistake knobs: the defaults are a correct port
    ln_eps: float = 1e-5
    causal: bool = True
    attn_scale: str = "head_dim"  # or "n_embd"
    gelu_approximate: bool = False
    transpose_c_proj: bool = False


def _follow_params(args, /, *, dtype=None, inexact=True):
    # nnx.Embed pins its compute dtype to the initial embedding dtype (float32) at construction,
    # so float64 parameters put in later would be cast down; infer from the arrays instead
    return dtypes.promote_dtype(args, dtype=None, inexact=inexact)


def _transposed_dot_general(lhs, rhs, dimension_numbers, precision=None, **kwargs):
    # the mistake: the (in, out) kernel used as if it were torch's (out, in) weight
    return jax.lax.dot_general(lhs, rhs.T, dimension_numbers, precision=precision, **kwargs)


def _dense(config, rngs, n_in, n_out, std=0.02, **kwargs):
    return nnx.Linear(n_in, n_out, use_bias=config.bias,
                      kernel_init=nnx.initializers.normal(stddev=std),
                      bias_init=nnx.initializers.zeros_init(), rngs=rngs, **kwargs)


def _layer_norm(config, rngs):
    # use_fast_variance=False: the variance as mean((x - mean)^2), as torch computes it
    return nnx.LayerNorm(config.n_embd, epsilon=config.ln_eps, use_bias=config.bias,
                         use_fast_variance=False, rngs=rngs)


class CausalSelfAttention(nnx.Module):

    def __init__(self, config, rngs):
        assert config.n_embd % config.n_head == 0
        proj_std = 0.02 / math.sqrt(2 * config.n_layer)
        self.c_attn = _dense(config, rngs, config.n_embd, 3 * config.n_embd)
        self.c_proj = _dense(config, rngs, config.n_embd, config.n_embd, std=proj_std,
                             dot_general=_transposed_dot_general if config.transpose_c_proj
                             else jax.lax.dot_general)
        self.attn_dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.resid_dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.causal = config.causal
        self.attn_scale = config.attn_scale

    def __call__(self, x):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)
        q = q.reshape(B, T, self.n_head, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)
        k = k.reshape(B, T, self.n_head, hs).transpose(0, 2, 1, 3)
        v = v.reshape(B, T, self.n_head, hs).transpose(0, 2, 1, 3)

        scale = 1.0 / math.sqrt(hs if self.attn_scale == "head_dim" else C)
        att = (q @ k.transpose(0, 1, 3, 2)) * scale
        if self.causal:
            mask = jnp.tril(jnp.ones((T, T), dtype=bool))
            att = jnp.where(mask, att, -jnp.inf)
        att = jax.nn.softmax(att, axis=-1)
        att = self.attn_dropout(att)
        y = att @ v  # (B, nh, T, hs)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nnx.Module):

    def __init__(self, config, rngs):
        proj_std = 0.02 / math.sqrt(2 * config.n_layer)
        self.c_fc = _dense(config, rngs, config.n_embd, 4 * config.n_embd)
        self.c_proj = _dense(config, rngs, 4 * config.n_embd, config.n_embd, std=proj_std)
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.gelu_approximate = config.gelu_approximate

    def __call__(self, x):
        x = self.c_fc(x)
        x = jax.nn.gelu(x, approximate=self.gelu_approximate)
        x = self.c_proj(x)
        return self.dropout(x)


class Block(nnx.Module):

    def __init__(self, config, rngs):
        self.ln_1 = _layer_norm(config, rngs)
        self.attn = CausalSelfAttention(config, rngs)
        self.ln_2 = _layer_norm(config, rngs)
        self.mlp = MLP(config, rngs)

    def __call__(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nnx.Module):

    def __init__(self, config, rngs):
        self.config = config
        embed_init = nnx.initializers.normal(stddev=0.02)
        self.wte = nnx.Embed(config.vocab_size, config.n_embd, embedding_init=embed_init,
                             promote_dtype=_follow_params, rngs=rngs)
        self.wpe = nnx.Embed(config.block_size, config.n_embd, embedding_init=embed_init,
                             promote_dtype=_follow_params, rngs=rngs)
        self.drop = nnx.Dropout(config.dropout, rngs=rngs)
        self.h = nnx.List([Block(config, rngs) for _ in range(config.n_layer)])
        self.ln_f = _layer_norm(config, rngs)

    def __call__(self, idx):
        b, t = idx.shape
        assert t <= self.config.block_size, f"Cannot forward sequence of length {t}, block size is only {self.config.block_size}"
        pos = jnp.arange(t)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        return self.wte.attend(x)  # tied LM head: x @ wte.embedding.T, (b, t, vocab_size)
