r"""Block-wise quantization of optimizer state: layouts, quantized leaves, quantize and dequantize.

A state leaf is split into blocks of at most ``block_size`` entries, each
stored as one float32 scale (the block's absolute maximum) and one small code
per entry: 8 bits (Dettmers et al., `8-bit Optimizers via Block-wise
Quantization <https://arxiv.org/abs/2110.02861>`_, 2022) or 4 bits, two codes
packed per byte (Li et al., `Memory Efficient Optimizers with 4-bit States
<https://arxiv.org/abs/2309.01507>`_, 2023).

**Layout.** A leaf of shape ``s`` is viewed as ``(*s[:k], row)`` where ``row``
is the product of the smallest trailing suffix ``s[k:]`` with at least
``block_size`` entries (the whole leaf when it is smaller). A row of at most
``block_size`` entries is one block. A longer row is cut into ``n`` equal
blocks whose length divides it and lies in ``[block_size/2, block_size]``
when one does, preferring, in this order: codes that fill whole 16-byte
vectors; ``n`` a multiple of 8, else of 4, else of 2;
the longest blocks. Otherwise ``n = ceil(row / block_size)`` near-equal blocks,
padded by fewer than ``n`` zeros. Codes have shape ``(*s[:k], n, length)``
(``length/2`` for 4 bits) and scales ``(*s[:k], n)``: a block never spans two
rows, so a leading axis sharded over devices shards codes and scales the same
way, and a sharded trailing axis does too when each shard holds whole blocks
(rows of 1024 or 3072 entries split over 8 devices, as tensor parallelism
splits them, do with the default block sizes; a block that ran across a
shard boundary would make XLA gather or replicate the leaf's state).

**Codes.** Each block's entries divided by its scale are stored in one of
the codes of :mod:`optcore_lowbit._codes` (the dynamic code, the linear and
float codes without zero).

**Rank-1 scales.** Instead of blocks, a leaf of two or more axes can be
scaled entry by entry by the smallest of the maxima of the slices through it
(:class:`Rank1QuantizedArray`; Li et al.'s choice for 4-bit second moments).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optcore import kit, numerics
from optcore_lowbit._codes import check_bits, check_code, decode, dither_or_none, encode


class _QuantizedLeaf:
    """What the quantized state leaves share: array children, static metadata, dequantization."""

    __slots__ = ()
    _children: tuple = ()  # the names of the array children (pytree children, in checkpoints)
    _metadata: tuple = ()  # the names of the static fields (pytree metadata: hashable, compared in treedefs)

    def dequantize(self):
        """The float array (of ``shape`` and ``dtype``) this leaf stands for."""
        return dequantize(self).astype(self.dtype)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __repr__(self):
        shown = lambda n: self.dtype.name if n == "dtype" else repr(getattr(self, n))  # noqa: E731
        fields = [f"{n}={shown(n)}" for n in self._metadata + self._children]
        return f"{type(self).__name__}({', '.join(fields)})"


def _as_dtype(dtype):
    """``dtype`` as a NumPy dtype; unflattening passes one already, so that common case costs no conversion."""
    return dtype if isinstance(dtype, np.dtype) else jnp.dtype(dtype)


def _register_leaf(cls):
    """Registers ``cls`` as a pytree whose children are ``cls._children``, by name, and the rest static.

    A dataclass-style node, which JAX flattens in C++: every call of a jitted
    step flattens the state before XLA starts, and with a Python
    ``tree_flatten_with_keys`` that took 17 ms for the 8-bit state of 1000
    quantized leaves (1 ms now).
    """
    return jax.tree_util.register_dataclass(cls, data_fields=list(cls._children), meta_fields=list(cls._metadata))


@_register_leaf
class QuantizedArray(_QuantizedLeaf):
    """A block-quantized state leaf: ``codes`` (uint8) and one float32 ``scales`` entry per block.

    The two arrays are its pytree children; what they stand for (``shape``,
    ``dtype``, the code ``kind``, ``bits`` and ``block_size``) is static pytree
    metadata, so that the leaf describes itself under ``jax.jit``: any
    transformation (:func:`optcore_lowbit.quantize_state`) can dequantize it,
    and a gradient of the wrong shape is an error naming its path. Checkpoints
    hold only the two arrays; the metadata comes back from a fresh ``init``.
    """

    __slots__ = ("codes", "scales", "shape", "dtype", "kind", "bits", "block_size")
    _children = ("codes", "scales")
    _metadata = ("shape", "dtype", "kind", "bits", "block_size")

    def __init__(self, codes, scales, shape, dtype, kind, bits, block_size):
        self.codes = codes  # uint8, (*lead, n_blocks, length), or length // 2 for packed 4-bit codes
        self.scales = scales  # float32, (*lead, n_blocks): each block's absolute maximum
        self.shape = tuple(shape)
        self.dtype = _as_dtype(dtype)
        self.kind = kind
        self.bits = bits
        self.block_size = block_size


def is_quantized(x) -> bool:
    """Whether ``x`` is a quantized state leaf (block-wise or rank-1)."""
    return isinstance(x, _QuantizedLeaf)


class Layout(NamedTuple):
    """How a leaf of ``shape`` is cut into blocks (see the module docstring)."""

    shape: tuple
    lead: tuple  # the leading axes kept
    n_blocks: int  # blocks per row
    length: int  # entries per block

    @property
    def row(self) -> int:
        return math.prod(self.shape[len(self.lead):])

    @property
    def pad(self) -> int:
        return self.n_blocks * self.length - self.row


SHARD_ALIGNMENT = 8
"""Rows of several blocks are cut, where a block length allows, into a multiple of this many blocks: a
row split evenly over 2, 4 or 8 devices then keeps whole blocks on every device."""
_VECTOR_BYTES = 16  # blocks whose codes fill whole 16-byte vectors: a length like 250 makes the step 20% slower


def _twos(n: int, cap: int) -> int:
    """The largest power of two, at most ``cap``, that divides ``n``."""
    d = 1
    while d < cap and n % (2 * d) == 0:
        d *= 2
    return d


@functools.lru_cache(maxsize=4096)
def layout(shape: tuple, block_size: int, bits: int) -> Layout:
    """The block layout of a leaf of ``shape`` (cached: it runs at trace time for every leaf)."""
    shape = tuple(int(d) for d in shape)
    k = len(shape)
    while k > 0 and math.prod(shape[k:]) < block_size:
        k -= 1
    lead, row = shape[:k], math.prod(shape[k:])
    even = 2 if bits == 4 else 1  # two 4-bit codes per byte: blocks of even length
    if row <= block_size:  # one block
        return Layout(shape, lead, 1, row + row % even)
    lengths = [n for n in range(-(-block_size // 2), block_size + 1) if n % even == 0 and row % n == 0]
    if lengths:

        def preference(length):  # whole vectors, then blocks per row divisible by 8 (4, 2), then long blocks
            return (length * bits // 8) % _VECTOR_BYTES == 0, _twos(row // length, SHARD_ALIGNMENT), length

        length = max(lengths, key=preference)
        return Layout(shape, lead, row // length, length)
    n_blocks = -(-row // block_size)
    length = -(-row // n_blocks)
    return Layout(shape, lead, n_blocks, length + length % even)


def _row_splits(shape: tuple, sharding, n_lead: int) -> list:
    """For each split axis of the row (the axes after the ``n_lead`` leading ones): the axis, and the row's
    entries per shard of that axis, so that its shard boundaries fall on multiples of it (a fraction where
    the split is uneven)."""
    splits = []
    for axis, entry in enumerate(tuple(sharding.spec)[: len(shape)]):
        names = entry if isinstance(entry, tuple) else (entry,)
        parts = math.prod(sharding.mesh.shape[name] for name in names if name is not None)
        if axis >= n_lead and parts > 1:
            splits.append((axis, shape[axis] * math.prod(shape[axis + 1:]) / parts))
    return splits


def _crossing_axes(lay: Layout, sharding) -> list:
    """The axes of the row whose shard boundaries fall inside blocks (all of its split axes if it is padded)."""
    return [axis for axis, spacing in _row_splits(lay.shape, sharding, len(lay.lead))
            if lay.pad or spacing != int(spacing) or int(spacing) % lay.length]


def _within_shards(lay: Layout, sharding) -> bool:
    """Whether the row's shard boundaries all fall on block boundaries (and the row is not padded)."""
    return not _crossing_axes(lay, sharding)


