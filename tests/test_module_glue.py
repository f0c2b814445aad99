"""Module glue for torch.nn.Module and flax.nnx: the module's tensors by name with their
layout roles, a pure function of them that reproduces the module's own output, layers traced in
call order, and taps whose gradient is the gradient with respect to a layer's output."""
import numpy as np
import pytest


def test_torch_module_glue_names_roles_trace_and_taps():
    torch = pytest.importorskip("torch")
    from adapters.modules.torch_module import TorchModuleGlue

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    m.eval()
    with torch.no_grad():
        m[2].running_mean.uniform_(-1, 1)
        m[2].running_var.uniform_(0.5, 2)
    glue = TorchModuleGlue(None, m)
    rows = {p.path: (p.role, p.trainable, p.layer_type) for p in glue.params()}
    assert rows["0.weight"] == ("dense.out_in", True, "Linear")
    assert rows["2.weight"] == ("scale", True, "BatchNorm1d")
    assert rows["2.running_var"] == ("stat", False, "BatchNorm1d")
    assert "2.num_batches_tracked" not in rows          # an integer counter is not a tensor to map
    values = {k: torch.tensor(v, requires_grad=rows[k][1]) for k, v in glue.values().items()}
    x = torch.randn(5, 3, dtype=torch.float64)
    out, events, tensors = glue.traced(values, {"x": x}, None)
    assert torch.allclose(out, m.double()(x), rtol=0, atol=1e-14)
    assert [(e.layer, e.at) for e in events] == [(n, a) for n in "0123" for a in ("in", "out")]
    taps = {e.layer: torch.zeros_like(t, requires_grad=True) for e, t in zip(events, tensors) if e.at == "out"}
    out, _, _ = glue.traced(values, {"x": x}, taps)
    grads = torch.autograd.grad((out ** 2).sum(), [taps["3"], taps["1"]])
    assert torch.allclose(grads[0], 2 * out)                       # d sum(y^2) / dy
    bn_scale = values["2.weight"] / torch.sqrt(values["2.running_var"] + 1e-5)
    assert torch.allclose(grads[1], (2 * out) @ values["3.weight"] * bn_scale)   # back through Linear and BN
    with pytest.raises(KeyError, match="0.wieght"):
        glue.traced({"0.wieght": values["0.weight"]}, {"x": x}, None)


def test_flax_nnx_glue_names_roles_trace_taps_and_jit():
    pytest.importorskip("flax")
    from adapters import load

    load("jax").setup("cpu", 0, "default")   # float64 on, as in a worker
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from adapters.modules.flax_nnx import NnxGlue

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(2, 3, rngs=rngs)
            self.bn = nnx.BatchNorm(3, rngs=rngs)
            self.h = nnx.List([nnx.Linear(3, 1, rngs=rngs)])

        def __call__(self, x):
            return self.h[0](nnx.relu(self.bn(self.l1(x))))

    model = Net(nnx.Rngs(0))
    linear_call = nnx.Linear.__dict__["__call__"]
    glue = NnxGlue(None, model)
    rows = {p.path: (p.role, p.trainable, p.layer) for p in glue.params()}
    assert rows["l1/kernel"] == ("dense.in_out", True, "l1")
    assert rows["bn/mean"] == ("stat", False, "bn")
    assert rows["h/0/kernel"] == ("dense.in_out", True, "h/0")
    values = {k: jnp.asarray(v) for k, v in glue.values().items()}
    x = {"x": jnp.asarray(np.random.default_rng(0).standard_normal((4, 2)))}
    out, events, tensors = glue.traced(values, x, None)
    assert out.dtype == jnp.float64 and np.allclose(out, model(x["x"]))
    assert [(e.layer, e.at) for e in events] == [(n, a) for n in ("l1", "bn", "h/0") for a in ("in", "out")]
    taps = {e.layer: jnp.zeros_like(t) for e, t in zip(events, tensors) if e.at == "out"}
    grads = jax.grad(lambda t: jnp.sum(glue.traced(values, x, t)[0] ** 2))(taps)
    assert np.allclose(grads["h/0"], 2 * out)
    assert np.allclose(jax.jit(lambda v: jnp.sum(glue.apply(v, x)))(values), jnp.sum(out))
    assert nnx.Linear.__dict__["__call__"] is linear_call and "__call__" not in nnx.List.__dict__  # restored
    with pytest.raises(KeyError, match="l1/kernle"):
        glue.traced({"l1/kernle": values["l1/kernel"]}, x, None)


def test_each_worker_runs_keras_on_its_own_framework_and_the_parent_is_untouched():
    import os

    from harness.run.local import worker_env

    before = os.environ.get("KERAS_BACKEND")
    assert {fw: worker_env(fw, "cpu", 1)["KERAS_BACKEND"] for fw in ("torch", "jax", "tensorflow")} == \
        {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}
    assert os.environ.get("KERAS_BACKEND") == before
