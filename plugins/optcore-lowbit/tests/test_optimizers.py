"""The low-bit optimizers against an independent reference, and their behaviour.

The reference applies the float32 update equations of Adam(W), Lion and
momentum SGD in NumPy, storing the state after each step with the NumPy
block-wise quantization of ``_reference`` (brute-force nearest codes): the
numbers are checked, not only their closeness to float32 Adam.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
import optcore_lowbit
from optcore_lowbit import _quantize
from optcore_lowbit._codes import FLOAT_NO_ZERO, LINEAR_NO_ZERO, SIGNED, UNSIGNED
from optcore_lowbit._quantize import rank1_fits

from _reference import quantize_dequantize, rank1_quantize_dequantize, to_blocks, uniforms

LR, WD = 0.01, 1e-2
# A skinny leaf with a leading axis (blocks even for adamw_4bit's second moment); a matrix (rank-1 scales for
# adamw_4bit's second moment); 1-D; below the threshold.
SHAPES = {"w": (3, 5000), "m": (40, 120), "v": (20_000,), "small": (50,)}
MIN_SIZE = 1000


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def _grad(params, step):
    """A deterministic gradient: the quadratic's, plus a step-dependent wave (so moments change sign)."""
    return {k: (p - 0.5 + 0.3 * np.sin(np.arange(p.size).reshape(p.shape) * 0.37 + step)).astype(np.float32)
            for k, p in params.items()}


NU_SALT = 1 << 31  # the salt of a leaf's second moment: its position plus 2**31 (the first moment's: the position)


def _reference_run(name, steps, block, mu_rounding=None, nu_rounding=None, nu_code="float"):
    """NumPy: float32 equations, state rounded as the plugin stores it (leaves >= MIN_SIZE)."""
    params = _params()
    state = {k: [np.zeros_like(p), np.zeros_like(p)] for k, p in params.items()}
    b1, b2, eps = (0.9, 0.999, 1e-8) if "adam" in name else (0.9, 0.99, 0.0)
    bits = 4 if name.endswith("4bit") else 8
    kinds = {"adamw_8bit": (SIGNED, UNSIGNED),
             "adamw_4bit": (SIGNED, FLOAT_NO_ZERO if nu_code == "float" else LINEAR_NO_ZERO),
             "lion_8bit": (SIGNED,), "sgd_8bit": (SIGNED,)}[name]
    for t in range(1, steps + 1):
        grads = _grad(params, t)
        for k, p in params.items():
            g = grads[k].astype(np.float32)
            m, v = state[k]
            if name.startswith("adamw"):
                m = np.float32(b1) * m + np.float32(1 - b1) * g
                v = np.float32(b2) * v + np.float32(1 - b2) * g * g
                u = (m / np.float32(1 - b1**t)) / (np.sqrt(v / np.float32(1 - b2**t)) + np.float32(eps))
                u = u + np.float32(WD) * p
                new = (m, v)
            elif name == "lion_8bit":
                u = np.sign(np.float32(b1) * m + np.float32(1 - b1) * g) + np.float32(WD) * p
                new = (np.float32(b2) * m + np.float32(1 - b2) * g,)
            else:  # sgd_8bit: trace
                m = g + np.float32(0.9) * m
                u, new = m, (m,)
            params[k] = (p - np.float32(LR) * u).astype(np.float32)
            if p.size >= MIN_SIZE:
                # adamw_4bit rounds its first moment stochastically, with the uniforms of the leaf's position
                # in the tree (sorted keys) and each entry's index in the block layout.
                position = sorted(SHAPES).index(k)
                rank1 = name == "adamw_4bit" and rank1_fits(p.shape)  # its second moment: rank-1 (Li et al.)
                size = to_blocks(p, block, bits).size
                mu_u = (uniforms(t, position, size)
                        if (mu_rounding or _DEFAULT_ROUNDING.get(name)) == "stochastic" else None)
                # the second moment's uniforms: entries indexed in the block layout, or in the leaf for rank-1
                nu_u = (uniforms(t, NU_SALT + position, p.size if rank1 else size)
                        if (nu_rounding or _DEFAULT_NU_ROUNDING.get(name)) == "stochastic" else None)
                new = tuple(
                    rank1_quantize_dequantize(x, kind, bits, nu_u) if i == 1 and rank1
                    else quantize_dequantize(x, kind, bits, block, mu_u if i == 0 else nu_u)
                    for i, (x, kind) in enumerate(zip(new, kinds))
                )
            state[k] = list(new) + [np.zeros_like(p)] * (2 - len(new))
    return params


