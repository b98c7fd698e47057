"""What the low-bit transformations share: the format arguments, state leaves in and out of float32."""

from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optcore import kit, numerics, tree_utils, validate
from optcore_lowbit._quantize import (
    QuantizedArray,
    Rank1QuantizedArray,
    blocks_within_shards,
    check_format,
    dequantize,
    is_quantized,
    layout,
    quantize,
    quantize_rank1,
    rank1_fits,
    requantize,
    requantize_rank1,
    split_kept,
)

DEFAULT_BLOCK_SIZE = {8: 256, 4: 128}
"""Entries per block by bits: 256 for 8 bits, as bitsandbytes' block-wise optimizers (Dettmers et al. 2022
used 2048; on the study's digits task 2048-entry blocks mixed second moments of very different sizes and
trained measurably differently from float32); 128 for 4 bits (Li et al. 2023, B128)."""
MIN_QUANTIZED_SIZE = 4096
"""Leaves with fewer entries keep a float state (bitsandbytes' ``min_8bit_size``)."""
NU_SCALINGS = ("rank1", "block")
"""How a second moment of two or more axes is normalized: rank-1 (Li et al. 2023) or block scales."""
ROUNDINGS = ("nearest", "stochastic")
"""How a state is rounded to its code (the Adam transforms' ``mu_rounding`` and ``nu_rounding``,
``quantize_state``'s ``rounding``)."""
NU_CODES = ("float", "linear")
"""The codes of a 4-bit second moment (``scale_by_adam_4bit``'s ``nu_code``): the 4-bit float code without
zero (``"float"``) or Li et al.'s linear code without zero (``"linear"``)."""


NONNEGATIVE_SALT = 1 << 31
"""Added to a second moment's (non-negative field's) stochastic-rounding salt, so that the two moments of an
entry are not rounded by the same uniform number."""


class Format(NamedTuple):
    """How a transformation stores its large state leaves."""

    bits: int
    block_size: int
    min_quantized_size: int

    def quantizes(self, p) -> bool:
        """Whether the state of param ``p`` is quantized: a real float leaf of at least the threshold size."""
        dtype = jnp.result_type(p)
        return (
            jnp.issubdtype(dtype, jnp.floating)
            and int(np.prod(np.shape(p))) >= max(1, self.min_quantized_size)
        )


def make_format(bits, block_size, min_quantized_size) -> Format:
    if block_size is None and bits in DEFAULT_BLOCK_SIZE:
        block_size = DEFAULT_BLOCK_SIZE[bits]
    check_format(bits, block_size, min_quantized_size)
    return Format(int(bits), int(block_size), int(min_quantized_size))


# Leaf by leaf quantization, jitted as :func:`leaf_step` is: the leaves of one signature are traced once
# (on 200 leaves of 128x125, tracing the 8-bit init took 3.1 s leaf by leaf).
quantize_leaf = jax.jit(quantize, static_argnames=("kind", "bits", "block_size", "dtype"))
quantize_leaf_rank1 = jax.jit(quantize_rank1, static_argnames=("kind", "bits", "dtype"))
dequantize_leaf = jax.jit(dequantize)


def _visible_split(x):
    """The ``NamedSharding`` of ``x`` where it can be seen: in its type (explicit mesh axes) or on a concrete array."""
    sharding = numerics.typed_sharding(x)
    if sharding is None and not isinstance(x, jax.core.Tracer):
        sharding = getattr(x, "sharding", None)
    return sharding if isinstance(sharding, jax.sharding.NamedSharding) else None


def warn_if_blocks_cross_shards(x, fmt: Format) -> None:
    """Warns when the blocks of ``x`` would run across its shard boundaries, naming a block size that fits.

    Such blocks keep the state from following the split of the axes whose shard boundaries they cross (XLA
    gathers or replicates it over them on auto mesh axes; :func:`~optcore_lowbit._quantize._blocks` does on
    explicit ones); the state keeps the rest of the split. The split is seen on concrete
    arrays and, under ``jax.jit``, on explicit mesh axes (JAX's default ``jax.make_mesh``); on auto axes
    it is only known to the compiler, and nothing is checked.
    """
    sharding = _visible_split(x)
    shape = tuple(np.shape(x))
    if sharding is None or blocks_within_shards(shape, sharding, fmt.block_size, fmt.bits):
        return
    fits = next((b for b in range(fmt.block_size - 1, 1, -1) if blocks_within_shards(shape, sharding, b, fmt.bits)), None)
    length = layout(shape, fmt.block_size, fmt.bits).length
    advice = (f"block_size={fits} (blocks of {layout(shape, fits, fmt.bits).length}) keeps whole blocks within shards"
              if fits else "no block size keeps whole blocks within shards")
    kept = split_kept(shape, sharding, fmt.block_size, fmt.bits)
    outcome = (f"this state is split only as {kept}" if any(entry is not None for entry in kept)
               else "this state is kept whole on every device")
    warnings.warn(
        f"optcore_lowbit: the {fmt.bits}-bit state of a {shape} param split as {sharding.spec} is cut into blocks of "
        f"{length} entries that run across its shard boundaries, so {outcome}; {advice}.",
        UserWarning,
        stacklevel=2,
    )


