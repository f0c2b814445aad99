"""The weight mapping between a module and its port: the layout rules, matching by structure,
fused vs split projections, recurrent gates and biases, overrides by name, and one clear error
naming the candidates when a match would be a guess."""
import numpy as np
import pytest

from adapters.modules.base import Param
from harness.define.port_mapping import MappingError, layer_pairs, match, rule


def P(path, shape, layer_type, role, trainable=True, gates="", sep="."):
    return Param(path, tuple(shape), path.rpartition(sep)[0], layer_type, role, trainable, gates)


def Q(path, shape, layer_type, role, trainable=True, gates=""):
    return P(path, shape, layer_type, role, trainable, gates, sep="/")


def apply(link, tensors):
    """The steps of a link on numpy arrays, as the worker applies them with a framework's ops."""
    xs = [tensors[n] for n in link.ref]
    for op, *args in link.steps:
        if op == "sum":
            xs = [sum(xs)]
        elif op == "perm":
            xs = [np.transpose(x, args[0]) for x in xs]
        elif op == "gates":
            axis, order = args
            chunks = np.split(xs[0], len(order), axis=axis)
            xs = [np.concatenate([chunks[i] for i in order], axis=axis)]
        elif op == "split":
            xs = np.split(xs[0], args[1], axis=args[0])
    return dict(zip(link.port, xs))


def test_linear_to_dense_is_a_transpose_even_when_square():
    r = P("fc.weight", (4, 4), "Linear", "dense.out_in")
    q = Q("fc/kernel", (4, 4), "Dense", "dense.in_out")
    steps, why = rule(r, q)
    assert steps == (("perm", (1, 0)),) and "transpose" in why


def test_conv_oihw_to_hwio():
    r = P("conv.weight", (8, 3, 5, 2), "Conv2d", "conv.out_in")
    q = Q("conv/kernel", (5, 2, 3, 8), "Conv", "conv.spatial_in_out")
    steps, _ = rule(r, q)
    w = np.random.default_rng(0).standard_normal((8, 3, 5, 2))
    out = np.transpose(w, steps[0][1])
    assert out.shape == (5, 2, 3, 8) and out[4, 1, 2, 7] == w[7, 2, 4, 1]


def _gpt_ref():
    ps = [P("transformer.wte.weight", (64, 32), "Embedding", "embedding"),
          P("transformer.wpe.weight", (16, 32), "Embedding", "embedding")]
    for i in range(2):
        h = f"transformer.h.{i}"
        ps += [P(f"{h}.ln_1.weight", (32,), "LayerNorm", "scale"), P(f"{h}.ln_1.bias", (32,), "LayerNorm", "bias"),
               P(f"{h}.attn.c_attn.weight", (96, 32), "Linear", "dense.out_in"),
               P(f"{h}.attn.c_attn.bias", (96,), "Linear", "bias"),
               P(f"{h}.attn.c_proj.weight", (32, 32), "Linear", "dense.out_in"),
               P(f"{h}.attn.c_proj.bias", (32,), "Linear", "bias")]
    return ps


def _gpt_port(split_qkv=False):
    ps = [Q("wte/embedding", (64, 32), "Embed", "embedding"), Q("wpe/embedding", (16, 32), "Embed", "embedding")]
    for i in range(2):
        h = f"h/{i}"
        ps += [Q(f"{h}/ln_1/bias", (32,), "LayerNorm", "bias"), Q(f"{h}/ln_1/scale", (32,), "LayerNorm", "scale")]
        if split_qkv:
            for n in "qkv":
                ps += [Q(f"{h}/attn/{n}/bias", (32,), "Linear", "bias"),
                       Q(f"{h}/attn/{n}/kernel", (32, 32), "Linear", "dense.in_out")]
        else:
            ps += [Q(f"{h}/attn/c_attn/bias", (96,), "Linear", "bias"),
                   Q(f"{h}/attn/c_attn/kernel", (32, 96), "Linear", "dense.in_out")]
        ps += [Q(f"{h}/attn/c_proj/bias", (32,), "Linear", "bias"),
               Q(f"{h}/attn/c_proj/kernel", (32, 32), "Linear", "dense.in_out")]
    return ps


