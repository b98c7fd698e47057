"""Adding to the updates: weight decay, noise, momentum traces and moving averages."""

from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from optcore import validate, base, numerics, tree_utils
from optcore.transforms._combining import chain
from optcore.transforms._masking import masked
from optcore.transforms._scaling import scalar_schedule_value, scale
from optcore.kit import cast_promoted, f32, hyperparameter_dtype, static_args

AddDecayedWeightsState = base.EmptyState


class WeightDecaySchedule(NamedTuple):
    """State of :func:`add_decayed_weights` with a scheduled ``weight_decay``: the step count (int32)."""

    count: jax.Array


class TraceState(NamedTuple):
    """State of :func:`trace`: the momentum buffer, shaped like the params."""

    trace: base.Params


class AddNoiseState(NamedTuple):
    """State of :func:`add_noise`: the step count (int32) and the PRNG key."""

    count: jax.Array
    rng_key: base.PRNGKey


class EmaState(NamedTuple):
    """State of :func:`ema`: the step count (int32) and the moving average."""

    count: jax.Array
    ema: base.Params


@static_args("mask")
def add_decayed_weights(
    weight_decay: base.ScalarOrSchedule = 0.0,
    mask: Optional[Union[Any, Callable[[base.Params], Any]]] = None,
) -> base.GradientTransformation:
    r"""Adds decoupled weight decay: :math:`u \leftarrow u + \lambda_t \theta`.

    Loshchilov & Hutter, `Decoupled Weight Decay Regularization
    <https://arxiv.org/abs/1711.05101>`_, 2019.

    A constant :math:`\lambda` keeps no state (``EmptyState``). A schedule is
    read at the step count :math:`t`, which the state then holds
    (``WeightDecaySchedule(count)``, Optax's layout): the same numbers as
    injecting the schedule with :func:`inject_hyperparams`.

    Args:
      weight_decay: :math:`\lambda`, a number or a schedule of the step count.
      mask: a tree of booleans (or a function of the params returning one)
        selecting the params to decay; ``None`` decays all.
    """
    scheduled = callable(weight_decay)
    if not scheduled:
        validate.check_not_nan("weight_decay", weight_decay)
    # As Optax: a decay known to be zero adds nothing, so the updates keep their dtype.
    known_zero = isinstance(weight_decay, (int, float)) and weight_decay == 0

    def init_fn(params):
        del params
        return WeightDecaySchedule(count=jnp.zeros([], jnp.int32)) if scheduled else base.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(base.NO_PARAMS_MSG)
        validate.check_tree_match(updates, params, against="params")
        if scheduled:
            decay = scalar_schedule_value(weight_decay, state.count, "weight_decay")
            state = WeightDecaySchedule(count=numerics.safe_increment(state.count))
        elif known_zero:
            return updates, state
        else:
            decay = weight_decay
        # As inject_hyperparams stores it: plain and injected agree bit for bit.
        decay_ = f32(decay, hyperparameter_dtype(updates))
        updates = jax.tree.map(
            # In the dtype of g and p promoted (as Optax, whose Python-float
            # weight_decay never promotes), not the float32 of the arithmetic.
            lambda g, p: None if g is None else (g + decay_ * p).astype(jnp.result_type(g, p)),
            updates,
            params,
            is_leaf=lambda x: x is None,
        )
        return updates, state

    tx = base.GradientTransformation(init_fn, update_fn)
    if mask is not None:
        return masked(tx, mask)
    return tx


def trace(
    decay: float,
    nesterov: bool = False,
    accumulator_dtype: Optional[Any] = None,
) -> base.GradientTransformation:
    r"""Momentum: :math:`m \leftarrow g + \beta m`, returning :math:`m`.

    With ``nesterov=True`` the update is :math:`g + \beta m` with the new
    :math:`m` (Sutskever et al., `On the importance of initialization and
    momentum in deep learning <http://proceedings.mlr.press/v28/sutskever13.pdf>`_, 2013).

    Args:
      decay: the momentum coefficient :math:`\beta`.
      nesterov: use Nesterov momentum.
      accumulator_dtype: dtype of the buffer (default: that of the params).
    """
    validate.check_decay("decay", decay)
    accumulator_dtype = None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)

    def init_fn(params):
        return TraceState(trace=tree_utils.state_zeros_like(params, dtype=accumulator_dtype))

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        validate.check_tree_match(updates, state.trace)
        # g + decay * t in the dtype of g and t promoted, as Optax's Python-float
        # decay gives: a float32 decay (injected, scheduled) must not turn a
        # bf16 trace into float32.
        decay_ = f32(decay, hyper_dtype)  # as inject_hyperparams stores it: plain and injected agree bit for bit

        def momentum(g, t):
            return (g + decay_ * t).astype(jnp.result_type(g, t))

        new_trace = jax.tree.map(momentum, updates, state.trace)
        if nesterov:
            updates = jax.tree.map(momentum, updates, new_trace)
        else:
            updates = new_trace
        return updates, TraceState(trace=tree_utils.tree_cast(new_trace, accumulator_dtype))

    return base.GradientTransformation(init_fn, update_fn)


