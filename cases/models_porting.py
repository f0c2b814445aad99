"""Porting cases: real model definitions and their hand-written ports, checked as the modules a
porter has (harness.ModuleCase), with no functional wrapper. The models live in cases/ports/
as plain framework code; the weight mapping between each and its port is found by structure.

- ``gpt_port``: a GPT block stack with the structure of nanoGPT's ``model.py`` (torch) and a
  Flax nnx port; its ``planted`` variants each carry one classic porting mistake (layer-norm
  epsilon, a transposed projection, no causal mask, attention scaled by sqrt(n_embd), tanh GELU),
  which the layer records must locate.
- ``resnet_port``: a small ResNet-style CNN with batch norm (torch, NCHW) and its flax.linen port
  (NHWC), evaluation mode (running statistics as state, not parameters).
- ``lstm_port``: an embedding, an LSTM and a linear head (torch) and an nnx port whose LSTM is
  hand-written (two biases summed into one, gate blocks in torch's order); planted: the gate order.
- ``keras_*``: one Keras 3 model definition run under Keras's torch, jax and tensorflow backends.
"""
from __future__ import annotations

from harness import ModuleCase

PORTING = ("porting", "model")
#: the planted-mistake knobs of the nnx GPT port (cases/ports/gpt_flax.py), each a classic mistake
GPT_MISTAKES = {
    "ln_eps": {"ln_eps": 1e-6},                    # Flax's LayerNorm default epsilon, not torch's 1e-5
    "transposed_c_proj": {"transpose_c_proj": True},   # attn.c_proj's kernel applied transposed
    "no_causal_mask": {"causal": False},
    "attn_scale_n_embd": {"attn_scale": "n_embd"},   # 1/sqrt(n_embd) instead of 1/sqrt(head_dim)
    "gelu_tanh": {"gelu_approximate": True},         # JAX's gelu default, torch's nn.GELU is exact
}
#: where each mistake sits: the torch layer the localisation must name (block 0 goes first)
GPT_MISTAKE_LAYERS = {"ln_eps": "transformer.h.0.ln_1", "transposed_c_proj": "transformer.h.0.attn.c_proj",
                      "no_causal_mask": "transformer.h.0.attn", "attn_scale_n_embd": "transformer.h.0.attn",
                      "gelu_tanh": "transformer.h.0.mlp"}


def gpt_torch():
    from cases.ports.gpt_torch import GPT, GPTConfig

    return GPT(GPTConfig())


def gpt_nnx(**mistake):
    from flax import nnx

    from cases.ports.gpt_flax import GPT, GPTConfig

    return GPT(GPTConfig(**mistake), nnx.Rngs(0))


def _gpt_inputs(rng):
    return {"idx": rng.integers(0, 64, size=(2, 8)), "targets": rng.integers(0, 64, size=(2, 8))}


def _gpt_call(model, inputs):
    return model(inputs["idx"])


def _next_token_loss(ops, logits, inputs):
    """nanoGPT's training loss: cross-entropy of every position's logits against the next token."""
    return ops.cross_entropy(ops.reshape(logits, (-1, 64)), ops.reshape(inputs["targets"], (-1,)), 0.0)


def _gpt_case(name, mistake=None, doc=""):
    tags = PORTING + (("planted",) if mistake else ())
    return ModuleCase(name=name, make=_gpt_inputs, modules={"torch": gpt_torch,
                                                            "jax": lambda: gpt_nnx(**GPT_MISTAKES.get(mistake, {}))},
                      call=_gpt_call, loss=_next_token_loss, tags=tags, doc=doc)


CASES = [
    _gpt_case("gpt_port", doc="nanoGPT's GPT (2 blocks, 2 heads, n_embd 32, tied head) vs a careful nnx port: "
                              "every weight mapped by structure, gradients in torch's names"),
] + [
    _gpt_case(f"gpt_port_{mistake}", mistake,
              doc=f"planted port mistake {mistake}: the layer records locate it at {GPT_MISTAKE_LAYERS[mistake]}")
    for mistake in GPT_MISTAKES
]