_DEFAULT_ROUNDING = {"adamw_4bit": "stochastic", "adamw_8bit": "nearest"}
_DEFAULT_NU_ROUNDING = {"adamw_4bit": "stochastic", "adamw_8bit": "stochastic"}


def _factory(name, block, mu_rounding=None, nu_rounding=None, **options):
    kwargs = {"block_size": block, "min_quantized_size": MIN_SIZE, **options}
    if mu_rounding:
        kwargs["mu_rounding"] = mu_rounding
    if nu_rounding:
        kwargs["nu_rounding"] = nu_rounding
    if name.startswith("adamw"):
        return getattr(optcore_lowbit, name)(LR, weight_decay=WD, **kwargs)
    if name == "lion_8bit":
        return optcore_lowbit.lion_8bit(LR, weight_decay=WD, **kwargs)
    return optcore_lowbit.sgd_8bit(LR, momentum=0.9, **kwargs)


def _run(opt, steps, params=None):
    params = jax.tree.map(jnp.asarray, _params() if params is None else params)
    state = opt.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optcore.apply_updates(params, updates), state

    for t in range(1, steps + 1):
        grads = jax.tree.map(jnp.asarray, _grad(jax.tree.map(np.asarray, params), t))
        params, state = step(params, state, grads)
    return jax.tree.map(np.asarray, params), state


@pytest.mark.parametrize("name,block,mu_rounding,nu_rounding,nu_code", [
    ("adamw_8bit", 2048, None, None, None), ("adamw_8bit", 256, None, None, None),
    ("adamw_8bit", 256, "stochastic", None, None), ("adamw_8bit", 256, None, "nearest", None),
    ("adamw_4bit", 128, None, None, None), ("adamw_4bit", 128, "nearest", None, None),
    ("adamw_4bit", 128, None, "nearest", None), ("adamw_4bit", 128, None, "nearest", "linear"),
    ("adamw_4bit", 128, None, "stochastic", "linear"), ("lion_8bit", 2048, None, None, None),
    ("sgd_8bit", 2048, None, None, None)])
def test_matches_the_numpy_reference(name, block, mu_rounding, nu_rounding, nu_code):
    """Five steps equal the reference.

    ``adamw_4bit`` rounds both moments stochastically by default, and
    ``adamw_8bit`` its second: the reference draws the documented uniforms and
    rounds by its own rule; so for either moment with ``mu_rounding`` /
    ``nu_rounding="stochastic"`` (the second moment with uniforms of its own,
    rank-1 scaled ones included). ``adamw_4bit``'s second moment in either
    code: the float code (default) or the linear one (``nu_code="linear"``).
    """
    options = {} if nu_code is None else {"nu_code": nu_code}
    params, state = _run(_factory(name, block, mu_rounding, nu_rounding, **options), 5)
    expected = _reference_run(name, 5, block, mu_rounding, nu_rounding, **options)
    for k in SHAPES:
        got, want = params[k], expected[k]
        # Equal to float32 rounding, except where a value lies within rounding of a midpoint between two
        # levels (XLA contracts multiply-adds, NumPy does not): then one code differs by one level.
        same = np.isclose(got, want, rtol=2e-6, atol=1e-7)
        assert same.mean() > 0.998, (k, same.mean())
        # Where a code differs, by one level: for Adam a few % of a step of ~LR (up to ~10% for a second
        # moment in a coarse low decade: seen once in 20,000 entries); for Lion a flipped sign (2 LR); for
        # SGD one level of the buffer, ~10x the gradient.
        atol = {"lion_8bit": 2.5 * LR, "sgd_8bit": 0.5 * LR}.get(name, 0.1 * LR)
        np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=k)
    leaves = jax.tree.leaves(state, is_leaf=_quantize.is_quantized)
    quantized = [x for x in leaves if _quantize.is_quantized(x)]
    big = [SHAPES[k] for k in ("w", "m", "v")]
    assert len(quantized) == len(big) * (2 if name.startswith("adamw") else 1)  # both moments, or the momentum
    assert {q.shape for q in quantized} == set(big)
    rank1 = [q.shape for q in quantized if isinstance(q, optcore_lowbit.Rank1QuantizedArray)]
    assert rank1 == ([SHAPES["m"]] if name == "adamw_4bit" else [])


