r"""Block-wise quantization of optimizer state: layouts, codes, quantize and dequantize.

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

**Codes.** The dynamic (exponent) code of Dettmers (2016), over ``B`` magnitude bits
(``bits - 1`` for the signed code of first moments, ``bits`` for the unsigned
code of 8-bit second moments): in ``[0, 1]`` the decades
:math:`[10^{-e-1}, 10^{-e}]`, ``e = 0..B-2``, hold :math:`k_e = 2^{B-1-e}`
equally spaced levels each (the top one :math:`10^{-e}`), the last interval
:math:`[0, 10^{-B+1}]` holds one level, and 0 is a level. (The unsigned code
spends the sign's bit on one more decade, down to :math:`10^{-7}`, rather
than on twice the levels per decade: a second moment rounded to zero makes a
huge step. The other layout trained no differently in the quality study, with
2048-entry blocks.) For the same reason the encoder of the unsigned code
never writes its level 0: anything below :math:`10^{-7}` of the block's
maximum is stored as that level (an overestimate: the step gets smaller,
never unbounded). Its code 0 still decodes to 0, for states written by
0.4 and earlier.
The level of magnitude index ``m`` in decade ``e`` is
:math:`\mathrm{lo}_e + (m - k_e + 1) w_e / k_e`, so the levels of a decade and
the top level of the next one are equally spaced: round-to-nearest is one
rounding of an affine function of the value. Across decades these affine maps
join into a concave function, so the encoder takes the minimum of one
multiply-add per decade (no comparisons, no table) and the 4-bit decoder the
maximum; 8-bit codes are decoded by a lookup in the table of levels. The
linear code without zero, :math:`(m + 1) / 16`, is the 4-bit paper's fix of
the zero-point problem for second moments (a second moment rounded to 0
turns into an unbounded step).

The 4-bit float code without zero (the default for 4-bit second moments) is a
float with 3 exponent bits and 1 mantissa bit whose top level is 1: code
``c`` is the float32 whose bit pattern is ``(c + 239) << 22``, the levels
:math:`0.75 \cdot 2^{-7}, 2^{-7}, 0.75 \cdot 2^{-6}, \dots, 0.75, 1`, two
per octave. Its decoder is an integer add, a shift and a bitcast; its encoder
rounds the float32 bit pattern of the value at bit 22 (adding half of it, or
22 random bits for stochastic rounding), which within an octave is linear in
the value: stochastic rounding is exactly unbiased between neighbouring levels.
The encoder writes nothing below :math:`2^{-6}` (code 3): smaller values are
stored as that level, as the linear code stores anything below 1/32 as 1/16
(see :func:`optcore_lowbit.scale_by_adam_4bit` for why this floor).

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

from optcore import numerics

SIGNED = "signed"
"""The dynamic code with a sign bit (first moments, momentum)."""
UNSIGNED = "unsigned"
"""The dynamic code for non-negative values (8-bit second moments)."""
LINEAR_NO_ZERO = "linear_no_zero"
"""The linear code without zero, levels ``(i + 1) / 2**bits`` (the 4-bit paper's second moments)."""
FLOAT_NO_ZERO = "float_no_zero"
"""A 4-bit float code without zero, levels ``2**-k`` and ``0.75 * 2**-k`` (4-bit second moments)."""
KINDS = (SIGNED, UNSIGNED, LINEAR_NO_ZERO, FLOAT_NO_ZERO)
BITS = (4, 8)


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
# Codes.
# ---------------------------------------------------------------------------


def _magnitude_bits(kind: str, bits: int) -> int:
    return bits - 1 if kind == SIGNED else bits


def _decades(kind: str, bits: int):
    """Per decade ``e`` of a dynamic code: (lower bound, upper bound, levels ``k_e``), from the top down.

    ``B`` magnitude bits (``bits - 1`` signed, ``bits`` unsigned) span ``B``
    decades with :math:`k_e = 2^{B-1-e}` levels each.
    """
    n_decades = _magnitude_bits(kind, bits)
    out = []
    for e in range(n_decades):
        hi = 10.0 ** -e
        lo = 0.0 if e == n_decades - 1 else hi / 10.0
        out.append((lo, hi, 2 ** (n_decades - 1 - e)))
    return out


# The 4-bit float code: code c is the float32 with bit pattern (c + _FLOAT_BIAS) << 22 (3 exponent bits,
# 1 mantissa bit: 239 << 22 is 0.75 * 2**-7, 254 << 22 is 1.0). The encoder writes codes from
# _FLOAT_FIRST_WRITTEN up: the smallest level it stores is 2**-6.
_FLOAT_BIAS = 239
_FLOAT_FIRST_WRITTEN = 3


def _check_bits(bits) -> None:
    if isinstance(bits, bool) or bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits!r}.")


