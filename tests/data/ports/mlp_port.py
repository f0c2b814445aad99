"""A torch MLP and its Flax nnx port, as module cases: the CLI's workers build each in its own
framework's process, the port's weights come from the torch module through the mapping."""
from harness import ModuleCase


def torch_mlp():
    import torch

    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))


def nnx_mlp(activation="tanh"):
    import jax.numpy as jnp
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(3, 5, rngs=rngs)
            self.b = nnx.Linear(5, 2, rngs=rngs)

        def __call__(self, x):
            return self.b(getattr(jnp, activation)(self.a(x)))

    return MLP(nnx.Rngs(0))


def _make(rng):
    return {"x": rng.standard_normal((4, 3))}


def _loss(ops, out, inputs):
    return ops.sum(out * out)


CASES = [
    ModuleCase(name="mlp_port", make=_make, modules={"torch": torch_mlp, "jax": nnx_mlp}, loss=_loss),
    ModuleCase(name="mlp_port_sin", make=_make, modules={"torch": torch_mlp, "jax": lambda: nnx_mlp("sin")},
               loss=_loss),
]
