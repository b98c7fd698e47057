"""Differentially private aggregation of per-example gradients (DP-SGD)."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

import optcore
from optcore import base, kit, validate



class DifferentiallyPrivateAggregateState(NamedTuple):
    """State of :func:`differentially_private_aggregate`: the PRNG key of the noise."""

    rng_key: jax.Array


def _check_per_example(updates, params) -> None:
    """Per-example gradients: one batch axis shared by every leaf, then (with params) each param's shape.

    Raises ``ValueError`` naming the first mismatching path at trace time
    (``TypeError`` for a non-floating leaf).
    """
    validate.check_floating(updates)
    if params is not None:
        validate.check_tree_match(updates, params, against="params", shapes=False)
    batch = None
    for path, g in jax.tree_util.tree_flatten_with_path(updates)[0]:
        where = jax.tree_util.keystr(path)
        if g.ndim == 0:
            raise ValueError(f"{where}: per-example gradients need a leading batch axis, got a scalar.")
        if batch is None:
            batch = (where, g.shape[0])
        elif g.shape[0] != batch[1]:
            raise ValueError(
                f"{where}: batch axis has {g.shape[0]} examples, but {batch[0]} has {batch[1]} "
                "(every leaf of per-example gradients needs the same leading batch axis)."
            )
    if params is None:
        return
    flat_params = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, g), (_, p) in zip(jax.tree_util.tree_flatten_with_path(updates)[0], flat_params):
        if tuple(g.shape[1:]) != tuple(jnp.shape(p)):
            raise ValueError(
                f"{jax.tree_util.keystr(path)}: params has shape {tuple(jnp.shape(p))}, gradient has shape "
                f"{tuple(g.shape)} (per-example gradients: a batch axis, then the param's shape)."
            )


def _noise_key(key, seed) -> jax.Array:
    """The PRNG key of the noise from ``key`` (a key or an int seed) or ``seed``.

    As in Optax, ``key`` may be an integer: it is turned into ``jax.random.key``
    here, once. Kept as an int it reached ``jax.random.split`` in the update,
    which under ``jit`` fails with "key_data.ndim >= 1; got ndim=0". A typed
    key and a legacy ``uint32[2]`` key are used as given.
    """
    if key is not None and seed is not None:
        raise ValueError("differentially_private_aggregate: give either key or seed, not both.")
    if key is None:
        if seed is None:
            raise ValueError("differentially_private_aggregate needs a key (or a seed).")
        key = seed
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    array = jnp.asarray(key)
    if array.ndim == 0 and jnp.issubdtype(array.dtype, jnp.integer):
        return jax.random.key(array)
    if array.dtype == jnp.uint32 and array.shape[-1:] == (2,):
        return array  # a legacy jax.random.PRNGKey
    raise TypeError(
        "differentially_private_aggregate: key must be a jax.random key or an integer seed, "
        f"got {type(key).__name__} with dtype {array.dtype} and shape {array.shape}."
    )


@kit.static_args("key", "seed")
def differentially_private_aggregate(
    l2_norm_clip: float,
    noise_multiplier: float,
    key: Optional[jax.Array] = None,
    *,
    seed: Optional[int] = None,
) -> base.GradientTransformation:
    r"""Clips per-example gradients, sums them, adds Gaussian noise and averages.

    The updates must be *per-example* gradients, with the batch as leading axis
    of every leaf. With :math:`B` examples, clip :math:`C` and multiplier :math:`\sigma`:

    .. math::
        \tilde g_i = g_i \min\!\left(1, \frac{C}{\|g_i\|}\right), \quad
        u = \frac{1}{B}\left(\sum_i \tilde g_i + \mathcal{N}(0, \sigma^2 C^2 I)\right),

    where :math:`\|g_i\|` is the norm of example :math:`i` over all leaves.

    Abadi et al., `Deep Learning with Differential Privacy
    <https://arxiv.org/abs/1607.00133>`_, 2016.

    Args:
      l2_norm_clip: :math:`C`, the largest per-example gradient norm.
      noise_multiplier: :math:`\sigma`, the noise std relative to :math:`C`.
      key: a PRNG key for the noise, or an integer seed (as in Optax).
      seed: an integer seed, used when ``key`` is None (not both).
    """
    validate.check_range("l2_norm_clip", l2_norm_clip, low=0.0, low_inclusive=False)
    validate.check_non_negative("noise_multiplier", noise_multiplier)
    key = _noise_key(key, seed)

    def init_fn(params):
        del params
        # A fresh buffer on every init: the state is often donated
        # (jax.jit(step, donate_argnums=...)), which deletes its arrays; handing
        # out the key this factory holds would delete it for every later init.
        return DifferentiallyPrivateAggregateState(rng_key=jnp.copy(key))

    def update_fn(updates, state, params=None):
        hyper_dtype = kit.hyperparameter_dtype(updates)
        _check_per_example(updates, params)
        del params
        # Float32 (x64: float64) hyperparameters, the noise std computed from them in that dtype:
        # the same bits with and without inject_hyperparams. The barrier (on one
        # scalar) keeps XLA from folding the std into the normal sampler's
        # constants: with it folded, the programs for a constant and an injected
        # std contracted different multiply-adds into FMAs on CPU (1 ulp apart).
        clip, multiplier = (kit.f32(x, hyper_dtype) for x in (l2_norm_clip, noise_multiplier))
        noise_std = jax.lax.optimization_barrier(clip * multiplier)
        leaves, treedef = jax.tree.flatten(updates)
        batch_size = leaves[0].shape[0]
        per_example_sq = sum(jnp.sum(jnp.square(g).reshape(batch_size, -1), axis=1) for g in leaves)
        norms = jnp.sqrt(per_example_sq)
        # min(1, clip / norm), written as clip / max(norm, clip) (the same value):
        # a constant clip of 1 would otherwise let XLA turn 1 / sqrt into rsqrt,
        # whose bits differ from those of an injected clip.
        factors = clip / jnp.maximum(jnp.where(norms > 0, norms, 1.0), clip)
        clipped = [jnp.einsum("i,i...->...", factors.astype(g.dtype), g) for g in leaves]
        new_key, *noise_keys = jax.random.split(state.rng_key, len(leaves) + 1)
        noised = [
            ((g + noise_std * jax.random.normal(k, g.shape, g.dtype)) / batch_size).astype(g.dtype)
            for g, k in zip(clipped, noise_keys)
        ]
        return jax.tree.unflatten(treedef, noised), DifferentiallyPrivateAggregateState(rng_key=new_key)

    return base.GradientTransformation(init_fn, update_fn)


@kit.static_args("seed")
def dpsgd(
    learning_rate: base.ScalarOrSchedule,
    l2_norm_clip: float,
    noise_multiplier: float,
    seed: int,
    momentum: Optional[float] = None,
    nesterov: bool = False,
) -> base.GradientTransformationExtraArgs:
    r"""DP-SGD: :func:`differentially_private_aggregate` followed by SGD.

    .. math::
        \theta_{t+1} = \theta_t - \eta\, \mathrm{momentum}(u_t)

    with :math:`u_t` the clipped, noised mean of the per-example gradients.

    Abadi et al., `Deep Learning with Differential Privacy
    <https://arxiv.org/abs/1607.00133>`_, 2016.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      l2_norm_clip: the largest per-example gradient norm.
      noise_multiplier: the noise std relative to the clip.
      seed: an integer seed for the noise.
      momentum: SGD momentum (None: none).
      nesterov: use Nesterov momentum.
    """
    momentum_tx = (
        optcore.trace(decay=momentum, nesterov=nesterov) if momentum is not None else optcore.identity()
    )
    return optcore.chain(
        differentially_private_aggregate(l2_norm_clip, noise_multiplier, seed=seed),
        momentum_tx,
        optcore.scale_by_learning_rate(learning_rate),
    )