def blocks_within_shards(shape: tuple, sharding, block_size: int, bits: int) -> bool:
    """Whether each block of a leaf of ``shape``, split by ``sharding`` (a ``NamedSharding``), lies within
    one shard."""
    return _within_shards(layout(tuple(shape), block_size, bits), sharding)


def _kept_split(lay: Layout, sharding) -> jax.sharding.PartitionSpec:
    """``sharding``'s spec without the axes whose shard boundaries fall inside blocks."""
    crossing = _crossing_axes(lay, sharding)
    spec = (tuple(sharding.spec) + (None,) * len(lay.shape))[: len(lay.shape)]
    return jax.sharding.PartitionSpec(*(None if axis in crossing else entry for axis, entry in enumerate(spec)))


def split_kept(shape: tuple, sharding, block_size: int, bits: int) -> jax.sharding.PartitionSpec:
    """The part of ``sharding``'s split (a ``NamedSharding``) that the blocks of a leaf of ``shape`` follow."""
    return _kept_split(layout(tuple(shape), block_size, bits), sharding)


# ---------------------------------------------------------------------------
# Leaves.
# ---------------------------------------------------------------------------


def _blocks(x, lay: Layout):
    """``x`` (shape ``lay.shape``) as float32 blocks ``(*lead, n_blocks, length)``, zero-padded.

    On explicit mesh axes, blocks that would run across shards are no reshape JAX accepts: ``x`` first
    loses the splits of the axes whose shard boundaries fall inside blocks, and keeps the others (what XLA
    does on auto axes; ``init`` warns with a block size that avoids it).
    """
    split = numerics.typed_sharding(x)
    if split is not None and not _within_shards(lay, split):
        x = jax.sharding.reshard(x, jax.sharding.NamedSharding(split.mesh, _kept_split(lay, split)))
    rows = x.astype(jnp.float32).reshape(*lay.lead, lay.row)
    if lay.pad:
        rows = jnp.pad(rows, [(0, 0)] * len(lay.lead) + [(0, lay.pad)])
    return rows.reshape(*lay.lead, lay.n_blocks, lay.length)


