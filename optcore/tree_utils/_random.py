"""Random trees: one independent key per leaf."""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp


def tree_split_key_like(rng_key: jax.Array, target_tree: Any) -> Any:
    """Splits a key into one key per leaf of ``target_tree``, in a tree of that structure.

    Args:
      rng_key: a PRNG key (raw ``uint32[2]`` or typed).
      target_tree: the pytree whose structure the keys take.
    """
    treedef = jax.tree.structure(target_tree)
    keys = jax.random.split(rng_key, treedef.num_leaves)
    return jax.tree.unflatten(treedef, list(keys))


def tree_random_like(
    rng_key: jax.Array,
    target_tree: Any,
    sampler: Callable[..., jax.Array] = jax.random.normal,
    dtype: Optional[Any] = None,
) -> Any:
    """A tree of random arrays with the shapes of ``target_tree``, each from its own key.

    Args:
      rng_key: a PRNG key, split with :func:`tree_split_key_like`.
      target_tree: a pytree of arrays giving shapes (and dtypes).
      sampler: called as ``sampler(key, shape, dtype)``, e.g. ``jax.random.normal``.
      dtype: the dtype of every sample (default: each leaf's dtype).
    """
    keys = tree_split_key_like(rng_key, target_tree)
    return jax.tree.map(
        lambda leaf, key: sampler(key, jnp.shape(leaf), dtype if dtype is not None else jnp.asarray(leaf).dtype),
        target_tree,
        keys,
    )


def tree_unwrap_random_key_data(input_tree: Any) -> Any:
    """Replaces every typed PRNG key leaf by its raw ``uint32`` key data.

    Useful before saving or comparing states that hold keys; other leaves are
    returned unchanged.

    Args:
      input_tree: a pytree that may contain typed keys (``jax.random.key``).
    """

    def unwrap(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    return jax.tree.map(unwrap, input_tree)