def check_code(kind, bits) -> None:
    """Raises ``ValueError`` naming an unknown code ``kind`` or a ``bits`` it does not come in."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    _check_bits(bits)
    if kind == FLOAT_NO_ZERO and bits != 4:
        raise ValueError(f"the {FLOAT_NO_ZERO!r} code has 4 bits, got bits={bits!r}.")


@functools.lru_cache(maxsize=None)
def code_values(kind: str, bits: int) -> np.ndarray:
    """The levels of a code, indexed by the code (float32; ``2**bits`` entries).

    Signed codes: bit ``bits-1`` is the sign, the low bits the magnitude index.
    The unsigned code's level 0 (code 0) and the float code's three levels
    below :math:`2^{-6}` are decoded but never written (see the module's docs).
    """
    check_code(kind, bits)
    n = 2**bits
    if kind == FLOAT_NO_ZERO:
        return ((np.arange(n, dtype=np.int32) + _FLOAT_BIAS) << 22).view(np.float32)
    if kind == LINEAR_NO_ZERO:
        return ((np.arange(n) + 1) / n).astype(np.float32)
    magnitudes = np.zeros(2 ** _magnitude_bits(kind, bits), np.float64)
    for lo, hi, k in _decades(kind, bits):
        for j in range(1, k + 1):  # the level j of the decade has magnitude index k - 1 + j
            magnitudes[k - 1 + j] = lo + j * (hi - lo) / k
    if kind == UNSIGNED:
        return magnitudes.astype(np.float32)
    return np.concatenate([magnitudes, -magnitudes]).astype(np.float32)


# The maps between a magnitude and its (real-valued) index are piecewise affine, one piece per decade,
# and continuous: a decade's lower bound is the top level of the next one down. The index as a function
# of the magnitude is concave (the slope k_e / w_e grows as the decades get smaller), so it is the
# *minimum* of its pieces, and the level as a function of the index is the *maximum* of its pieces. That
# is one multiply-add per decade and a min/max tree: no comparisons to find the decade, no table.
# The min and max run on the float32 bit patterns as int32: for the non-negative values that matter
# the orders agree, and an integer min/max is one vector instruction (a float one also handles NaN).


def _as_int(x):
    return jax.lax.bitcast_convert_type(x, jnp.int32)


def _as_float(x):
    return jax.lax.bitcast_convert_type(x, jnp.float32)


def _clip_unit(x):
    """``x`` clipped to ``[0, 1]`` on its bit pattern (two integer instructions)."""
    return _as_float(jnp.clip(_as_int(x), 0, _as_int(jnp.float32(1))))


def _round(index, dither):
    """``index`` (real-valued) to an integer: the nearest, or with ``dither`` (uniform in ``[0, 1)``)
    stochastically: up with probability equal to its fractional part, so the expected level is the value."""
    return jnp.round(index) if dither is None else jnp.floor(index + dither)


def _encode_magnitude(a, kind: str, bits: int, dither=None):
    """Magnitude index of ``a`` in ``[0, 1]`` (float32 result, integral), rounded by :func:`_round`.

    Two neighbouring levels always lie on one affine piece, so rounding the
    real-valued index picks one of the two levels around ``a``.
    """
    pieces = [_as_int(a * jnp.float32(k / (hi - lo)) + jnp.float32(k - 1 - lo * k / (hi - lo)))
              for lo, hi, k in _decades(kind, bits)]
    return _round(_as_float(functools.reduce(jnp.minimum, pieces)), dither)


def _decode_magnitude(m, kind: str, bits: int):
    """The level of magnitude index ``m`` (an integer-valued float32 array)."""
    pieces = [_as_int(m * jnp.float32((hi - lo) / k) + jnp.float32(lo - (k - 1) * (hi - lo) / k))
              for lo, hi, k in _decades(kind, bits)]
    return _as_float(functools.reduce(jnp.maximum, pieces + [jnp.int32(0)]))


def encode(x, kind: str, bits: int, dither=None):
    """Code (uint8, one per entry, unpacked) of ``x`` normalized to ``[-1, 1]`` (``[0, 1]`` unsigned).

    The nearest level, or with ``dither`` (uniform in ``[0, 1)``, ``x``'s
    shape) stochastic rounding between the two levels around each entry.
    """
    x = x.astype(jnp.float32)
    if kind == FLOAT_NO_ZERO:
        return _encode_float(x, dither)
    if kind == LINEAR_NO_ZERO:
        n = 2**bits
        return jnp.clip(_round(x * n - 1, dither), 0, n - 1).astype(jnp.uint8)
    if kind == UNSIGNED:  # never the level 0: a second moment stored as 0 would make an unbounded step
        return jnp.maximum(_encode_magnitude(_clip_unit(x), kind, bits, dither), 1).astype(jnp.uint8)
    m = _encode_magnitude(_clip_unit(jnp.abs(x)), kind, bits, dither).astype(jnp.uint8)
    return jnp.where(x < 0, m | jnp.uint8(2 ** (bits - 1)), m)


def _encode_float(x, dither=None):
    """Codes of the 4-bit float code: ``x``'s float32 bit pattern, clipped to ``[2**-6, 1]``, rounded at bit 22.

    Between two neighbouring levels the bit pattern is affine in the value, so
    adding ``2**21`` rounds to the nearest level and adding ``floor(u * 2**22)``
    (``u`` uniform in ``[0, 1)``) rounds up with probability equal to the
    value's position between them. A clip on the bit pattern also sends NaN
    to the top level and negative values to the bottom one, as the other codes do.
    """
    floor_bits = (_FLOAT_BIAS + _FLOAT_FIRST_WRITTEN) << 22
    pattern = jnp.clip(_as_int(x), floor_bits, _as_int(jnp.float32(1)))
    offset = jnp.int32(1 << 21) if dither is None else (dither * jnp.float32(1 << 22)).astype(jnp.int32)
    return (((pattern + offset) >> 22) - _FLOAT_BIAS).astype(jnp.uint8)


def decode(codes, kind: str, bits: int):
    """The float32 levels of unpacked ``codes`` (the inverse of :func:`encode`).

    8-bit dynamic codes are looked up in :func:`code_values` (256 floats, the
    levels exactly): XLA:CPU keeps the lookup inside the fused loop, a load
    per entry, cheaper there than the arithmetic decoder's dozen vector
    instructions. A step decodes each moment three times: swapping decoders in
    one benchmark run took ``adamw_8bit``'s step from 2.1x to 1.7x float32
    AdamW's on one 16M-float array, 2.3x to 2.0x on a 1000-leaf tree. 4-bit
    codes keep the arithmetic decoder: a lookup of the unpacked nibbles (or
    of a byte's pair of levels) is not fused and doubled the 4-bit step time.
    """
    if kind == FLOAT_NO_ZERO:
        return _as_float((codes.astype(jnp.int32) + _FLOAT_BIAS) << 22)
    if kind == LINEAR_NO_ZERO:
        return (codes.astype(jnp.float32) + 1) * jnp.float32(1 / 2**bits)
    if bits == 8:
        return _look_up(jnp.asarray(code_values(kind, bits)), codes.astype(jnp.int32))
    if kind == UNSIGNED:
        return _decode_magnitude(codes.astype(jnp.float32), kind, bits)
    sign = jnp.uint8(2 ** (bits - 1))
    magnitude = _decode_magnitude((codes & (sign - 1)).astype(jnp.float32), kind, bits)
    return jnp.where(codes >= sign, -magnitude, magnitude)


def _decode_stored(codes, kind: str, bits: int):
    """The float32 levels of stored ``codes``: one per byte, or for 4 bits two per byte (low nibble first)."""
    return decode(_unpack(codes) if bits == 4 else codes, kind, bits)


def _look_up(table, indices):
    """``table[indices]``, split as ``indices`` (on explicit mesh axes JAX asks for the gather's split)."""
    split = numerics.typed_sharding(indices)
    return table.at[indices].get(mode="clip", **({} if split is None else {"out_sharding": split}))


# Stochastic rounding needs a uniform number per entry and step. It comes from a counter-based hash of
# (seed, entry index) rather than from a PRNG key in the state: no state field (layouts and checkpoints
# stay as they are), a fused step draws exactly what quantizing the new state would, and a restored run
# repeats its rounding. The hash is Wellons' "lowbias32" integer mixer (a few vector instructions).


def _mix32(h):
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x7FEB352D)
    h = h ^ (h >> 15)
    h = h * jnp.uint32(0x846CA68B)
    return h ^ (h >> 16)


def rounding_seed(count, salt: int):
    """A uint32 seed for stochastic rounding of one state leaf at one step (:func:`quantize`'s ``seed``).

    A hash of the step ``count`` (an integer array; traced under ``jax.jit``)
    and the leaf's ``salt`` (a Python int; the Adam transforms use the leaf's
    position in the tree): different leaves and steps round independently,
    with no PRNG key in the state.
    """
    salt = _mix32(jnp.uint32(salt % 2**32) + jnp.uint32(0x9E3779B9))
    return _mix32(jnp.asarray(count).astype(jnp.uint32) * jnp.uint32(0x9E3779B9) ^ salt)


def uniform_dither(seed, first, shape):
    """Uniform floats in ``[0, 1)`` (24 bits) for the entries ``first, first + 1, ...`` of a leaf, in ``shape``."""
    index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape) + jnp.asarray(first).astype(jnp.uint32)
    return (_mix32(index ^ seed) >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def _dither_or_none(seed, first, shape):
    return None if seed is None else uniform_dither(seed, first, shape)


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
    return [QuantizedArray(_encode_block_codes(b, a, k, bits, _dither_or_none(seed, 0, b.shape)),
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
    ``seed`` (:func:`rounding_seed`), entries are rounded stochastically; the
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
    ``None`` or a :func:`rounding_seed`) round the matching new states
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
        QuantizedArray(_encode_block_codes(x, a, q.kind, bits, _dither_or_none(seed, 0, x.shape)),
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
    codes = _encode_rank1(x, maxima, kind, bits, _dither_or_none(seed, 0, x.shape))
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
    codes = _encode_rank1(new, maxima, old.kind, old.bits, _dither_or_none(seed, 0, old.shape))
    return Rank1QuantizedArray(codes, maxima, old.shape, old.dtype, old.kind, old.bits)


def check_format(bits, block_size, min_quantized_size) -> None:
    """Raises ``ValueError`` naming a bad quantization argument."""
    _check_bits(bits)
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 2:
        raise ValueError(f"block_size must be an integer of at least 2, got {block_size!r}.")
    if bits == 4 and block_size % 2:
        raise ValueError(f"block_size must be even for 4-bit states (two codes per byte), got {block_size!r}.")
    if (
        isinstance(min_quantized_size, bool)
        or not isinstance(min_quantized_size, (int, np.integer))
        or min_quantized_size < 0
    ):
        raise ValueError(f"min_quantized_size must be a non-negative integer, got {min_quantized_size!r}.")
