"""Differential tests: every optcore_contrib optimizer/transform against optax.contrib."""

import pytest

optax = pytest.importorskip("optax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax.contrib as oc  # noqa: E402

import optcore  # noqa: E402
import optcore_contrib as cc  # noqa: E402

from _oracle_harness import layout, make_problem, run  # noqa: E402

NO_EXTRA = lambda value, loss: {}  # noqa: E731
WITH_VALUE = lambda value, loss: {"value": value}  # noqa: E731
WITH_OBJ = lambda value, loss: {"obj_fn": loss}  # noqa: E731


def sgd_pair(lr=0.05):
    return optcore.sgd(lr), optax.sgd(lr)


# name -> (optcore factory, optax factory, extra args); each factory builds an optimizer.
CASES = {
    "acprop": (lambda m: m.acprop(0.05), WITH_NONE := NO_EXTRA),
    "acprop_wd": (lambda m: m.acprop(0.05, weight_decay=0.1), NO_EXTRA),
    "scale_by_acprop": (lambda m: m.scale_by_acprop(), NO_EXTRA),
    "ademamix": (lambda m: m.ademamix(0.05), NO_EXTRA),
    "ademamix_sched": (lambda m: m.ademamix(0.05, b3=lambda c: 0.9 + 0.001 * c, alpha=lambda c: 1.0 + c, weight_decay=0.1), NO_EXTRA),
    "scale_by_ademamix": (lambda m: m.scale_by_ademamix(), NO_EXTRA),
    "simplified_ademamix": (lambda m: m.simplified_ademamix(0.05, alpha=2.0), NO_EXTRA),
    "scale_by_simplified_ademamix": (lambda m: m.scale_by_simplified_ademamix(), NO_EXTRA),
    "adopt": (lambda m: m.adopt(0.05), NO_EXTRA),
    "adopt_nesterov": (lambda m: m.adopt(0.05, nesterov=True, use_clipping=False), NO_EXTRA),
    "scale_by_adopt": (lambda m: m.scale_by_adopt(), NO_EXTRA),
    "cocob": (lambda m: m.cocob(), NO_EXTRA),
    "cocob_wd": (lambda m: m.cocob(0.5, alpha=10.0, weight_decay=0.1), NO_EXTRA),
    "scale_by_cocob": (lambda m: m.scale_by_cocob(), NO_EXTRA),
    "dog": (lambda m: m.dog(), NO_EXTRA),
    "dog_distance": (lambda m: m.dog(init_step=("distance", 0.1), weight_decay=0.01), NO_EXTRA),
    "dog_lr": (lambda m: m.dog(init_step=("learning_rate", 0.01)), NO_EXTRA),
    "dowg": (lambda m: m.dowg(), NO_EXTRA),
    "dowg_init": (lambda m: m.dowg(0.5, init_estim_sq_dist=0.01, weight_decay=0.01), NO_EXTRA),
    "dadapt_adamw": (lambda m: m.dadapt_adamw(), NO_EXTRA),
    "dadapt_adamw_wd": (lambda m: m.dadapt_adamw(0.5, estim_lr0=1e-3, weight_decay=0.1), NO_EXTRA),
    "madgrad": (lambda m: m.madgrad(0.05), NO_EXTRA),
    "madgrad_opts": (lambda m: m.madgrad(lambda c: 0.05 / (1 + c), momentum=0.0, weight_decay=0.1), NO_EXTRA),
    "scale_by_madgrad": (lambda m: m.scale_by_madgrad(0.01), NO_EXTRA),
    "momo": (lambda m: m.momo(0.3), WITH_VALUE),
    "momo_wd": (lambda m: m.momo(0.3, weight_decay=0.1), WITH_VALUE),
    "momo_wd_clip": (lambda m: m.momo(0.01, weight_decay=0.5), WITH_VALUE),
    "momo_adapt": (lambda m: m.momo(0.3, lower_bound=0.05, adapt_lower_bound=True), WITH_VALUE),
    "momo_adam": (lambda m: m.momo_adam(0.3), WITH_VALUE),
    "momo_adam_wd": (lambda m: m.momo_adam(0.3, weight_decay=0.1), WITH_VALUE),
    "momo_adam_wd_small": (lambda m: m.momo_adam(3.0, weight_decay=0.1, lower_bound=0.05), WITH_VALUE),
    "momo_adam_adapt": (lambda m: m.momo_adam(1.0, lower_bound=0.05, adapt_lower_bound=True), WITH_VALUE),
    "schedule_free_sgd": (lambda m: m.schedule_free_sgd(0.05), NO_EXTRA),
    "schedule_free_sgd_opts": (lambda m: m.schedule_free_sgd(0.05, warmup_steps=3, b1=0.5, weight_decay=0.1), NO_EXTRA),
    "schedule_free_adamw": (lambda m: m.schedule_free_adamw(0.05), NO_EXTRA),
    "schedule_free_adamw_opts": (lambda m: m.schedule_free_adamw(0.05, warmup_steps=4, weight_decay=0.1, weight_lr_power=1.0), NO_EXTRA),
    "sophia": (lambda m: m.sophia(0.05, update_interval=3), WITH_OBJ),
    "sophia_opts": (lambda m: m.sophia(0.05, weight_decay_mask={"w": True, "b": False}, clip_threshold=None, gamma=1.0, update_interval=1), WITH_OBJ),
    "reduce_on_plateau": (lambda m: m.reduce_on_plateau(patience=1, rtol=0.3, cooldown=1, accumulation_size=2), WITH_VALUE),
    "normalize": (lambda m: m.normalize(), NO_EXTRA),
    "sam": (lambda m: m.sam(optcore.sgd(0.05) if m is cc else optax.sgd(0.05), optcore.chain(cc.normalize(), optcore.sgd(0.1)) if m is cc else optax.chain(oc.normalize(), optax.sgd(0.1))), NO_EXTRA),
    "sam_3": (lambda m: m.sam(optcore.adam(0.05) if m is cc else optax.adam(0.05), optcore.chain(cc.normalize(), optcore.sgd(0.1)) if m is cc else optax.chain(oc.normalize(), optax.sgd(0.1)), sync_period=3, reset_state=False), NO_EXTRA),
    "muon": (lambda m: m.muon(0.05), NO_EXTRA),
    "muon_opts": (lambda m: m.muon(0.05, nesterov=False, weight_decay=0.1, adam_learning_rate=0.01, adam_weight_decay=0.1, consistent_rms=0.2), NO_EXTRA),
    "muon_adaptive": (lambda m: m.muon(0.05, adaptive=True, ns_coeffs=((3.0, -3.0, 1.0),) * 3), NO_EXTRA),
    "muon_spectral": (lambda m: m.muon(0.05, preconditioning="spectral"), NO_EXTRA),
    "muon_aol": (lambda m: m.muon(0.05, preconditioning="aol", weight_decay=0.1), NO_EXTRA),
    "muon_schatten": (lambda m: m.muon(0.05, preconditioning="schatten", nesterov=False), NO_EXTRA),
    "muon_dimension_numbers": (lambda m: m.muon(0.05, muon_weight_dimension_numbers={"w": m.MuonDimensionNumbers(1, 0), "b": None}), NO_EXTRA),
    "prodigy": (lambda m: m.prodigy(), NO_EXTRA),
    "prodigy_opts": (lambda m: m.prodigy(0.5, beta3=0.9, estim_lr_coef=2.0, weight_decay=0.1, safeguard_warmup=True), NO_EXTRA),
}


MECHANIZE_CASES = {
    "sgd": lambda m: m.mechanize(optcore.sgd(0.1) if m is cc else optax.sgd(0.1)),
    "adam": lambda m: m.mechanize(optcore.adam(0.1) if m is cc else optax.adam(0.1), weight_decay=0.1, num_betas=3),
    "large_s_init": lambda m: m.mechanize(optcore.sgd(0.1) if m is cc else optax.sgd(0.1), eps=1e-3, s_init=0.1, num_betas=2),
}


@pytest.mark.parametrize("name", sorted(MECHANIZE_CASES))
def test_mechanize_matches_optax(name):
    params, loss = make_problem()
    ours, theirs = MECHANIZE_CASES[name](cc), MECHANIZE_CASES[name](oc)
    assert layout(ours.init(params)) == layout(theirs.init(params))
    p_ours, s_ours, _ = run(ours, params, loss, 10, NO_EXTRA)
    p_theirs, s_theirs, _ = run(theirs, params, loss, 10, NO_EXTRA)
    # r, m, v and s: the wealth clips h to [-m_{t-1}, m_{t-1}] as optax does.
    for field in ("count", "r", "m", "v", "s"):
        np.testing.assert_allclose(getattr(s_ours, field), getattr(s_theirs, field), rtol=1e-4, err_msg=field)
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dpsgd_matches_optax():
    per_example = {"w": jnp.arange(24.0).reshape(4, 2, 3) / 10, "b": jnp.ones((4, 3))}
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    for ours, theirs in [
        (cc.dpsgd(0.1, 1.0, 0.5, seed=3, momentum=0.9), oc.dpsgd(0.1, 1.0, 0.5, seed=3, momentum=0.9)),
        (cc.differentially_private_aggregate(0.5, 0.0, seed=1), oc.differentially_private_aggregate(0.5, 0.0, seed=1)),
    ]:
        s_ours, s_theirs = ours.init(params), theirs.init(params)
        assert layout(s_ours) == layout(s_theirs)
        for _ in range(2):
            u_ours, s_ours = ours.update(per_example, s_ours, params)
            u_theirs, s_theirs = theirs.update(per_example, s_theirs, params)
            for a, b in zip(jax.tree.leaves(u_ours), jax.tree.leaves(u_theirs)):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_split_real_and_imaginary_matches_optax():
    params = {"z": jnp.array([1.0 + 2.0j, -0.5 + 0.1j]), "r": jnp.array([1.0, 2.0])}
    grads = {"z": jnp.array([0.3 - 1.0j, 2.0 + 0.5j]), "r": jnp.array([0.1, -0.2])}
    ours = cc.split_real_and_imaginary(optcore.adam(0.1))
    theirs = oc.split_real_and_imaginary(optax.adam(0.1))
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    for _ in range(3):
        u_ours, s_ours = ours.update(grads, s_ours, params)
        u_theirs, s_theirs = theirs.update(grads, s_theirs, params)
        for a, b in zip(jax.tree.leaves(u_ours), jax.tree.leaves(u_theirs)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("b1", [0.9, 0.5])  # b1=0 gives NaN in optax 0.2.8; ours returns y
def test_schedule_free_eval_params_matches_optax(b1):
    params, loss = make_problem()
    ours, theirs = cc.schedule_free_sgd(0.05, b1=b1), oc.schedule_free_sgd(0.05, b1=b1)
    p_ours, s_ours, _ = run(ours, params, loss, 4, NO_EXTRA)
    p_theirs, s_theirs, _ = run(theirs, params, loss, 4, NO_EXTRA)
    for a, b in zip(
        jax.tree.leaves(cc.schedule_free_eval_params(s_ours, p_ours)),
        jax.tree.leaves(oc.schedule_free_eval_params(s_theirs, p_theirs)),
    ):
        # x = (y - (1 - b1) z) / b1 amplifies the ulps of y and z.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=3e-6)


def test_reduce_on_plateau_matches_optax_on_a_value_sequence():
    values = [3.0, 2.0, 2.5, 2.4, 2.6, 2.7, 1.0, 1.5, 1.6, 1.7, 1.8, 1.9]
    ours = cc.reduce_on_plateau(factor=0.5, patience=2, cooldown=2, min_scale=0.2)
    theirs = oc.reduce_on_plateau(factor=0.5, patience=2, cooldown=2, min_scale=0.2)
    updates = {"w": jnp.ones(2)}
    s_ours, s_theirs = ours.init(updates), theirs.init(updates)
    for value in values:
        u_ours, s_ours = ours.update(updates, s_ours, value=value)
        u_theirs, s_theirs = theirs.update(updates, s_theirs, value=value)
        np.testing.assert_allclose(u_ours["w"], u_theirs["w"])
        for a, b in zip(s_ours, s_theirs):
            np.testing.assert_allclose(a, b)


# These do their hyperparameter arithmetic on float32 arrays (so that
# inject_hyperparams gives the same bits, Optax issue 583); Optax computes e.g.
# ``1 - b2`` from Python doubles, and ``1 - float32(0.999)`` is off by 1.3e-5
# relative. That moves small differences of larger terms by up to ~3e-7
# absolute (the params by up to 9e-6 after 10 steps), hence atol 1e-5 as in the
# core's oracle tests (tests/test_oracle_optimizers.py). The two UNSCALED
# cases amplify the offsets: scale_by_acprop (eps 1e-16, no learning rate)
# takes steps of ~7 and ends at params of ~50; Sophia without clipping divides
# its first step by eps (1e-8), so the params jump to ~1e6 and the relative
# offsets, fed back through the gradients, grow to 5e-5 by step 8. Hence
# rtol 1e-4 there (as for Muon above).
FLOAT32_HPARAMS = ("acprop", "scale_by_acprop", "ademamix", "scale_by_ademamix", "simplified_ademamix",
                   "scale_by_simplified_ademamix", "madgrad", "scale_by_madgrad", "momo", "sophia", "dpsgd")
HPARAM_ATOL = 1e-5
UNSCALED = {"scale_by_acprop", "sophia_opts"}
UNSCALED_RTOL = 1e-4


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax(name):
    build, extra = CASES[name][:2]
    # Schedule-free updates are differences of O(1) iterates, so op-order ulps
    # of the params feed back through the gradients: allow a few of them.
    atol, state_rtol = (5e-7, 1e-4) if name.startswith(("schedule_free", "sam")) else (1e-7, 1e-5)
    # Muon's non-matrix params use the core's NAdam, whose op order differs from optax's
    # (the matrix params match at 1e-5; see the params check below).
    rtol, atol = (1e-4, 1e-6) if name.startswith("muon") else (1e-5, atol)
    params_atol, params_rtol = 1e-6, 1e-5
    if name.startswith(FLOAT32_HPARAMS):
        atol, params_atol = max(atol, HPARAM_ATOL), HPARAM_ATOL
    if name in UNSCALED:
        rtol = params_rtol = UNSCALED_RTOL
    params, loss = make_problem()
    ours = build(cc)
    theirs = build(oc)
    assert layout(ours.init(params)) == layout(theirs.init(params))
    p_ours, s_ours, h_ours = run(ours, params, loss, 10, extra)
    p_theirs, s_theirs, h_theirs = run(theirs, params, loss, 10, extra)
    for step, (u_ours, u_theirs) in enumerate(zip(h_ours, h_theirs)):
        for a, b in zip(jax.tree.leaves(u_ours), jax.tree.leaves(u_theirs)):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{name} step {step}")
    assert layout(s_ours) == layout(s_theirs)
    for a, b in zip(jax.tree.leaves(s_ours), jax.tree.leaves(s_theirs)):
        if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating):
            np.testing.assert_allclose(a, b, rtol=max(rtol, state_rtol), atol=atol)
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_theirs)):
        np.testing.assert_allclose(a, b, rtol=params_rtol, atol=params_atol)


