"""The neutral ops vocabulary: names and canonical semantics, written once.

A neutral case's loss is written against an ``ops`` object; every adapter maps each name here
to its framework's *own* native function (never a re-implementation), so a neutral case tests
the frameworks, not the harness. Layouts are canonical: images NCHW, conv kernels OIHW,
dense weights (in, out). An adapter transposes at its edge where its native layout differs.

This module is framework-free: `harness list` and the tests read it without importing anything.
"""

# name -> (signature, one-line semantics). Keep in step with adapters/*_adapter.py.
OPS: dict[str, tuple[str, str]] = {
    # arithmetic
    "add": ("add(a, b)", "elementwise a + b with broadcasting"),
    "sub": ("sub(a, b)", "elementwise a - b"),
    "mul": ("mul(a, b)", "elementwise a * b"),
    "div": ("div(a, b)", "elementwise a / b"),
    "neg": ("neg(x)", "elementwise -x"),
    "pow": ("pow(x, y)", "elementwise x ** y; y may be a tensor or a python number"),
    "square": ("square(x)", "elementwise x * x"),
    "sqrt": ("sqrt(x)", "elementwise square root"),
    "abs": ("abs(x)", "elementwise |x|"),
    # transcendental
    "exp": ("exp(x)", "elementwise e ** x"),
    "log": ("log(x)", "natural logarithm"),
    "tanh": ("tanh(x)", "hyperbolic tangent"),
    "sigmoid": ("sigmoid(x)", "logistic 1 / (1 + exp(-x))"),
    # activations
    "relu": ("relu(x)", "max(x, 0); the derivative at 0 is each framework's convention"),
    # linear algebra and shape
    "matmul": ("matmul(a, b)", "matrix product, batched over leading dimensions"),
    "transpose": ("transpose(x, axes=None)", "permute axes (reverse them when axes is None)"),
    "reshape": ("reshape(x, shape)", "reshape to shape (one -1 allowed)"),
    # reductions
    "sum": ("sum(x, axis=None, keepdims=False)", "sum over axis (all when None)"),
    "mean": ("mean(x, axis=None, keepdims=False)", "arithmetic mean over axis (all when None)"),
    # nn functional
    "softmax": ("softmax(x, axis=-1)", "exp(x) / sum(exp(x)) along axis"),
    "log_softmax": ("log_softmax(x, axis=-1)", "x - logsumexp(x) along axis"),
    "mse": ("mse(pred, target)", "mean over all elements of (pred - target) ** 2"),
}


def describe(name: str) -> str:
    """One line for `harness list` and error messages."""
    signature, semantics = OPS[name]
    return f"{signature}: {semantics}"
