"""Optimizer states survive checkpoints bit for bit, for every registered optimizer.

A run saved after ``SAVE_AT`` steps (with pickle, or as a ``numpy.savez``
archive of its leaves restored onto the treedef of a fresh ``init``) and
continued must give exactly the params and state of an uninterrupted run, also
inside ``inject_hyperparams`` and ``MultiSteps``; and a fresh process must read
the saved state back with the same tree structure.
"""

from __future__ import annotations

import inspect
import json
import pickle

import jax
import pytest

import optcore
import optcore.testing
import registry_cases as rc
from plugin_fixtures import run_json

STEPS, SAVE_AT = 4, 2
CASES = rc.optimizer_cases()
PLAIN, WRAPPED = "plain", "inject_hyperparams+MultiSteps"


def _build(case: rc.Case, variant: str):
    if variant == PLAIN:
        return case.build()
    # Integer arguments (sizes, intervals, PRNG seeds) are structural, as in Optax,
    # where inject_hyperparams(adafactor) without static_args fails to trace too.
    static = tuple(k for k, v in _arguments(case).items() if isinstance(v, int) and not isinstance(v, bool))
    inner = optcore.inject_hyperparams(case.factory, static_args=static)(**case.kwargs)
    return optcore.MultiSteps(inner, every_k_schedule=2).gradient_transformation()


def _arguments(case: rc.Case) -> dict:
    bound = inspect.signature(case.factory).bind_partial(**case.kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _opt_and_step(case: rc.Case, variant: str):
    return rc.jitted_step(case, variant, build=None if variant == PLAIN else lambda c: _build(c, variant))


def _run(step, params, state, steps):
    for _ in range(steps):
        params, state = step(params, state, rc.objective_grad(params))
    return params, state


# Known failures in other modules, kept visible (strict: they fail the suite once fixed, so the mark goes).
KNOWN_BUGS: dict = {}


def _variants():
    out = []
    for param in rc.case_params(CASES):
        case = param.values[0]
        out.append(pytest.param(case, PLAIN, id=f"{case.name}-{PLAIN}", marks=param.marks))
        marks = list(param.marks)
        if case.name in rc.PER_EXAMPLE:
            marks.append(pytest.mark.skip(reason="MultiSteps accumulates params-shaped gradients; "
                                                 f"{case.name} takes per-example gradients"))
        if (case.name, WRAPPED) in KNOWN_BUGS:
            marks.append(pytest.mark.xfail(reason=KNOWN_BUGS[case.name, WRAPPED], strict=True))
        out.append(pytest.param(case, WRAPPED, id=f"{case.name}-{WRAPPED}", marks=marks))
    return out


@pytest.mark.parametrize("case, variant", _variants())
def test_restore_and_continue_is_bit_identical(case, variant):
    """pickle (params and state together) and numpy.savez (onto a fresh init's treedef) round trips."""
    harness = rc.harness(case, variant, build=None if variant == PLAIN else lambda c: _build(c, variant))
    optcore.testing.check_checkpoint(harness, rc.small_params(case.name), steps=STEPS, save_at=SAVE_AT)


@pytest.mark.parametrize("case", [c for c in CASES if c.skip is None], ids=lambda c: c.name)
def test_init_of_abstract_params_is_a_restore_target(case):
    """``init`` of ``jax.ShapeDtypeStruct`` params (as Optax's takes them) has the state's layout.

    Fields that start at the params' values (schedule-free's ``z``, COCOB's
    initial particles) stay abstract, as in Optax; a state that starts from
    a function of them (DoG's distance) says how to get its layout instead.
    """
    params = rc.small_params(case.name)
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    opt = case.build()
    try:
        state = opt.init(abstract)
    except TypeError as err:
        assert "jax.eval_shape(opt.init, params)" in str(err), err
        return
    real = opt.init(params)
    assert jax.tree.structure(state) == jax.tree.structure(real)
    layout = lambda tree: [(tuple(x.shape), x.dtype) for x in jax.tree.leaves(tree)]  # noqa: E731
    assert layout(state) == layout(real)


def test_restored_state_must_match_a_fresh_init():
    """Restoring leaves onto a different optimizer's treedef fails loudly, not silently."""
    params = rc.small_params()
    adam_state = optcore.adam(1e-3).init(params)
    with pytest.raises(AssertionError, match="leaves saved"):
        rc.load_leaves(rc.save_leaves(adam_state), like=optcore.sgd(1e-3, momentum=0.9).init(params))


def test_states_load_in_a_fresh_process(tmp_path):
    """Pickles and savez archives written here load in a new interpreter onto the
    treedef of that interpreter's own fresh init, with identical structure and bytes."""
    written = []
    for case in CASES:
        if case.skip:
            continue
        opt, step = _opt_and_step(case, PLAIN)
        params0 = rc.small_params(case.name)
        _, state_k = _run(step, params0, opt.init(params0), SAVE_AT)
        (tmp_path / f"{case.name}.pkl").write_bytes(pickle.dumps(state_k))
        (tmp_path / f"{case.name}.npz").write_bytes(rc.save_leaves(state_k))
        written.append(case.name)
    (tmp_path / "names.json").write_text(json.dumps(written))

    code = f"""
        import json, pathlib, pickle, warnings
        warnings.simplefilter("ignore")
        import jax
        import registry_cases as rc
        root = pathlib.Path({str(tmp_path)!r})
        cases = {{c.name: c for c in rc.optimizer_cases()}}
        out = {{}}
        for name in json.loads((root / "names.json").read_text()):
            case = cases[name]
            fresh = case.build().init(rc.small_params(name))
            from_pickle = pickle.loads((root / f"{{name}}.pkl").read_bytes())
            from_npz = rc.load_leaves((root / f"{{name}}.npz").read_bytes(), like=fresh)
            rc.assert_bitwise_equal(from_npz, from_pickle, name)
            out[name] = [str(jax.tree.structure(fresh)), str(jax.tree.structure(from_pickle))]
        print(json.dumps(out))
    """
    import os

    data, _ = run_json(code, env={"PYTHONPATH": os.path.dirname(__file__)})
    assert sorted(data) == sorted(written)
    for name in written:
        opt, _ = _opt_and_step(next(c for c in CASES if c.name == name), PLAIN)
        here = str(jax.tree.structure(opt.init(rc.small_params(name))))
        fresh_there, pickled_there = data[name]
        assert fresh_there == here, f"{name}: the state tree differs between processes"
        assert pickled_there == here, f"{name}: the unpickled state has another tree structure"
