"""An independent NumPy reference of block-wise quantization, for the tests.

Nearest codes by brute force (the distance to every level of the code's
table), block maxima by NumPy: nothing here calls the plugin's encoder or
decoder. Only the block layout (which entries share a block) is the
plugin's, as it is a convention, not arithmetic.
"""

from __future__ import annotations

import numpy as np

from optcore_lowbit import code_values
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


def nearest(values: np.ndarray, kind: str, bits: int) -> np.ndarray:
    """Index of the nearest level of the code to each value (brute force)."""
    table = code_values(kind, bits).astype(np.float64)
    flat = values.reshape(-1).astype(np.float64)
    out = np.empty(flat.shape, np.int64)
    for start in range(0, flat.size, 4096):  # bounded memory
        part = flat[start:start + 4096]
        out[start:start + 4096] = np.argmin(np.abs(part[:, None] - table[None, :]), axis=1)
    return out.reshape(values.shape)


def quantize_dequantize(x: np.ndarray, kind: str, bits: int, block_size: int) -> np.ndarray:
    """``x`` rounded as the plugin stores it: block absmax scale, nearest level, back to float32."""
    blocks = to_blocks(x, block_size, bits)
    absmax = np.abs(blocks).max(axis=-1, keepdims=True)
    safe = np.where(absmax > 0, absmax, 1)
    normalized = np.where(absmax > 0, blocks / safe, 0).astype(np.float32)
    table = code_values(kind, bits)
    levels = table[nearest(normalized, kind, bits)]
    return from_blocks((levels * absmax).astype(np.float32), x.shape, block_size, bits)


def rank1_quantize_dequantize(x: np.ndarray, kind: str, bits: int) -> np.ndarray:
    """``x`` (two or more axes) rounded with rank-1 normalization: scale min over axes of the slice maxima."""
    magnitudes = np.abs(x.astype(np.float32))
    scale = None
    for d in range(x.ndim):
        others = tuple(a for a in range(x.ndim) if a != d)
        along = magnitudes.max(axis=others, keepdims=True)
        scale = along if scale is None else np.minimum(scale, along)
    safe = np.where(scale > 0, scale, 1)
    normalized = np.where(scale > 0, x / safe, 0).astype(np.float32)
    levels = code_values(kind, bits)[nearest(normalized, kind, bits)]
    return (levels * scale).astype(np.float32)


def level_gap(normalized: np.ndarray, kind: str, bits: int) -> np.ndarray:
    """The distance between the two levels around each normalized value: twice the largest rounding error.

    Outside the levels' range (below 1/16 for the linear code without zero)
    it is twice the distance to the end level.
    """
    table = np.unique(code_values(kind, bits).astype(np.float64))
    normalized = np.asarray(normalized, np.float64)
    i = np.clip(np.searchsorted(table, normalized), 1, table.size - 1)
    gap = table[i] - table[i - 1]
    outside = np.maximum(table[0] - normalized, normalized - table[-1])
    return np.maximum(gap, 2 * outside)
