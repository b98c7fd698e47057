"""Running a transformation on all parameters raveled into one vector."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from optcore import base


def _ravel(tree):
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((0,))
    return jnp.concatenate([jnp.ravel(x) for x in leaves])


def _unravel_like(vector, like):
    leaves, treedef = jax.tree.flatten(like)
    sizes = [x.size for x in leaves]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    pieces = [
        jnp.reshape(vector[o : o + s], x.shape).astype(x.dtype) for o, s, x in zip(offsets, sizes, leaves)
    ]
    return jax.tree.unflatten(treedef, pieces)


def flatten(inner: base.GradientTransformationLike) -> base.GradientTransformationExtraArgs:
    """Applies ``inner`` to the updates raveled into one 1-D vector.

    Trades memory (a concatenated copy) for fewer, larger operations. The
    state of ``inner`` is built over the single vector. Leaves are promoted
    to a common dtype while raveled and cast back afterwards.

    Args:
      inner: the transformation to apply to the flat vector.
    """
    base.check_gradient_transformation(inner, "flatten inner")
    inner = base.with_extra_args_support(inner)

    def flat_or_none(tree):
        return None if tree is None else _ravel(tree)

    def init_fn(params):
        return inner.init(_ravel(params))

    def update_fn(updates, state, params=None, **extra_args):
        flat_updates, state = inner.update(_ravel(updates), state, flat_or_none(params), **extra_args)
        return _unravel_like(flat_updates, updates), state

    return base.GradientTransformationExtraArgs(init_fn, update_fn)