@pytest.mark.parametrize("name,mean_bound,max_bound", [("adamw_8bit", 0.02, 0.15), ("adamw_4bit", 0.25, 2.0)])
def test_close_to_float32_adamw(name, mean_bound, max_bound):
    """Ten steps stay close to float32 AdamW, relative to the path length ``steps * lr``.

    Each Adam step moves a param by about ``lr`` at most. Rounding changes a step by the
    relative error of ``m`` plus half that of ``v``: about 1% for entries near their block's
    maximum with 8 bits (gaps of 0.9/64 of the maximum in the top decade), more for small
    entries in the coarser lower decades, hence a bound on the mean (2%) and a looser one on the
    worst entry. 4 bits are 16 times coarser: the first moment has 7 levels per sign, rounded
    stochastically, so a small entry of a block with a large maximum is stored as 0 or as the
    smallest level, many times itself; the second moment has two levels per octave (its
    stochastic rounding moves ``v`` by up to a factor 1.5, the step by up to 22%).
    Measured with the defaults: 15% of the path on average and 149% for the worst of the 15,000
    entries (99.9% below 118%); with 0.5's second moment (``nu_code="linear"``, to nearest) 17-18%
    and 81%. The price of 4-bit states (Li et al. report equal final quality; the quality study
    measures it on real training).
    """
    steps = 10
    got, _ = _run(_factory(name, optcore_lowbit.DEFAULT_BLOCK_SIZE[4 if name.endswith("4bit") else 8]), steps)
    want, _ = _run(optcore.adamw(LR, weight_decay=WD), steps)
    for k in ("w", "m", "v"):
        relative = np.abs(got[k] - want[k]) / (steps * LR)
        assert relative.mean() <= mean_bound and relative.max() <= max_bound, (k, relative.mean(), relative.max())
    # Below the threshold the state is float32 and the numbers are AdamW's, to float32 rounding.
    np.testing.assert_allclose(got["small"], want["small"], rtol=1e-6, atol=1e-7)


def test_first_step_is_exact_adamw():
    """The first update uses the new float moments before they are rounded: float32 AdamW's step."""
    got, _ = _run(_factory("adamw_8bit", 2048), 1)
    want, _ = _run(optcore.adamw(LR, weight_decay=WD), 1)
    for k in SHAPES:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("nu_rounding", ["nearest", "stochastic"])
def test_a_second_moment_far_below_its_block_maximum_keeps_the_step_bounded(nu_rounding):
    """The zero-point problem of the 8-bit second moment.

    Step 1: one entry of a block gets a gradient of 1, the others 1e-5, so
    their second moments are 1e-10 of the block's maximum, below the
    code's smallest level (1e-7). Step 2: no gradient for them. Had their
    second moment been stored as 0 (0.4 and earlier, rounding to nearest),
    the step would be ``m / eps``: about 470 here. Stored as the smallest
    level it is overestimated, so the step is smaller than float32 Adam's
    (0.67), never larger.
    """
    g1 = np.full(4096, 1e-5, np.float32)
    g1[0] = 1.0
    g2 = np.zeros(4096, np.float32)
    g2[0] = 1.0

    def two_steps(opt):
        state = opt.init(jnp.zeros(4096))
        _, state = jax.jit(opt.update)(jnp.asarray(g1), state)
        updates, _ = jax.jit(opt.update)(jnp.asarray(g2), state)
        return np.asarray(updates)

    got = two_steps(optcore_lowbit.scale_by_adam_8bit(nu_rounding=nu_rounding))
    want = two_steps(optcore.scale_by_adam())
    assert 0.6 < want[1] < 0.7 and np.all(want[1:] == want[1])
    assert np.all(np.isfinite(got)) and np.all(got[1:] > 0) and np.all(got[1:] <= want[1:])
    np.testing.assert_allclose(got[0], want[0], rtol=0.02)