def quantize_stored(x, fmt: Format, kind: str, rank1: bool = False, dtype=None, seed=None, split_of=None):
    """``x`` quantized to ``kind`` as a state leaf is stored: with ``rank1``, rank-1 normalization where the
    leaf fits it (:func:`~optcore_lowbit._quantize.rank1_fits`; 1-D and skinny leaves keep blocks, as Li et
    al. do), else blocks of ``fmt.block_size``, warning if they cross the shards of ``split_of`` (default
    ``x``). ``dtype``: the dtype it stands for (default ``x``'s); ``seed``: stochastic rounding."""
    if rank1 and rank1_fits(np.shape(x)):
        return quantize_leaf_rank1(x, kind, fmt.bits, dtype=dtype, seed=seed)
    warn_if_blocks_cross_shards(x if split_of is None else split_of, fmt)
    return quantize_leaf(x, kind, fmt.bits, fmt.block_size, dtype=dtype, seed=seed)


def init_leaf(p, fmt: Format, kind: str, dtype=None, rank1: bool = False):
    """The zero state of param ``p``: quantized (``kind`` code) if ``fmt`` quantizes it, else float.

    ``rank1``: as :func:`quantize_stored`. Zeros derived from ``p``'s values
    (``state_zeros_like``), so that under ``jax.jit`` the codes and scales
    take the param's sharding.
    """
    dtype = kit.dtype_or_none(dtype)
    if fmt.quantizes(p):
        zeros = tree_utils.state_zeros_like(p, dtype=jnp.float32)
        return quantize_stored(zeros, fmt, kind, rank1, dtype=dtype or jnp.result_type(p), split_of=p)
    return tree_utils.state_zeros_like(p, dtype=dtype)


def init_field(params: Any, fmt: Format, kind: str, dtype=None, rank1: bool = False) -> Any:
    """The zero state of every param (see :func:`init_leaf`).

    A quantized leaf replaces a variable that wraps its param
    (``flax.nnx.Variable``) rather than sitting inside it: see
    :func:`optcore.kit.map_params`.
    """
    return kit.map_params(lambda p: init_leaf(p, fmt, kind, dtype, rank1=rank1), params)


def load(leaf, like):
    """A state leaf in float32 arithmetic (complex stays complex), split as ``like`` (the gradient) is.

    Under explicit mesh axes a block layout that merges split axes
    dequantizes to a split of its own (:func:`optcore.kit.reshard_like`).
    """
    if is_quantized(leaf):
        return kit.reshard_like(dequantize_leaf(leaf), like)
    return leaf.astype(jnp.promote_types(leaf.dtype, jnp.float32))


def store(x, like, seed=None):
    """``x`` stored as ``like`` is: requantized with its code and normalization, or cast to its dtype.

    ``seed``: stochastic rounding (see :func:`~optcore_lowbit._quantize.quantize`).
    """
    if isinstance(like, Rank1QuantizedArray):
        return quantize_leaf_rank1(x, like.kind, like.bits, dtype=like.dtype, seed=seed)
    if is_quantized(like):
        return quantize_leaf(x, like.kind, like.bits, like.block_size, dtype=like.dtype, seed=seed)
    return x.astype(like.dtype)


def step_dtype(g, likes):
    """The dtype of a leaf's hyperparameter arithmetic: float32 if a state is quantized, else ``g``'s.

    A float state follows its float twin (float64 under x64 for float64
    params: ``kit.hyperparameter_dtype``); a quantized one keeps the float32
    hyperparameters its codes were designed and tested with.
    """
    return jnp.dtype(jnp.float32) if any(is_quantized(like) for like in likes) else kit.hyperparameter_dtype(g)


