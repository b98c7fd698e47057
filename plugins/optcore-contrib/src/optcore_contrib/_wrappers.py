"""Wrappers: normalisation, SAM, Mechanic, real/imaginary splitting."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

import optcore
from optcore import base, kit, numerics, tree_utils, validate


NormalizeState = base.EmptyState


def normalize() -> base.GradientTransformation:
    r"""Divides the updates by their global norm: :math:`u \leftarrow u / \|u\|_2`.

    Used as the first stage of SAM's adversarial step (Foret et al., 2021).
    """

    def update_fn(updates, state, params=None):
        del params
        norm = tree_utils.tree_norm(updates)
        return jax.tree.map(lambda g: g / norm, updates), state

    return base.GradientTransformation(base.init_empty_state, update_fn)


class SAMState(NamedTuple):
    """State of :func:`sam`."""

    steps_since_sync: jax.Array
    opt_state: base.OptState
    adv_state: base.OptState
    cache: base.Params


def _select(condition, on_true, on_false):
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)


@kit.static_args("sync_period")
def sam(
    optimizer: base.GradientTransformationLike,
    adv_optimizer: base.GradientTransformationLike,
    sync_period: int = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: Optional[str] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Sharpness-Aware Minimization: descend with the gradient at an adversarial point.

    Over each period of ``sync_period`` calls, the first ``sync_period - 1``
    take *ascent* steps with ``adv_optimizer`` (e.g. ``chain(normalize(), sgd(rho))``
    gives :math:`\tilde\theta = \theta + \rho\, g/\|g\|`); the last call applies
    ``optimizer`` to the gradient at the adversarial point and returns to the
    cached :math:`\theta`:

    .. math::
        \theta_{t+1} = \theta_t + \mathrm{opt}(\nabla f(\tilde\theta_t)).

    With ``opaque_mode``, one call runs the whole period internally and needs
    ``grad_fn=`` (``grad_fn(params, step)`` returns the gradient).

    Foret et al., `Sharpness-Aware Minimization for Efficiently Improving
    Generalization <https://arxiv.org/abs/2010.01412>`_, 2021.

    Args:
      optimizer: the outer optimizer.
      adv_optimizer: the inner (adversarial) optimizer; its updates are negated.
      sync_period: calls per period (one outer step per period).
      reset_state: re-initialise the adversarial state after each outer step.
      opaque_mode: run the adversarial steps inside one call.
      batch_axis_name: in opaque mode, the ``pmap`` axis to average gradients over.
    """
    validate.check_range("sync_period", sync_period, low=1)
    optcore.check_gradient_transformation(optimizer, "sam optimizer")
    optcore.check_gradient_transformation(adv_optimizer, "sam adv_optimizer")
    optimizer = optcore.with_extra_args_support(optimizer)
    adv_optimizer = optcore.with_extra_args_support(adv_optimizer)

    def init_fn(params):
        return SAMState(
            steps_since_sync=kit.zero_count(),
            opt_state=optimizer.init(params),
            adv_state=adv_optimizer.init(params),
            cache=params,
        )

    def ascend(updates, adv_state, params, extra_args):
        adv_updates, adv_state = adv_optimizer.update(updates, adv_state, params, **extra_args)
        return jax.tree.map(lambda u: -u, adv_updates), adv_state

    def transparent_update(updates, state, params=None, **extra_args):
        kit.require_params(params, "sam")
        first = state.steps_since_sync == 0
        last = state.steps_since_sync == sync_period - 1
        cache = _select(first, params, state.cache)
        adv_updates, adv_state = ascend(updates, state.adv_state, params, extra_args)
        outer_updates, opt_state = optimizer.update(updates, state.opt_state, cache, **extra_args)
        if reset_state:
            adv_state = _select(last, adv_optimizer.init(params), adv_state)
        back_and_step = jax.tree.map(lambda c, p, u: c - p + u, cache, params, outer_updates)
        new_updates = _select(last, back_and_step, adv_updates)
        opt_state = _select(last, opt_state, state.opt_state)
        return new_updates, SAMState(
            steps_since_sync=(state.steps_since_sync + 1) % sync_period,
            opt_state=opt_state,
            adv_state=adv_state,
            cache=cache,
        )

    def opaque_update(updates, state, params=None, *, grad_fn=None, **extra_args):
        kit.require_params(params, "sam")
        validate.require_update_args("sam(opaque_mode=True)", grad_fn=grad_fn)
        adv_params, adv_state, grads = params, state.adv_state, updates
        for step in range(sync_period - 1):
            adv_updates, adv_state = ascend(grads, adv_state, adv_params, extra_args)
            adv_params = optcore.apply_updates(adv_params, adv_updates)
            grads = grad_fn(adv_params, step)
            if batch_axis_name is not None:
                grads = jax.lax.pmean(grads, axis_name=batch_axis_name)
        if reset_state:
            adv_state = adv_optimizer.init(params)
        new_updates, opt_state = optimizer.update(grads, state.opt_state, params, **extra_args)
        return new_updates, SAMState(
            steps_since_sync=jnp.zeros_like(state.steps_since_sync),
            opt_state=opt_state,
            adv_state=adv_state,
            cache=params,
        )

    return base.GradientTransformationExtraArgs(init_fn, opaque_update if opaque_mode else transparent_update)


