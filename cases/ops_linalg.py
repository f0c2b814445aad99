"""Op sweep, linear algebra: random well-conditioned points, singular and degenerate ones.

Decompositions whose outputs are defined only up to sign or basis (eigenvectors, singular
vectors) enter the loss through invariant combinations (projectors v v^T, u diag(c) vh), so
the frameworks' LAPACK sign choices cannot matter. Symmetric inputs are built from an
unconstrained parameter, (B + B^T)/2 or B B^T + 4 I, except in the `*_full_input` cases, which
differentiate the symmetric matrix itself: there the frameworks answer a different question
(the gradient along symmetric perturbations, or the one of reading one triangle).
"""
import numpy as np

from ._opcase import family, point_rng, weighted

N = 4

_case, _edge = family("linalg")


def _sym(ops, b):
    return ops.mul(ops.add(b, ops.transpose(b)), 0.5)


def _spd(ops, b, eye):
    return ops.add(ops.matmul(b, ops.transpose(b)), ops.mul(eye, 4.0))


def _eigvec_loss(ops, v, c, w):
    """v diag(c) v^T: invariant to each eigenvector's sign."""
    return weighted(ops, ops.matmul(ops.mul(v, c), ops.transpose(v)), w)


def _svd_loss(ops, a, i):
    u, s, vh = ops.svd(a)
    return ops.add(weighted(ops, s, i["ws"]), weighted(ops, ops.matmul(ops.mul(u, i["c"]), vh), i["w"]))


def _qr_loss(ops, p, i):
    q, r = ops.qr(p["a"])
    return ops.add(weighted(ops, q, i["w"]), weighted(ops, r, i["wr"]))


def _random(shape_by_param, out_shape, **inputs):
    """make(): standard normal params; weights w of out_shape; extra fixed or drawn inputs."""
    def make(rng):
        params = {k: rng.standard_normal(s) for k, s in shape_by_param.items()}
        made = {"w": rng.standard_normal(out_shape)}
        made.update({k: v(rng) if callable(v) else np.asarray(v, dtype=float) for k, v in inputs.items()})
        return params, made
    return make


def _fixed(params, out_shape, **inputs):
    """make(): fixed (edge) params; fixed pseudo-random weights w and drawn inputs (point_rng:
    an edge point does not move with the seed); other inputs fixed or drawn."""
    def make(rng):
        rng = point_rng()
        made = {"w": rng.standard_normal(out_shape)}
        made.update({k: v(rng) if callable(v) else np.asarray(v, dtype=float) for k, v in inputs.items()})
        return {k: np.array(v, dtype=float) for k, v in params.items()}, made
    return make


def _well_conditioned(rng):
    return rng.standard_normal((N, N)) + 3.0 * np.eye(N)


