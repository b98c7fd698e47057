"""The guarantees every optimizer keeps, one function each.

Each check takes a :class:`Harness` (an optimizer and how to call its
``update``) and raises ``AssertionError`` saying what broke; it returns
nothing when the guarantee holds. :func:`optcore.testing.check_optimizer`
runs them on a factory; the core's registry-wide tests run them on every
registered optimizer.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from optcore import base, updates as _updates
from optcore.testing import _trees
from optcore.transforms import apply_if_finite

UpdateKwargs = Union[None, dict, Callable[[Any, Any], dict]]


class Harness:
    """An optimizer, and how to take a step with it on :func:`~optcore.testing.objective`.

    Args:
      opt: the gradient transformation (anything with ``init`` and ``update``).
      update_kwargs: the extra ``update`` arguments: a dict, a function
        ``(params, grads) -> dict``, or ``None`` for
        :func:`~optcore.testing.extra_update_args` (the objective's ``value``,
        ``grad``, ``value_fn`` and ``obj_fn``), which an ``update`` that takes
        none of them ignores.
      per_example: the optimizer takes per-example gradients (a leading batch
        axis, as differentially private SGD does); the checks pass a batch of one.
    """

    def __init__(self, opt: Any, update_kwargs: UpdateKwargs = None, *, per_example: bool = False):
        base.check_gradient_transformation(opt, "the optimizer under test")
        self.opt = opt
        self._extra = base.with_extra_args_support(opt)
        self.update_kwargs = update_kwargs
        self.per_example = per_example
        self._jitted: Optional[Callable] = None

    def extra_args(self, params: Any, grads: Any) -> dict:
        if self.update_kwargs is None:
            return _trees.extra_update_args(params, grads)
        if callable(self.update_kwargs):
            return dict(self.update_kwargs(params, grads))
        return dict(self.update_kwargs)

    def gradient(self, grads: Any) -> Any:
        """``grads`` in the form the optimizer takes (a batch of one for per-example optimizers)."""
        return jax.tree.map(lambda g: g[None], grads) if self.per_example else grads

    def update(self, grads: Any, state: Any, params: Any):
        """``opt.update`` with the extra arguments."""
        return self._extra.update(self.gradient(grads), state, params, **self.extra_args(params, grads))

    def step(self, params: Any, state: Any, grads: Any = None):
        """One step: ``(params, state)`` after applying the update for ``grads`` (default: the objective's)."""
        if grads is None:
            grads = jax.grad(_trees.objective)(params)
        new_updates, state = self.update(grads, state, params)
        return _updates.apply_updates(params, new_updates), state

    @property
    def jitted_step(self) -> Callable:
        """:meth:`step` under ``jax.jit`` (gradients as an argument), compiled once per harness."""
        if self._jitted is None:
            self._jitted = jax.jit(self.step)
        return self._jitted

    def run(self, step: Callable, params: Any, state: Any, steps: int):
        for _ in range(steps):
            params, state = step(params, state, _trees.objective_grad(params))
        return params, state


INIT_MODES = ("eager", "jit")


def _init(harness: Harness, mode: str) -> Callable:
    return harness.opt.init if mode == "eager" else jax.jit(harness.opt.init)


def check_jit_matches_eager(harness: Harness, params: Any, *, steps: int = 2, rtol: float = 1e-4,
                            atol: float = 1e-6) -> None:
    """A jitted ``init`` and step give the numbers of eager ones, over ``steps`` steps.

    Tolerances allow XLA's fused float32 rounding, not a different result: an
    update that reads a Python value changed between calls (a host counter, a
    clock) is compiled as a constant, and differs.
    """
    eager = (params, harness.opt.init(params))
    jitted = (params, jax.jit(harness.opt.init)(params))
    _trees.assert_close(jitted[1], eager[1], "state from jit(init) vs eager init", rtol=rtol, atol=atol)
    for k in range(steps):
        eager = harness.step(*eager, jax.grad(_trees.objective)(eager[0]))
        jitted = harness.jitted_step(*jitted, _trees.objective_grad(jitted[0]))
        _trees.assert_close(jitted, eager, f"jitted vs eager (params, state) after step {k + 1}", rtol=rtol, atol=atol)


def check_dtypes(harness: Harness, params: Any, *, updates_keep_param_dtypes: bool = True) -> None:
    """Updates have the params' dtypes and the state keeps the dtypes ``init`` gave it.

    ``params`` should mix float32, bfloat16 and float16 leaves. With
    ``updates_keep_param_dtypes=False`` (a factory asked for another moment
    dtype, ``mu_dtype``, which may promote the updates as in Optax) only the
    state's dtypes and the params' dtypes after ``apply_updates`` are checked.
    """
    state = harness.opt.init(params)
    grads = jax.grad(_trees.objective)(params)
    new_updates, new_state = jax.jit(harness.update)(grads, state, params)
    param_dtypes = jax.tree.map(lambda p: jnp.dtype(p.dtype), params)
    if updates_keep_param_dtypes:
        got = jax.tree.map(lambda u: jnp.dtype(u.dtype), new_updates)
        assert got == param_dtypes, f"updates have dtypes {got}, the params {param_dtypes}"
    applied = jax.tree.map(lambda p: jnp.dtype(p.dtype), _updates.apply_updates(params, new_updates))
    assert applied == param_dtypes, f"params after apply_updates have dtypes {applied}, before {param_dtypes}"
    before = [(jax.tree_util.keystr(path), jnp.asarray(x).dtype) for path, x in
              jax.tree_util.tree_flatten_with_path(state)[0]]
    after = [(jax.tree_util.keystr(path), jnp.asarray(x).dtype) for path, x in
             jax.tree_util.tree_flatten_with_path(new_state)[0]]
    assert jax.tree.structure(new_state) == jax.tree.structure(state), "update changed the state's structure"
    for (path, want), (_, got) in zip(before, after):
        assert got == want, f"state{path}: init gives {want}, update returns {got}"
    assert not _trees.nonfinite_paths(new_state), f"non-finite state at {_trees.nonfinite_paths(new_state)}"


def _traced_step(harness: Harness, params: Any, grads: Any):
    def step(params, grads):
        new_updates, _ = harness.update(grads, harness.opt.init(params), params)
        return _updates.apply_updates(params, new_updates)

    return jax.eval_shape(step, params, grads)


def _raises_naming(path: str, call: Callable, what: str) -> None:
    try:
        call()
    except ValueError as err:
        assert path in str(err), f"{what}: the ValueError does not name the path {path}: {err}"
        return
    except Exception as err:  # noqa: BLE001 - any other error is the failure being reported
        raise AssertionError(f"{what}: expected a ValueError naming {path}, got {type(err).__name__}: {err}") from err
    raise AssertionError(f"{what}: no error (expected a ValueError naming {path})")


def check_path_errors(harness: Harness, params: Any) -> None:
    """Gradients that do not match the params fail with a ``ValueError`` naming the leaf's path.

    Two mismatches, traced (not run) through ``init``, ``update`` and
    ``apply_updates``: the first matrix leaf transposed, and the last leaf
    missing. ``params`` must be a dict with a matrix among its leaves.
    """
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    path, matrix = next((p, x) for p, x in flat if jnp.ndim(x) == 2 and x.shape[0] != x.shape[1])
    transposed = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.zeros(x.shape[::-1], x.dtype) if p == path else jnp.zeros_like(x), params
    )
    name = jax.tree_util.keystr(path)
    _raises_naming(name, lambda: _traced_step(harness, params, transposed), f"gradient {name} transposed")
    last_key = list(params)[-1]
    missing = {k: jax.tree.map(jnp.zeros_like, v) for k, v in params.items() if k != last_key}
    name = jax.tree_util.keystr((jax.tree_util.DictKey(last_key),))
    _raises_naming(name, lambda: _traced_step(harness, params, missing), f"gradient {name} missing")


