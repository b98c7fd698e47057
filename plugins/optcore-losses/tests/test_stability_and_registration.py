"""Extreme inputs, half precision, jit and grad, shape errors, assignment, registration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import optcore
import optcore_losses as ol
from optcore_losses import assignment

EXTREME = np.array([[-1e4, -30.0, 0.0, 30.0, 1e4]], np.float32)
HARD = np.array([[0.0, 1.0, 1.0, 0.0, 1.0]], np.float32)  # labels exactly 0 and 1
SOFT = np.array([[0.0, 0.0, 1.0, 0.0, 0.0]], np.float32)
INT = np.array([4])


def h(x):
    """The hard labels in the dtype of ``x``."""
    return jnp.asarray(HARD, x.dtype)


def s(x):
    """The one-hot labels in the dtype of ``x``."""
    return jnp.asarray(SOFT, x.dtype)


# name -> function of (x, dtype) with x the (1, 5) extreme logits/predictions.
ELEMENTWISE = {
    "squared_error": lambda x: ol.squared_error(x / 1e3, x / 2e3),
    "l2_loss": lambda x: ol.l2_loss(x / 1e3),
    "huber_loss": lambda x: ol.huber_loss(x, jnp.zeros_like(x)),
    "log_cosh": lambda x: ol.log_cosh(x),
    "cosine_similarity": lambda x: ol.cosine_similarity(x, jnp.ones_like(x)),
    "cosine_distance": lambda x: ol.cosine_distance(x, jnp.ones_like(x), epsilon=1e-3),
    "sigmoid_binary_cross_entropy": lambda x: ol.sigmoid_binary_cross_entropy(x, h(x)),
    "sigmoid_focal_loss": lambda x: ol.sigmoid_focal_loss(x, h(x), alpha=0.25, gamma=0.5),
    "hinge_loss": lambda x: ol.hinge_loss(x, 2 * h(x) - 1),
    "perceptron_loss": lambda x: ol.perceptron_loss(x, 2 * h(x) - 1),
    "softmax_cross_entropy": lambda x: ol.softmax_cross_entropy(x, s(x)),
    "safe_softmax_cross_entropy": lambda x: ol.safe_softmax_cross_entropy(x, s(x)),
    "softmax_cross_entropy_with_integer_labels": lambda x: ol.softmax_cross_entropy_with_integer_labels(x, INT),
    "poly_loss_cross_entropy": lambda x: ol.poly_loss_cross_entropy(x, s(x)),
    "multiclass_hinge_loss": lambda x: ol.multiclass_hinge_loss(x, INT),
    "multiclass_perceptron_loss": lambda x: ol.multiclass_perceptron_loss(x, INT),
    "multiclass_sparsemax_loss": lambda x: ol.multiclass_sparsemax_loss(x, INT),
    "sparsemax_loss": lambda x: ol.sparsemax_loss(x, h(x)),
    "kl_divergence": lambda x: ol.kl_divergence(jax.nn.log_softmax(x), s(x)),
    "kl_divergence_with_log_targets": lambda x: ol.kl_divergence_with_log_targets(jax.nn.log_softmax(x), jnp.log(s(x))),
    "generalized_kl_divergence": lambda x: ol.generalized_kl_divergence(jax.nn.log_softmax(x), s(x)),
    "ranking_softmax_loss": lambda x: ol.ranking_softmax_loss(x, h(x)),
    "dice_loss": lambda x: ol.dice_loss(x.reshape(1, 5, 1), h(x).reshape(1, 5, 1)),
    "binary_dice_loss": lambda x: ol.binary_dice_loss(x, h(x)),
    "multiclass_generalized_dice_loss": lambda x: ol.multiclass_generalized_dice_loss(x[:, None, :], s(x)[:, None, :]),
    "ntxent": lambda x: ol.ntxent(jnp.concatenate([x, x[:, ::-1], -x]).reshape(3, 5), np.array([0, 0, 1])),
    "triplet_margin_loss": lambda x: ol.triplet_margin_loss(x / 1e2, x / 1e2, jnp.zeros_like(x)),
    "ctc_loss": lambda x: ol.ctc_loss(jnp.tile(x.reshape(1, 1, 5), (1, 3, 1)), jnp.zeros((1, 3)), np.array([[2, 4]]), jnp.zeros((1, 2))),
    "smooth_labels": lambda x: ol.smooth_labels(x, 0.1),
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_extreme_inputs_are_finite_in_value_and_gradient(name, dtype):
    fn = ELEMENTWISE[name]
    x = jnp.asarray(EXTREME, dtype)
    if name in ("squared_error", "l2_loss", "cosine_similarity", "cosine_distance", "triplet_margin_loss") and dtype != jnp.float32:
        x = x / 100  # the squares of 1e4 are not representable in half precision

    def value_and_grad(v):
        return fn(v), jax.grad(lambda w: jnp.sum(fn(w)).astype(jnp.float32))(v)

    value, grad = jax.jit(value_and_grad)(x)  # one compilation for both
    assert value.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(value.astype(jnp.float32)))), value
    assert grad.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(grad.astype(jnp.float32)))), grad


def test_zero_label_on_minus_infinity_logit_is_finite():
    x = jnp.array([[0.0, -jnp.inf, 1.0]])
    y = jnp.array([[0.5, 0.0, 0.5]])
    assert np.isfinite(ol.softmax_cross_entropy(x, y)).all()
    assert np.isfinite(jax.grad(lambda v: ol.safe_softmax_cross_entropy(v, y).sum())(x)).all()
    assert np.isinf(ol.safe_softmax_cross_entropy(x, jnp.array([[0.5, 0.5, 0.0]]))).all()


def test_focal_loss_gradient_with_small_gamma_and_saturated_logits():
    x = jnp.array([1e4, -1e4, 50.0, -50.0])
    y = jnp.array([1.0, 0.0, 1.0, 0.0])
    g = jax.grad(lambda v: ol.sigmoid_focal_loss(v, y, gamma=0.3).sum())(x)
    assert np.isfinite(g).all()


@pytest.mark.parametrize(
    "call",
    [
        lambda: ol.squared_error(jnp.ones((2, 3)), jnp.ones((3,))),
        lambda: ol.perceptron_loss(jnp.ones((2, 3)), jnp.ones((1, 3))),
        lambda: ol.sigmoid_binary_cross_entropy(jnp.ones((2, 3)), jnp.ones((2,))),
        lambda: ol.softmax_cross_entropy(jnp.ones((2, 3)), jnp.ones((4,))),
        lambda: ol.softmax_cross_entropy_with_integer_labels(jnp.ones((2, 3)), jnp.ones((3,), int)),
        lambda: ol.multiclass_hinge_loss(jnp.ones((2, 3)), jnp.ones((2, 1), int)),
        lambda: ol.dice_loss(jnp.ones((2, 3, 4)), jnp.ones((2, 3, 3))),
        lambda: ol.dice_loss(jnp.ones((2, 3, 4)), jnp.ones((2, 3))),
        lambda: ol.softmax_cross_entropy(jnp.ones((2, 3)), jnp.ones((2, 3)), where=jnp.ones((3,), bool)),
        lambda: ol.kl_divergence(jnp.ones((2, 3)), jnp.ones((2, 2))),
        lambda: ol.triplet_margin_loss(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 2))),
        lambda: ol.ntxent(jnp.ones((4, 3)), jnp.ones((3,), int)),
    ],
)
def test_mismatched_shapes_raise_naming_both(call):
    with pytest.raises(ValueError, match=r"shape.*\(.*\).*\(.*\)"):
        call()


@pytest.mark.parametrize(
    "call,argument",
    [
        (lambda: ol.huber_loss(jnp.ones(2), delta=0.0), "delta"),
        (lambda: ol.sigmoid_focal_loss(jnp.ones(2), jnp.ones(2), gamma=-1.0), "gamma"),
        (lambda: ol.sigmoid_focal_loss(jnp.ones(2), jnp.ones(2), alpha=1.5), "alpha"),
        (lambda: ol.smooth_labels(jnp.ones(2), 2.0), "alpha"),
        (lambda: ol.ntxent(jnp.ones((2, 2)), jnp.zeros(2, int), temperature=0.0), "temperature"),
        (lambda: ol.dice_loss(jnp.ones((1, 2)), jnp.ones((1, 2)), reduction="max"), "reduction"),
        (lambda: ol.cosine_similarity(jnp.ones(2), jnp.ones(2), epsilon=-1.0), "epsilon"),
        (lambda: ol.squared_error(jnp.ones(2, int)), "predictions"),
        (lambda: ol.dice_loss(jnp.ones((1, 2)), jnp.ones((1, 2)), apply_softmax=False), "valid probability distributions"),
        (lambda: ol.softmax_cross_entropy(jnp.ones((2, 3)), jnp.ones((2, 3)), None, jnp.ones(2, bool)), "where"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, argument):
    with pytest.raises((ValueError, TypeError), match=argument):
        call()


def test_integer_labels_and_dtype_follow_inputs():
    x = jnp.ones((2, 3), jnp.bfloat16)
    assert ol.sigmoid_binary_cross_entropy(x, jnp.ones((2, 3), int)).dtype == jnp.bfloat16
    assert ol.softmax_cross_entropy_with_integer_labels(x, jnp.array([0, 2])).dtype == jnp.bfloat16
    assert ol.hinge_loss(jnp.ones(2), jnp.array([1, -1])).dtype == jnp.float32


@pytest.mark.parametrize("shape", [(5, 5), (3, 6), (6, 3), (1, 4)])
def test_hungarian_matches_scipy_under_jit(shape):
    solve = jax.jit(assignment.hungarian_algorithm)
    reference = jax.jit(assignment.base_hungarian_algorithm)
    rng = np.random.default_rng(sum(shape))
    for _ in range(3):
        cost = rng.normal(size=shape).astype(np.float32)
        rows, cols = linear_sum_assignment(cost)
        for fn in (solve, reference):
            ours_rows, ours_cols = fn(cost)
            assert ours_rows.dtype == jnp.int32
            np.testing.assert_array_equal(ours_rows, rows)
            np.testing.assert_allclose(cost[ours_rows, ours_cols].sum(), cost[rows, cols].sum(), rtol=1e-6)


def test_hungarian_integer_and_empty_costs():
    rows, cols = assignment.hungarian_algorithm(np.array([[4, 1, 3], [2, 0, 5], [3, 2, 2]]))
    np.testing.assert_array_equal(cols, [1, 0, 2])
    rows, cols = assignment.hungarian_algorithm(np.zeros((0, 3)))
    assert rows.shape == cols.shape == (0,)
    with pytest.raises(ValueError, match="2-D"):
        assignment.hungarian_algorithm(np.zeros(3))


@pytest.mark.filterwarnings("ignore::optcore.plugins.PluginWarning")
def test_registration():
    from optcore.plugins._catalog import FIRST_PARTY

    for name in ol.__all__:
        obj = getattr(ol, name)
        assert optcore.get(name) is obj
        assert getattr(optcore.losses, name) is obj
        assert getattr(optcore, name) is obj
    for name in assignment.__all__:
        assert optcore.get(name) is getattr(assignment, name)
        assert getattr(optcore.assignment, name) is getattr(assignment, name)
    (entry,) = [p for p in FIRST_PARTY if p.distribution == "optcore-losses"]
    assert entry.namespaces == ("losses", "assignment")
    assert set(entry.names) == set(ol.__all__) | set(assignment.__all__)
    assert len(entry.names) == len(set(entry.names))
    kinds = {row.name: row.kind for row in optcore.available() if row.distribution == "optcore-losses"}
    assert kinds["huber_loss"] == "loss" and kinds["smooth_labels"] == "utility"
    assert kinds["hungarian_algorithm"] == "utility"
