"""Linear algebra used by optimizers: power iteration, inverse p-th roots, NNLS.

Layer 1: depends on JAX and :mod:`optcore.numerics`. Every loop is a ``lax`` loop, so all functions
run under ``jax.jit``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
from jax import lax

from optcore import numerics, validate


def _tree_vdot(x: Any, y: Any) -> jax.Array:
    return sum(numerics.vdot(a, b) for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y)))


def _tree_scale(scalar: jax.Array, x: Any) -> Any:
    return jax.tree.map(lambda a: (scalar * a).astype(a.dtype), x)


def power_iteration(
    matrix: Union[jax.Array, Callable[[Any], Any]],
    *,
    v0: Optional[Any] = None,
    num_iters: int = 100,
    error_tolerance: float = 1e-6,
    precision: lax.Precision = lax.Precision.HIGHEST,
    key: Optional[jax.Array] = None,
) -> tuple[jax.Array, Any]:
    r"""The dominant eigenvalue and eigenvector of a matrix by power iteration.

    .. math::
        v_{k} = \frac{A^k v_0}{\|A^k v_0\|_2}, \qquad \lambda_{k} = v_k^\top A v_k

    stopping after ``num_iters`` steps or once the relative residual
    :math:`\|A v_k - \lambda_k v_k\|_2 \le \text{tol} \cdot |\lambda_k|`.
    Golub & Van Loan, *Matrix Computations*, 4th ed., section 7.3.1.

    Args:
      matrix: a square ``(n, n)`` array, or a function computing the
        matrix-vector product ``v -> A v`` on pytrees.
      v0: the starting vector (a pytree like the input of ``matrix`` when it is
        a function). ``None`` draws one uniformly in ``[-1, 1]`` (array only).
      num_iters: the largest number of iterations.
      error_tolerance: the relative residual below which the iteration stops.
      precision: the XLA precision of the matrix products.
      key: PRNG key for the random ``v0``; ``None`` uses ``jax.random.PRNGKey(0)``.

    Returns:
      ``(eigenvalue, eigenvector)``: :math:`\lambda_k` and the unit vector
      :math:`A v_k / \|A v_k\|_2`.
    """
    if callable(matrix):
        if v0 is None:
            raise ValueError("power_iteration needs `v0` when `matrix` is a function.")
        matvec = matrix
    else:
        matrix = jnp.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"power_iteration expects a square matrix, got shape {matrix.shape}.")
        matvec = lambda v: jnp.matmul(matrix, v, precision=precision)  # noqa: E731
        if v0 is None:
            key = jax.random.PRNGKey(0) if key is None else key
            v0 = jax.random.uniform(key, (matrix.shape[-1],), matrix.dtype, -1.0, 1.0)

    def normalize(v):
        return _tree_scale(1.0 / jnp.sqrt(jnp.real(_tree_vdot(v, v))), v)

    def cond_fn(carry):
        step, v, av, eigenvalue = carry
        # Relative residual of the eigen-equation A v = lambda v.
        residual = jax.tree.map(lambda a, b: a - eigenvalue * b, av, v)
        residual_norm = jnp.sqrt(jnp.real(_tree_vdot(residual, residual)))
        converged = residual_norm < error_tolerance * jnp.abs(eigenvalue)
        return jnp.logical_and(step < num_iters, jnp.logical_not(converged))

    def body_fn(carry):
        step, _, av, _ = carry
        v = normalize(av)
        av = matvec(v)
        return step + 1, v, av, _tree_vdot(v, av).astype(dtype)

    dtype = jax.tree.leaves(v0)[0].dtype
    init = (jnp.array(0, jnp.int32), v0, matvec(v0), jnp.zeros([], dtype))
    _, _, av, eigenvalue = lax.while_loop(cond_fn, body_fn, init)
    # One more normalised product sharpens the vector at no extra matvec.
    return eigenvalue, normalize(av)


def _matrix_power(m: jax.Array, p: int, precision) -> jax.Array:
    """``m**p`` for a static positive integer ``p`` by repeated squaring."""
    result, base_power = None, m
    while p:
        if p & 1:
            result = base_power if result is None else jnp.matmul(result, base_power, precision=precision)
        p >>= 1
        if p:
            base_power = jnp.matmul(base_power, base_power, precision=precision)
    return result


def matrix_inverse_pth_root(
    matrix: jax.Array,
    p: int,
    num_iters: int = 100,
    ridge_epsilon: float = 1e-6,
    error_tolerance: float = 1e-6,
    precision: lax.Precision = lax.Precision.HIGHEST,
) -> tuple[jax.Array, jax.Array]:
    r"""The inverse p-th root :math:`A^{-1/p}` of a symmetric PSD matrix.

    Coupled Newton iteration (Higham, *Functions of Matrices*, eq. 7.18), on
    :math:`\tilde A = A + \epsilon \lambda_{\max}(A) I`, from
    :math:`z = (1 + p) / (2 \|\tilde A\|_F)`, :math:`M_0 = z \tilde A`,
    :math:`H_0 = z^{1/p} I`:

    .. math::
        T_k = \tfrac{p + 1}{p} I - \tfrac{1}{p} M_k, \qquad
        M_{k+1} = T_k^p M_k, \qquad H_{k+1} = H_k T_k

    with :math:`M_k \to I` and :math:`H_k \to \tilde A^{-1/p}`; it stops when
    :math:`\max |M_k - I| \le` ``error_tolerance``, or when the error grows by
    more than 20% (then the previous iterate is kept). Used by Shampoo (Anil et
    al., `Scalable Second Order Optimization for Deep Learning
    <https://arxiv.org/abs/2002.09018>`_, 2020).

    Args:
      matrix: a symmetric positive semi-definite ``(n, n)`` matrix.
      p: the root, a positive integer.
      num_iters: the largest number of Newton iterations.
      ridge_epsilon: :math:`\epsilon`, the ridge relative to the largest
        eigenvalue that makes the matrix positive definite.
      error_tolerance: the error :math:`\max|M_k - I|` at which to stop.
      precision: the XLA precision of the matrix products.

    Returns:
      ``(matrix ** (-1/p), error)`` with the final error :math:`\max|M_k - I|`.
    """
    validate.check_integer("p", p, 1)
    matrix = jnp.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix_inverse_pth_root expects a square matrix, got shape {matrix.shape}.")
    size = matrix.shape[0]
    alpha = -1.0 / p
    max_eigenvalue, _ = power_iteration(matrix, num_iters=100, error_tolerance=1e-6, precision=precision)
    ridge = ridge_epsilon * jnp.maximum(max_eigenvalue, 1e-16)
    if size == 1:
        return (matrix + ridge) ** alpha, jnp.zeros([], matrix.dtype)

    identity = jnp.eye(size, dtype=matrix.dtype)
    damped = matrix + ridge * identity
    z = (1 + p) / (2 * jnp.linalg.norm(damped))
    m0 = damped * z
    h0 = identity * jnp.power(z, 1.0 / p)
    error0 = jnp.max(jnp.abs(m0 - identity))

    def cond_fn(carry):
        step, _, _, _, error, improving = carry
        return jnp.logical_and(step < num_iters, jnp.logical_and(error > error_tolerance, improving))

    def body_fn(carry):
        step, m, h, _, error, _ = carry
        t = (1 - alpha) * identity + alpha * m
        new_m = jnp.matmul(_matrix_power(t, p, precision), m, precision=precision)
        new_h = jnp.matmul(h, t, precision=precision)
        new_error = jnp.max(jnp.abs(new_m - identity))
        # The error may rise once before it falls; more than 20% means divergence.
        return step + 1, new_m, new_h, h, new_error, new_error < 1.2 * error

    init = (jnp.array(0, jnp.int32), m0, h0, h0, error0, jnp.array(True))
    _, m, h, previous_h, _, improving = lax.while_loop(cond_fn, body_fn, init)
    error = jnp.max(jnp.abs(m - identity))
    result = jnp.where(improving, h, previous_h).astype(matrix.dtype)
    return result, error


def _spectral_radius_bound(gram: jax.Array) -> jax.Array:
    r"""An upper bound on the largest eigenvalue of the symmetric PSD ``gram``, without an eigen-solve.

    .. math:: \lambda_{\max}(Q) \le \min(\|Q\|_F, \|Q\|_1)

    (the Frobenius norm is the l2 norm of the eigenvalues; the 1-norm, the
    largest absolute column sum, bounds every induced norm's eigenvalue).
    The step of :func:`nnls` is :math:`1/L`: the tighter :math:`L`, the longer
    the step and the faster the convergence, so the smaller of the two is
    taken (the same bound as Optax, hence the same iterates); the 1-norm alone
    is up to :math:`\sqrt{N}` times looser for a dense Gram matrix.
    """
    if gram.size == 0:
        return jnp.zeros([], gram.dtype)
    frobenius = jnp.sqrt(jnp.sum(jnp.abs(gram) ** 2))
    one_norm = jnp.max(jnp.sum(jnp.abs(gram), axis=0))
    return jnp.minimum(frobenius, one_norm)


def nnls(
    A: jax.Array,  # noqa: N803 (the usual name of the matrix)
    b: jax.Array,
    iters: int,
    unroll: Union[int, bool] = 1,
    L: Optional[jax.Array] = None,  # noqa: N803
) -> jax.Array:
    r"""Non-negative least squares: :math:`\min_{x \ge 0} \|A x - b\|_2`.

    Fast projected gradient (Polyak, `Projected gradient method for
    non-negative least square <http://www.ams.org/books/conm/636/>`_, 2015),
    i.e. Nesterov-accelerated projected gradient with step :math:`1/L`:

    .. math::
        x_{k+1} = \max\left(y_k - \tfrac{1}{L}(A^\top A y_k - A^\top b), 0\right),
        \quad t_{k+1} = \tfrac{1 + \sqrt{1 + 4 t_k^2}}{2},
        \quad y_{k+1} = x_{k+1} + \tfrac{t_k - 1}{t_{k+1}}(x_{k+1} - x_k)

    from :math:`x_0 = y_0 = 0`, :math:`t_0 = 0`.

    Args:
      A: the ``(M, N)`` matrix.
      b: the ``(M,)`` vector or ``(M, K)`` matrix of right-hand sides.
      iters: the number of iterations (static).
      unroll: the ``unroll`` of the underlying ``lax.scan``.
      L: an upper bound on the largest eigenvalue of :math:`A^\top A`;
        ``None`` uses :math:`\min(\|A^\top A\|_F, \|A^\top A\|_1)`.

    Returns:
      The ``(N,)`` solution, or ``(N, K)`` for a matrix ``b``.
    """
    A = jnp.asarray(A)  # noqa: N806
    b = jnp.asarray(b)
    if A.ndim != 2 or b.ndim not in (1, 2) or b.shape[0] != A.shape[0]:
        raise ValueError(f"nnls expects A of shape (M, N) and b of shape (M,) or (M, K); got {A.shape}, {b.shape}.")
    gram = A.T @ A
    atb = A.T @ b
    if L is None:
        L = _spectral_radius_bound(gram)  # noqa: N806
    # A zero Gram matrix (A = 0, or an empty one) has x = 0 as solution: any finite step keeps it.
    L = jnp.where(L == 0, 1, L)  # noqa: N806
    step = 1.0 / L
    x0 = jnp.zeros((A.shape[1],) + b.shape[1:], jnp.result_type(A, b))

    def body_fn(carry, _):
        x, y, t = carry
        new_x = jnp.maximum(y - step * (gram @ y - atb), 0)
        new_t = (1 + jnp.sqrt(1 + 4 * t**2)) / 2
        new_y = new_x + ((t - 1) / new_t) * (new_x - x)
        return (new_x, new_y, new_t), None

    # t_0 = 0 as in Optax 0.2.8: the first momentum coefficient is -1, so the
    # first two iterates coincide; kept for numerical parity with Optax.
    (x, _, _), _ = lax.scan(body_fn, (x0, x0, jnp.zeros([], x0.dtype)), None, length=iters, unroll=unroll)
    return x


__all__ = ["matrix_inverse_pth_root", "nnls", "power_iteration"]