def step_leaf(step_fn, g, likes, separable: bool = False, seeds=None):
    """One leaf's step: ``step_fn(g32, *old states) -> (new states..., update)``, states stored as ``likes``.

    ``step_fn`` is elementwise. When every state leaf is block-quantized, the
    new states are requantized by :func:`~optcore_lowbit._quantize.requantize`
    (two fused passes over the leaf), and the update is computed from the old
    codes and the gradient in an expression of its own, which XLA fuses into
    the parameter update downstream (one more pass, reading one byte per
    state entry); writing the update out in full instead would need a
    float32 buffer of the leaf's size. ``separable`` says that each new state
    depends only on the gradient and its own old state (Adam's moments): then
    states of different formats (block-wise and rank-1) are each requantized
    on their own. Otherwise (some state kept in float) the states are loaded
    into float32 and each new state is stored on its own. ``seeds`` (one per
    state: ``None``, or a :func:`~optcore_lowbit._codes.rounding_seed` for
    stochastic rounding) say how each new state is rounded. Returns
    ``(update, *new states)``, the update in float32.
    """
    g32 = g.astype(jnp.promote_types(g.dtype, jnp.float32))
    k = len(likes)
    seeds = list(seeds or [None] * k)
    if all(isinstance(like, QuantizedArray) for like in likes):
        stored, _ = requantize(lambda g, *olds: list(step_fn(g, *olds))[:k], g32, list(likes), seeds=seeds)
        return (_update_apart(step_fn, g32, likes), *stored)
    if separable and all(is_quantized(like) for like in likes):
        stored = []
        for i, like in enumerate(likes):

            def own_state(g, old, i=i):  # state i's new value; the other states' inputs are unused
                return step_fn(g, *[old if j == i else jnp.zeros_like(old) for j in range(k)])[i]

            if isinstance(like, Rank1QuantizedArray):
                stored.append(requantize_rank1(own_state, g32, like, seed=seeds[i]))
            else:
                stored.append(requantize(lambda g, old: [own_state(g, old)], g32, [like], seeds=seeds[i:i + 1])[0][0])
        return (_update_apart(step_fn, g32, likes), *stored)
    outs = step_fn(g32, *[load(like, g32) for like in likes])
    return (outs[-1], *[store(x, like, seed) for x, like, seed in zip(outs[:-1], likes, seeds)])


@functools.partial(jax.jit, static_argnames=("make_step", "options", "separable"))
def leaf_step(make_step, options: tuple, scalars: tuple, g, likes: tuple, seeds=None, separable: bool = False):
    """:func:`step_leaf` with the step ``make_step(options, *scalars)``, traced once per leaf signature.

    ``make_step`` builds the elementwise step; ``options`` (hashable) are its
    static switches and ``scalars`` its hyperparameters in the dtype of
    :func:`step_dtype`, computed once for all leaves (Adam's bias
    corrections computed leaf by leaf gave a sharded step block scales an
    ulp away from a single-device step's). Returns
    ``(update, *new states)``, the update in the result dtype of ``g`` and
    the states.

    A jitted function, so that inside the user's jitted step every leaf with
    the same shape, dtype and state layout (a transformer's layers) reuses
    one traced and lowered computation, which XLA inlines. Traced leaf by
    leaf, the requantization's codes and table lookups took about 25 ms per
    leaf: 10 s of the 8-bit step's 31 s to compile on 400 leaves of 128x125.
    Eagerly, each leaf signature compiles once.
    """
    step = make_step(options, *scalars)
    update, *states = step_leaf(step, g, likes, separable=separable, seeds=seeds)
    return (update.astype(jnp.result_type(g.dtype, *(like.dtype for like in likes))), *states)


def _update_apart(step_fn, g32, likes):
    """The update from the gradient and the old states, behind an optimization barrier.

    Without it XLA would share this computation with the requantization's
    passes and write the new states to memory in full (see
    :func:`~optcore_lowbit._quantize.requantize`).
    """
    g32, likes = jax.lax.optimization_barrier((g32, tuple(likes)))
    return step_fn(g32, *[load(like, g32) for like in likes])[-1]


def stored_dtype(leaf):
    """The dtype a state leaf stands for (a quantized leaf's float dtype)."""
    return leaf.dtype


def shape_view(field: Any) -> Any:
    """``field`` with each quantized leaf as a zero-cost array of the shape and dtype it stands for."""
    return jax.tree.map(
        lambda x: np.broadcast_to(np.zeros((), np.float32), x.shape) if is_quantized(x) else x,
        field,
        is_leaf=is_quantized,
    )


def check_updates(updates: Any, field: Any, params: Any = None) -> None:
    """A ``ValueError`` naming the path where ``updates`` does not match the state (or the params)."""
    validate.check_tree_match(updates, shape_view(field))
    if params is not None:
        validate.check_tree_match(updates, params, against="params")


def map_leaves(fn, updates: Any, *fields: Any):
    """``fn(g, *state_leaves) -> (update, *new_state_leaves)`` per leaf of ``updates``.

    Returns the updates tree and one tree per field. A ``None`` update (a
    masked-out leaf) keeps its state and stays ``None``.
    """
    is_none = lambda x: x is None  # noqa: E731
    g_leaves, treedef = jax.tree.flatten(updates, is_leaf=is_none)
    field_leaves = [treedef.flatten_up_to(f) for f in fields]
    outs = []
    for i, g in enumerate(g_leaves):
        states = [leaves[i] for leaves in field_leaves]
        outs.append((None, *states) if g is None else fn(g, *states))
    columns = list(zip(*outs)) if outs else [()] * (1 + len(fields))
    return tuple(treedef.unflatten(list(col)) for col in columns)


__all__ = ["QuantizedArray"]
