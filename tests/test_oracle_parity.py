"""The parity table is current and shows no missing Optax name (oracle env: optax and every plugin installed)."""

import sys
from pathlib import Path

import pytest

optax = pytest.importorskip("optax")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import parity  # noqa: E402


def test_parity_table_is_current_and_complete():
    table = parity.table()
    assert (ROOT / "docs" / "parity.md").read_text() == table, "run `python docs/parity.py`"
    missing = [line for line in table.splitlines() if line.endswith(("| missing |", "| no warning |"))]
    assert missing == []


# -- Optax's deprecated aliases (served through module __getattr__, absent from dir()) ------------

import warnings  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import optcore  # noqa: E402

DEPRECATED = parity.optax_deprecated_names()
# Optax's message for tree_add_scalar_mul names tree_scalar_mul and tree_scale (a slip); ours names the right pair.
OPTAX_MESSAGE_SLIPS = {
    "tree_add_scalar_mul": ("tree_scalar_mul is deprecated: use optax.tree_utils.tree_scale", "tree_add_scalar_mul is deprecated: use optax.tree_utils.tree_add_scale")
}


def _optax_entry(namespace, name):
    module = optax
    for part in filter(None, namespace.split(".")):
        module = getattr(module, part)
    return vars(module)["_deprecations"][name]


def _optcore_module(namespace):
    module = optcore
    for part in filter(None, namespace.split(".")):
        module = getattr(module, part)
    return module


def test_the_deprecation_tables_were_found():
    names = {(ns, n) for ns, n, _ in DEPRECATED}
    assert {("tree_utils", "tree_l2_norm"), ("", "dpsgd"), ("", "DifferentiallyPrivateAggregateState")} <= names


@pytest.mark.parametrize("namespace,name,served", DEPRECATED, ids=lambda v: str(v))
def test_every_optax_deprecated_name_resolves_at_the_same_place_and_warns_alike(namespace, name, served):
    optax_message, _ = _optax_entry(namespace, name)
    module = _optcore_module(namespace)
    if not served:  # Optax raises AttributeError (accelerated deprecation): so does optcore
        with pytest.raises(AttributeError):
            getattr(module, name)
        return
    with pytest.warns(DeprecationWarning) as caught:
        obj = getattr(module, name)
    assert obj is not None
    slip = OPTAX_MESSAGE_SLIPS.get(name)
    if slip:
        optax_message = optax_message.replace(*slip)
    expected = optax_message.replace("optax.", "optcore.")
    assert [str(w.message) for w in caught if w.category is DeprecationWarning] == [expected]
    # Hidden from dir(), as in Optax, and not part of __all__.
    assert name not in dir(module) and name not in getattr(module, "__all__", ())


def test_plugin_deprecated_aliases_are_the_contrib_objects_and_silent_there():
    pytest.importorskip("optcore_contrib")
    for name in ("dpsgd", "differentially_private_aggregate", "DifferentiallyPrivateAggregateState"):
        with pytest.warns(DeprecationWarning):
            top_level = getattr(optcore, name)
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            assert top_level is getattr(optcore.contrib, name)
            assert top_level is optcore.get(name)
    with pytest.warns(DeprecationWarning):
        state_type = optcore.DifferentiallyPrivateAggregateState
    with pytest.warns(DeprecationWarning):
        optax_state_type = optax.DifferentiallyPrivateAggregateState
    assert state_type._fields == optax_state_type._fields


def _tree(seed):
    rng = np.random.default_rng(seed)
    return {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": [rng.standard_normal(5).astype(np.float32), np.float32(-2.5)]}


@pytest.mark.parametrize(
    "name,replacement",
    [
        ("tree_l1_norm", lambda t: optcore.tree_utils.tree_norm(t, ord=1)),
        ("tree_l2_norm", lambda t: optcore.tree_utils.tree_norm(t)),
        ("tree_linf_norm", lambda t: optcore.tree_utils.tree_norm(t, ord=np.inf)),
    ],
)
def test_deprecated_tree_norms_equal_their_replacement_and_optax(name, replacement):
    tree = _tree(0)
    with pytest.warns(DeprecationWarning):
        ours = getattr(optcore.tree_utils, name)
    with pytest.warns(DeprecationWarning):
        theirs = getattr(optax.tree_utils, name)
    np.testing.assert_allclose(ours(tree), replacement(tree), rtol=1e-6)
    np.testing.assert_allclose(ours(tree), theirs(tree), rtol=1e-5)
    np.testing.assert_allclose(jax.jit(ours)(tree), theirs(tree), rtol=1e-5)


def test_deprecated_tree_scalar_muls_equal_their_replacement_and_optax():
    x, y = _tree(1), _tree(2)
    with pytest.warns(DeprecationWarning):
        ours_mul, ours_add = optcore.tree_utils.tree_scalar_mul, optcore.tree_utils.tree_add_scalar_mul
    with pytest.warns(DeprecationWarning):
        theirs_mul, theirs_add = optax.tree_utils.tree_scalar_mul, optax.tree_utils.tree_add_scalar_mul
    for ours, theirs, replacement in (
        (ours_mul(0.3, x), theirs_mul(0.3, x), optcore.tree_utils.tree_scale(0.3, x)),
        (ours_add(x, -1.5, y), theirs_add(x, -1.5, y), optcore.tree_utils.tree_add_scale(x, -1.5, y)),
    ):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, replacement)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, theirs)


def _deprecated_calls():
    import jax.numpy as jnp

    calls = [
        ("optimistic_adam", lambda m: m.optimistic_adam(0.1)),
        ("global_norm", lambda m: m.global_norm({"a": jnp.ones(3)})),
        ("inject_stateful_hyperparams", lambda m: m.inject_stateful_hyperparams(m.sgd)(learning_rate=0.1)),
    ]
    try:
        import optcore_losses  # noqa: F401

        logp, targets = jnp.log(jnp.array([0.2, 0.8])), jnp.array([0.5, 0.5])
        calls.append(("convex_kl_divergence", lambda m: m.losses.convex_kl_divergence(logp, targets)))
    except ImportError:
        pass
    return calls


@pytest.mark.parametrize("name,call", _deprecated_calls(), ids=lambda v: v if isinstance(v, str) else "")
def test_deprecated_functions_warn_with_optax_wording(name, call):
    """A filter written for Optax's message (its full text, with optax. -> optcore.) matches ours."""
    with pytest.warns(DeprecationWarning) as theirs:
        call(optax)
    with pytest.warns(DeprecationWarning) as ours:
        call(optcore)
    (optax_message,) = [str(w.message) for w in theirs if w.category is DeprecationWarning]
    (our_message,) = [str(w.message) for w in ours if w.category is DeprecationWarning]
    assert our_message.startswith(optax_message.replace("optax.", "optcore.")), (our_message, optax_message)