def test_state_layout_and_bytes():
    params = {"big": jnp.ones((64, 4096)), "small": jnp.ones(100), "cplx": jnp.ones(5000, jnp.complex64)}
    state = optcore_lowbit.adamw_8bit(LR).init(params)[0]
    assert _quantize.is_quantized(state.mu["big"]) and state.mu["big"].kind == SIGNED
    assert _quantize.is_quantized(state.nu["big"]) and state.nu["big"].kind == UNSIGNED
    # The default 8-bit blocks: 256 entries, as bitsandbytes.
    assert state.mu["big"].codes.shape == (64, 16, 256) and state.mu["big"].scales.shape == (64, 16)
    assert state.mu["small"].dtype == jnp.float32 and state.mu["cplx"].dtype == jnp.complex64  # kept in float
    q4 = optcore_lowbit.adamw_4bit(LR).init(params)[0]
    assert q4.mu["big"].kind == SIGNED and q4.mu["big"].codes.shape == (64, 32, 64)  # packed: 128/2
    # The second moment: rank-1 normalization (Li et al.), one maximum per row and per column.
    assert isinstance(q4.nu["big"], optcore_lowbit.Rank1QuantizedArray) and q4.nu["big"].kind == FLOAT_NO_ZERO
    assert optcore_lowbit.adamw_4bit(LR, nu_code="linear").init(params)[0].nu["big"].kind == LINEAR_NO_ZERO
    assert q4.nu["big"].codes.shape == (64, 2048) and [m.shape for m in q4.nu["big"].maxima] == [(64,), (4096,)]
    assert isinstance(optcore_lowbit.adamw_4bit(LR, nu_scaling="block").init(params)[0].nu["big"],
                      optcore_lowbit.QuantizedArray)
    big = 64 * 4096 * 4 * 2
    nbytes = lambda *qs: sum(x.nbytes for q in qs for x in jax.tree.leaves(q))  # noqa: E731
    assert nbytes(state.mu["big"], state.nu["big"]) / big == 0.25 + 1 / 256
    # Half a byte per entry, a float32 scale per 128 entries of mu and per row and column of nu.
    assert nbytes(q4.mu["big"], q4.nu["big"]) == 64 * 4096 + 4 * (64 * 4096 // 128 + 64 + 4096)
    assert nbytes(q4.mu["big"], q4.nu["big"]) / big <= 0.137


def test_complex_and_small_leaves_follow_the_float_twin():
    params = {"c": jnp.linspace(1, 2, 6000).astype(jnp.complex64) * (1 + 1j), "s": jnp.ones(3)}
    grads = jax.tree.map(lambda p: p * 0.1, params)
    opt, twin = optcore_lowbit.adam_8bit(LR), optcore.adam(LR)
    u, _ = opt.update(grads, opt.init(params), params)
    w, _ = twin.update(grads, twin.init(params), params)
    for k in params:
        np.testing.assert_allclose(np.asarray(u[k]), np.asarray(w[k]), rtol=1e-5)


@pytest.mark.parametrize("name,twin", [
    ("adamw_8bit", lambda: optcore.adamw(LR, weight_decay=WD)),
    ("adamw_4bit", lambda: optcore.adamw(LR, weight_decay=WD)),
    ("lion_8bit", lambda: optcore.lion(LR, weight_decay=WD)),
    ("sgd_8bit", lambda: optcore.sgd(LR, momentum=0.9)),
])
def test_float_leaves_of_float64_params_follow_the_twin_in_float64(name, twin):
    """Under x64, a leaf small enough to keep a float state computes in float64 like the float twin
    (float64 hyperparameters); before, its float32 hyperparameters held it 2e-7 (relative) away."""
    with jax.enable_x64(True):
        params = {"small": jnp.linspace(-1.0, 1.0, 50, dtype=jnp.float64), "big": jnp.ones((64, 64), jnp.float64)}
        opt, reference = _factory(name, 128 if name.endswith("4bit") else 256), twin()
        # The big leaf's state is quantized, the small one's stays float64.
        leaves = jax.tree.leaves(opt.init(params), is_leaf=_quantize.is_quantized)
        assert any(_quantize.is_quantized(x) for x in leaves) and any(x.shape == (50,) for x in leaves)
        results = []
        for tx in (opt, reference):
            p, state = params, tx.init(params)
            for step in range(10):
                grads = jax.tree.map(lambda x: jnp.sin(3 * x + step), p)
                updates, state = jax.jit(tx.update)(grads, state, p)
                p = optcore.apply_updates(p, updates)
            results.append(p)
    assert results[0]["small"].dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(results[0]["small"]), np.asarray(results[1]["small"]), rtol=1e-12, atol=1e-14)


