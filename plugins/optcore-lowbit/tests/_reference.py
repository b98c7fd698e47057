"""An independent NumPy reference of block-wise quantization, for the tests.

Nearest codes by brute force (the distance to every level of the code's
table), block maxima by NumPy: nothing here calls the plugin's encoder or
decoder. Only the block layout (which entries share a block) is the
plugin's, as it is a convention, not arithmetic.
"""

from __future__ import annotations

import numpy as np

from optcore_lowbit import code_values
from optcore_lowbit._codes import FLOAT_NO_ZERO, SIGNED, UNSIGNED
from optcore_lowbit._quantize import layout


def to_blocks(x: np.ndarray, block_size: int, bits: int) -> np.ndarray:
    lay = layout(x.shape, block_size, bits)
    rows = x.astype(np.float32).reshape(*lay.lead, lay.row)
    rows = np.concatenate([rows, np.zeros((*lay.lead, lay.pad), np.float32)], axis=-1)
    return rows.reshape(*lay.lead, lay.n_blocks, lay.length)


def from_blocks(blocks: np.ndarray, shape: tuple, block_size: int, bits: int) -> np.ndarray:
    lay = layout(shape, block_size, bits)
    rows = blocks.reshape(*lay.lead, lay.n_blocks * lay.length)[..., : lay.row]
    return rows.reshape(shape)


def first_written(kind: str) -> int:
    """The lowest code an encoder writes: 1 for the unsigned code (its level 0 is never stored), 3 for the
    4-bit float code (nothing below 2^-6 is stored), else 0."""
    return {UNSIGNED: 1, FLOAT_NO_ZERO: 3}.get(kind, 0)


def nearest(values: np.ndarray, kind: str, bits: int) -> np.ndarray:
    """Index of the nearest level of the code to each value (brute force), among the levels it writes."""
    first = first_written(kind)
    table = code_values(kind, bits).astype(np.float64)[first:]
    flat = values.reshape(-1).astype(np.float64)
    out = np.empty(flat.shape, np.int64)
    for start in range(0, flat.size, 4096):  # bounded memory
        part = flat[start:start + 4096]
        out[start:start + 4096] = first + np.argmin(np.abs(part[:, None] - table[None, :]), axis=1)
    return out.reshape(values.shape)


def _mix32(h: np.ndarray) -> np.ndarray:
    """Wellons' lowbias32 integer hash on uint32 (the documented source of the plugin's rounding dither)."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x7FEB352D)
        h = h ^ (h >> np.uint32(15))
        h = h * np.uint32(0x846CA68B)
        return h ^ (h >> np.uint32(16))


def uniforms(step: int, leaf: int, n: int) -> np.ndarray:
    """The plugin's stochastic-rounding numbers for entries ``0..n-1`` of leaf ``leaf`` at step ``step``.

    As its docs specify: seed = mix(step * golden ^ mix(leaf + golden)), then
    ``u = (mix(index ^ seed) >> 8) / 2^24``.
    """
    golden = np.uint32(0x9E3779B9)
    with np.errstate(over="ignore"):
        salt = _mix32(np.asarray(np.uint32(leaf) + golden, np.uint32))
        seed = _mix32(np.asarray(np.uint32(step) * golden, np.uint32) ^ salt)
    index = np.arange(n, dtype=np.uint32)
    return (_mix32(index ^ seed) >> np.uint32(8)).astype(np.float64) / 2.0**24


def _round_up_or_down(levels: np.ndarray, x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index into increasing ``levels``: between ``lo <= x < hi`` up with probability ``(x - lo) / (hi - lo)``,
    when ``u >= 1 - p``; beyond an end level, that level."""
    hi = np.clip(np.searchsorted(levels, x, side="right"), 1, levels.size - 1)
    lo = hi - 1
    p = np.clip((x - levels[lo]) / (levels[hi] - levels[lo]), 0, 1)
    return np.where(u >= 1 - p, hi, lo)


def stochastic(values: np.ndarray, kind: str, bits: int, u: np.ndarray) -> np.ndarray:
    """Code chosen by stochastic rounding with uniforms ``u`` (signed codes: the magnitude is rounded)."""
    table = code_values(kind, bits).astype(np.float64)
    x, u = values.reshape(-1).astype(np.float64), u.reshape(-1)
    if kind != SIGNED:
        first = first_written(kind)
        return (first + _round_up_or_down(table[first:], x, u)).reshape(values.shape)
    half = 2 ** (bits - 1)  # codes below: the magnitudes, increasing; the top bit: the sign
    magnitude = _round_up_or_down(table[:half], np.abs(x), u)
    return np.where(x < 0, magnitude + half, magnitude).reshape(values.shape)


def quantize_dequantize(x: np.ndarray, kind: str, bits: int, block_size: int, u=None) -> np.ndarray:
    """``x`` rounded as the plugin stores it: block absmax scale, nearest level, back to float32.

    With ``u`` (one uniform per entry of the block layout, flattened), stochastic rounding instead.
    """
    blocks = to_blocks(x, block_size, bits)
    absmax = np.abs(blocks).max(axis=-1, keepdims=True)
    safe = np.where(absmax > 0, absmax, 1)
    normalized = np.where(absmax > 0, blocks / safe, 0).astype(np.float32)
    table = code_values(kind, bits)
    index = nearest(normalized, kind, bits) if u is None else stochastic(normalized, kind, bits, u)
    levels = table[index]
    return from_blocks((levels * absmax).astype(np.float32), x.shape, block_size, bits)


def rank1_quantize_dequantize(x: np.ndarray, kind: str, bits: int, u=None) -> np.ndarray:
    """``x`` (two or more axes) rounded with rank-1 normalization: scale min over axes of the slice maxima.

    With ``u`` (one uniform per entry of ``x``, flattened), stochastic rounding instead.
    """
    magnitudes = np.abs(x.astype(np.float32))
    scale = None
    for d in range(x.ndim):
        others = tuple(a for a in range(x.ndim) if a != d)
        along = magnitudes.max(axis=others, keepdims=True)
        scale = along if scale is None else np.minimum(scale, along)
    safe = np.where(scale > 0, scale, 1)
    normalized = np.where(scale > 0, x / safe, 0).astype(np.float32)
    index = (nearest(normalized, kind, bits) if u is None
             else stochastic(normalized.ravel(), kind, bits, u).reshape(x.shape))
    return (code_values(kind, bits)[index] * scale).astype(np.float32)


def level_gap(normalized: np.ndarray, kind: str, bits: int) -> np.ndarray:
    """The distance between the two levels around each normalized value: twice the largest rounding error.

    Outside the range of the levels written (below 1/16 for the linear code
    without zero, below 2^-6 for the float code, below the smallest non-zero level for the unsigned code) it
    is twice the distance to the end level.
    """
    table = np.unique(code_values(kind, bits)[first_written(kind):].astype(np.float64))
    normalized = np.asarray(normalized, np.float64)
    i = np.clip(np.searchsorted(table, normalized), 1, table.size - 1)
    gap = table[i] - table[i - 1]
    outside = np.maximum(table[0] - normalized, normalized - table[-1])
    return np.maximum(gap, 2 * outside)