# ---- a ResNet-style CNN with batch norm: torch (NCHW) and flax.linen (NHWC) -------------------
def resnet_torch():
    from cases.ports.cnn_torch import SmallResNet

    return SmallResNet()


def resnet_linen():
    from cases.ports.cnn_flax import SmallResNet

    return SmallResNet()


def _images(rng):
    return {"x": rng.standard_normal((2, 3, 8, 8)), "labels": rng.integers(0, 10, size=(2,))}


def _nchw(model, inputs):
    return model(inputs["x"])


def _nhwc(model, inputs):
    """The port takes channels-last images: the same batch, transposed at the call."""
    import jax.numpy as jnp

    return model(jnp.transpose(inputs["x"], (0, 2, 3, 1)))


def _classifier_loss(ops, logits, inputs):
    return ops.cross_entropy(logits, inputs["labels"], 0.0)


# ---- an embedding, an LSTM and a head: torch and a hand-written nnx LSTM ----------------------
def lstm_torch():
    from cases.ports.lstm_torch import SeqModel

    return SeqModel()


def lstm_nnx(gate_order="ifgo"):
    from flax import nnx

    from cases.ports.lstm_flax import SeqModel

    return SeqModel(nnx.Rngs(0), gate_order=gate_order)


def _sequences(rng):
    return {"ids": rng.integers(0, 20, size=(3, 5)), "labels": rng.integers(0, 5, size=(3,))}


def _ids(model, inputs):
    return model(inputs["ids"])


CASES += [
    ModuleCase(name="resnet_port", make=_images, modules={"torch": resnet_torch, "jax": resnet_linen},
               call={"torch": _nchw, "jax": _nhwc}, loss=_classifier_loss, tags=PORTING,
               doc="a ResNet-style CNN with batch norm (torchvision names, NCHW) vs its flax.linen port (NHWC), "
                   "evaluation mode: running statistics are state, conv kernels OIHW <-> HWIO"),
    ModuleCase(name="lstm_port", make=_sequences, modules={"torch": lstm_torch, "jax": lstm_nnx}, call=_ids,
               loss=_classifier_loss, tags=PORTING,
               doc="embedding, nn.LSTM and a head vs an nnx port with a hand-written LSTM (one bias: torch's "
                   "b_ih + b_hh summed by the mapping)"),
    ModuleCase(name="lstm_port_gate_order", make=_sequences,
               modules={"torch": lstm_torch, "jax": lambda: lstm_nnx("ifog")}, call=_ids, loss=_classifier_loss,
               tags=PORTING + ("planted",),
               doc="planted port mistake: the port reads the LSTM's gate blocks as i, f, o, g (torch's are i, f, g, "
                   "o); the layer records locate it at lstm"),
]


# ---- one Keras 3 model definition under Keras's torch, jax and tensorflow backends -------------
def keras_small():
    from cases.ports.keras_convnet import build_small

    return build_small()


def keras_mobilenet():
    from cases.ports.keras_convnet import build

    return build(classifier_activation=None)


def _small_images(rng):
    return {"image": rng.standard_normal((2, 8, 8, 3)), "labels": rng.integers(0, 5, size=(2,))}


def _mobilenet_images(rng):
    return {"image": rng.standard_normal((2, 32, 32, 3)), "labels": rng.integers(0, 5, size=(2,))}


def _image(model, inputs):
    return model(inputs["image"], training=False)


KERAS = PORTING + ("keras",)
CASES += [
    ModuleCase(name="keras_small_convnet", make=_small_images, modules={"keras": keras_small}, call=_image,
               loss=_classifier_loss, tags=KERAS,
               doc="one functional Keras model (Conv2D, BatchNormalization, ReLU, pooling, Dense) under the "
                   "tensorflow, jax and torch backends, each in its own worker; tensorflow's weights are the point"),
    ModuleCase(name="keras_mobilenet", make=_mobilenet_images, modules={"keras": keras_mobilenet}, call=_image,
               loss=_classifier_loss, tags=KERAS,
               doc="keras.applications.MobileNet (alpha 0.125, 32x32 input, weights=None, logits) under the "
                   "tensorflow, jax and torch backends: depthwise convolutions, batch norm, ReLU6"),
]