def test_bf16_params_keep_their_dtype():
    params = {"w": jnp.linspace(-1, 1, 8192, dtype=jnp.bfloat16)}
    opt = optcore_lowbit.adamw_8bit(LR)
    state = opt.init(params)
    assert state[0].mu["w"].dtype == jnp.bfloat16  # the dtype the quantized moment stands for
    updates, state = jax.jit(opt.update)(params, state, params)
    assert updates["w"].dtype == jnp.bfloat16
    want, _ = optcore.adamw(LR).update(params, optcore.adamw(LR).init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"], np.float32), np.asarray(want["w"], np.float32), rtol=1e-2)


@pytest.mark.parametrize("nonnegative_rounding", ["nearest", "stochastic"])
def test_quantize_state_matches_the_dedicated_transform(nonnegative_rounding):
    """quantize_state(adamw) stores mu signed and nu unsigned (by field name): adamw_8bit's numbers, with the
    second moment rounded as ``nonnegative_rounding`` says (stochastically: adamw_8bit's default, drawn with
    the same salts, so the same codes); a step count in the state only for stochastic rounding."""
    wrapped = optcore_lowbit.quantize_state(optcore.adamw(LR, weight_decay=WD), min_quantized_size=MIN_SIZE,
                                            nonnegative_rounding=nonnegative_rounding)
    state = wrapped.init(jax.tree.map(jnp.asarray, _params()))
    stochastic = nonnegative_rounding == "stochastic"
    assert isinstance(state, optcore_lowbit.QuantizeStateState) == stochastic
    inner = state.inner_state if stochastic else state
    assert inner[0].mu["w"].kind == SIGNED and inner[0].nu["w"].kind == UNSIGNED
    assert not _quantize.is_quantized(inner[0].mu["small"])
    got, got_state = _run(wrapped, 5)
    want, want_state = _run(_factory("adamw_8bit", optcore_lowbit.DEFAULT_BLOCK_SIZE[8], nu_rounding=nonnegative_rounding), 5)
    for k in SHAPES:
        same = np.isclose(got[k], want[k], rtol=2e-6, atol=1e-7)
        assert same.mean() > 0.998, (k, same.mean())
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=LR * 0.05)
    got_nu = (got_state.inner_state if stochastic else got_state)[0].nu
    for k in ("w", "m", "v"):  # up to a value within float32 rounding of a level's midpoint (or of u)
        assert np.mean(np.asarray(got_nu[k].codes) == np.asarray(want_state[0].nu[k].codes)) > 0.999