def _unblocks(blocks, lay: Layout):
    rows = blocks.reshape(*lay.lead, lay.n_blocks * lay.length)
    if lay.pad:
        rows = rows[..., : lay.row]
    return rows.reshape(lay.shape)


def _pack(codes):
    """Two 4-bit codes per byte, adjacent pairs along the last axis (of even length): low nibble first."""
    pairs = codes.reshape(*codes.shape[:-1], codes.shape[-1] // 2, 2)
    return pairs[..., 0] | (pairs[..., 1] << 4)


def _unpack(packed):
    # Each byte broadcast to a pair and shifted by 0 or 4: elementwise, so it fuses into the decoder
    # (a concatenate or an interleave of two nibble arrays is not fused by XLA:CPU and costs a pass each).
    both = jnp.broadcast_to(packed[..., None], (*packed.shape, 2))
    shift = jax.lax.broadcasted_iota(jnp.uint8, both.shape, both.ndim - 1) * jnp.uint8(4)
    return ((both >> shift) & jnp.uint8(15)).reshape(*packed.shape[:-1], 2 * packed.shape[-1])


def _decode_stored(codes, kind: str, bits: int):
    """The float32 levels of stored ``codes``: one per byte, or for 4 bits two per byte (low nibble first)."""
    return decode(_unpack(codes) if bits == 4 else codes, kind, bits)


def _block_absmax(blocks_list):
    """Each block's absolute maximum, for several equally shaped block arrays in one reduction.

    :func:`_max_abs_over` the last axis, all arrays in one reduction.
    """
    return _max_abs_over(blocks_list, (blocks_list[0].ndim - 1,))


def _max_abs_over(xs, axes):
    """``max(|x|, axes)`` for each of the equally shaped ``xs``, as one variadic reduction.

    XLA:CPU keeps a variadic reduction of distinct operands in its own loop,
    with their producers (the decoded state, the moment update) fused in. A
    plain ``max`` (or one XLA simplifies to it, such as a reduction of ``|x|``
    twice) goes to a library kernel (YNNPACK) that first writes its whole
    float32 input to memory: a full-size temporary per moment. So several
    arrays are reduced as their ``|x|``, and a single one as ``x`` and
    ``-x``, the larger of the two maxima taken after. (Reducing Adam's two
    moments as ``x`` and ``-x`` each, four operands, made the 8-bit step on
    one 16M-float array 8-16% slower.)
    """
    operands = tuple(jnp.abs(x) for x in xs) if len(xs) > 1 else (xs[0], -xs[0])
    zeros = tuple(jnp.float32(0) for _ in operands)
    out = jax.lax.reduce(operands, zeros, lambda a, b: tuple(jnp.maximum(x, y) for x, y in zip(a, b)), tuple(axes))
    return list(out) if len(xs) > 1 else [jnp.maximum(*out)]


def quantize_many(xs, kinds, bits: int, block_size: int, dtypes=None, seeds=None):
    """:func:`quantize` of several arrays of one shape, their block maxima in one reduction."""
    for kind in kinds:
        check_code(kind, bits)
    lay = layout(xs[0].shape, block_size, bits)
    blocks = [_blocks(x, lay) for x in xs]
    absmaxes = _block_absmax(blocks)
    dtypes = dtypes or [x.dtype for x in xs]
    seeds = seeds or [None] * len(xs)
    return [QuantizedArray(_encode_block_codes(b, a, k, bits, dither_or_none(seed, 0, b.shape)),
                           a, x.shape, d, k, bits, block_size)
            for b, a, x, k, d, seed in zip(blocks, absmaxes, xs, kinds, dtypes, seeds)]


def _encode_block_codes(blocks, absmax, kind, bits, dither=None):
    """The (packed) codes of ``blocks`` scaled by their ``absmax``; a zero block stays zero."""
    inverse = jnp.where(absmax > 0, 1 / jnp.where(absmax > 0, absmax, 1), 0)
    codes = encode(blocks * inverse[..., None], kind, bits, dither)
    return _pack(codes) if bits == 4 else codes


def quantize(x, kind: str, bits: int, block_size: int, dtype=None, seed=None) -> QuantizedArray:
    """Block-wise quantization of ``x`` (any real float dtype and shape) to codes and absmax scales.

    ``dtype`` is the dtype the leaf dequantizes to (default: ``x``'s). With a
    ``seed`` (:func:`~optcore_lowbit._codes.rounding_seed`), entries are rounded stochastically; the
    uniform number of an entry is drawn from its index in the block layout
    ``(*lead, n_blocks, length)``, flattened.
    """
    return quantize_many([x], [kind], bits, block_size, None if dtype is None else [dtype],
                         None if seed is None else [seed])[0]


def _new_states(moment_fn, g_blocks, codes, scales, kinds, bits: int, valid):
    """``moment_fn`` on the gradient's blocks and the old states decoded from ``codes`` and ``scales``.

    Returns the new states (padding entries zero, as :func:`quantize` has
    them) and the extra results.
    """
    olds = [_decode_stored(c, kind, bits) * s[..., None]
            for c, s, kind in zip(codes, scales, kinds)]
    outs = list(moment_fn(g_blocks, *olds))
    news, extras = outs[:len(codes)], outs[len(codes):]
    if valid is not None:
        news = [jnp.where(valid, x, 0) for x in news]
    return news, extras


def requantize(moment_fn, g, olds, seeds=None):
    """The new state ``moment_fn(g, *old states)``, quantized as the ``olds`` are, without a float32 copy.

    ``olds`` are :class:`QuantizedArray` leaves of one param (same bits and
    block size); ``moment_fn`` is elementwise: it maps float32 arrays of one
    shape to ``len(olds)`` new states followed by any number of other results
    (the update). Returns the new :class:`QuantizedArray` leaves and the
    extra results (float32, of ``g``'s shape). ``seeds`` (one per old leaf,
    ``None`` or a :func:`~optcore_lowbit._codes.rounding_seed`) round the matching new states
    stochastically, drawn as :func:`quantize` draws them.

    Each new block needs its maximum before any of its entries can be
    encoded: two passes over the leaf, each computing the new states from
    the gradient and the old codes (a few operations per entry), the first
    reducing them to block maxima and the second encoding them. An
    optimization barrier between the passes keeps XLA from computing the new
    states once and writing them to memory in full for both (a float32 copy
    of every moment: more memory than float32 Adam's state, and slower).
    """
    first = olds[0]
    bits, kinds = first.bits, [q.kind for q in olds]
    lay = layout(tuple(g.shape), first.block_size, bits)
    valid = None
    if lay.pad:
        valid = (jnp.arange(lay.n_blocks * lay.length) < lay.row).reshape(lay.n_blocks, lay.length)
    g_blocks = _blocks(g, lay)
    codes, scales = [q.codes for q in olds], [q.scales for q in olds]
    news, _ = _new_states(moment_fn, g_blocks, codes, scales, kinds, bits, valid)
    absmaxes = _block_absmax(news)
    g_blocks, codes, scales, absmaxes = jax.lax.optimization_barrier((g_blocks, codes, scales, absmaxes))
    news, extras = _new_states(moment_fn, g_blocks, codes, scales, kinds, bits, valid)
    seeds = seeds or [None] * len(olds)
    quantized = [
        QuantizedArray(_encode_block_codes(x, a, q.kind, bits, dither_or_none(seed, 0, x.shape)),
                       a, q.shape, q.dtype, q.kind, bits, q.block_size)
        for x, a, q, seed in zip(news, absmaxes, olds, seeds)
    ]
    return quantized, [_unblocks(e, lay) for e in extras]


def dequantize(q):
    """The float32 array that ``q`` (a :class:`QuantizedArray` or :class:`Rank1QuantizedArray`) stands for."""
    if isinstance(q, Rank1QuantizedArray):
        return _dequantize_rank1(q)
    lay = layout(q.shape, q.block_size, q.bits)
    return _unblocks(_decode_stored(q.codes, q.kind, q.bits) * q.scales[..., None], lay)



# ---------------------------------------------------------------------------
# Rank-1 normalization (4-bit second moments of leaves with two or more axes).
# ---------------------------------------------------------------------------


@_register_leaf
class Rank1QuantizedArray(_QuantizedLeaf):
    r"""A state leaf of two or more axes quantized with rank-1 normalization (Li et al., 2023).

    Instead of one scale per block, each axis ``d`` keeps the maxima
    :math:`M_d[j]` of ``|x|`` over the slices ``x[..., j, ...]`` (for a matrix:
    its row and its column maxima), and an entry is divided by the smallest
    maximum of the slices through it,

    .. math:: s_{i_1 \dots i_k} = \min_d M_d[i_d], \qquad q = Q(x / s).

    Each entry lies in every slice through it, so :math:`|x| \le s`; where
    magnitudes follow rows and columns (a rarely active input feature has a
    small second moment along its whole row) ``s`` is much tighter than a
    block maximum. ``codes`` keep the leaf's shape, 4-bit codes packed in
    adjacent pairs along the last axis; ``maxima`` hold one float32 vector per
    axis. Children and metadata as :class:`QuantizedArray`'s.
    """

    __slots__ = ("codes", "maxima", "shape", "dtype", "kind", "bits")
    _children = ("codes", "maxima")
    _metadata = ("shape", "dtype", "kind", "bits")

    def __init__(self, codes, maxima, shape, dtype, kind, bits):
        self.codes = codes  # uint8, shape[:-1] + (shape[-1],), or (ceil(shape[-1] / 2),) packed for 4 bits
        self.maxima = tuple(maxima)  # float32, one vector of length shape[d] per axis d
        self.shape = tuple(shape)
        self.dtype = _as_dtype(dtype)
        self.kind = kind
        self.bits = bits


RANK1_ENTRIES_PER_MAXIMUM = 16
"""Rank-1 scales are used for a leaf with at least this many entries per float32 maximum it would keep."""


def rank1_fits(shape) -> bool:
    """Whether a leaf of ``shape`` takes rank-1 scales: two or more axes, and not skinny.

    Its maxima take ``sum(shape)`` floats; with at most one per 16 entries
    they cost at most a quarter byte per entry, half of the 4-bit codes'. A
    skinny leaf (``(3, 5000)``, ``(1, n)``) would keep nearly a float per
    entry in its long axis's maxima, and keeps blocks instead.
    """
    return len(shape) >= 2 and RANK1_ENTRIES_PER_MAXIMUM * sum(shape) <= math.prod(shape)


def _axis_maxima(x):
    """Per axis ``d``, the maximum of ``|x|`` over every other axis."""
    if x.ndim == 2:
        return _max_abs_over([x], [1])[0], _column_max_abs(x)
    axes = range(x.ndim)
    return tuple(_max_abs_over([x], [a for a in axes if a != d])[0] for d in axes)


_ROWS_PER_SWEEP = 512


def _column_max_abs(x):
    """``max(|x|, axis=0)`` of a matrix: over groups of consecutive rows first, then over the groups.

    XLA:CPU reduces a matrix over its rows one column after another, each
    column walking through every row; past a few hundred rows this slows
    down (likely as the rows' cache lines stop fitting in the L1 cache): on a
    4000x4000 matrix the reduction took 65 ms, and as two (groups of 125
    rows, then the 32 group maxima) 11 ms. The group count is the largest
    power of two that divides the rows, with at most 512 groups of at least 8
    rows each (the group maxima, a temporary, take at most an eighth of the
    matrix). Rows split evenly over a power-of-two count of devices thus
    split into whole groups (no data moves between devices). Rows with no
    such factor keep one reduction.
    """
    rows, cols = x.shape
    groups = math.gcd(rows, _ROWS_PER_SWEEP, 1 << ((rows // 8).bit_length() - 1)) if rows > _ROWS_PER_SWEEP else 1
    if groups == 1:
        return _max_abs_over([x], [0])[0]
    group_maxima = _max_abs_over([x.reshape(groups, rows // groups, cols)], [1])[0]
    return _max_abs_over([group_maxima], [0])[0]


def _rank1_scale(maxima, shape):
    """:math:`\\min_d M_d[i_d]` for every entry of a leaf of ``shape``."""
    along = lambda m, d: m.reshape([n if a == d else 1 for a, n in enumerate(shape)])  # noqa: E731
    return functools.reduce(jnp.minimum, [along(m, d) for d, m in enumerate(maxima)])


def _encode_rank1(x, maxima, kind: str, bits: int, dither=None):
    """Codes of the leaf ``x`` scaled entry by entry by the smallest of its slices' ``maxima``."""
    scale = _rank1_scale(maxima, x.shape)
    # An entry whose scale is 0 lies in an all-zero slice: it is 0 and stays 0.
    inverse = jnp.where(scale > 0, 1 / jnp.where(scale > 0, scale, 1), 0)
    codes = encode(x * inverse, kind, bits, dither)
    if bits == 4:  # an odd last axis gets one padding code
        codes = _pack(jnp.pad(codes, [(0, 0)] * (x.ndim - 1) + [(0, x.shape[-1] % 2)]))
    return codes


def _decode_rank1(codes, maxima, shape, kind: str, bits: int):
    return _decode_stored(codes, kind, bits)[..., : shape[-1]] * _rank1_scale(maxima, shape)


def quantize_rank1(x, kind: str, bits: int, dtype=None, seed=None) -> Rank1QuantizedArray:
    """Quantization of ``x`` (two or more axes) with rank-1 normalization (``seed``: as :func:`quantize`'s,
    the entries indexed in ``x``'s shape)."""
    check_code(kind, bits)
    if x.ndim < 2:
        raise ValueError(f"rank-1 normalization needs a leaf of two or more axes, got shape {x.shape}.")
    dtype = x.dtype if dtype is None else dtype
    x = x.astype(jnp.float32)
    maxima = _axis_maxima(x)
    codes = _encode_rank1(x, maxima, kind, bits, dither_or_none(seed, 0, x.shape))
    return Rank1QuantizedArray(codes, maxima, x.shape, dtype, kind, bits)


def _dequantize_rank1(q: Rank1QuantizedArray):
    return _decode_rank1(q.codes, q.maxima, q.shape, q.kind, q.bits)


def requantize_rank1(moment_fn, g, old: Rank1QuantizedArray, seed=None) -> Rank1QuantizedArray:
    """The new state ``moment_fn(g, old state)`` (elementwise), quantized with rank-1 normalization as ``old`` is.

    As :func:`requantize`: the new maxima (one reduction per axis) and the
    codes are separate passes, each computing the new state from ``g`` and
    the old codes, with an optimization barrier between them so that no
    float32 copy of the leaf is written (over many leaves such copies add up
    to more than float32 AdamW's peak memory).
    """
    g32 = g.astype(jnp.float32)
    maxima = _axis_maxima(moment_fn(g32, _dequantize_rank1(old)))
    g32, codes, old_maxima, maxima = jax.lax.optimization_barrier((g32, old.codes, old.maxima, maxima))
    new = moment_fn(g32, _decode_rank1(codes, old_maxima, old.shape, old.kind, old.bits))
    codes = _encode_rank1(new, maxima, old.kind, old.bits, dither_or_none(seed, 0, old.shape))
    return Rank1QuantizedArray(codes, maxima, old.shape, old.dtype, old.kind, old.bits)


def check_format(bits, block_size, min_quantized_size) -> None:
    """Raises ``ValueError`` naming a bad quantization argument."""
    check_bits(bits)
    kit.check_integer("block_size", block_size, 2)
    if bits == 4 and block_size % 2:
        raise ValueError(f"block_size must be even for 4-bit states (two codes per byte), got {block_size!r}.")
    kit.check_integer("min_quantized_size", min_quantized_size, 0)