def _with_spectrum(values, seed=7):
    """A fixed symmetric matrix with the given eigenvalues (a fixed orthogonal basis)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(values), len(values))))
    return q @ np.diag(values) @ q.T


# row 3 = row 1 + row 2: rank 2, and singular in floating point too: partial pivoting takes the
# 4-row and every multiplier (1/2, 1/2, -1) is exact, so the last pivot is exactly 0. At a matrix
# whose elimination rounds (multipliers 1/3, 2/3) the pivot is a rounding error, and torch's det
# and its gradient then depend on that error's bits: on one CPU (MKL, AVX2) torch.linalg.det
# returns -0.0 and a zero gradient, on another the adjugate.
_SINGULAR = [[2.0, 1.0, 3.0], [2.0, 3.0, 1.0], [4.0, 4.0, 4.0]]
# Degenerate points are exactly diagonal: a rotated matrix would have computed eigenvalues or
# singular values a rounding error apart, and its gradients would depend on that error's bits.
_EIGVALS_REPEATED = np.diag([1.0, 1.0, 3.0, 5.0])
_PAIR_EQUAL = [0.7, 0.7, -0.4, 1.3]  # equal weights on the repeated pair: a differentiable loss

CASES = [
    _case("matmul", _random({"a": (2, 3, N), "b": (N, 2)}, (2, 3, 2)),
          lambda ops, p, i: weighted(ops, ops.matmul(p["a"], p["b"]), i["w"]),
          "batched (2, 3, 4) @ (4, 2), b broadcast over the batch", ("quick",)),
    _case("einsum", _random({"a": (3, N), "b": (N, 2), "c": (2,)}, (3,)),
          lambda ops, p, i: weighted(ops, ops.einsum("ij,jk,k->i", p["a"], p["b"], p["c"]), i["w"]),
          "einsum('ij,jk,k->i') over three operands"),
    _case("solve", lambda rng: ({"a": _well_conditioned(rng), "b": rng.standard_normal((N, 2))},
                                {"w": rng.standard_normal((N, 2))}),
          lambda ops, p, i: weighted(ops, ops.solve(p["a"], p["b"]), i["w"]), "solve(a, b), a well conditioned"),
    _case("inv", lambda rng: ({"a": _well_conditioned(rng)}, {"w": rng.standard_normal((N, N))}),
          lambda ops, p, i: weighted(ops, ops.inv(p["a"]), i["w"]), "inv(a), a well conditioned"),
    _case("det", _random({"a": (N, N)}, ()), lambda ops, p, i: weighted(ops, ops.det(p["a"]), i["w"]),
          "det(a) at a random (invertible) a"),
    _case("slogdet", lambda rng: ({"a": _well_conditioned(rng) * np.array([[-1.0]] + [[1.0]] * (N - 1))},
                                  {"w": rng.standard_normal(())}),
          lambda ops, p, i: weighted(ops, ops.slogdet(p["a"]), i["w"]),
          "log|det(a)| of a matrix with a negative determinant"),
    _case("cholesky", _random({"b": (N, N)}, (N, N), eye=np.eye(N)),
          lambda ops, p, i: weighted(ops, ops.cholesky(_spd(ops, p["b"], i["eye"])), i["w"]),
          "cholesky(B B^T + 4 I) with respect to B"),
    _case("eigh_values", _random({"b": (N, N)}, (N,)),
          lambda ops, p, i: weighted(ops, ops.eigh(_sym(ops, p["b"]))[0], i["w"]),
          "eigenvalues of (B + B^T)/2 with respect to B"),
    _case("eigh_vectors", _random({"b": (N, N)}, (N, N), c=lambda rng: rng.standard_normal(N)),
          lambda ops, p, i: _eigvec_loss(ops, ops.eigh(_sym(ops, p["b"]))[1], i["c"], i["w"]),
          "eigenvectors of (B + B^T)/2 through the projector sum V diag(c) V^T"),
    _case("svd", _random({"a": (N, 3)}, (N, 3), ws=lambda rng: rng.standard_normal(3),
                         c=lambda rng: rng.standard_normal(3)),
          lambda ops, p, i: _svd_loss(ops, p["a"], i),
          "reduced svd of a (4, 3): s and the sign-invariant u diag(c) vh"),
    _case("svdvals", _random({"a": (N, 3)}, (3,)),
          lambda ops, p, i: weighted(ops, ops.svdvals(p["a"]), i["w"]), "singular values of a (4, 3)"),
    _case("qr", _random({"a": (N, 3)}, (N, 3), wr=lambda rng: rng.standard_normal((3, 3))),
          _qr_loss,
          "reduced qr of a (4, 3): q and r"),
    # ---- edge points --------------------------------------------------------------
    _edge("det_singular", _fixed({"a": _SINGULAR}, ()),
          lambda ops, p, i: weighted(ops, ops.det(p["a"]), i["w"]),
          "det at a rank-2 3x3 matrix: the gradient is the (nonzero) adjugate, no inverse exists"),
    _edge("eigh_repeated_values", _fixed({"a": _EIGVALS_REPEATED}, (N,), c=_PAIR_EQUAL),
          lambda ops, p, i: weighted(ops, ops.eigh(_sym(ops, p["a"]))[0], i["c"]),
          "eigenvalues (1, 1, 3, 5) with weights equal on the repeated pair: differentiable"),
    _edge("eigh_repeated_vectors", _fixed({"a": _EIGVALS_REPEATED}, (N, N), c=_PAIR_EQUAL),
          lambda ops, p, i: _eigvec_loss(ops, ops.eigh(_sym(ops, p["a"]))[1], i["c"], i["w"]),
          "eigenvectors at eigenvalues (1, 1, 3, 5) through V diag(c) V^T, c equal on the pair: "
          "differentiable, but each eigenvector alone is not (1 / (l_i - l_j) is inf)"),
    _edge("svdvals_rank_deficient", _fixed({"a": np.eye(N, 3) * [3.0, 1.0, 0.0]}, (3,)),
          lambda ops, p, i: weighted(ops, ops.svdvals(p["a"]), i["w"]),
          "singular values of a rank-2 (4, 3): the zero singular value is a kink, like |x|"),
    _edge("svd_repeated_values", _fixed({"a": np.eye(N, 3) * [2.0, 2.0, 1.0]}, (N, 3),
                                        ws=[0.5, 0.5, -1.0], c=[0.3, 0.3, 1.1]),
          lambda ops, p, i: _svd_loss(ops, p["a"], i),
          "svd at singular values (2, 2, 1), loss symmetric in the pair: differentiable, but "
          "1 / (s_i^2 - s_j^2) is inf"),
    _edge("cholesky_full_input", _fixed({"a": _with_spectrum([1.0, 2.0, 3.0, 5.0])}, (N, N)),
          lambda ops, p, i: weighted(ops, ops.cholesky(p["a"]), i["w"]),
          "cholesky differentiated with respect to the symmetric matrix itself: torch and TF read "
          "only its lower triangle, jax symmetrises it"),
    _edge("eigh_full_input", _fixed({"a": _with_spectrum([1.0, 2.0, 3.0, 5.0])}, (N,)),
          lambda ops, p, i: weighted(ops, ops.eigh(p["a"])[0], i["w"]),
          "eigenvalues differentiated with respect to the symmetric matrix itself"),
]