def _galore_cases(m, base):
    numbers = {"w": None, "v": m.GaLoreDimensionNumbers(1, 0), "b": None, "t": m.GaLoreDimensionNumbers((0, 2), 1)}
    return {
        "default": m.galore(0.1, rank=2, update_proj_gap=3),
        "momentum_wd_scale": m.galore(
            0.1, rank=1, update_proj_gap=2, scale=0.5, base_optimizer=base.sgd(1.0, momentum=0.9), weight_decay=0.1
        ),
        "dimension_numbers": m.galore(0.1, rank=2, update_proj_gap=3, weight_dimension_numbers=numbers),
        "schedule_mask_full_rank": m.galore(
            lambda c: 0.1 / (1 + c), update_proj_gap=4, weight_decay=0.2,
            mask={"w": True, "v": False, "b": False, "t": True},
        ),
        "scale_by_galore": m.scale_by_galore(rank=2, update_proj_gap=2, scale=2.0),
    }


@pytest.mark.parametrize("name", sorted(_galore_cases(cc, optcore)))
def test_galore_matches_optax(name):
    shapes = {"w": (5, 3), "v": (3, 6), "b": (3,), "t": (2, 3, 4)}
    _check_galore_matches_optax(_galore_cases(cc, optcore)[name], _galore_cases(oc, optax)[name], shapes, name)