class SplitRealAndImaginaryArrays(NamedTuple):
    """A complex array stored as its real and imaginary parts."""

    real: jax.Array
    imaginary: jax.Array


class SplitRealAndImaginaryState(NamedTuple):
    """State of :func:`split_real_and_imaginary`."""

    inner_state: base.OptState


def _split(tree):
    def split(x):
        if jnp.iscomplexobj(x):
            return SplitRealAndImaginaryArrays(jnp.real(x), jnp.imag(x))
        return x

    return jax.tree.map(split, tree)


def _merge(tree):
    def merge(x):
        if isinstance(x, SplitRealAndImaginaryArrays):
            return x.real + 1j * x.imaginary
        return x

    return jax.tree.map(merge, tree, is_leaf=lambda x: isinstance(x, SplitRealAndImaginaryArrays))


def split_real_and_imaginary(inner: base.GradientTransformationLike) -> base.GradientTransformationExtraArgs:
    r"""Applies ``inner`` to the real and imaginary parts of complex leaves separately.

    .. math::
        u = \mathrm{inner}(\Re g) + i\, \mathrm{inner}(\Im g)

    (the two parts are two independent parameters for ``inner``; real leaves
    pass through unchanged). Useful for optimizers that are not defined on
    complex numbers.

    Args:
      inner: the transformation to apply to the split parameters.
    """
    optcore.check_gradient_transformation(inner, "split_real_and_imaginary inner")
    inner = optcore.with_extra_args_support(inner)

    def init_fn(params):
        return SplitRealAndImaginaryState(inner_state=inner.init(_split(params)))

    def update_fn(updates, state, params=None, **extra_args):
        split_params = None if params is None else _split(params)
        new_updates, inner_state = inner.update(_split(updates), state.inner_state, split_params, **extra_args)
        return _merge(new_updates), SplitRealAndImaginaryState(inner_state=inner_state)

    return base.GradientTransformationExtraArgs(init_fn, update_fn)


class MechanicState(NamedTuple):
    """State of :func:`mechanize`."""

    base_optimizer_state: base.OptState
    count: jax.Array
    r: jax.Array
    m: jax.Array
    v: jax.Array
    s: jax.Array
    x0: base.Params


