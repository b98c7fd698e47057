r"""The codes of quantized state: a small integer per entry for a value in ``[-1, 1]`` or ``[0, 1]``.

Elementwise maps only: how a leaf is cut into blocks and scaled is
:mod:`optcore_lowbit._quantize`'s. Stochastic rounding's uniform numbers
(:func:`rounding_seed`, :func:`uniform_dither`) are here too.

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
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from optcore import kit, numerics

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


def check_bits(bits) -> None:
    """Raises ``ValueError`` unless ``bits`` is one of :data:`BITS`."""
    kit.check_one_of("bits", bits, BITS)


def check_code(kind, bits) -> None:
    """Raises ``ValueError`` naming an unknown code ``kind`` or a ``bits`` it does not come in."""
    kit.check_one_of("kind", kind, KINDS)
    check_bits(bits)
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


def dither_or_none(seed, first, shape):
    """:func:`uniform_dither`, or ``None`` (round to nearest) where ``seed`` is ``None``."""
    return None if seed is None else uniform_dither(seed, first, shape)