def check_checkpoint(harness: Harness, params: Any, *, steps: int = 4, save_at: int = 2) -> None:
    """A run saved after ``save_at`` steps and restored continues bit for bit as the uninterrupted run.

    Saved with :mod:`pickle` (params and state together), and as a
    ``numpy.savez`` archive of the leaves restored onto a fresh ``init``'s
    treedef. And the state matters: if it changed during the first steps,
    continuing from a fresh ``init`` instead must give other numbers (an
    optimizer whose update ignores its state would pass any round trip).
    """
    step = harness.jitted_step
    expected = harness.run(step, params, harness.opt.init(params), steps)
    params_k, state_k = harness.run(step, params, harness.opt.init(params), save_at)

    restored = pickle.loads(pickle.dumps((params_k, state_k)))
    final = harness.run(step, *restored, steps - save_at)
    _trees.assert_bitwise_equal(final[0], expected[0], "params after a pickle round trip")
    _trees.assert_bitwise_equal(final[1], expected[1], "state after a pickle round trip")

    fresh = harness.opt.init(params)
    restored_state = _trees.load_leaves(_trees.save_leaves(state_k), like=fresh)
    restored_params = _trees.load_leaves(_trees.save_leaves(params_k), like=params)
    final = harness.run(step, restored_params, restored_state, steps - save_at)
    _trees.assert_bitwise_equal(final[0], expected[0], "params after a savez round trip")
    _trees.assert_bitwise_equal(final[1], expected[1], "state after a savez round trip")

    if _floats_changed(fresh, state_k):
        grads = _trees.objective_grad(params_k)
        from_saved = jax.jit(harness.update)(grads, state_k, params_k)
        from_fresh = jax.jit(harness.update)(grads, fresh, params_k)
        assert _floats_changed(from_saved, from_fresh), (
            "the update ignores the state: from the saved state and from a fresh init it returns the same "
            "updates and the same floating-point state, although the saved state's floating-point leaves differ "
            "from the fresh ones"
        )