def test_galore_with_one_dimension_numbers_for_all_params_matches_optax():
    # Optax applies a single GaLoreDimensionNumbers to the params with two or more axes;
    # the vector "b" goes through Adam in full (it raised "axis 1 is out of range" here).
    shapes = {"w": (6, 2, 3), "v": (3, 4, 5), "b": (4,), "s": ()}
    ours, theirs = [
        m.galore(0.1, rank=2, update_proj_gap=3, weight_dimension_numbers=m.GaLoreDimensionNumbers(0, (1, 2)))
        for m in (cc, oc)
    ]
    _check_galore_matches_optax(ours, theirs, shapes, "single dimension numbers")


def _check_galore_matches_optax(ours, theirs, shapes, name):
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}
    grads = [{k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()} for _ in range(7)]
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    assert layout(s_ours) == layout(s_theirs)
    assert jax.tree.map(jnp.shape, jax.tree.leaves(s_ours)) == jax.tree.map(jnp.shape, jax.tree.leaves(s_theirs))
    p_ours = p_theirs = params
    update_ours, update_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    for step, g in enumerate(grads):
        u_ours, s_ours = update_ours(g, s_ours, p_ours)
        u_theirs, s_theirs = update_theirs(g, s_theirs, p_theirs)
        # Both use LAPACK's SVD (same signs); the core's Adam bias correction is a few
        # float32 ulps off optax's (about 7e-6 relative), hence rtol 5e-5.
        for a, b in zip(jax.tree.leaves(u_ours), jax.tree.leaves(u_theirs)):
            np.testing.assert_allclose(a, b, rtol=5e-5, atol=1e-6, err_msg=f"{name} step {step}")
        p_ours, p_theirs = optcore.apply_updates(p_ours, u_ours), optax.apply_updates(p_theirs, u_theirs)
    for a, b in zip(jax.tree.leaves(s_ours), jax.tree.leaves(s_theirs)):
        np.testing.assert_allclose(a, b, rtol=5e-5, atol=1e-6)