def test_quantize_state_with_rank1_scaling_matches_adamw_4bit():
    """nonnegative_scaling="rank1": nu of the matrix on rank-1 scales, the skinny and 1-D leaves on blocks,
    so quantize_state(adamw, bits=4) stores what adamw_4bit with 0.5's second moment (nu_code="linear",
    nu_rounding="nearest") and its first moment rounded to nearest stores."""
    wrapped = optcore_lowbit.quantize_state(optcore.adamw(LR, weight_decay=WD), bits=4, min_quantized_size=MIN_SIZE,
                                            nonnegative_scaling="rank1")
    state = wrapped.init(jax.tree.map(jnp.asarray, _params()))
    nu = state[0].nu
    assert isinstance(nu["m"], optcore_lowbit.Rank1QuantizedArray) and nu["m"].kind == LINEAR_NO_ZERO
    assert not isinstance(nu["w"], optcore_lowbit.Rank1QuantizedArray) and _quantize.is_quantized(nu["w"])
    assert not isinstance(state[0].mu["m"], optcore_lowbit.Rank1QuantizedArray)
    got, got_state = _run(wrapped, 5)
    want, want_state = _run(_factory("adamw_4bit", 128, "nearest", "nearest", nu_code="linear"), 5)
    np.testing.assert_array_equal(got_state[0].nu["m"].codes, want_state[0].nu["m"].codes)
    for k in SHAPES:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-6, atol=1e-7)
    with pytest.raises(ValueError, match="nonnegative_scaling must be one of"):
        optcore_lowbit.quantize_state(optcore.adamw(LR), nonnegative_scaling="rank-1")


@pytest.mark.parametrize("nonnegative_rounding", ["nearest", "stochastic"])
def test_quantize_state_with_stochastic_rounding_matches_adamw_4bit(nonnegative_rounding):
    """rounding="stochastic" seeds each signed leaf from the wrapper's count and the param's position, as
    adamw_4bit seeds its first moment: the same codes, bit for bit, for its default (stochastic) rounding.
    The second moment: to nearest, the linear code (adamw_4bit with nu_code="linear", nu_rounding="nearest");
    stochastically, the float code with adamw_4bit's salts: its defaults, bit for bit."""
    wrapped = optcore_lowbit.quantize_state(optcore.adamw(LR, weight_decay=WD), bits=4, min_quantized_size=MIN_SIZE,
                                            nonnegative_scaling="rank1", rounding="stochastic",
                                            nonnegative_rounding=nonnegative_rounding)
    state = wrapped.init(jax.tree.map(jnp.asarray, _params()))
    assert isinstance(state, optcore_lowbit.QuantizeStateState) and int(state.count) == 0
    stochastic_nu = nonnegative_rounding == "stochastic"
    assert state.inner_state[0].nu["m"].kind == (FLOAT_NO_ZERO if stochastic_nu else LINEAR_NO_ZERO)
    got, got_state = _run(wrapped, 5)
    nu_options = {} if stochastic_nu else {"nu_rounding": "nearest", "nu_code": "linear"}
    want, want_state = _run(_factory("adamw_4bit", 128, None, **nu_options), 5)
    nearest, nearest_state = _run(_factory("adamw_4bit", 128, "nearest", **nu_options), 5)
    assert int(got_state.count) == 5
    for k in ("w", "m", "v"):
        np.testing.assert_array_equal(got_state.inner_state[0].mu[k].codes, want_state[0].mu[k].codes)
        np.testing.assert_array_equal(got_state.inner_state[0].nu[k].codes, want_state[0].nu[k].codes)
        # The rounding matters: to nearest, some codes differ.
        assert np.any(np.asarray(got_state.inner_state[0].mu[k].codes) != np.asarray(nearest_state[0].mu[k].codes))
    for k in SHAPES:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"rounding must be one of \('nearest', 'stochastic'\), got 'up'"):
        optcore_lowbit.quantize_state(optcore.adamw(LR), rounding="up")
    with pytest.raises(ValueError, match=r"nonnegative_rounding must be one of \('nearest', 'stochastic'\), got 'down'"):
        optcore_lowbit.quantize_state(optcore.adamw(LR), nonnegative_rounding="down")


