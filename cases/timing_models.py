"""Cases sized for timing (tag `timing`): kernels, not dispatch, dominate a call on a CPU.

Nearly every other built-in case takes microseconds, so timing it measures each framework's
per-op dispatch. These take milliseconds per forward+backward on a 2-core CPU: a wide MLP, a
small conv net and a multi-head attention block, written once against the neutral ops (each
adapter runs its own native matmul, conv and attention kernels) with smooth activations, so
float32 and float64 agree well within tolerance and there are no kinks for FD to straddle.
The report's headline timing gaps prefer these cases (harness/render/report.py).

The case API has no device-dependent size (every task is held against a float64 CPU reference
of the same shapes), so these are CPU-sized and not tagged `gpu` (benchmarks/gpu_check.sh): on a
GPU (`--cases timing --devices cuda`) they time small kernels; for a GPU-sized model write a case
file at the size you care about.
"""
import numpy as np

from harness import Case

TAGS = ("models", "neutral", "timing")

# ---- a wide MLP ------------------------------------------------------------------------------
MLP_WIDTH, MLP_BATCH, MLP_OUT = 384, 128, 16


def mlp_make(rng):
    w = MLP_WIDTH
    params = {"w1": rng.standard_normal((w, w)) / np.sqrt(w), "b1": 0.1 * rng.standard_normal(w),
              "w2": rng.standard_normal((w, w)) / np.sqrt(w), "b2": 0.1 * rng.standard_normal(w),
              "w3": rng.standard_normal((w, MLP_OUT)) / np.sqrt(w)}
    inputs = {"x": rng.standard_normal((MLP_BATCH, w)), "y": rng.standard_normal((MLP_BATCH, MLP_OUT))}
    return params, inputs


def mlp_loss(ops, p, i):
    h = ops.tanh(ops.add(ops.matmul(i["x"], p["w1"]), p["b1"]))
    h = ops.tanh(ops.add(ops.matmul(h, p["w2"]), p["b2"]))
    return ops.mse(ops.matmul(h, p["w3"]), i["y"])


# ---- a small conv net -------------------------------------------------------------------------
CNN_BATCH, CNN_IN, CNN_SIZE, CNN_C1, CNN_C2, CNN_CLASSES = 8, 3, 32, 16, 32, 10
CNN_FEATURES = CNN_C2 * (CNN_SIZE // 4) ** 2   # two 2x2 average poolings


def cnn_make(rng):
    def conv(c_out, c_in):
        bound = 1 / np.sqrt(c_in * 9)
        return rng.uniform(-bound, bound, (c_out, c_in, 3, 3)), rng.uniform(-bound, bound, (c_out,))

    params = {}
    params["conv1_w"], params["conv1_b"] = conv(CNN_C1, CNN_IN)
    params["conv2_w"], params["conv2_b"] = conv(CNN_C2, CNN_C1)
    params["fc_w"] = rng.standard_normal((CNN_FEATURES, CNN_CLASSES)) / np.sqrt(CNN_FEATURES)
    params["fc_b"] = np.zeros(CNN_CLASSES)
    inputs = {"x": rng.standard_normal((CNN_BATCH, CNN_IN, CNN_SIZE, CNN_SIZE)),
              "labels": rng.integers(0, CNN_CLASSES, CNN_BATCH)}
    return params, inputs


def cnn_loss(ops, p, i):
    def block(x, w, b):
        h = ops.conv2d(x, w, padding=1)
        return ops.avg_pool2d(ops.tanh(ops.add(h, ops.reshape(b, (1, -1, 1, 1)))), 2)

    h = block(block(i["x"], p["conv1_w"], p["conv1_b"]), p["conv2_w"], p["conv2_b"])
    logits = ops.add(ops.matmul(ops.reshape(h, (CNN_BATCH, CNN_FEATURES)), p["fc_w"]), p["fc_b"])
    return ops.cross_entropy(logits, i["labels"], 0.0)


# ---- a multi-head attention block ---------------------------------------------------------------
ATT_BATCH, ATT_SEQ, ATT_EMBED, ATT_HEADS = 4, 128, 128, 4
ATT_HEAD_DIM = ATT_EMBED // ATT_HEADS
ATT_EPS = 1e-5


def attention_make(rng):
    e = ATT_EMBED
    params = {name: rng.standard_normal((e, e)) / np.sqrt(e) for name in ("wq", "wk", "wv", "wo")}
    params["ln_g"] = 1 + 0.1 * rng.standard_normal(e)
    params["ln_b"] = 0.1 * rng.standard_normal(e)
    inputs = {"x": rng.standard_normal((ATT_BATCH, ATT_SEQ, e)), "y": rng.standard_normal((ATT_BATCH, ATT_SEQ, e))}
    return params, inputs


def attention_loss(ops, p, i):
    """Post-norm self-attention: LN(x + MHA(x)) against a target; softmax(q k^T / sqrt(D)) v per head."""
    x = i["x"]

    def heads(w):   # (B, L, E) @ (E, E) -> (B, H, L, D)
        h = ops.reshape(ops.matmul(x, w), (ATT_BATCH, ATT_SEQ, ATT_HEADS, ATT_HEAD_DIM))
        return ops.transpose(h, (0, 2, 1, 3))

    # written out, not the fused scaled_dot_product_attention op: jax's computes its softmax in
    # float32 even for float64 inputs (cases/expected_divergences.toml, op_attention), and a case
    # for timing must agree everywhere
    scores = ops.mul(ops.matmul(heads(p["wq"]), ops.transpose(heads(p["wk"]), (0, 1, 3, 2))), 1 / np.sqrt(ATT_HEAD_DIM))
    ctx = ops.matmul(ops.softmax(scores, axis=-1), heads(p["wv"]))
    ctx = ops.reshape(ops.transpose(ctx, (0, 2, 1, 3)), (ATT_BATCH, ATT_SEQ, ATT_EMBED))
    out = ops.layer_norm(ops.add(x, ops.matmul(ctx, p["wo"])), p["ln_g"], p["ln_b"], ATT_EPS)
    return ops.mse(out, i["y"])


CASES = [
    Case(name="timing_mlp", doc=f"Timing-sized MLP: {MLP_WIDTH}-wide tanh layers, batch {MLP_BATCH}, MSE "
                                "(milliseconds per call on a CPU: kernels, not dispatch).",
         make=mlp_make, loss=mlp_loss, tags=TAGS),
    Case(name="timing_convnet", doc=f"Timing-sized conv net: two 3x3 conv + tanh + 2x2 avg-pool blocks "
                                    f"({CNN_IN}->{CNN_C1}->{CNN_C2} channels, {CNN_BATCH}x{CNN_SIZE}x{CNN_SIZE} "
                                    "images), a dense head, cross-entropy.",
         make=cnn_make, loss=cnn_loss, tags=TAGS),
    Case(name="timing_attention", doc=f"Timing-sized attention block: {ATT_HEADS}-head self-attention (batch "
                                      f"{ATT_BATCH}, sequence {ATT_SEQ}, embedding {ATT_EMBED}) + residual + "
                                      "layer norm, MSE.",
         make=attention_make, loss=attention_loss, tags=TAGS),
]
