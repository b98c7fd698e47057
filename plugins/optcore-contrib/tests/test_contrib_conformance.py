"""Every optimizer optcore-contrib registers keeps optcore's guarantees (the conformance kit).

Arguments that some optimizers require are supplied here; dpsgd takes
per-example gradients. Known faults fixed elsewhere stay visible as strict
xfails (the mark must go once fixed).
"""

import pytest

import optcore.testing

ARGUMENTS = {"dpsgd": {"l2_norm_clip": 1.0, "noise_multiplier": 0.1, "seed": 0}}
KNOWN_BUGS: dict[str, str] = {}  # name -> reason, marked as a strict xfail


def _cases():
    out = []
    for param in optcore.testing.case_params(
        optcore.testing.optimizer_cases("optcore-contrib", arguments=ARGUMENTS, per_example=["dpsgd"])
    ):
        marks = list(param.marks)
        if param.id in KNOWN_BUGS:
            marks.append(pytest.mark.xfail(reason=KNOWN_BUGS[param.id], strict=True))
        out.append(pytest.param(*param.values, id=param.id, marks=marks))
    return out


def test_contrib_registers_optimizers():
    assert len(optcore.testing.optimizer_cases("optcore-contrib")) >= 10


@pytest.mark.parametrize("case", _cases())
def test_every_contrib_optimizer_conforms(case):
    case.check()


@pytest.mark.parametrize("argument", ["b1", "b2"])
def test_ademamix_refuses_a_bias_corrected_decay_of_one(argument):
    """m_hat = m / (1 - b1^t) divides by zero at b1 = 1: a ValueError at construction, not a NaN step."""
    import jax.numpy as jnp
    import numpy as np

    import optcore_contrib

    with pytest.raises(ValueError, match=rf"{argument} must be in \[0.0, 1.0\)"):
        optcore_contrib.ademamix(0.01, **{argument: 1.0})
    opt = optcore_contrib.ademamix(0.01, **{argument: 0.999})  # just below 1 is fine and finite
    params = jnp.ones(3)
    updates, _ = opt.update(jnp.full(3, 0.5), opt.init(params), params)
    assert np.isfinite(np.asarray(updates)).all()
