"""Optimizer states can be donated, carried by ``lax.scan`` and mapped by ``tree_map_params``.

Real training loops jit their step with ``donate_argnums`` over params and
state, so XLA reuses their memory in place. That breaks if two state leaves
share one buffer (XLA: "Attempt to donate the same buffer twice"), if a state
leaf *is* a params buffer, or if ``init`` returns an array the optimizer holds
(donating it frees the optimizer's own copy, and the next ``init`` returns a
deleted array). For every registered optimizer, with ``init`` run eagerly and
under ``jit``:

* no two state leaves share a buffer, none is a params buffer, and two inits
  share none (nothing held by the optimizer is handed out);
* a donated jitted step gives bit for bit the numbers of an undonated one,
  over several steps, and the optimizer still works afterwards;
* the state after ``update`` has the tree structure, shapes, dtypes and weak
  types of the state from ``init``, so it is a valid ``lax.scan`` carry, and
  a scan over a few steps matches a loop of steps;
* ``tree_map_params`` maps exactly the state's params-shaped parts.

Params include a scalar (rank 0) leaf and a matrix, nested.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
import registry_cases as rc

CASES = rc.case_params(rc.optimizer_cases())
STEPS = 3
INITS = {"eager": lambda opt: opt.init, "jit": lambda opt: jax.jit(opt.init)}


def _buffers(tree):
    """``(path, buffer address)`` of every array leaf (typed PRNG keys by their key data)."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.Array):
            array = jax.random.key_data(leaf) if rc.is_key(leaf) else leaf
            out.append((jax.tree_util.keystr(path), array.unsafe_buffer_pointer()))
    return out


def _leaf_types(tree):
    """Structure, and (shape, dtype, weak_type) per leaf: what ``lax.scan`` requires of a carry."""
    def describe(leaf):
        aval = jax.typeof(leaf)
        return jnp.shape(leaf), aval.dtype, getattr(aval, "weak_type", False)

    return jax.tree.structure(tree), [describe(leaf) for leaf in jax.tree.leaves(tree)]


@pytest.mark.parametrize("init_mode", list(INITS))
@pytest.mark.parametrize("case", CASES)
def test_state_buffers_are_its_own(case, init_mode):
    opt = case.build()
    params = rc.small_params(case.name)
    init = INITS[init_mode](opt)
    state, again = init(params), init(params)
    state_buffers = _buffers(state)
    owners: dict = {}
    for path, address in state_buffers:
        assert address not in owners, f"state{path} shares its buffer with state{owners[address]}"
        owners[address] = path
    for path, address in _buffers(params):
        assert address not in owners, f"state{owners[address]} is the buffer of params{path}"
    for path, address in _buffers(again):
        assert address not in owners, (
            f"two inits both return one array at state{path}: an array held by the optimizer, which donation frees"
        )


@pytest.mark.parametrize("init_mode", list(INITS))
@pytest.mark.parametrize("case", CASES)
def test_donated_step_matches_undonated(case, init_mode):
    # An optimizer of its own (a variant of the shared step cache): should it hand
    # out an array it holds, donating it must not break the other tests' optimizer.
    opt, plain_step = rc.jitted_step(case, "donation", build=lambda c: c.build())
    donated_step = jax.jit(lambda p, s, g: rc.step(opt, case.name, p, s, g), donate_argnums=(0, 1))
    init = INITS[init_mode](opt)

    def run(step):
        params = rc.small_params(case.name)
        state = init(params)
        for _ in range(STEPS):
            params, state = step(params, state, rc.objective_grad(params))
        return params, state

    expected = run(plain_step)
    _assert_same_numbers(run(donated_step), expected, "donated run")
    # The optimizer object survives donation: a fresh init (which would return a
    # donated, deleted array it holds) and another run give the same numbers.
    _assert_same_numbers(run(donated_step), expected, "second donated run")
    rc.assert_bitwise_equal(run(plain_step), expected, "undonated run after donation")