@kit.static_args("num_betas")
def mechanize(
    base_optimizer: base.GradientTransformationLike,
    weight_decay: float = 1e-2,
    eps: float = 1e-8,
    s_init: float = 1e-6,
    num_betas: int = 6,
) -> base.GradientTransformationExtraArgs:
    r"""Mechanic: learns the scale :math:`s` of the updates of ``base_optimizer``.

    The base updates accumulate in :math:`\Delta_t = \sum_{k \le t} u_k` and the
    params are :math:`x_t = x_0 + (\sum_j s_{t,j}) \Delta_t`. For each
    :math:`\beta_j = 1 - 10^{-j}`, with
    :math:`h_t = \langle \Delta_{t-1}, g_t + \lambda \frac{\|g_t\|}{\|x_t\|} (\sum_j s_{t,j}) x_t\rangle`:

    .. math::
        m_{t,j} = \max(\beta_j m_{t-1,j}, |h_t| + \epsilon), \quad
        v_{t,j} = \beta_j^2 v_{t-1,j} + h_t^2, \quad
        r_{t,j} = \beta_j r_{t-1,j} - s_{t,j}\,\mathrm{clip}(h_t, -m_{t-1,j}, m_{t-1,j}), \\
        s_{t+1,j} = \frac{s_{init} m_{t,j}/n + \max(r_{t,j}, 0)}{\sqrt{v_{t,j}} + \epsilon}.

    Cutkosky et al., `Mechanic: A Learning Rate Tuner
    <https://arxiv.org/abs/2306.00144>`_, 2023.

    Args:
      base_optimizer: the optimizer whose update scale is learned.
      weight_decay: :math:`\lambda`, Mechanic's own (norm-relative) decay. A number, which its own rule reads:
        to schedule it, inject it (:func:`optcore.inject_hyperparams`).
      eps: :math:`\epsilon`.
      s_init: the initial total scale.
      num_betas: :math:`n`, the number of decays :math:`1-10^{-1}, \dots, 1-10^{-n}`.
    """
    kit.check_not_schedule("weight_decay", weight_decay, who="mechanize")
    validate.check_not_nan("weight_decay", weight_decay)
    validate.check_non_negative("eps", eps)
    validate.check_range("s_init", s_init, low=0.0, low_inclusive=False)
    validate.check_range("num_betas", num_betas, low=1)
    optcore.check_gradient_transformation(base_optimizer, "mechanize base_optimizer")
    base_optimizer = optcore.with_extra_args_support(base_optimizer)

    def init_fn(params):
        leaves = jax.tree.leaves(params)
        # float32 without leaves (optcore.tree_map_params probes init with leafless params).
        dtype = leaves[0].dtype if leaves else jnp.float32
        # One buffer per field (and x0 apart from the params): shared buffers cannot be donated.
        zeros = lambda: jnp.zeros([num_betas], dtype)  # noqa: E731
        return MechanicState(
            base_optimizer_state=base_optimizer.init(params),
            count=kit.zero_count(),
            r=zeros(),
            m=zeros(),
            v=zeros(),
            s=jnp.full([num_betas], s_init / num_betas, dtype),
            x0=kit.own_copy(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        kit.require_params(params, "mechanize")
        dtype = state.s.dtype
        betas = (1.0 - 0.1 ** jnp.arange(1, num_betas + 1, dtype=jnp.float32)).astype(dtype)
        base_updates, base_state = base_optimizer.update(
            updates, state.base_optimizer_state, params, **extra_args
        )
        s_sum = jnp.sum(state.s)
        # Delta_{t-1} = (x_t - x_0) / sum(s): the accumulated base updates so far.
        delta_prev = jax.tree.map(lambda p, p0: (p - p0) / (s_sum + eps), params, state.x0)
        grad_norm = tree_utils.tree_norm(updates)
        param_norm = tree_utils.tree_norm(params)
        decay_scale = weight_decay * grad_norm * s_sum / (param_norm + eps)
        regularised = jax.tree.map(lambda g, p: g + decay_scale * p, updates, params)
        h = tree_utils.tree_vdot(delta_prev, regularised)
        # The wealth only moves by h clipped to the largest |h| seen so far
        # (m_{t-1}): one outlier step cannot wipe out (or inflate) the wealth.
        clipped_h = jnp.clip(h, -state.m, state.m)
        # eps keeps m positive, so the first step keeps s = s_init / n.
        m = jnp.maximum(betas * state.m, jnp.abs(h) + eps)
        v = betas**2 * state.v + h**2
        r = betas * state.r - state.s * clipped_h
        wealth = s_init / num_betas * m + jnp.maximum(r, 0.0)
        s = wealth / (jnp.sqrt(v) + eps)
        delta = jax.tree.map(lambda d, u: d + u, delta_prev, base_updates)
        new_s_sum = jnp.sum(s)
        new_updates = jax.tree.map(
            lambda p0, d, p: (p0 + new_s_sum * d - p).astype(p.dtype), state.x0, delta, params
        )
        return new_updates, MechanicState(
            base_optimizer_state=base_state,
            count=numerics.safe_increment(state.count),
            r=r.astype(dtype),
            m=m.astype(dtype),
            v=v.astype(dtype),
            s=s.astype(dtype),
            x0=state.x0,
        )

    return base.GradientTransformationExtraArgs(init_fn, update_fn)