@pytest.mark.parametrize(
    "preconditioning, adaptive", [("frobenius", True), ("spectral", False), ("aol", True), ("schatten", False)]
)
def test_scale_by_muon_preconditioning_on_batched_matrices_matches_optax(preconditioning, adaptive):
    rng = np.random.default_rng(0)
    shapes = {"w": (5, 3), "v": (3, 6), "t": (2, 3, 4)}
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}
    grads = [{k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()} for _ in range(3)]

    def build(m):
        # "t" is two-by-four matrices batched over axis 1; adaptive takes one dual norm over all of them.
        numbers = {"w": m.MuonDimensionNumbers(), "v": m.MuonDimensionNumbers(), "t": m.MuonDimensionNumbers(0, 2)}
        return m.scale_by_muon(
            preconditioning=preconditioning, adaptive=adaptive, nesterov=not adaptive, weight_dimension_numbers=numbers
        )

    _step_both(build(cc), build(oc), params, grads, rtol=1e-5, atol=1e-6)


def _step_both(ours, theirs, params, grads, **tolerances):
    """Both transformations, jitted, on the same gradients: the updates agree at every step. Returns both states."""
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    update_ours, update_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    for step, g in enumerate(grads):
        u_ours, s_ours = update_ours(g, s_ours, params)
        u_theirs, s_theirs = update_theirs(g, s_theirs, params)
        for a, b in zip(jax.tree.leaves(u_ours), jax.tree.leaves(u_theirs)):
            assert a.dtype == b.dtype
            np.testing.assert_allclose(a, b, err_msg=f"step {step}", **tolerances)
    return s_ours, s_theirs