def _assert_same_numbers(actual, expected, what):
    """Same structure, shapes and dtypes, values equal to float32 rounding.

    Donation is a separate compilation, in which XLA may fuse (and so round)
    a reduction differently: prodigy's ``numerator_weighted`` moves by an ulp.
    """
    assert jax.tree.structure(actual) == jax.tree.structure(expected), f"{what}: structure differs"
    for (path, a), e in zip(jax.tree_util.tree_flatten_with_path(actual)[0], jax.tree.leaves(expected)):
        a, e = rc.raw(a), rc.raw(e)
        where = f"{what}{jax.tree_util.keystr(path)}"
        assert (a.dtype, a.shape) == (e.dtype, e.shape), f"{where}: {a.dtype}{a.shape} != {e.dtype}{e.shape}"
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=0, err_msg=where)


@pytest.mark.parametrize("init_mode", list(INITS))
@pytest.mark.parametrize("case", CASES)
def test_state_is_a_scan_carry(case, init_mode):
    opt, step = rc.jitted_step(case)
    params = rc.small_params(case.name)
    state0 = INITS[init_mode](opt)(params)
    _, state1 = step(params, state0, rc.objective_grad(params))
    assert _leaf_types(state1) == _leaf_types(state0), "update changes the state's layout"

    def body(carry, _):
        return rc.step(opt, case.name, *carry), None

    scanned, _ = jax.jit(lambda c: jax.lax.scan(body, c, None, length=STEPS))((params, state0))
    looped = (params, state0)
    for _ in range(STEPS):
        looped = step(*looped, rc.objective_grad(looped[0]))
    assert _leaf_types(scanned) == _leaf_types(looped)
    for got, want in zip(jax.tree.leaves(scanned), jax.tree.leaves(looped)):
        np.testing.assert_allclose(rc.raw(got), rc.raw(want), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------
# tree_map_params: the params-shaped parts of every optimizer's state.
# ---------------------------------------------------------------------------


class _Other:
    """Marks a leaf that ``transform_non_params`` was applied to."""

    def __init__(self, leaf):
        self.leaf = leaf


def params_like_parts(params):
    """A predicate for the parts of a state laid out like ``params``.

    The reference for :func:`optcore.tree_map_params`, found from the state
    alone: a part is params-shaped if the params' tree structure is a prefix
    of its own. Its leaves may then be more than arrays: a
    :class:`optcore.MaskedNode` for a leaf the optimizer does not touch, the
    list of per-axis accumulators of ``sm3``.
    """
    params_def = jax.tree.structure(params)

    def is_params_like(node):
        if not isinstance(node, (dict, list, tuple)) or isinstance(node, optcore.MaskedNode):
            return False
        try:
            params_def.flatten_up_to(node)
        except (ValueError, TypeError):
            return False
        return True

    return is_params_like


@pytest.mark.parametrize("case", CASES)
def test_tree_map_params_maps_exactly_the_params_shaped_parts(case):
    opt = case.build()
    params = rc.small_params(case.name)
    state = opt.init(params)
    mapped = optcore.tree_map_params(opt, lambda p: p * 2, state, transform_non_params=_Other)

    is_params_like = params_like_parts(params)
    expected_paths = set()
    for path, part in jax.tree_util.tree_flatten_with_path(state, is_leaf=is_params_like)[0]:
        if is_params_like(part):
            expected_paths.update(path + sub for sub, _ in jax.tree_util.tree_flatten_with_path(part)[0])

    mapped_leaves = jax.tree_util.tree_flatten_with_path(mapped, is_leaf=lambda x: isinstance(x, _Other))[0]
    state_leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    assert [path for path, _ in mapped_leaves] == [path for path, _ in state_leaves]
    for (path, got), (_, leaf) in zip(mapped_leaves, state_leaves):
        where = f"state{jax.tree_util.keystr(path)}"
        if path in expected_paths:
            assert not isinstance(got, _Other), f"{where} is params-shaped but was not mapped"
            np.testing.assert_array_equal(got, leaf * 2, err_msg=where)
        else:
            assert isinstance(got, _Other) and got.leaf is leaf, f"{where} is not params-shaped but was mapped"
