"""Block-wise quantization: the codes, round-to-nearest, error bounds, layouts, and bad arguments."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore_lowbit
from optcore_lowbit import _codes, _quantize
from optcore_lowbit._codes import FLOAT_NO_ZERO, LINEAR_NO_ZERO, SIGNED, UNSIGNED, decode, encode
from optcore_lowbit._quantize import layout

from _reference import first_written, level_gap, nearest, quantize_dequantize, rank1_quantize_dequantize, stochastic, to_blocks, uniforms

CODES = [(SIGNED, 8), (UNSIGNED, 8), (SIGNED, 4), (LINEAR_NO_ZERO, 4), (FLOAT_NO_ZERO, 4)]


@pytest.mark.parametrize("kind,bits", CODES)
def test_code_tables(kind, bits):
    table = optcore_lowbit.code_values(kind, bits)
    assert table.shape == (2**bits,) and table.dtype == np.float32
    magnitudes = np.unique(np.abs(table))
    assert magnitudes.max() == 1.0
    if kind == LINEAR_NO_ZERO:  # (i + 1) / 16: no zero level (the 4-bit paper's zero-point fix)
        np.testing.assert_array_equal(table, (np.arange(16) + 1) / 16)
        return
    if kind == FLOAT_NO_ZERO:  # one mantissa bit: 2^-k and 0.75 * 2^-k, increasing, top level 1
        np.testing.assert_array_equal(table, np.sort([2.0**-k for k in range(8)] + [0.75 * 2.0**-k for k in range(8)]))
        return
    assert 0.0 in table
    # The dynamic code: 2^(B-1-e) equally spaced levels in each decade [10^-e-1, 10^-e] (B magnitude bits).
    mb = bits - 1 if kind == SIGNED else bits
    assert magnitudes.size == 2**mb  # every magnitude index is a distinct level
    for e in range(mb - 1):
        inside = magnitudes[(magnitudes > 10.0 ** (-e - 1) * (1 + 1e-6)) & (magnitudes <= 10.0**-e * (1 + 1e-6))]
        assert inside.size == 2 ** (mb - 1 - e)
        np.testing.assert_allclose(np.diff(np.concatenate([[10.0 ** (-e - 1)], inside])),
                                   0.9 * 10.0**-e / 2 ** (mb - 1 - e), rtol=1e-5)
    assert magnitudes[1] == np.float32(10.0 ** -(mb - 1))  # the smallest non-zero level
    if kind == SIGNED:
        np.testing.assert_array_equal(table[2**mb:], -table[: 2**mb])


@pytest.mark.parametrize("kind,bits", CODES)
def test_decode_gives_the_table(kind, bits):
    """8-bit codes decode to the table's levels exactly (a lookup); the 4-bit arithmetic decoder agrees
    with it to float32 rounding (a few ulps: m * step + base)."""
    decoded = np.asarray(jax.jit(lambda c: decode(c, kind, bits))(jnp.arange(2**bits, dtype=jnp.uint8)))
    if bits == 8:
        np.testing.assert_array_equal(decoded, optcore_lowbit.code_values(kind, bits))
    np.testing.assert_allclose(decoded, optcore_lowbit.code_values(kind, bits), rtol=1e-6, atol=0)


@pytest.mark.parametrize("kind,bits", CODES)
def test_encode_rounds_to_the_nearest_level(kind, bits):
    """Against brute force over the table: uniform and log-uniform values, the levels and their midpoints."""
    rng = np.random.default_rng(0)
    table = optcore_lowbit.code_values(kind, bits)
    low = -1.0 if kind == SIGNED else 0.0
    levels = np.unique(table[first_written(kind):])  # the unsigned code's level 0 is never written
    sign = rng.choice([-1.0, 1.0], 20000) if kind == SIGNED else 1.0
    x = np.concatenate([
        rng.uniform(low, 1.0, 20000),
        sign * 10.0 ** rng.uniform(-9, 0, 20000),
        levels,
        (levels[1:] + levels[:-1]) / 2 + 1e-6 * (levels[1:] - levels[:-1]),  # just above each midpoint
        (levels[1:] + levels[:-1]) / 2 - 1e-6 * (levels[1:] - levels[:-1]),  # just below
    ]).astype(np.float32)
    codes = np.asarray(jax.jit(lambda v: encode(v, kind, bits))(jnp.asarray(x)))
    assert codes.dtype == np.uint8 and codes.max() < 2**bits
    error = np.abs(x.astype(np.float64) - table[codes])
    best = np.abs(x.astype(np.float64) - table[nearest(x, kind, bits)])
    # Nearest up to the float32 rounding of the affine map a * slope + offset, whose value (the
    # code index, up to 2^bits) carries an absolute error of ~1e-5: 2e-5 of the gap between levels.
    # Away from midpoints (all but ~1e-5 of random values) the choice is exact.
    slack = 2e-5 * level_gap(x, kind, bits)
    assert np.all(error <= best + slack), np.max(error - best - slack)
    assert np.mean(error[:40000] == best[:40000]) > 0.9999  # the random values
    np.testing.assert_array_equal(table[np.asarray(encode(jnp.asarray(levels), kind, bits))], levels)


def test_uniform_dither_matches_its_specification_and_is_uniform():
    """The rounding numbers: the documented hash (an independent NumPy copy), 24-bit uniform in [0, 1)."""
    n = 200_000
    seed = _codes.rounding_seed(jnp.int32(7), 3)
    u = np.asarray(jax.jit(lambda s: _codes.uniform_dither(s, 0, (n,)))(seed))
    np.testing.assert_array_equal(u, uniforms(7, 3, n).astype(np.float32))
    assert u.min() >= 0 and u.max() < 1
    counts = np.histogram(u, bins=20, range=(0, 1))[0]
    expected = n / 20  # chi-square with 19 degrees of freedom: 99.99% quantile 49
    assert ((counts - expected) ** 2 / expected).sum() < 49
    # Another step, another leaf, an offset: new numbers, and an offset draws the same as the whole range.
    assert np.mean(u == uniforms(8, 3, n)) < 1e-3 and np.mean(u == uniforms(7, 4, n)) < 1e-3
    tail = np.asarray(_codes.uniform_dither(seed, 1000, (10, 7)))
    np.testing.assert_array_equal(tail.reshape(-1), u[1000:1070])


@pytest.mark.parametrize("kind,bits", CODES)
def test_stochastic_rounding_picks_a_neighbouring_level_without_bias(kind, bits):
    """Each entry goes to one of the two levels around it, up with probability equal to its position between them.

    Checked against the reference rule (``u >= 1 - p``) entry by entry, and in
    distribution: over many seeds the mean stored value is the value itself
    (the expectation of the rounding), where rounding to the nearest level is
    off by up to half a gap.
    """
    rng = np.random.default_rng(5)
    low = -1.0 if kind == SIGNED else 0.0
    x = np.concatenate([rng.uniform(low, 1.0, 2000), np.sign(rng.uniform(low, 1, 2000)) * 10.0 ** rng.uniform(-4, 0, 2000)])
    x = x.astype(np.float32)
    table = optcore_lowbit.code_values(kind, bits)
    encode_with = jax.jit(lambda v, s: encode(v, kind, bits, _codes.uniform_dither(s, 0, v.shape)))
    codes = np.asarray(encode_with(jnp.asarray(x), _codes.rounding_seed(jnp.int32(1), 0)))
    want = stochastic(x, kind, bits, uniforms(1, 0, x.size))
    # Equal but where f + u lands within float32 rounding of an integer (the reference compares exactly).
    assert np.mean(codes == want) > 0.999
    assert np.all(np.abs(table[codes].astype(np.float64) - x) <= level_gap(x, kind, bits) * (1 + 1e-5))
    draws = 2000
    mean = np.zeros(x.shape)
    for step in range(draws):
        mean += table[np.asarray(encode_with(jnp.asarray(x), _codes.rounding_seed(jnp.int32(step), 0)))]
    mean /= draws
    inside = np.abs(x) >= np.abs(table[first_written(kind):]).min()  # below the smallest level written: always up
    # Bernoulli between two levels: the sample mean's standard deviation is at most gap / (2 sqrt(draws)).
    bound = 5 * level_gap(x, kind, bits) / (2 * np.sqrt(draws)) + 1e-6
    assert np.all(np.abs(mean - x)[inside] <= bound[inside])
    nearest_bias = np.abs(table[nearest(x, kind, bits)] - x)[inside]
    assert np.mean(np.abs(mean - x)[inside]) < 0.2 * np.mean(nearest_bias)


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_the_unsigned_code_never_writes_zero(rounding):
    """A second moment stored as 0 turns ``m / (sqrt(v) + eps)`` into an unbounded step: the unsigned code writes
    its smallest non-zero level, 1e-7 of the block's maximum, for anything below it (0 included), whichever
    the rounding. A block of zeros still decodes to 0 (its scale is 0), and so does the code 0 (written by
    0.4 and earlier, whose states still restore)."""
    smallest = optcore_lowbit.code_values(UNSIGNED, 8)[1]
    assert smallest == np.float32(1e-7)
    x = np.zeros(256, np.float32)
    x[:6] = [1.0, 5e-8, 4.9e-8, 1e-9, 1e-30, 0.0]
    seed = _codes.rounding_seed(jnp.int32(3), 0) if rounding == "stochastic" else None
    q = optcore_lowbit.quantize(jnp.asarray(x), UNSIGNED, 8, 256, seed=seed)
    assert int(np.asarray(q.codes).min()) == 1
    back = np.asarray(optcore_lowbit.dequantize(q))
    assert back[0] == 1.0 and np.all(back[1:] == smallest)
    zeros = optcore_lowbit.quantize(jnp.zeros(256), UNSIGNED, 8, 256, seed=seed)
    np.testing.assert_array_equal(np.asarray(optcore_lowbit.dequantize(zeros)), 0.0)
    assert float(decode(jnp.zeros(3, jnp.uint8), UNSIGNED, 8)[0]) == 0.0


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_the_float_code_writes_nothing_below_its_floor(rounding):
    """The 4-bit float code stores anything below 2^-6 of its scale (0 included) as 2^-6, whichever the
    rounding, as the linear code stores small values as 1/16: its three lower levels are decoded, never
    written. A block of zeros decodes to 0 (its scale is 0); NaN goes to the top level, as in the other codes.
    """
    floor = optcore_lowbit.code_values(FLOAT_NO_ZERO, 4)[3]
    assert floor == 2.0**-6
    x = np.zeros(128, np.float32)
    x[:7] = [1.0, 2.0**-6, 0.015, 1e-3, 1e-30, 0.0, 0.75]
    seed = _codes.rounding_seed(jnp.int32(3), 0) if rounding == "stochastic" else None
    q = optcore_lowbit.quantize(jnp.asarray(x), FLOAT_NO_ZERO, 4, 128, seed=seed)
    back = np.asarray(optcore_lowbit.dequantize(q))
    assert back[0] == 1.0 and back[6] == 0.75 and np.all(back[1:6] == floor) and np.all(back[7:] == floor)
    zeros = optcore_lowbit.quantize(jnp.zeros(128), FLOAT_NO_ZERO, 4, 128, seed=seed)
    np.testing.assert_array_equal(np.asarray(optcore_lowbit.dequantize(zeros)), 0.0)
    codes = np.asarray(encode(jnp.asarray([np.nan, -1.0, 2.0]), FLOAT_NO_ZERO, 4))
    np.testing.assert_array_equal(codes, [15, 3, 15])


def test_bad_codes_are_named():
    with pytest.raises(ValueError, match=r"kind must be one of .*got 'log'"):
        optcore_lowbit.quantize(jnp.ones(8), "log", 4, 8)
    with pytest.raises(ValueError, match="'float_no_zero' code has 4 bits, got bits=8"):
        optcore_lowbit.quantize(jnp.ones(8), FLOAT_NO_ZERO, 8, 8)
    with pytest.raises(ValueError, match="'float_no_zero' code has 4 bits"):
        optcore_lowbit.code_values(FLOAT_NO_ZERO, 8)
    with pytest.raises(ValueError, match="kind must be one of"):
        _quantize.quantize_rank1(jnp.ones((4, 4)), "log", 4)


@pytest.mark.parametrize("kind,bits,block", [(SIGNED, 8, 2048), (UNSIGNED, 8, 2048), (SIGNED, 4, 128),
                                             (LINEAR_NO_ZERO, 4, 128), (FLOAT_NO_ZERO, 4, 128), (SIGNED, 8, 100)])
@pytest.mark.parametrize("shape", [(10_000,), (3, 5000), (7,), (2, 3, 1500)])
def test_quantization_error_is_half_the_level_gap(kind, bits, block, shape):
    """|x - Q^-1(Q(x))| <= absmax * gap/2 at each entry, and equals the brute-force reference."""
    rng = np.random.default_rng(1)
    x = (rng.standard_t(3, size=shape) * 10.0 ** rng.uniform(-3, 1, size=shape)).astype(np.float32)
    if kind != SIGNED:
        x = np.abs(x)
    q = optcore_lowbit.quantize(jnp.asarray(x), kind, bits, block)
    back = np.asarray(optcore_lowbit.dequantize(q))
    assert back.shape == x.shape and q.codes.dtype == jnp.uint8 and q.scales.dtype == jnp.float32
    blocks = to_blocks(x, block, bits)
    absmax = np.abs(blocks).max(axis=-1, keepdims=True)
    gap = level_gap(np.abs(blocks) / np.where(absmax > 0, absmax, 1), kind, bits)
    bound = to_blocks_inverse(absmax * gap / 2, x.shape, block, bits)
    assert np.all(np.abs(back - x) <= bound * (1 + 1e-5) + 1e-12)
    reference = quantize_dequantize(x, kind, bits, block)
    close = np.isclose(back, reference, rtol=1e-6, atol=0)
    assert close.mean() > 0.999, close.mean()  # ties may round either way


def to_blocks_inverse(blocks, shape, block, bits):
    from _reference import from_blocks

    return from_blocks(blocks, shape, block, bits)


@pytest.mark.parametrize("kind,bits", [(LINEAR_NO_ZERO, 4), (FLOAT_NO_ZERO, 4), (UNSIGNED, 8), (SIGNED, 4)])
# Tall matrices take the column maxima over groups of rows first: 8 groups of 125 rows, 128 groups of 8, and
# 513 rows (no power-of-two factor) in one reduction.
@pytest.mark.parametrize("shape", [(30, 41), (64, 256), (4, 5, 33), (1000, 24), (1024, 20), (513, 20)])
def test_rank1_normalization_matches_the_reference(kind, bits, shape):
    """Scale of entry (i, j, ...): min over axes of that axis's slice maximum; nearest level by brute force."""
    rng = np.random.default_rng(2)
    # Magnitudes that follow the rows (a rarely active input has a small second moment along its row).
    x = (rng.standard_t(3, size=shape) * 10.0 ** rng.uniform(-4, 0, size=shape[:1] + (1,) * (len(shape) - 1)))
    x = x.astype(np.float32)
    x[1] = 0  # an all-zero slice stays zero
    if kind != SIGNED:
        x = np.abs(x)
    q = _quantize.quantize_rank1(jnp.asarray(x), kind, bits)
    assert isinstance(q, optcore_lowbit.Rank1QuantizedArray) and _quantize.is_quantized(q)
    assert q.codes.shape == (*shape[:-1], -(-shape[-1] * bits // 8)) and q.codes.dtype == jnp.uint8
    assert [m.shape for m in q.maxima] == [(n,) for n in shape]
    for d, m in enumerate(q.maxima):
        others = tuple(a for a in range(len(shape)) if a != d)
        np.testing.assert_array_equal(np.asarray(m), np.abs(x).max(axis=others))
    back = np.asarray(jax.jit(optcore_lowbit.dequantize)(q))
    reference = rank1_quantize_dequantize(x, kind, bits)
    assert np.isclose(back, reference, rtol=1e-6, atol=0).mean() > 0.999  # ties may round either way
    assert np.all(back[1] == 0)


def test_rank1_is_tighter_than_blocks_when_magnitudes_follow_rows():
    """The reason for rank-1 scales (Li et al.): rows of small second moments keep their precision."""
    rng = np.random.default_rng(3)
    x = (rng.uniform(0.5, 1, size=(64, 256)) * 10.0 ** rng.uniform(-4, 0, size=(64, 1))).astype(np.float32)
    rank1 = np.asarray(optcore_lowbit.dequantize(_quantize.quantize_rank1(jnp.asarray(x), LINEAR_NO_ZERO, 4)))
    block = np.asarray(optcore_lowbit.dequantize(optcore_lowbit.quantize(jnp.asarray(x), LINEAR_NO_ZERO, 4, 128)))
    # Each 128-entry block lies in one row here, so block scales are as tight: compare with 2048-entry blocks.
    wide = np.asarray(optcore_lowbit.dequantize(optcore_lowbit.quantize(jnp.asarray(x), LINEAR_NO_ZERO, 4, 2048)))
    error = lambda y: float(np.median(np.abs(y - x) / x))  # noqa: E731
    assert error(rank1) <= error(block) * (1 + 1e-6) and error(rank1) < 0.25 * error(wide)


@pytest.mark.parametrize("bits,kind", [(4, LINEAR_NO_ZERO), (4, FLOAT_NO_ZERO), (8, UNSIGNED)])
@pytest.mark.parametrize("shape", [(37, 892), (3, 5000), (6, 7, 301), (1000, 24)])
@pytest.mark.parametrize("stochastic_rounding", [False, True])
def test_rank1_requantize_equals_quantizing_the_new_state(bits, kind, shape, stochastic_rounding):
    """The fused passes (maxima, then codes, each recomputing the new state) store what quantizing it gives."""
    rng = np.random.default_rng(4)
    old = _quantize.quantize_rank1(jnp.asarray(rng.uniform(0, 2, size=shape).astype(np.float32)), kind, bits)
    g = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    moment = lambda g, v: 0.9 * v + 0.1 * g * g  # noqa: E731
    seed = _codes.rounding_seed(jnp.int32(2), 0) if stochastic_rounding else None
    got = jax.jit(lambda g, old: _quantize.requantize_rank1(moment, g, old, seed))(g, old)
    want = _quantize.quantize_rank1(moment(g, _quantize.dequantize(old)), kind, bits, seed=seed)
    # Equal up to XLA fusing the moment update differently (a contracted multiply-add: one ulp).
    for a, b in zip(got.maxima, want.maxima):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=3e-7)
    assert got.codes.shape == want.codes.shape and np.mean(np.asarray(got.codes) == np.asarray(want.codes)) > 0.9999


def test_rank1_leaf_keeps_its_dtype():
    q = _quantize.quantize_rank1(jnp.ones((64, 64), jnp.bfloat16), LINEAR_NO_ZERO, 4)
    assert q.dtype == jnp.bfloat16 and q.dequantize().dtype == jnp.bfloat16
    assert [m.dtype for m in q.maxima] == [jnp.float32, jnp.float32]


def test_rank1_needs_two_axes():
    with pytest.raises(ValueError, match="two or more axes"):
        _quantize.quantize_rank1(jnp.ones(10), LINEAR_NO_ZERO, 4)


def test_skinny_leaves_keep_blocks():
    """Rank-1 maxima cost sum(shape) floats: at most one per 16 entries, else blocks (adamw_4bit's nu)."""
    assert _quantize.rank1_fits((64, 4096)) and _quantize.rank1_fits((40, 120)) and _quantize.rank1_fits((8, 3, 3, 64))
    assert not _quantize.rank1_fits((3, 5000)) and not _quantize.rank1_fits((1, 8192))
    assert not _quantize.rank1_fits((16, 16384)) and not _quantize.rank1_fits((8192,))
    state = optcore_lowbit.adamw_4bit(0.1).init({"skinny": jnp.ones((3, 5000)), "square": jnp.ones((128, 128))})
    assert isinstance(state[0].nu["skinny"], optcore_lowbit.QuantizedArray)
    assert isinstance(state[0].nu["square"], optcore_lowbit.Rank1QuantizedArray)


def test_layouts():
    # 16M floats: blocks of 2000 (a divisor in (1024, 2048]), no padding.
    assert layout((16_000_000,), 2048, 8) == _quantize.Layout((16_000_000,), (), 8000, 2000)
    # Rows of 3072 keep the leading axis: (768, 2, 1536).
    assert layout((768, 3072), 2048, 8) == _quantize.Layout((768, 3072), (768,), 2, 1536)
    # Rows shorter than a block merge with the axes before them: one row of 768*768.
    lay = layout((768, 768), 2048, 8)
    assert lay.lead == () and lay.n_blocks * lay.length >= 768 * 768 and lay.length <= 2048
    # A prime row: near-equal blocks, padded by fewer entries than there are blocks.
    lay = layout((5003,), 2048, 8)
    assert lay.n_blocks == 3 and lay.length <= 2048 and 0 < lay.pad < lay.n_blocks
    # Rows of several blocks are cut into a multiple of 8 blocks where a length in [block/2, block] allows:
    # rows of 3072 and 1024 split over 8 devices (tensor parallelism) keep whole blocks on each.
    assert layout((1024, 3072), 256, 8) == _quantize.Layout((1024, 3072), (1024,), 16, 192)  # not 12 x 256
    assert layout((4096, 1024), 256, 8) == _quantize.Layout((4096, 1024), (4096,), 8, 128)  # not 4 x 256
    assert layout((1024, 3072), 128, 4) == _quantize.Layout((1024, 3072), (1024,), 24, 128)
    # ... blocks that fill whole 16-byte vectors first (blocks of 250 make the step ~20% slower than 160).
    assert layout((16_000_000,), 256, 8) == _quantize.Layout((16_000_000,), (), 100_000, 160)
    # A row of at most one block stays one block; a row with one divisor in range takes it.
    assert layout((64, 256), 256, 8) == _quantize.Layout((64, 256), (64,), 1, 256)
    assert layout((892, 892), 256, 8) == _quantize.Layout((892, 892), (892,), 4, 223)
    # 4-bit blocks have an even length (two codes per byte).
    for shape in [(5003,), (892, 892), (3, 7)]:
        lay = layout(shape, 128, 4)
        assert lay.length % 2 == 0 and lay.length <= 128 and lay.pad < 2 * lay.n_blocks


@pytest.mark.parametrize("bits,block", [(8, 2048), (4, 128)])
def test_state_bytes(bits, block):
    """Codes plus scales: 1 (or 1/2) byte per entry and 4 bytes per block, against 4 bytes per float."""
    x = jnp.ones((2**20,), jnp.float32)  # blocks of exactly block_size
    q = optcore_lowbit.quantize(x, SIGNED, bits, block)
    assert (q.codes.nbytes + q.scales.nbytes) / x.nbytes == bits / 32 + 1 / block
    # A size whose best divisor is shorter than a block (1e6 = 10^6: blocks of 2000 or 100):
    # at most twice the scales, within the targets (0.27 and 0.15).
    y = jnp.ones((1_000_000,), jnp.float32)
    q = optcore_lowbit.quantize(y, SIGNED, bits, block)
    assert (q.codes.nbytes + q.scales.nbytes) / y.nbytes <= bits / 32 + 2 / block


@pytest.mark.parametrize("stochastic_first", [False, True])
@pytest.mark.parametrize("bits,shape,nu_kind", [(8, (50_001,), UNSIGNED), (4, (50_001,), LINEAR_NO_ZERO),
                                                (8, (13, 3001), UNSIGNED), (4, (37, 892), FLOAT_NO_ZERO)])
def test_requantize_equals_quantizing_the_new_states(bits, shape, nu_kind, stochastic_first):
    """The fused passes (block maxima, then codes, each recomputing the new states) store what quantizing
    the new states gives: 1-D with a padded last block, leading axes with padded rows, stochastic rounding
    of the first state included; and the extra result comes back in the leaf's shape.
    """
    block = 2048 if bits == 8 else 128
    rng = np.random.default_rng(2)
    kinds = [SIGNED, nu_kind]
    olds = [optcore_lowbit.quantize(jnp.asarray(np.abs(rng.normal(size=shape)).astype(np.float32)) * s, k, bits, block)
            for k, s in zip(kinds, (-1.0, 1.0))]
    g = jnp.asarray(rng.normal(size=shape).astype(np.float32))

    def step(g, m, v):
        return 0.9 * m + 0.1 * g, 0.99 * v + 0.01 * g * g, m + v

    seeds = [_codes.rounding_seed(jnp.int32(3), 1) if stochastic_first else None, None]

    @jax.jit
    def both(g, olds):
        fused, (extra,) = _quantize.requantize(step, g, olds, seeds=seeds)
        news = step(g, *[optcore_lowbit.dequantize(q) for q in olds])
        whole = _quantize.quantize_many(list(news[:2]), kinds, bits, block, seeds=seeds)
        return fused, whole, extra, news[2]

    fused, whole, extra, expected_extra = both(g, olds)
    assert layout(shape, block, bits).pad > 0
    for c, w in zip(fused, whole):
        # Equal up to XLA fusing the moment update differently (a contracted multiply-add: one ulp).
        np.testing.assert_allclose(np.asarray(c.scales), np.asarray(w.scales), rtol=3e-7)
        assert np.mean(np.asarray(c.codes) == np.asarray(w.codes)) > 0.9999
    np.testing.assert_allclose(np.asarray(extra), np.asarray(expected_extra), rtol=1e-6)


def test_quantized_array_is_a_pytree_with_static_metadata():
    q = optcore_lowbit.quantize(jnp.linspace(-1, 1, 10, dtype=jnp.bfloat16), SIGNED, 8, 4)
    leaves, treedef = jax.tree.flatten(q)
    assert [x.dtype for x in leaves] == [jnp.uint8, jnp.float32]
    again = jax.tree.unflatten(treedef, leaves)
    assert again.shape == (10,) and again.dtype == jnp.bfloat16 and again.kind == SIGNED
    assert again.dequantize().dtype == jnp.bfloat16
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(q)[0]]
    assert paths == [".codes", ".scales"]
    assert math.prod(q.shape) == q.size == 10


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"bits": 3}, ValueError, "bits must be one of"),
        ({"bits": True}, ValueError, "bits must be one of"),
        ({"block_size": 1}, ValueError, "block_size must be an integer of at least 2, got 1"),
        ({"block_size": 64.0}, TypeError, "block_size must be an integer of at least 2, got 64.0"),
        ({"bits": 4, "block_size": 127}, ValueError, "block_size must be even"),
        ({"min_quantized_size": -1}, ValueError, "min_quantized_size must be an integer of at least 0"),
        # What optax.inject_hyperparams passes when not told that the size is static: the message says so.
        ({"block_size": jnp.asarray(256)}, TypeError, r"got Array\(256.*add 'block_size' to static_args"),
    ],
)
def test_bad_format_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        optcore_lowbit.quantize_state(__import__("optcore").sgd(0.1, momentum=0.9), **kwargs)
    if "bits" not in kwargs:
        with pytest.raises(error, match=message):
            optcore_lowbit.adamw_8bit(0.1, **kwargs)
