"""Reduce the learning rate when a monitored value stops improving."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optcore import base, kit, validate


class ReduceLROnPlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau`."""

    scale: jax.Array
    best_value: jax.Array
    plateau_count: jax.Array
    cooldown_count: jax.Array
    count: jax.Array
    avg_value: jax.Array


@kit.static_args("patience", "cooldown", "accumulation_size")
def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: int = 0,
    accumulation_size: int = 1,
    min_scale: float = 0.0,
) -> base.GradientTransformationExtraArgs:
    r"""Multiplies the updates by a scale that drops by ``factor`` on plateaus.

    ``update`` needs the monitored value (usually the loss) as ``value=``.
    Values are averaged over ``accumulation_size`` calls; each average
    :math:`\bar f` is an improvement when
    :math:`\bar f < (1 - \text{rtol})\, f_{best} - \text{atol}`. After
    ``patience`` averages without improvement the scale becomes
    :math:`s \leftarrow \max(s \cdot \text{factor}, s_{min})` and the next
    ``cooldown`` averages are ignored. Updates are :math:`u \leftarrow s\, u`.

    As in PyTorch's ``ReduceLROnPlateau``.

    Args:
      factor: multiplier of the scale on a plateau, in (0, 1].
      patience: averages without improvement before reducing.
      rtol: relative improvement threshold.
      atol: absolute improvement threshold.
      cooldown: averages to wait after a reduction before counting again.
      accumulation_size: number of values averaged before each decision.
      min_scale: the scale never drops below this.
    """
    validate.check_range("factor", factor, low=0.0, high=1.0, low_inclusive=False, high_inclusive=True)
    validate.check_non_negative("rtol", rtol)
    validate.check_non_negative("atol", atol)
    validate.check_range("rtol + atol", rtol + atol, low=0.0, low_inclusive=False)
    validate.check_non_negative("patience", patience)
    validate.check_non_negative("cooldown", cooldown)
    validate.check_range("accumulation_size", accumulation_size, low=1)
    validate.check_non_negative("min_scale", min_scale)

    def init_fn(params):
        stat_dtype = kit.hyperparameter_dtype(params)  # float64 for float64 params under x64
        del params
        return ReduceLROnPlateauState(
            scale=jnp.ones([], stat_dtype),
            best_value=jnp.asarray(jnp.inf, stat_dtype),
            plateau_count=jnp.zeros([], jnp.int32),
            cooldown_count=jnp.zeros([], jnp.int32),
            count=jnp.zeros([], jnp.int32),
            avg_value=jnp.zeros([], stat_dtype),
        )

    def decide(state: ReduceLROnPlateauState) -> ReduceLROnPlateauState:
        improved = state.avg_value < (1 - rtol) * state.best_value - atol
        best_value = jnp.where(improved, state.avg_value, state.best_value)
        plateau_count = jnp.where(improved, 0, state.plateau_count + 1)
        in_cooldown = state.cooldown_count > 0
        reduce = jnp.logical_and(~in_cooldown, plateau_count == patience)
        scale = jnp.where(reduce, jnp.maximum(state.scale * factor, min_scale), state.scale)
        # Bad averages seen during a cooldown are not counted.
        plateau_count = jnp.where(jnp.logical_or(in_cooldown, reduce), 0, plateau_count)
        cooldown_count = jnp.where(
            in_cooldown, state.cooldown_count - 1, jnp.where(reduce, cooldown, 0)
        )
        return state._replace(
            scale=scale.astype(state.scale.dtype),
            best_value=best_value.astype(state.best_value.dtype),
            plateau_count=plateau_count.astype(jnp.int32),
            cooldown_count=cooldown_count.astype(jnp.int32),
            avg_value=jnp.zeros_like(state.avg_value),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        validate.require_update_args("reduce_on_plateau", value=value)
        count = state.count
        avg_value = (count * state.avg_value + value) / (count + 1)
        new_count = (count + 1) % accumulation_size
        state = state._replace(avg_value=jnp.asarray(avg_value, state.avg_value.dtype), count=new_count)
        state = jax.lax.cond(new_count == 0, decide, lambda s: s, state)
        updates = jax.tree.map(lambda g: (state.scale * g).astype(g.dtype), updates)
        return updates, state

    return base.GradientTransformationExtraArgs(init_fn, update_fn)
