"""Muon: momentum orthogonalised by a Newton-Schulz iteration, with Adam for non-matrices.

Complex params are orthogonalised towards the unitary polar factor :math:`UV^H`
(as in Optax 0.2.8): every Gram matrix is Hermitian, :math:`X X^H`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp

import optcore
from optcore import base, kit, numerics, tree_utils, validate



class MuonDimensionNumbers(NamedTuple):
    """Which axes of a parameter are the matrix rows (reduction) and columns (output).

    Other axes are batch axes: each slice is orthogonalised separately.
    """

    reduction_axis: Union[int, Sequence[int]] = 0
    output_axis: Union[int, Sequence[int]] = 1


class MuonState(NamedTuple):
    """State of :func:`scale_by_muon`."""

    count: jax.Array
    mu: base.Updates
    ns_coeffs: jax.Array


def _gram(x):
    """The Hermitian Gram matrix X X^H of the last two axes (X X^T for real X).

    With the plain transpose a complex X would give a non-Hermitian A, whose
    powers do not shrink the singular values towards 1: the iteration diverges.
    """
    return x @ jnp.conj(jnp.swapaxes(x, -1, -2))


def _axes(value, ndim):
    axes = (value,) if isinstance(value, int) else tuple(value)
    return tuple(a % ndim for a in axes)


PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")
# The smallest squared norm the AOL and Schatten-4 rescalings divide by (their
# scale is at most 1e4): a zero or vanishing momentum gives a zero update, not a NaN.
_MIN_SQUARED_NORM = 1e-8


def _precondition(x, preconditioning, eps):
    r"""Scales the wide matrices ``x`` (rows <= cols) so that their singular values are at most 1.

    Returns the scaled matrices and, where the rescaling needed the Gram matrix
    :math:`G = X X^H`, the Gram matrix of the result (reused by the first
    Newton-Schulz iteration, which saves one product), else None.

    Frobenius and spectral norms bound the top singular value; the Schatten-4
    norm :math:`(\sum_i \sigma_i^4)^{1/4} = \|G\|_F^{1/2}` lies between the two,
    closer to the spectral norm; AOL (almost-orthogonal layer) scales row
    :math:`i` by :math:`d_i = (\sum_j |G_{ij}|)^{-1/2}`, which bounds the
    spectral norm by 1 and equalises the rows, so Newton-Schulz starts closer
    to orthogonal.
    """
    if preconditioning == "frobenius":
        return x / (jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) + eps), None
    if preconditioning == "spectral":
        # LAPACK has no bf16/f16 SVD: the norm is taken in at least float32.
        work = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        top = jnp.linalg.svd(work, compute_uv=False)[..., :1, None].astype(x.dtype)
        return x / (top + eps), None
    gram = _gram(x)
    if preconditioning == "schatten":
        scale = jax.lax.rsqrt(jnp.maximum(jnp.linalg.norm(gram, axis=(-2, -1), keepdims=True), _MIN_SQUARED_NORM))
        return x * scale, gram * (scale * scale)
    row_scale = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(gram), axis=-1, keepdims=True), _MIN_SQUARED_NORM))
    return x * row_scale, row_scale * gram * jnp.swapaxes(row_scale, -1, -2)


def _newton_schulz_step(x, gram, abc):
    """X <- a X + (b A + c A^2) X with A = X X^H."""
    a, b, c = abc[0], abc[1], abc[2]
    poly = b * gram + c * gram @ gram
    return a * x + poly @ x


def _newton_schulz(x, coeffs, eps, preconditioning="frobenius", steps=None):
    """Approximately orthogonalises the last two axes of ``x`` (maps G to U V^T).

    ``coeffs`` holds one triple per iteration, or one triple for all ``steps``
    iterations when ``steps`` is an array (an ``inject_hyperparams`` wrapper not
    told that ``ns_steps`` is static passes it as one): a loop of traced length.
    """
    transpose = x.shape[-2] > x.shape[-1]
    if transpose:
        x = jnp.swapaxes(x, -1, -2)
    x, first_gram = _precondition(x, preconditioning, eps)

    def step(x, abc):
        return _newton_schulz_step(x, _gram(x), abc), None

    if steps is None:  # one triple per iteration
        if first_gram is not None:
            x, coeffs = _newton_schulz_step(x, first_gram, coeffs[0]), coeffs[1:]
        x, _ = jax.lax.scan(step, x, coeffs)
    else:  # one triple, a traced number of iterations
        if first_gram is not None:
            x, steps = _newton_schulz_step(x, first_gram, coeffs), steps - 1
        x = jax.lax.fori_loop(0, steps, lambda _, x: step(x, coeffs)[0], x)
    if transpose:
        x = jnp.swapaxes(x, -1, -2)
    return x


def _as_matrices(x, numbers: MuonDimensionNumbers):
    """Reshapes ``x`` to (batch, rows, cols) and returns the inverse map."""
    ndim = x.ndim
    if ndim < 2:
        raise ValueError(
            f"scale_by_muon orthogonalises matrices, but got an array of shape {x.shape}: use muon(), which "
            "sends params with fewer than two axes to Adam, or give this leaf None in weight_dimension_numbers."
        )
    reduction = _axes(numbers.reduction_axis, ndim)
    output = _axes(numbers.output_axis, ndim)
    if set(reduction) & set(output):
        raise ValueError(f"MuonDimensionNumbers {numbers} uses an axis as both reduction and output.")
    batch = tuple(a for a in range(ndim) if a not in reduction + output)
    order = batch + reduction + output
    moved = jnp.transpose(x, order)
    rows = math.prod(x.shape[a] for a in reduction)
    cols = math.prod(x.shape[a] for a in output)
    matrices = moved.reshape((-1, rows, cols))

    def restore(m):
        unflat = m.reshape(moved.shape)
        return jnp.transpose(unflat, tuple(order.index(a) for a in range(ndim)))

    return matrices, restore


def _dimension_numbers_tree(weight_dimension_numbers, params, default_all=False, what="weight_dimension_numbers"):
    """A tree of dimension numbers shaped like ``params`` or a prefix of it (None/number leaves).

    With no numbers given, 2-D params are matrices (or every param, with
    ``default_all``: inside Muon's partition branch only matrices arrive).
    """
    if callable(weight_dimension_numbers):
        weight_dimension_numbers = weight_dimension_numbers(params)
    if isinstance(weight_dimension_numbers, MuonDimensionNumbers):
        return jax.tree.map(lambda _: weight_dimension_numbers, params)
    if weight_dimension_numbers is None:
        return jax.tree.map(
            lambda p: MuonDimensionNumbers() if default_all or p.ndim == 2 else None, params
        )
    # Leafless params (tree_map_params's stand-in) have no structure to check against.
    if jax.tree.leaves(params):
        try:
            jax.tree.map(lambda dn, sub: None, weight_dimension_numbers, params, is_leaf=_is_numbers)
        except ValueError as error:
            raise ValueError(
                f"{what} must be a MuonDimensionNumbers, or a tree of them (None for params that are not "
                f"matrices) with the structure of the params or a prefix of it: {error}"
            ) from None
    return weight_dimension_numbers


def _map_with_numbers(fn, numbers, tree):
    """``fn(leaf, numbers)`` where numbers are set; other subtrees (e.g. masked) pass through.

    ``numbers`` may be a prefix of ``tree``: a number (or None) covers every leaf below it.
    """
    return jax.tree.map(
        lambda dn, sub: sub if dn is None else jax.tree.map(lambda x: fn(x, dn), sub),
        numbers,
        tree,
        is_leaf=_is_numbers,
    )


def _is_numbers(x):
    return x is None or isinstance(x, MuonDimensionNumbers)


# Named Newton-Schulz coefficient sets accepted by ``muon(ns_coeffs=...)``, as
# in Optax 0.2.8: "standard" is the default triple (Jordan et al., 2024);
# "dion" is one triple per iteration for five iterations (the Dion paper,
# Ahn et al., 2025).
NS_COEFFS_PRESETS = {
    "standard": (3.4445, -4.775, 2.0315),
    "dion": (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
}


def _preset_coefficients(ns_coeffs):
    """``ns_coeffs`` with a preset name replaced by its coefficients."""
    if isinstance(ns_coeffs, str):
        if ns_coeffs not in NS_COEFFS_PRESETS:
            raise ValueError(f"Unknown ns_coeffs preset {ns_coeffs!r}; the presets are {sorted(NS_COEFFS_PRESETS)}.")
        return NS_COEFFS_PRESETS[ns_coeffs]
    return ns_coeffs


def _check_coefficients(ns_coeffs, ns_steps):
    """Checks the shape of ``ns_coeffs``: a triple, or one triple per iteration."""
    shape = jnp.asarray(ns_coeffs, jnp.float32).shape
    if shape == (3,):
        validate.check_range("ns_steps", ns_steps, low=1)
    elif len(shape) != 2 or shape[1] != 3:
        raise ValueError(f"ns_coeffs must be three numbers or a sequence of triples, got {ns_coeffs!r}.")


@kit.static_args("ns_steps")
def scale_by_muon(
    ns_coeffs: Any = (3.4445, -4.775, 2.0315),
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    weight_dimension_numbers: Any = None,
) -> base.GradientTransformation:
    r"""Rescales matrix updates by Muon: orthogonalised (Nesterov) momentum.

    .. math::
        m_t = \beta m_{t-1} + (1-\beta) g_t, \quad
        \hat m_t = \frac{\beta m_t}{1-\beta^{t+1}} + \frac{(1-\beta) g_t}{1-\beta^t}
        \ (\text{Nesterov; else } m_t/(1-\beta^t)), \\
        X_0 = \hat m_t / (\|\hat m_t\|_F + \epsilon), \quad
        X_{k+1} = a X_k + (b A_k + c A_k^2) X_k,\ A_k = X_k X_k^H, \quad u_t = X_K,

    which drives the singular values of :math:`\hat m_t` towards 1 (the
    polar factor :math:`UV^H`; :math:`X^H` is the conjugate transpose, so
    complex params get a unitary factor). With ``adaptive``, :math:`u_t` is
    scaled by :math:`\langle \hat m_t, u_t\rangle = \sum \bar{\hat m}_t u_t`
    (one inner product over the whole param, batch slices included, as Optax does).

    Jordan, `modded-nanogpt <https://github.com/KellerJordan/modded-nanogpt>`_, 2024;
    Bernstein & Newhouse, `Old Optimizer, New Norm: An Anthology
    <https://arxiv.org/abs/2409.20325>`_, 2024.

    Args:
      ns_coeffs: :math:`(a, b, c)`, or one triple per iteration.
      ns_steps: :math:`K`, iterations (ignored when a triple per iteration is given).
      beta: momentum decay.
      eps: added to the Frobenius or spectral norm.
      mu_dtype: dtype of the momentum.
      nesterov: use Nesterov momentum.
      adaptive: scale by the dual norm :math:`\langle \hat m_t, u_t\rangle`.
      preconditioning: how :math:`X_0` is scaled before the iterations:
        ``"frobenius"`` (divide by :math:`\|\hat m_t\|_F + \epsilon`, as above),
        ``"spectral"`` (by :math:`\sigma_{\max} + \epsilon`), ``"schatten"`` (by the
        Schatten-4 norm :math:`\|\hat m \hat m^H\|_F^{1/2}`) or ``"aol"`` (row
        :math:`i` by :math:`(\sum_j |\hat m \hat m^H|_{ij})^{1/2}`; Boissin et al.,
        `Turbo-Muon <https://arxiv.org/abs/2512.04632>`_, 2025). The last two reuse
        their Gram matrix in the first iteration and floor the squared norm at 1e-8.
        Complex params use the Hermitian :math:`\hat m \hat m^H` in all four (Optax
        0.2.8's Schatten takes :math:`\hat m \hat m^\top` and returns NaN for them).
      weight_dimension_numbers: one :class:`MuonDimensionNumbers` for every param, or
        a tree of them with the params' structure or a prefix of it (a number or None
        stands for a whole subtree; None passes its momentum through), or a function
        of the params returning that tree; None treats every param as a matrix.
    """
    kit.check_one_of("preconditioning", preconditioning, PRECONDITIONINGS)
    kit.check_beta("beta", beta)  # mu is divided by 1 - beta**t
    validate.check_non_negative("eps", eps)
    _check_coefficients(ns_coeffs, ns_steps)
    mu_dtype = kit.dtype_or_none(mu_dtype)

    def init_fn(params):
        return MuonState(
            count=kit.zero_count(),
            mu=tree_utils.state_zeros_like(params, dtype=mu_dtype),
            # A fresh buffer per init (jnp.array copies): a donated state
            # (jax.jit(step, donate_argnums=...)) deletes its arrays. float32,
            # or float64 for float64 params under x64.
            ns_coeffs=jnp.array(ns_coeffs, kit.hyperparameter_dtype(params)),
        )

    def update_fn(updates, state, params=None):
        numbers = _dimension_numbers_tree(
            weight_dimension_numbers, updates if params is None else params, default_all=True
        )
        mu = tree_utils.tree_update_moment(updates, state.mu, beta, 1)
        count = numerics.safe_increment(state.count)
        if nesterov:
            mu_hat = jax.tree.map(
                lambda m, g: beta * m + (1 - beta) * g,
                tree_utils.tree_bias_correction(mu, beta, numerics.safe_increment(count)),
                tree_utils.tree_bias_correction(updates, beta, count),
            )
        else:
            mu_hat = tree_utils.tree_bias_correction(mu, beta, count)
        steps = None
        if state.ns_coeffs.ndim == 2:
            coeffs = state.ns_coeffs
        elif isinstance(ns_steps, jax.Array):  # optax.inject_hyperparams without static_args=("ns_steps",)
            coeffs, steps = state.ns_coeffs, ns_steps
        else:
            coeffs = jnp.tile(state.ns_coeffs, (ns_steps, 1))

        def orthogonalise(m, dn):
            # Newton-Schulz works on whole matrices: gathered where the split is explicit, then split back.
            matrices, restore = _as_matrices(kit.whole(m), dn)
            orth = _newton_schulz(matrices, coeffs.astype(m.dtype), eps, preconditioning, steps)
            if adaptive:
                # One dual norm per param, summed over its batch slices (as Optax 0.2.8 does);
                # the complex inner product conjugates the momentum.
                orth = orth * jnp.sum(jnp.conj(matrices) * orth)
            return kit.reshard_like(restore(orth), m)

        new_updates = _map_with_numbers(orthogonalise, numbers, mu_hat)
        # In the promoted dtype of gradient and stored momentum, as Optax: float32 with mu_dtype=float32.
        new_updates = kit.cast_promoted(new_updates, updates, state.mu)
        # The momentum keeps its dtype (mu_dtype, or the params'), even with a float32 array beta.
        return new_updates, MuonState(count=count, mu=kit.cast_like(mu, state.mu), ns_coeffs=state.ns_coeffs)

    return base.GradientTransformation(init_fn, update_fn)


def _scale_by_shape(weight_dimension_numbers, consistent_rms):
    """Muon's per-matrix step scale: sqrt(max(1, cols/rows)), or consistent_rms * sqrt(max(rows, cols))."""

    def update_fn(updates, state, params=None):
        numbers = _dimension_numbers_tree(
            weight_dimension_numbers, updates if params is None else params, default_all=True
        )

        def rescale(u, dn):
            ndim = u.ndim
            rows = math.prod(u.shape[a] for a in _axes(dn.reduction_axis, ndim))
            cols = math.prod(u.shape[a] for a in _axes(dn.output_axis, ndim))
            if consistent_rms is None:
                factor = math.sqrt(max(1.0, cols / rows))
            else:
                factor = consistent_rms * math.sqrt(max(rows, cols))
            return (u * factor).astype(u.dtype)

        return _map_with_numbers(rescale, numbers, updates), state

    return base.GradientTransformation(base.init_empty_state, update_fn)


@kit.static_args("ns_steps", "weight_decay_mask")
def muon(
    learning_rate: base.ScalarOrSchedule,
    ns_coeffs: Any = (3.4445, -4.775, 2.0315),
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    weight_decay: base.ScalarOrSchedule = 0.0,
    weight_decay_mask: Optional[Any] = None,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps_root: float = 0.0,
    adam_weight_decay: base.ScalarOrSchedule = 0.0,
    adam_learning_rate: Optional[base.ScalarOrSchedule] = None,
    muon_weight_dimension_numbers: Any = None,
    consistent_rms: Optional[float] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Muon for matrices (:func:`scale_by_muon`), AdamW for every other parameter.

    Matrix updates are :math:`-\eta\,(s\,u_t + \lambda\theta)` with
    :math:`s = \sqrt{\max(1, \text{cols}/\text{rows})}` (or
    :math:`s = \text{consistent\_rms}\sqrt{\max(\text{rows}, \text{cols})}`, which
    gives every matrix update the same RMS). Params without dimension numbers
    (by default: those that are not 2-D) use Adam with ``adam_*`` settings.

    Jordan, `modded-nanogpt <https://github.com/KellerJordan/modded-nanogpt>`_, 2024;
    Liu et al., `Muon is Scalable for LLM Training <https://arxiv.org/abs/2502.16982>`_, 2025.

    Args:
      learning_rate: :math:`\eta`, a scalar or schedule.
      ns_coeffs: Newton-Schulz coefficients (a triple or one per iteration),
        or a preset name of ``NS_COEFFS_PRESETS``: ``"standard"`` or ``"dion"``.
      ns_steps: Newton-Schulz iterations.
      beta: Muon momentum decay.
      eps: added to norms (also Adam's eps).
      weight_decay: :math:`\lambda` of the Muon params. A number or a schedule of the step count.
      weight_decay_mask: mask of the Muon params to decay.
      mu_dtype: dtype of the momenta.
      nesterov: Nesterov momentum (for Muon and for the Adam params).
      adaptive: scale Muon updates by their dual norm.
      preconditioning: ``"frobenius"``, ``"spectral"``, ``"schatten"`` or ``"aol"``
        (see :func:`scale_by_muon`).
      adam_b1: Adam's :math:`\beta_1`.
      adam_b2: Adam's :math:`\beta_2`.
      adam_eps_root: Adam's eps inside the root.
      adam_weight_decay: decoupled weight decay of the Adam params. A number or a schedule of the step count.
      adam_learning_rate: learning rate of the Adam params (default ``learning_rate``).
      muon_weight_dimension_numbers: a tree of :class:`MuonDimensionNumbers` or None
        (Adam) with the params' structure or a prefix of it, one number for every
        param, or a function of the params returning such a tree. Default: the 2-D
        params are matrices, the others go to Adam.
      consistent_rms: if set, the RMS-matching scale described above.
    """

    ns_coeffs = _preset_coefficients(ns_coeffs)

    def labels(params):
        numbers = _dimension_numbers_tree(muon_weight_dimension_numbers, params, what="muon_weight_dimension_numbers")
        label = lambda dn: "adam" if dn is None else "muon"  # noqa: E731
        if not jax.tree.leaves(params):  # tree_map_params's stand-in: only the layout is probed
            return jax.tree.map(label, numbers, is_leaf=_is_numbers)
        # One label per param leaf, also under a prefix number or None: a prefix
        # label would make partition mask a whole subtree as one MaskedNode,
        # where Optax's state has one per leaf.
        return jax.tree.map(
            lambda dn, sub: jax.tree.map(lambda _: label(dn), sub), numbers, params, is_leaf=_is_numbers
        )

    muon_chain = optcore.chain(
        scale_by_muon(
            ns_coeffs, ns_steps, beta, eps, mu_dtype, nesterov=nesterov, adaptive=adaptive,
            preconditioning=preconditioning, weight_dimension_numbers=muon_weight_dimension_numbers,
        ),
        _scale_by_shape(muon_weight_dimension_numbers, consistent_rms),
        optcore.add_decayed_weights(weight_decay, weight_decay_mask),
        optcore.scale_by_learning_rate(learning_rate),
    )
    adam_chain = optcore.chain(
        optcore.scale_by_adam(
            b1=adam_b1, b2=adam_b2, eps=eps, eps_root=adam_eps_root, mu_dtype=mu_dtype, nesterov=nesterov
        ),
        optcore.add_decayed_weights(adam_weight_decay),
        optcore.scale_by_learning_rate(learning_rate if adam_learning_rate is None else adam_learning_rate),
    )
    return optcore.partition({"muon": muon_chain, "adam": adam_chain}, labels)