def _floats_changed(before: Any, after: Any) -> bool:
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        if _trees.is_key(a) or not jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact):
            continue
        if not np.array_equal(_trees.raw(a), _trees.raw(b)):
            return True
    return False


def check_state_buffers(harness: Harness, params: Any, *, init_mode: str = "eager") -> None:
    """No two state leaves share a buffer, none is a params buffer, and two inits share none.

    What ``jax.jit(step, donate_argnums=...)`` needs: a donated buffer must
    be donated once, must not be the params', and must not be an array the
    optimizer holds (donating it would delete the optimizer's copy).
    """
    init = _init(harness, init_mode)
    state, again = init(params), init(params)
    owners: dict = {}
    for path, address in _trees.buffers(state):
        assert address not in owners, f"state{path} shares its buffer with state{owners[address]}"
        owners[address] = path
    for path, address in _trees.buffers(params):
        assert address not in owners, f"state{owners[address]} is the buffer of params{path}"
    for path, address in _trees.buffers(again):
        assert address not in owners, (
            f"two inits both return one array at state{path}: an array held by the optimizer, which donation frees"
        )


def check_donation(harness: Harness, params_fn: Callable[[], Any], *, init_mode: str = "eager",
                   steps: int = 3) -> None:
    """A step jitted with params and state donated gives the numbers of an undonated one, twice.

    ``params_fn`` makes fresh params (donation deletes them). Values may
    differ by float32 rounding only: donation is a separate compilation, in
    which XLA may fuse a reduction differently.
    """
    plain = harness.jitted_step
    donated = jax.jit(harness.step, donate_argnums=(0, 1))
    init = _init(harness, init_mode)

    def run(step):
        params = params_fn()
        return harness.run(step, params, init(params), steps)

    expected = run(plain)
    _trees.assert_close(run(donated), expected, "donated run")
    # The optimizer survives donation: a fresh init and another run give the same numbers.
    _trees.assert_close(run(donated), expected, "second donated run")
    _trees.assert_bitwise_equal(run(plain), expected, "undonated run after donation")


def check_scan_carry(harness: Harness, params: Any, *, init_mode: str = "eager", steps: int = 3) -> None:
    """The state after ``update`` has the layout of ``init``'s, and ``lax.scan`` over steps equals a loop."""
    state0 = _init(harness, init_mode)(params)
    _, state1 = harness.jitted_step(params, state0, _trees.objective_grad(params))
    assert _trees.leaf_types(state1) == _trees.leaf_types(state0), (
        f"update changes the state's layout (structure, shape, dtype, weak type): "
        f"{_trees.leaf_types(state0)} -> {_trees.leaf_types(state1)}"
    )

    def body(carry, _):
        return harness.step(*carry), None

    scanned, _ = jax.jit(lambda c: jax.lax.scan(body, c, None, length=steps))((params, state0))
    looped = harness.run(harness.jitted_step, params, state0, steps)
    assert _trees.leaf_types(scanned) == _trees.leaf_types(looped), "scan and loop give different layouts"
    _trees.assert_close(scanned, looped, "lax.scan vs a loop of jitted steps", rtol=1e-5, atol=1e-7)


def check_apply_if_finite(harness: Harness, params: Any, *, first_leaf_path: Optional[tuple] = None) -> None:
    """Under :func:`optcore.apply_if_finite`, NaN/Inf gradient steps leave params and state bit-identical.

    Each skip is counted; a finite gradient afterwards is applied and resets
    the consecutive count.
    """
    finite = Harness(apply_if_finite(harness.opt, max_consecutive_errors=3), harness.update_kwargs,
                     per_example=harness.per_example)
    step = finite.jitted_step
    good = jax.grad(_trees.objective)(params)
    params, state = step(params, finite.opt.init(params), good)
    assert int(state.total_notfinite) == 0 and bool(state.last_finite), "a finite first step was counted as skipped"
    path = first_leaf_path or jax.tree_util.tree_flatten_with_path(params)[0][0][0]

    def poisoned(value):
        return jax.tree_util.tree_map_with_path(
            lambda p, g: g.reshape(-1).at[0].set(value).reshape(g.shape) if p == path else g, good
        )

    for count, bad_value in enumerate((np.nan, np.inf, -np.inf), start=1):
        new_params, new_state = step(params, state, poisoned(bad_value))
        _trees.assert_bitwise_equal(new_params, params, f"params after a {bad_value} gradient")
        _trees.assert_bitwise_equal(new_state.inner_state, state.inner_state, f"inner state after a {bad_value} gradient")
        assert int(new_state.total_notfinite) == count and int(new_state.notfinite_count) == count
        assert not bool(new_state.last_finite)
        params, state = new_params, new_state
    new_params, state = step(params, state, good)
    assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 3 and bool(state.last_finite)
    assert not _trees.nonfinite_paths(new_params), f"non-finite params at {_trees.nonfinite_paths(new_params)}"