@pytest.mark.parametrize("key", [7, jax.random.key(7)], ids=["int_key", "typed_key"])
def test_private_aggregate_under_jit_matches_optax_noise(key):
    # Optax turns an int key into jax.random.key(int) and splits it the same
    # way: the same key gives the same noise, under jit, step after step.
    per_example = {"w": jnp.arange(24.0).reshape(4, 2, 3) / 10, "b": jnp.ones((4, 3))}
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    ours = cc.differentially_private_aggregate(0.5, 1.3, key)
    theirs = oc.differentially_private_aggregate(0.5, 1.3, key)
    _step_both(ours, theirs, params, [per_example] * 3, rtol=1e-5, atol=1e-7)


def _complex_normal(rng, shape):
    return jnp.asarray(rng.normal(size=shape) + 1j * rng.normal(size=shape), jnp.complex64)


# Optax 0.2.8's Schatten first step uses X X^T, which is not Hermitian for complex X,
# and returns NaN; ours uses X X^H there too (see test_contrib's complex polar factor test).
@pytest.mark.parametrize("preconditioning", ["frobenius", "spectral", "aol"])
@pytest.mark.parametrize("adaptive, nesterov", [(False, True), (True, False)])
def test_scale_by_muon_on_complex_matrices_matches_optax(preconditioning, adaptive, nesterov):
    # Optax issue 1494: the Newton-Schulz Gram matrices are X X^H and the dual norm is sum(conj(m) u).
    rng = np.random.default_rng(4)
    shapes = {"w": (5, 3), "v": (3, 6), "t": (2, 3, 4)}
    params = {k: _complex_normal(rng, s) for k, s in shapes.items()}
    grads = [{k: _complex_normal(rng, s) for k, s in shapes.items()} for _ in range(3)]

    def build(m):
        numbers = {"w": m.MuonDimensionNumbers(), "v": m.MuonDimensionNumbers(), "t": m.MuonDimensionNumbers(0, 2)}
        return m.scale_by_muon(
            preconditioning=preconditioning, adaptive=adaptive, nesterov=nesterov, weight_dimension_numbers=numbers
        )

    s_ours, s_theirs = _step_both(build(cc), build(oc), params, grads, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(s_ours.mu), jax.tree.leaves(s_theirs.mu)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_muon_on_complex_params_matches_optax():
    # The complex matrix goes to Muon, the complex vector to Adam (|g|^2 in its second moment).
    rng = np.random.default_rng(6)
    params = {"w": _complex_normal(rng, (4, 3)), "b": _complex_normal(rng, (3,))}
    target = {k: _complex_normal(rng, v.shape) for k, v in params.items()}

    def loss(p):
        return sum(jnp.sum(jnp.abs(p[k] - target[k]) ** 2) for k in p)

    def conj_grad(p):  # the steepest-descent direction of a real loss of complex params
        return jax.tree.map(jnp.conj, jax.grad(loss)(p))

    ours, theirs = cc.muon(0.05, adaptive=True), oc.muon(0.05, adaptive=True)
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    assert layout(s_ours) == layout(s_theirs)
    p_ours = p_theirs = params
    step_ours, step_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    for step in range(10):
        u_ours, s_ours = step_ours(conj_grad(p_ours), s_ours, p_ours)
        u_theirs, s_theirs = step_theirs(conj_grad(p_theirs), s_theirs, p_theirs)
        # As in test_matches_optax: the Adam leaf is the core's NAdam, a few ulps off Optax's.
        for a, b in zip(jax.tree.leaves(u_ours), jax.tree.leaves(u_theirs)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=f"step {step}")
        p_ours, p_theirs = optcore.apply_updates(p_ours, u_ours), optax.apply_updates(p_theirs, u_theirs)
    assert np.all(np.isfinite(np.asarray(p_ours["w"])))
    np.testing.assert_allclose(p_ours["w"], p_theirs["w"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "numbers",
    [
        lambda m: {"w1": None, "w2": {"a": m.MuonDimensionNumbers(), "b": None}},
        lambda m: {"w1": m.MuonDimensionNumbers(), "w2": None},
        lambda m: {"w1": m.MuonDimensionNumbers(1, 0), "w2": {"a": None, "b": m.MuonDimensionNumbers()}},
    ],
    ids=["none_for_a_subtree", "numbers_for_a_subtree", "both"],
)
def test_muon_with_a_prefix_tree_of_dimension_numbers_matches_optax(numbers):
    # Optax's muon spreads a number (or None) given for a subtree over its leaves: one
    # label, and one MaskedNode in the Muon and Adam states, per param leaf.
    rng = np.random.default_rng(2)
    normal = lambda shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    params = {"w1": {"a": normal((2, 3)), "b": normal((4, 3))}, "w2": {"a": normal((3, 5)), "b": normal((5, 2))}}
    grads = [jax.tree.map(lambda p: normal(p.shape), params) for _ in range(3)]
    ours = cc.muon(0.05, muon_weight_dimension_numbers=numbers(cc))
    theirs = oc.muon(0.05, muon_weight_dimension_numbers=numbers(oc))
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    assert layout(s_ours) == layout(s_theirs)
    for step, g in enumerate(grads):
        u_ours, s_ours = jax.jit(ours.update)(g, s_ours, params)
        u_theirs, s_theirs = jax.jit(theirs.update)(g, s_theirs, params)
        for a, b in zip(jax.tree.leaves(u_ours), jax.tree.leaves(u_theirs)):
            # rtol as for the muon cases of test_matches_optax (the Adam leaves are the core's NAdam).
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=f"step {step}")
    assert layout(s_ours) == layout(s_theirs)