def _as_key(key: Any) -> base.PRNGKey:
    """A typed PRNG key from a key, a legacy uint32 key or an integer seed."""
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.ndim == 0 and jnp.issubdtype(key.dtype, jnp.integer):
        # An integer seed as an array: what optax.inject_hyperparams makes of `key=0` (legacy keys have shape (2,)).
        return jax.random.key(key)
    return jax.random.wrap_key_data(key)


@static_args("key", "seed")
def add_noise(
    eta: float,
    gamma: float,
    key: Optional[Union[int, base.PRNGKey]] = None,
    *,
    seed: Optional[int] = None,
) -> base.GradientTransformation:
    r"""Adds annealed Gaussian noise to the updates.

    .. math::
        u_t \leftarrow u_t + \sigma_t \, \xi_t, \qquad
        \sigma_t^2 = \frac{\eta}{t^{\gamma}}, \qquad \xi_t \sim \mathcal{N}(0, I)

    with :math:`t` counted from 1. Neelakantan et al., `Adding Gradient Noise
    Improves Learning for Very Deep Networks <https://arxiv.org/abs/1511.06807>`_, 2015.

    Args:
      eta: :math:`\eta`, the initial variance.
      gamma: :math:`\gamma`, the decay exponent of the variance.
      key: a PRNG key (or an integer seed) for the noise. ``None`` warns and
        uses seed 0.
      seed: deprecated integer seed; use ``key``.
    """
    validate.check_non_negative("eta", eta)
    if seed is not None:
        warnings.warn('"seed" is deprecated, use "key".', DeprecationWarning, stacklevel=base._warning_stacklevel(2))
        if key is not None:
            raise ValueError("Pass only one of `key` and the deprecated `seed` to add_noise.")
        key = seed
    if key is None:
        warnings.warn("add_noise: no `key` given, using seed 0; pass a PRNG key.", stacklevel=base._warning_stacklevel(2))
        key = 0

    def init_fn(params):
        del params
        return AddNoiseState(count=jnp.zeros([], jnp.int32), rng_key=_as_key(key))

    def update_fn(updates, state, params=None):
        del params
        validate.check_floating(updates)
        count_inc = numerics.safe_increment(state.count)
        std = jnp.sqrt(eta / count_inc**gamma)
        rng_key, sample_key = jax.random.split(state.rng_key)
        leaves, treedef = jax.tree.flatten(updates)
        leaf_keys = jax.random.split(sample_key, len(leaves))
        noisy = [
            g + (std * jax.random.normal(k, g.shape, g.dtype)).astype(g.dtype)
            for g, k in zip(leaves, leaf_keys)
        ]
        return jax.tree.unflatten(treedef, noisy), AddNoiseState(count=count_inc, rng_key=rng_key)

    return base.GradientTransformation(init_fn, update_fn)


def ema(
    decay: float,
    debias: bool = True,
    accumulator_dtype: Optional[Any] = None,
) -> base.GradientTransformation:
    r"""Exponential moving average of the updates, optionally debiased.

    .. math::
        m_t = \beta m_{t-1} + (1 - \beta) u_t, \qquad
        u_t \leftarrow \frac{m_t}{1 - \beta^t} \ (\text{debias}) \text{ or } m_t

    Kingma & Ba, `Adam: A Method for Stochastic Optimization
    <https://arxiv.org/abs/1412.6980>`_, 2015 (the bias correction).

    Args:
      decay: :math:`\beta`, the decay rate of the average.
      debias: divide by :math:`1 - \beta^t` to correct the zero initialisation.
      accumulator_dtype: dtype of the stored average (default: that of the params).
    """
    validate.check_decay("decay", decay)
    accumulator_dtype = None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)

    def init_fn(params):
        return EmaState(
            count=jnp.zeros([], jnp.int32),
            ema=tree_utils.state_zeros_like(params, dtype=accumulator_dtype),
        )

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        # In the dtype of updates and average promoted, as with a Python-float
        # decay (a float32 array one would promote a bf16 average).
        new_ema = tree_utils.tree_update_moment(updates, state.ema, f32(decay, hyper_dtype), order=1)
        new_ema = cast_promoted(new_ema, updates, state.ema)
        count_inc = numerics.safe_increment(state.count)
        if debias:
            updates = tree_utils.tree_bias_correction(new_ema, decay, count_inc)
        else:
            updates = new_ema
        return updates, EmaState(count=count_inc, ema=tree_utils.tree_cast(new_ema, accumulator_dtype))

    return base.GradientTransformation(init_fn, update_fn)


@static_args("mask")
def scale_and_decay(
    step_size: float,
    weight_decay: Union[float, jax.Array] = 0.0,
    mask: Optional[Union[Any, Callable[[base.Params], Any]]] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Adds decoupled weight decay, then scales: :math:`u \leftarrow \alpha (u + \lambda \theta)`.

    The building block that Optax's README uses to define AdamW,
    ``chain(scale_by_adam(...), scale_and_decay(-learning_rate, weight_decay=wd))``;
    it is ``chain(add_decayed_weights(weight_decay, mask), scale(step_size))``
    (not in Optax itself).

    Args:
      step_size: :math:`\alpha` (negative for descent, as in :func:`scale`).
      weight_decay: :math:`\lambda`.
      mask: a tree of booleans (or a function of the params returning one)
        selecting the params to decay; ``None`` decays all.
    """
    return chain(add_decayed_weights(weight_decay, mask), scale(step_size))