def test_quantize_state_salts_are_distinct_per_field_and_param():
    """Two signed fields of one state (a momentum and an EMA) get different seeds for the same param."""
    params = {"a": jnp.ones((64, 64)), "b": jnp.ones((64, 64))}
    inner = optcore.chain(optcore.trace(0.9), optcore.ema(0.9))
    wrapped = optcore_lowbit.quantize_state(inner, bits=4, min_quantized_size=1, rounding="stochastic")
    state = wrapped.init(params)
    # The same values in both params and (up to a factor) in both fields: with one seed, the codes would agree.
    values = jnp.asarray(np.random.default_rng(0).uniform(0.1, 1.0, (64, 64)), jnp.float32)
    grads = {k: values for k in params}
    _, state = jax.jit(wrapped.update)(grads, state, params)
    codes = [np.asarray(x.codes) for x in jax.tree.leaves(state.inner_state, is_leaf=_quantize.is_quantized)
             if _quantize.is_quantized(x)]
    assert len(codes) == 4
    # Independent rounding makes every pair of leaves differ somewhere.
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.any(codes[i] != codes[j]), (i, j)


def test_quantize_state_keeps_non_param_shaped_leaves():
    """Adafactor's factored second moments (rows, columns) are not param-shaped: they stay float."""
    params = {"w": jnp.ones((128, 256))}
    state = optcore_lowbit.quantize_state(optcore.adafactor(LR), min_quantized_size=1).init(params)
    leaves = jax.tree.leaves(state, is_leaf=_quantize.is_quantized)
    assert not any(_quantize.is_quantized(x) for x in leaves if getattr(x, "shape", None) != (128, 256))
    wrapped = optcore_lowbit.quantize_state(optcore.sgd(LR, momentum=0.9), bits=4, min_quantized_size=1)
    state = wrapped.init(params)
    (trace,) = [x for x in jax.tree.leaves(state, is_leaf=_quantize.is_quantized) if _quantize.is_quantized(x)]
    assert trace.kind == SIGNED and trace.bits == 4 and trace.block_size == 128


def test_mismatched_gradient_names_the_path():
    opt = optcore_lowbit.adamw_8bit(LR, min_quantized_size=1)
    params = {"a": jnp.ones((40, 30)), "b": jnp.ones(5)}
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"\['a'\]"):
        opt.update({"a": jnp.ones((30, 40)), "b": jnp.ones(5)}, state)
    with pytest.raises(ValueError, match=r"\['b'\]"):
        opt.update({"a": jnp.ones((40, 30))}, state)


def test_bad_arguments():
    with pytest.raises(ValueError, match="b1 must be in"):
        optcore_lowbit.adamw_8bit(LR, b1=1.0)
    with pytest.raises(ValueError, match="momentum must be a number"):
        optcore_lowbit.sgd_8bit(LR, momentum=None)
    with pytest.raises(ValueError, match="mode must be one of"):
        optcore_lowbit.scale_by_lion_8bit(mode="soft")
    with pytest.raises(ValueError, match="block_size must be even"):
        optcore_lowbit.adamw_4bit(LR, block_size=33)
    with pytest.raises(ValueError, match=r"mu_rounding must be one of \('nearest', 'stochastic'\), got 'random'"):
        optcore_lowbit.adamw_4bit(LR, mu_rounding="random")
    with pytest.raises(ValueError, match="mu_rounding must be one of"):
        optcore_lowbit.scale_by_adam_8bit(mu_rounding=None)
    with pytest.raises(ValueError, match=r"nu_rounding must be one of \('nearest', 'stochastic'\), got 'up'"):
        optcore_lowbit.adamw_8bit(LR, nu_rounding="up")
    with pytest.raises(ValueError, match=r"nu_code must be one of \('float', 'linear'\), got 'log'"):
        optcore_lowbit.adamw_4bit(LR, nu_code="log")


def test_registered_by_name():
    for name in optcore_lowbit.OPTIMIZERS + optcore_lowbit.TRANSFORMS + optcore_lowbit.WRAPPERS:
        assert optcore.get(name) is getattr(optcore_lowbit, name)
    assert optcore.lowbit.adamw_8bit is optcore_lowbit.adamw_8bit
