"""Every optimizer optcore-lowbit registers keeps optcore's guarantees (the conformance kit).

Twice: with the defaults (the kit's small params stay in float32, below
``min_quantized_size``) and with every leaf quantized in blocks of 4 (so jit,
dtypes, path errors, checkpoints, donation, ``lax.scan`` carries and
``apply_if_finite`` are checked on quantized states, padded blocks included);
and ``adamw_4bit`` once more with rank-1 scales forced on the kit's matrix.
The ``quantize_state`` wrapper is checked around a few core optimizers.
"""

import pytest

import optcore
import optcore.testing
import optcore_lowbit

QUANTIZED = {"min_quantized_size": 1, "block_size": 4}


def test_lowbit_registers_its_optimizers():
    names = {case.name for case in optcore.testing.optimizer_cases("optcore-lowbit")}
    assert names == set(optcore_lowbit.OPTIMIZERS)


@optcore.testing.parametrize_registry(distribution="optcore-lowbit")
def test_every_lowbit_optimizer_conforms(case):
    case.check()


@optcore.testing.parametrize_registry(distribution="optcore-lowbit")
def test_every_lowbit_optimizer_conforms_quantized(case):
    case.check(**QUANTIZED)


@pytest.mark.parametrize("inner,bits,rounding,nonnegative_rounding", [
    ("adamw", 8, "nearest", "nearest"), ("sgd", 4, "nearest", "nearest"), ("adamw", 4, "stochastic", "nearest"),
    ("adamw", 8, "nearest", "stochastic"), ("adamw", 4, "stochastic", "stochastic")])
def test_quantize_state_conforms(inner, bits, rounding, nonnegative_rounding):
    def factory(learning_rate):
        tx = {"adamw": optcore.adamw, "lion": optcore.lion,
              "sgd": lambda lr: optcore.sgd(lr, momentum=0.9)}[inner](learning_rate)
        return optcore_lowbit.quantize_state(tx, bits=bits, min_quantized_size=1, block_size=4, rounding=rounding,
                                             nonnegative_rounding=nonnegative_rounding)

    optcore.testing.check_optimizer(factory, learning_rate=0.01)


def test_adamw_4bit_conforms_with_rank1_scales(monkeypatch):
    """The kit's (2, 3) matrix is too skinny for rank-1 scales by default; force them for every matrix.

    So that jit, dtypes, path errors, bit-identical checkpoints, donation, ``lax.scan`` carries and
    ``apply_if_finite`` run on ``Rank1QuantizedArray`` leaves too (an odd last axis: padded packing).
    """
    from optcore_lowbit import _quantize

    monkeypatch.setattr(_quantize, "RANK1_ENTRIES_PER_MAXIMUM", 0)

    def factory(learning_rate):
        return optcore_lowbit.adamw_4bit(learning_rate, min_quantized_size=1)

    state = factory(0.01).init(optcore.testing.small_params())
    assert isinstance(state[0].nu["layer1"]["w"], optcore_lowbit.Rank1QuantizedArray)
    optcore.testing.check_optimizer(factory, learning_rate=0.01)


def _encoder_traces(monkeypatch, opt, params):
    """How many times tracing ``opt``'s init and update (under ``jax.jit``) runs the quantization encoder."""
    import jax

    from optcore_lowbit import _quantize

    calls = []
    encode = _quantize.encode
    monkeypatch.setattr(_quantize, "encode", lambda *a, **k: calls.append(1) or encode(*a, **k))
    state = jax.jit(opt.init)(params)
    jax.jit(opt.update).lower(params, state, params)
    return len(calls)


def _identical_leaves(count: int, shape: tuple):
    import jax.numpy as jnp

    return {f"layer{i}": jnp.full(shape, 0.5 + i, jnp.float32) for i in range(count)}


@pytest.mark.parametrize("name", [*sorted(optcore_lowbit.OPTIMIZERS), "quantize_state"])
def test_leaves_of_one_shape_are_traced_once(monkeypatch, name):
    """Eight identical quantized leaves cost the tracing of one: init and update run the encoder as often.

    Traced leaf by leaf, a 400-leaf model spent a third of its time to the
    first step in Python. Each optimizer gets leaf shapes of its own, which
    no other test traces (the traces are cached per leaf signature).
    """
    if name == "quantize_state":
        factory = lambda: optcore_lowbit.quantize_state(optcore.adam(0.01), min_quantized_size=1)  # noqa: E731
    else:
        factory = lambda: optcore.get(name)(0.01, min_quantized_size=1)  # noqa: E731
    rows = 24 + 2 * sorted([*optcore_lowbit.OPTIMIZERS, "quantize_state"]).index(name)
    one = _encoder_traces(monkeypatch, factory(), _identical_leaves(1, (rows, 36)))
    eight = _encoder_traces(monkeypatch, factory(), _identical_leaves(8, (rows, 38)))
    assert one > 0
    assert eight == one