def test_a_gpt_port_maps_by_structure_whatever_the_names_and_listing_order():
    links = match(_gpt_ref(), _gpt_port())
    pairs = {link.ref[0]: link.port[0] for link in links}
    assert pairs["transformer.h.1.attn.c_proj.weight"] == "h/1/attn/c_proj/kernel"
    assert pairs["transformer.h.0.ln_1.weight"] == "h/0/ln_1/scale"
    assert pairs["transformer.h.0.ln_1.bias"] == "h/0/ln_1/bias"
    assert len(links) == len(_gpt_ref())
    layers = layer_pairs(["transformer.h.0.attn", "transformer.h.0.attn.c_proj", "transformer.h.0.ln_1"],
                         ["h/0/attn", "h/0/attn/c_proj", "h/0/ln_1", "h/0"], links, _gpt_ref(), _gpt_port())
    assert layers == {"transformer.h.0.attn": "h/0/attn", "transformer.h.0.attn.c_proj": "h/0/attn/c_proj",
                      "transformer.h.0.ln_1": "h/0/ln_1"}


def test_a_fused_qkv_maps_onto_split_q_k_v_and_the_values_agree():
    links = match(_gpt_ref(), _gpt_port(split_qkv=True))
    link = next(lk for lk in links if lk.ref == ("transformer.h.0.attn.c_attn.weight",))
    assert link.port == ("h/0/attn/q/kernel", "h/0/attn/k/kernel", "h/0/attn/v/kernel")
    w = np.arange(96 * 32, dtype=float).reshape(96, 32)
    out = apply(link, {link.ref[0]: w})
    np.testing.assert_array_equal(out["h/0/attn/k/kernel"], w[32:64].T)


def test_lstm_gates_and_the_two_torch_biases():
    ref = [P("rnn.weight_ih_l0", (16, 3), "LSTM", "rnn.input.out_in", gates="ifgo"),
           P("rnn.weight_hh_l0", (16, 4), "LSTM", "rnn.recurrent.out_in", gates="ifgo"),
           P("rnn.bias_ih_l0", (16,), "LSTM", "rnn.bias", gates="ifgo"),
           P("rnn.bias_hh_l0", (16,), "LSTM", "rnn.bias", gates="ifgo")]
    keras = [Q("lstm/cell/kernel", (3, 16), "LSTMCell", "rnn.input.in_out", gates="ifco"),
             Q("lstm/cell/recurrent_kernel", (4, 16), "LSTMCell", "rnn.recurrent.in_out", gates="ifco"),
             Q("lstm/cell/bias", (16,), "LSTMCell", "rnn.bias", gates="ifco")]
    links = {lk.port: lk for lk in match(ref, keras)}
    rng = np.random.default_rng(1)
    t = {p.path: rng.standard_normal(p.shape) for p in ref}
    assert np.allclose(apply(links[("lstm/cell/bias",)], t)["lstm/cell/bias"], t["rnn.bias_ih_l0"] + t["rnn.bias_hh_l0"])
    assert np.allclose(apply(links[("lstm/cell/kernel",)], t)["lstm/cell/kernel"], t["rnn.weight_ih_l0"].T)
    gru = rule(P("g.weight_ih_l0", (9, 3), "GRU", "rnn.input.out_in", gates="rzn"),
               Q("g/kernel", (3, 9), "GRUCell", "rnn.input.in_out", gates="zrh"))
    w = np.repeat(np.array([0., 1., 2.]), 3)[:, None] * np.ones((9, 3))   # chunk r=0, z=1, n=2
    out = apply(type("L", (), {"ref": ("w",), "port": ("k",), "steps": gru[0]})(), {"w": w})["k"]
    assert list(out[0, ::3]) == [1.0, 0.0, 2.0]   # Keras order z, r, h


def test_a_square_custom_weight_is_ambiguous_and_the_error_names_it():
    ref = [P("cell.w", (4, 4), "Cell", "plain")]
    port = [Q("cell/w", (4, 4), "Cell", "plain")]
    with pytest.raises(MappingError, match=r"cell\.w \(4, 4\) could be cell/w \(4, 4\).*square"):
        match(ref, port)
    links = match(ref, port, pinned={"cell.w": ("cell/w", "transpose")})
    assert links[0].steps == (("perm", (1, 0)),) and links[0].pinned


def test_an_incomplete_port_is_one_error_listing_what_is_left():
    port = _gpt_port()[:-2]   # the port forgot the last c_proj
    with pytest.raises(MappingError, match=r"incomplete mapping: the reference's transformer\.h\.1\.attn\.c_proj"):
        match(_gpt_ref(), port)


def test_a_mapping_override_to_an_unknown_name_lists_the_candidates():
    with pytest.raises(MappingError, match=r"not a parameter of the port; candidates: .*h/0/attn/c_proj/kernel"):
        match(_gpt_ref(), _gpt_port(), pinned={"transformer.h.0.attn.c_proj.weight": "h/0/attn/cproj/kernel"})
