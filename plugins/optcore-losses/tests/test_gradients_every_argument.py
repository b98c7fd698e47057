"""Every registered loss is differentiable in every continuous float argument.

Walks the registry (``optcore.available("loss")``): each loss has a case below
with inputs away from its kinks, and ``jax.test_util.check_grads`` compares its
forward- and reverse-mode derivatives with finite differences (float64) in each
float argument, labels and targets included. Gradients in the labels matter:
distillation with soft targets, learned label smoothing and meta-learning
differentiate them; a ``where`` that zeroes a product at zero labels used to
make ``softmax_cross_entropy``'s derivative in the labels wrong there.

Arguments left out are discrete by definition and named in ``DISCRETE``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import optcore
import optcore_losses as ol

RNG = np.random.default_rng(7)


def _normal(*shape):
    return RNG.normal(size=shape)


def _probs(*shape):
    p = np.exp(_normal(*shape))
    return p / p.sum(-1, keepdims=True)


def _sparse_probs(*shape):
    """Probabilities with exact zeros: the case where the label derivative was lost."""
    p = _probs(*shape)
    p[..., 0] = 0.0
    return p / p.sum(-1, keepdims=True)


def _ints(shape, high):
    return RNG.integers(0, high, size=shape)


def _away_from(x, kinks, gap=0.05):
    """``x`` with every entry at least ``gap`` from each kink (finite differences cross no kink)."""
    x = np.array(x, dtype=np.float64)
    for kink in kinks:
        close = np.abs(x - kink) < gap
        x[close] = kink + np.where(x[close] >= kink, gap, -gap) * 2
    return x


_SIGNS = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
_HINGE_SCORES = _away_from(_normal(6), [-1.0, 0.0, 1.0])
_SEG = _normal(2, 3, 3, 4)
_SEG_TARGETS = _probs(2, 3, 3, 4)


def _scores_with_gaps(*shape):
    """Scores whose sorted entries are well separated (max and sparsemax support fixed nearby)."""
    base = np.arange(shape[-1], dtype=np.float64) * 0.7
    return np.stack([RNG.permutation(base) for _ in range(int(np.prod(shape[:-1])))]).reshape(shape)


# name -> (loss to call, positional args, keyword args). Positions holding
# float arrays are checked unless listed in DISCRETE.
CASES = {
    "squared_error": (ol.squared_error, (_normal(3, 4), _normal(3, 4)), {}),
    "l2_loss": (ol.l2_loss, (_normal(3, 4), _normal(3, 4)), {}),
    "huber_loss": (ol.huber_loss, (_away_from(_normal(8) * 2, [-1.0, 1.0]), np.zeros(8)), {"delta": 1.0}),
    "log_cosh": (ol.log_cosh, (_normal(3, 4), _normal(3, 4)), {}),
    "cosine_similarity": (ol.cosine_similarity, (_normal(3, 4), _normal(3, 4)), {"epsilon": 0.1}),
    "cosine_distance": (ol.cosine_distance, (_normal(3, 4), _normal(3, 4)), {"epsilon": 0.1}),
    "sigmoid_binary_cross_entropy": (ol.sigmoid_binary_cross_entropy, (_normal(3, 4), RNG.random((3, 4))), {}),
    "hinge_loss": (ol.hinge_loss, (_HINGE_SCORES, _SIGNS), {}),
    "perceptron_loss": (ol.perceptron_loss, (_HINGE_SCORES, _SIGNS), {}),
    "softmax_cross_entropy": (ol.softmax_cross_entropy, (_normal(3, 4), _sparse_probs(3, 4)), {}),
    "safe_softmax_cross_entropy": (ol.safe_softmax_cross_entropy, (_normal(3, 4), _sparse_probs(3, 4)), {}),
    "softmax_cross_entropy_with_integer_labels": (
        ol.softmax_cross_entropy_with_integer_labels, (_normal(3, 4), _ints((3,), 4)), {}),
    "poly_loss_cross_entropy": (ol.poly_loss_cross_entropy, (_normal(3, 4), _sparse_probs(3, 4)), {"epsilon": 1.5}),
    "sigmoid_focal_loss": (ol.sigmoid_focal_loss, (_normal(3, 4), RNG.random((3, 4))), {"alpha": 0.3, "gamma": 1.5}),
    "multiclass_hinge_loss": (ol.multiclass_hinge_loss, (_scores_with_gaps(3, 5), _ints((3,), 5)), {}),
    "multiclass_perceptron_loss": (ol.multiclass_perceptron_loss, (_scores_with_gaps(3, 5), _ints((3,), 5)), {}),
    "sparsemax_loss": (ol.sparsemax_loss, (_away_from(_normal(8) * 2, [-1.0, 1.0]), np.array([0, 1] * 4, np.float64)), {}),
    "multiclass_sparsemax_loss": (ol.multiclass_sparsemax_loss, (_scores_with_gaps(3, 5) * 0.5, _ints((3,), 5)), {}),
    "kl_divergence": (ol.kl_divergence, (np.log(_probs(3, 4)), _probs(3, 4)), {}),
    "kl_divergence_with_log_targets": (ol.kl_divergence_with_log_targets, (np.log(_probs(3, 4)), np.log(_probs(3, 4))), {}),
    "generalized_kl_divergence": (ol.generalized_kl_divergence, (_normal(3, 4), RNG.random((3, 4)) + 0.1), {}),
    "convex_kl_divergence": (ol.convex_kl_divergence, (_normal(3, 4), RNG.random((3, 4)) + 0.1), {}),
    "ranking_softmax_loss": (
        ol.ranking_softmax_loss, (_normal(3, 5), RNG.random((3, 5))), {"weights": RNG.random((3, 5)) + 0.5}),
    "dice_loss": (ol.dice_loss, (_SEG, _SEG_TARGETS), {"class_weights": np.array([1.0, 2.0, 0.5, 1.5])}),
    "binary_dice_loss": (ol.binary_dice_loss, (_SEG[..., 0], _SEG_TARGETS[..., 0]), {}),
    "multiclass_generalized_dice_loss": (ol.multiclass_generalized_dice_loss, (_SEG, _SEG_TARGETS), {}),
    "ntxent": (ol.ntxent, (_normal(6, 3), np.array([0, 0, 1, 1, 2, 2]), 0.5), {}),
    "triplet_margin_loss": (ol.triplet_margin_loss, (_normal(4, 3), _normal(4, 3) + 3.0, _normal(4, 3)), {"margin": 10.0}),
    "make_fenchel_young_loss": (ol.make_fenchel_young_loss(jax.nn.logsumexp), (_normal(3, 5), _probs(3, 5)), {}),
    "ctc_loss": (
        ol.ctc_loss,
        (_normal(2, 6, 4), np.array([[0.0] * 6, [0.0] * 5 + [1.0]]), np.array([[1, 2, 3], [2, 2, 1]]),
         np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])),
        {},
    ),
}
CASES["ctc_loss_with_forward_probs"] = (ol.ctc_loss_with_forward_probs,) + CASES["ctc_loss"][1:]

# (name, position): float arguments whose values are categories, not quantities.
DISCRETE = {
    ("sparsemax_loss", 1): "binary labels select the sign of the logit (Optax: jnp.where(labels, -x, x))",
    ("ctc_loss", 1): "logit_paddings are 0/1 frame indicators",
    ("ctc_loss", 3): "label_paddings are 0/1 indicators, summed into integer label lengths",
    ("ctc_loss_with_forward_probs", 1): "logit_paddings are 0/1 frame indicators",
    ("ctc_loss_with_forward_probs", 3): "label_paddings are 0/1 indicators, summed into integer label lengths",
    ("ntxent", 2): "checked with the hyperparameters below",
}

# Float hyperparameters in which the loss is smooth, checked too.
HYPERPARAMETERS = {
    "huber_loss": ("delta",),
    "cosine_similarity": ("epsilon",),
    "cosine_distance": ("epsilon",),
    "poly_loss_cross_entropy": ("epsilon",),
    "sigmoid_focal_loss": ("alpha", "gamma"),
    "triplet_margin_loss": ("margin",),
}


def test_every_registered_loss_has_a_case():
    assert {row.name for row in optcore.available("loss")} == set(CASES)


def _float_positions(name):
    _, args, _ = CASES[name]
    return [i for i, a in enumerate(args) if np.issubdtype(np.asarray(a).dtype, np.floating) and (name, i) not in DISCRETE]


def _argument_params():
    for row in sorted(optcore.available("loss"), key=lambda r: r.name):
        if row.name not in CASES:
            continue  # test_every_registered_loss_has_a_case fails instead
        for position in _float_positions(row.name):
            yield pytest.param(row.name, position, id=f"{row.name}-arg{position}")


def _outputs_summed(fn):
    """Sums every output (a tuple for ctc_loss_with_forward_probs) into one scalar per output.

    The CTC forward variables hold ``log_epsilon = -1e5`` on unreachable
    states; summed with the rest they leave finite differences only ~1e-5
    precision, so those entries (constant near the inputs) are left out.
    """

    def summed(*args, **kwargs):
        out = fn(*args, **kwargs)
        return jax.tree.map(lambda o: jnp.sum(jnp.where(o > -1e4, o, 0.0)), out)

    return summed


@pytest.mark.parametrize("name,position", list(_argument_params()))
def test_derivative_matches_finite_differences_in_every_float_argument(name, position):
    fn, args, kwargs = CASES[name]
    with jax.enable_x64(True):
        args = [jnp.asarray(a) for a in args]
        kwargs = {k: jnp.asarray(v) for k, v in kwargs.items()}

        def in_one_argument(x):
            return _outputs_summed(fn)(*args[:position], x, *args[position + 1:], **kwargs)

        check_grads(in_one_argument, (args[position],), order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5, eps=1e-6)


def _hyperparameter_params():
    for name, hyperparameters in HYPERPARAMETERS.items():
        for hyperparameter in hyperparameters:
            yield pytest.param(name, hyperparameter, id=f"{name}-{hyperparameter}")
    yield pytest.param("ntxent", 2, id="ntxent-temperature")


@pytest.mark.parametrize("name,hyperparameter", list(_hyperparameter_params()))
def test_derivative_in_hyperparameters(name, hyperparameter):
    fn, args, kwargs = CASES[name]
    with jax.enable_x64(True):
        args = [jnp.asarray(a) for a in args]
        if isinstance(hyperparameter, int):
            value = jnp.asarray(float(args[hyperparameter]))
            call = lambda h: jnp.sum(fn(*args[:hyperparameter], h, *args[hyperparameter + 1:], **kwargs))
        else:
            value = jnp.asarray(float(kwargs[hyperparameter]))
            call = lambda h: jnp.sum(fn(*args, **{**kwargs, hyperparameter: h}))
        check_grads(call, (value,), order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5, eps=1e-6)


def test_softmax_cross_entropy_label_derivative_is_minus_log_softmax():
    # Closed form: d/dy [-sum_k y_k log softmax(x)_k] = -log softmax(x), zero labels included.
    logits = jnp.array([[0.3, -1.2, 2.0, 0.1]])
    labels = jnp.array([[0.0, 0.0, 1.0, 0.0]])
    expected = -jax.nn.log_softmax(logits)
    for loss in (ol.softmax_cross_entropy, ol.safe_softmax_cross_entropy, functools.partial(ol.poly_loss_cross_entropy, epsilon=0.0)):
        np.testing.assert_allclose(jax.grad(lambda y: loss(logits, y).sum())(labels), expected, rtol=1e-6)
        np.testing.assert_allclose(jax.jacfwd(lambda y: loss(logits, y).sum())(labels), expected, rtol=1e-6)


def test_zero_label_on_minus_infinity_logit_keeps_finite_label_gradient_elsewhere():
    logits = jnp.array([[0.0, -jnp.inf, 1.0]])
    labels = jnp.array([[0.3, 0.0, 0.7]])
    value = ol.softmax_cross_entropy(logits, labels)
    assert np.isfinite(value).all()
    label_gradient = jax.grad(lambda y: ol.softmax_cross_entropy(logits, y).sum())(labels)
    log_probs = jax.nn.log_softmax(logits)
    np.testing.assert_allclose(label_gradient[0, [0, 2]], -log_probs[0, [0, 2]], rtol=1e-6)
    # A class excluded by ``where`` does not enter the loss: zero gradient, not nan.
    where = jnp.array([[True, False, True]])
    masked = jax.grad(lambda y: ol.softmax_cross_entropy(jnp.array([[0.0, 2.0, 1.0]]), y, where=where).sum())(labels + 0.1)
    assert np.isfinite(masked).all() and masked[0, 1] == 0.0
