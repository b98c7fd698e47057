"""Extra ``update`` arguments follow one convention, core and plugins alike.

An optimizer whose ``update`` needs more than the gradient takes it by
keyword; called without it, ``update`` raises a ``TypeError`` naming the
missing argument, as Python does for a missing required argument
(:func:`optcore.validate.require_update_args`). Checked for every registered
optimizer by leaving out each extra argument of the conformance kit in turn.
"""

from __future__ import annotations

import jax
import pytest

import optcore
import optcore.testing
import registry_cases as rc

EXTRA = tuple(optcore.testing.extra_update_args(rc.small_params(), rc.small_params()))


def _trace_update(case, omitted):
    opt = optcore.with_extra_args_support(case.build())
    params = rc.small_params(case.name)

    def run(params):
        grads = jax.grad(optcore.testing.objective)(params)
        extra = {k: v for k, v in optcore.testing.extra_update_args(params, grads).items() if k != omitted}
        return opt.update(rc.as_gradient(case.name, grads), opt.init(params), params, **extra)

    return jax.eval_shape(run, params)


@pytest.mark.parametrize("case", rc.case_params(rc.optimizer_cases()))
def test_a_missing_extra_argument_is_a_type_error_naming_it(case):
    _trace_update(case, omitted=None)  # with every extra argument, update works
    for name in EXTRA:
        try:
            _trace_update(case, omitted=name)
        except TypeError as err:
            assert f"'{name}'" in str(err), f"{case.name} without {name}: the TypeError does not name it: {err}"
        except Exception as err:  # noqa: BLE001
            pytest.fail(f"{case.name} without {name}: {type(err).__name__} instead of a TypeError naming it: {err}")


def test_the_convention_is_exercised():
    """Some registered optimizers do need extra arguments, so the test above is not vacuous."""
    needing = set()
    for case in rc.optimizer_cases():
        if case.skip:
            continue
        for name in EXTRA:
            try:
                _trace_update(case, omitted=name)
            except TypeError:
                needing.add((case.name, name))
    assert ("polyak_sgd", "value") in needing
    assert all(name in EXTRA for _, name in needing)


@pytest.mark.parametrize("build, missing", [
    (lambda: optcore.scale_by_polyak(), ["value"]),
    (lambda: optcore.scale_by_backtracking_linesearch(max_backtracking_steps=3), ["value", "grad", "value_fn"]),
])
def test_core_transforms_name_every_missing_argument(build, missing):
    opt = build()
    params = {"w": jax.numpy.ones(2)}
    with pytest.raises(TypeError, match=f"missing {len(missing)} required keyword argument") as info:
        opt.update(params, opt.init(params), params)
    for name in missing:
        assert f"'{name}'" in str(info.value)
