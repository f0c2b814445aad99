"""The neutral ops vocabulary: names and canonical semantics, written once.

A neutral case's loss is written against an ``ops`` object; every adapter maps each name here
to its framework's *own* native function (never a re-implementation), so a neutral case tests
the frameworks, not the harness. Where a framework has no such function the adapter either
raises ``Unsupported`` (the case is `skipped` with that reason) or composes the op from its own
primitives and says so in the op's docstring. Layouts are canonical: images NCHW, conv kernels
OIHW, dense weights (in, out), attention (batch, heads, seq, dim). An adapter transposes at its
edge where its native layout differs.

Where frameworks' defaults differ (gelu's approximation, variance's ddof, norm epsilons, leaky
relu's slope) the argument is required here, so a neutral case never inherits a default; cases
tagged `default-semantics` compare the native defaults on purpose.

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
    "rsqrt": ("rsqrt(x)", "elementwise 1 / sqrt(x)"),
    "abs": ("abs(x)", "elementwise |x|; the derivative at 0 is each framework's convention"),
    "sign": ("sign(x)", "-1, 0 or 1; derivative 0 wherever defined"),
    "maximum": ("maximum(a, b)", "elementwise max; at a == b the split of the gradient is each "
                                 "framework's convention"),
    "minimum": ("minimum(a, b)", "elementwise min; ties as for maximum"),
    "clip": ("clip(x, lo, hi)", "min(max(x, lo), hi) with python-number bounds; the derivative at "
                                "x == lo or hi is each framework's convention"),
    "floor": ("floor(x)", "largest integer <= x; derivative 0 wherever defined"),
    "round": ("round(x)", "nearest integer, halves to even; derivative 0 wherever defined"),
    # transcendental
    "exp": ("exp(x)", "elementwise e ** x"),
    "expm1": ("expm1(x)", "e ** x - 1, accurate near 0"),
    "log": ("log(x)", "natural logarithm"),
    "log1p": ("log1p(x)", "log(1 + x), accurate near 0"),
    "sin": ("sin(x)", "sine"),
    "cos": ("cos(x)", "cosine"),
    "tan": ("tan(x)", "tangent"),
    "tanh": ("tanh(x)", "hyperbolic tangent"),
    "sigmoid": ("sigmoid(x)", "logistic 1 / (1 + exp(-x))"),
    "erf": ("erf(x)", "error function"),
    "atan2": ("atan2(y, x)", "angle of (x, y) in (-pi, pi]"),
    # activations
    "relu": ("relu(x)", "max(x, 0); the derivative at 0 is each framework's convention"),
    "relu6": ("relu6(x)", "min(max(x, 0), 6)"),
    "leaky_relu": ("leaky_relu(x, negative_slope)", "x if x > 0 else negative_slope * x (slope "
                                                    "required: torch/jax default 0.01, tf 0.2)"),
    "elu": ("elu(x, alpha)", "x if x > 0 else alpha * (exp(x) - 1)"),
    "selu": ("selu(x)", "scale * elu(x, alpha) with the fixed constants of Klambauer et al."),
    "gelu": ("gelu(x, approximate)", "x * Phi(x) when approximate is False, the tanh approximation "
                                     "when True (required: jax defaults to tanh, torch/tf to exact)"),
    "silu": ("silu(x)", "x * sigmoid(x)"),
    "softplus": ("softplus(x)", "log(1 + exp(x)) (torch returns x itself above x = 20)"),
    "hardtanh": ("hardtanh(x, min_val, max_val)", "clip(x, min_val, max_val) as an activation"),
    "mish": ("mish(x)", "x * tanh(softplus(x))"),
    # reductions
    "sum": ("sum(x, axis=None, keepdims=False)", "sum over axis (all when None)"),
    "mean": ("mean(x, axis=None, keepdims=False)", "arithmetic mean over axis (all when None)"),
    "prod": ("prod(x, axis=None, keepdims=False)", "product over axis (all when None)"),
    "max": ("max(x, axis=None, keepdims=False)", "maximum over axis; with an axis, torch.max(dim) "
                                                 "routes a tie's gradient to one index"),
    "min": ("min(x, axis=None, keepdims=False)", "minimum over axis; ties as for max"),
    "amax": ("amax(x, axis=None, keepdims=False)", "maximum over axis, a tie's gradient shared evenly"),
    "amin": ("amin(x, axis=None, keepdims=False)", "minimum over axis, a tie's gradient shared evenly"),
    "logsumexp": ("logsumexp(x, axis=None, keepdims=False)", "log(sum(exp(x))) over axis, stable"),
    "var": ("var(x, ddof, axis=None, keepdims=False)", "sum((x - mean)^2) / (n - ddof) (ddof required: "
                                                       "torch defaults to 1, jax/tf to 0)"),
    "std": ("std(x, ddof, axis=None, keepdims=False)", "sqrt(var(x, ddof, axis))"),
    "norm": ("norm(x, ord, axis=None, keepdims=False)", "vector p-norm over axis (all when None); "
                                                        "ord a positive number or inf"),
    "cumsum": ("cumsum(x, axis)", "inclusive cumulative sum along axis"),
    "cumprod": ("cumprod(x, axis)", "inclusive cumulative product along axis"),
    # indexing and shape
    "greater": ("greater(a, b)", "elementwise a > b as booleans (for where's condition)"),
    "where": ("where(cond, a, b)", "a where cond else b; b or a may be a python number"),
    "gather": ("gather(x, indices, axis)", "x indexed along axis by an integer vector (numpy take)"),
    "take_along_axis": ("take_along_axis(x, indices, axis)", "numpy take_along_axis"),
    "concat": ("concat(xs, axis)", "join a list of tensors along an existing axis"),
    "stack": ("stack(xs, axis)", "join a list of tensors along a new axis"),
    "pad": ("pad(x, pad_width, value=0.0)", "constant padding; pad_width is ((before, after),) per axis"),
    "transpose": ("transpose(x, axes=None)", "permute axes (reverse them when axes is None)"),
    "reshape": ("reshape(x, shape)", "reshape to shape (one -1 allowed)"),
    # linear algebra
    "matmul": ("matmul(a, b)", "matrix product, batched over leading dimensions"),
    "einsum": ("einsum(subscripts, *operands)", "Einstein summation, numpy subscripts"),
    "solve": ("solve(a, b)", "x with a @ x = b; b is a matrix (n, k)"),
    "inv": ("inv(a)", "matrix inverse"),
    "det": ("det(a)", "determinant"),
    "slogdet": ("slogdet(a)", "log |det(a)| (the sign is not differentiable, so not returned)"),
    "cholesky": ("cholesky(a)", "lower-triangular L with L @ L.T = a, a symmetric positive definite"),
    "eigh": ("eigh(a)", "(eigenvalues ascending, eigenvectors as columns) of symmetric a"),
    "svd": ("svd(a)", "(u, s, vh), reduced: a = u @ diag(s) @ vh, s descending"),
    "svdvals": ("svdvals(a)", "singular values, descending"),
    "qr": ("qr(a)", "(q, r), reduced: a = q @ r, r upper triangular"),
    # nn functional
    "softmax": ("softmax(x, axis=-1)", "exp(x) / sum(exp(x)) along axis"),
    "log_softmax": ("log_softmax(x, axis=-1)", "x - logsumexp(x) along axis"),
    "mse": ("mse(pred, target)", "mean over all elements of (pred - target) ** 2"),
    "cross_entropy": ("cross_entropy(logits, labels, label_smoothing)",
                      "mean over the batch of -sum(q * log_softmax(logits)), logits (N, C), integer "
                      "labels (N,), q = (1 - s) * onehot + s / C"),
    "conv1d": ("conv1d(x, w, stride=1, padding=0, dilation=1)", "cross-correlation, x (N, C, L), w (O, C, K), "
                                                                "symmetric zero padding"),
    "conv2d": ("conv2d(x, w, stride=1, padding=0, dilation=1)", "cross-correlation, x NCHW, w OIHW; "
                                                                "each of stride/padding/dilation an int or a pair"),
    "max_pool2d": ("max_pool2d(x, kernel, stride=None)", "max over kernel windows of x NCHW, no padding; "
                                                         "stride defaults to kernel"),
    "avg_pool2d": ("avg_pool2d(x, kernel, stride=None)", "mean over kernel windows of x NCHW, no padding"),
    "layer_norm": ("layer_norm(x, weight, bias, eps)", "(x - mean) / sqrt(var + eps) * weight + bias over "
                                                       "the last axis, biased var (eps required: torch 1e-5, "
                                                       "keras 1e-3)"),
    "batch_norm": ("batch_norm(x, weight, bias, eps, mean=None, var=None)",
                   "normalise each channel (axis 1) over the other axes: with the batch's own mean and "
                   "biased var (training) or the given running mean and var (eval)"),
    "dropout": ("dropout(x, mask, p)", "where(mask, x / (1 - p), 0) with a fixed boolean keep-mask"),
    "embedding": ("embedding(table, ids)", "rows of table (V, D) picked by integer ids"),
    "scaled_dot_product_attention": ("scaled_dot_product_attention(q, k, v, mask=None)",
                                     "softmax(q @ k^T / sqrt(D), masked) @ v over (B, H, L, D); mask "
                                     "boolean, True = attend"),
}


def describe(name: str) -> str:
    """One line for `harness list` and error messages."""
    signature, semantics = OPS[name]
    return f"{signature}: {semantics}"


__all__ = ["OPS", "describe"]
