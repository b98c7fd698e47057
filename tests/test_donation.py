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
import optcore.testing
import registry_cases as rc

CASES = rc.case_params(rc.optimizer_cases())
STEPS = 3
INIT_MODES = optcore.testing.INIT_MODES


@pytest.mark.parametrize("init_mode", INIT_MODES)
@pytest.mark.parametrize("case", CASES)
def test_state_buffers_are_its_own(case, init_mode):
    optcore.testing.check_state_buffers(rc.harness_of(case.name, case.build()), rc.small_params(case.name),
                                        init_mode=init_mode)


@pytest.mark.parametrize("init_mode", INIT_MODES)
@pytest.mark.parametrize("case", CASES)
def test_donated_step_matches_undonated(case, init_mode):
    # An optimizer of its own (a variant of the shared harness cache): should it hand
    # out an array it holds, donating it must not break the other tests' optimizer.
    harness = rc.harness(case, "donation", build=lambda c: c.build())
    optcore.testing.check_donation(harness, lambda: rc.small_params(case.name), init_mode=init_mode, steps=STEPS)


@pytest.mark.parametrize("init_mode", INIT_MODES)
@pytest.mark.parametrize("case", CASES)
def test_state_is_a_scan_carry(case, init_mode):
    optcore.testing.check_scan_carry(rc.harness(case), rc.small_params(case.name), init_mode=init_mode, steps=STEPS)


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
