"""Differential tests of every loss against Optax 0.2.8 (the oracle env only)."""

import pytest

optax = pytest.importorskip("optax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import optcore_losses as ol  # noqa: E402
from optcore_losses import assignment  # noqa: E402

RNG = np.random.default_rng(0)


def _normal(*shape):
    return jnp.asarray(RNG.normal(size=shape).astype(np.float32))


def _probs(*shape):
    return jax.nn.softmax(_normal(*shape), axis=-1)


def _one_hot(batch_shape, classes):
    return jax.nn.one_hot(RNG.integers(0, classes, size=batch_shape), classes)


def _ints(batch_shape, classes):
    return jnp.asarray(RNG.integers(0, classes, size=batch_shape))


MASK = jnp.broadcast_to(jnp.array([True, False, True, True]), (3, 4))
SEG_LOGITS = _normal(2, 3, 3, 4)
SEG_TARGETS = _one_hot((2, 3, 3), 4)

CASES = {
    "squared_error": [(_normal(3, 4), _normal(3, 4)), (_normal(5),)],
    "l2_loss": [(_normal(3, 4), _normal(3, 4)), (_normal(5),)],
    "huber_loss": [(_normal(3, 4) * 3, _normal(3, 4)), (_normal(6) * 3, None, {"delta": 0.5})],
    "log_cosh": [(_normal(3, 4) * 10, _normal(3, 4)), (_normal(5),)],
    "cosine_similarity": [
        (_normal(3, 4), _normal(3, 4)),
        (_normal(3, 4), _normal(3, 4), {"epsilon": 3.0}),
        (_normal(3, 4), _normal(3, 4), {"where": MASK}),
        (_normal(3, 4), _normal(3, 4), {"axis": 0}),
    ],
    "cosine_distance": [(_normal(3, 4), _normal(3, 4)), (_normal(3, 4), _normal(3, 4), {"epsilon": 0.1})],
    "sigmoid_binary_cross_entropy": [
        (_normal(3, 4) * 5, jnp.asarray(RNG.random((3, 4)), jnp.float32)),
        (_normal(4), jnp.array([0, 1, 1, 0])),
    ],
    "hinge_loss": [(_normal(6), jnp.array([1.0, -1.0, 1.0, 1.0, -1.0, -1.0]))],
    "perceptron_loss": [(_normal(6), jnp.array([1.0, -1.0, 1.0, 1.0, -1.0, -1.0]))],
    "softmax_cross_entropy": [
        (_normal(3, 4), _probs(3, 4)),
        (_normal(3, 4), _probs(3, 4), {"where": MASK}),
        (_normal(4, 3), _probs(4, 3), {"axis": 0}),
        # A mask per example (logits without the class axis) includes or drops whole rows.
        (_normal(3, 4), _probs(3, 4), {"where": jnp.array([True, False, True])}),
        (_normal(4, 3), _probs(4, 3), {"axis": 0, "where": jnp.array([False, True, True])}),
    ],
    "safe_softmax_cross_entropy": [
        (_normal(3, 4), _probs(3, 4)),
        (jnp.array([[0.0, -jnp.inf, 1.0]]), jnp.array([[0.3, 0.0, 0.7]])),
    ],
    "softmax_cross_entropy_with_integer_labels": [
        (_normal(3, 4), _ints((3,), 4)),
        (_normal(3, 4), _ints((3,), 4), {"where": MASK}),
        (_normal(4, 3), _ints((3,), 4), {"axis": 0}),
        (_normal(2, 3, 5), _ints((2, 3), 5)),
    ],
    "poly_loss_cross_entropy": [
        (_normal(3, 4), _probs(3, 4)),
        (_normal(3, 4), _probs(3, 4), {"epsilon": -0.5, "where": MASK}),
    ],
    "sigmoid_focal_loss": [
        (_normal(3, 4) * 3, jnp.asarray(RNG.integers(0, 2, (3, 4)), jnp.float32)),
        (_normal(3, 4) * 3, jnp.asarray(RNG.random((3, 4)), jnp.float32), {"alpha": 0.25, "gamma": 0.5}),
        (_normal(5), jnp.array([0.0, 1.0, 1.0, 0.0, 1.0]), {"gamma": 0.0}),
    ],
    "multiclass_hinge_loss": [(_normal(3, 5), _ints((3,), 5))],
    "multiclass_perceptron_loss": [(_normal(3, 5), _ints((3,), 5))],
    "sparsemax_loss": [(_normal(8) * 2, jnp.asarray(RNG.integers(0, 2, 8)))],
    "multiclass_sparsemax_loss": [(_normal(4, 5), _ints((4,), 5)), (_normal(3, 5) * 3, _ints((3,), 5))],
    "smooth_labels": [(_one_hot((3,), 4), 0.1), (_one_hot((3,), 4), 0.2, {"where": MASK})],
    "kl_divergence": [
        (jnp.log(_probs(3, 4)), _probs(3, 4)),
        (jnp.log(_probs(3, 4)), jnp.array([0.0, 0.5, 0.5, 0.0]), {"where": MASK}),
    ],
    "kl_divergence_with_log_targets": [(jnp.log(_probs(3, 4)), jnp.log(_probs(3, 4)))],
    "generalized_kl_divergence": [
        (_normal(3, 4), jnp.asarray(RNG.random((3, 4)), jnp.float32)),
        (_normal(3, 4), jnp.asarray(RNG.random((3, 4)), jnp.float32), {"where": MASK}),
    ],
    "convex_kl_divergence": [(_normal(3, 4), jnp.asarray(RNG.random((3, 4)), jnp.float32))],
    "ranking_softmax_loss": [
        (_normal(3, 5), jnp.asarray(RNG.integers(0, 3, (3, 5)), jnp.float32)),
        (_normal(3, 5), jnp.asarray(RNG.integers(0, 3, (3, 5))), {"reduce_fn": None}),
        (_normal(2, 4), jnp.array([[1.0, 0, 0, 2], [0, 0, 0, 0]]), {"where": jnp.array([[1, 1, 0, 1], [0, 0, 0, 0]], bool)}),
        (_normal(2, 4), jnp.array([[1.0, 0, 0, 2], [1, 0, 0, 0]]), {"weights": _normal(2, 4) ** 2, "reduce_fn": jnp.sum}),
        # No valid list at all: the mean is 0, not 0/0.
        (_normal(2, 4), jnp.array([[1.0, 0, 0, 2], [1, 0, 0, 0]]), {"where": jnp.zeros((2, 4), bool)}),
        (_normal(4), jnp.array([0.0, 0, 1, 1]), {"where": jnp.zeros(4, bool)}),
    ],
    "dice_loss": [
        (SEG_LOGITS, SEG_TARGETS),
        (SEG_LOGITS, SEG_TARGETS, {"alpha": 0.3, "beta": 0.7, "smooth": 0.1, "reduction": "none"}),
        (SEG_LOGITS, SEG_TARGETS, {"class_weights": jnp.array([1.0, 2.0, 3.0, 4.0]), "ignore_background": True}),
        (SEG_LOGITS, SEG_TARGETS, {"reduction": "sum", "axis": (1,)}),
        (jax.nn.softmax(SEG_LOGITS), SEG_TARGETS, {"apply_softmax": False}),
        (SEG_LOGITS[..., :1], SEG_TARGETS[..., :1]),
        # A binary input may leave out its class axis of size 1, on either side.
        (SEG_LOGITS[..., 0], SEG_TARGETS[..., :1]),
        (SEG_LOGITS[..., :1], SEG_TARGETS[..., 0], {"reduction": "none"}),
        # One class has no background channel to drop: ignore_background changes nothing.
        (SEG_LOGITS[..., :1], SEG_TARGETS[..., :1], {"ignore_background": True}),
    ],
    "binary_dice_loss": [
        (SEG_LOGITS[..., 0], SEG_TARGETS[..., 0]),
        (SEG_LOGITS[..., :1], SEG_TARGETS[..., :1], {"smooth": 0.5}),
        (SEG_LOGITS[..., 0], SEG_TARGETS[..., :1]),
    ],
    "multiclass_generalized_dice_loss": [
        (SEG_LOGITS, SEG_TARGETS),
        (SEG_LOGITS, SEG_TARGETS, {"ignore_background": True, "smooth": 0.5}),
        (jax.nn.softmax(SEG_LOGITS), SEG_TARGETS, {"apply_softmax": False}),
    ],
    "ntxent": [
        (_normal(6, 3), jnp.array([0, 0, 1, 1, 2, 2])),
        (_normal(5, 3), jnp.array([0, 1, 0, 1, 1]), 0.5),
    ],
    "triplet_margin_loss": [
        (_normal(4, 3), _normal(4, 3), _normal(4, 3)),
        (_normal(4, 3), _normal(4, 3), _normal(4, 3), 0, 4, 0.3, 0.01),
    ],
}


def _call(fn, case):
    args = case[:-1] if isinstance(case[-1], dict) else case
    kwargs = case[-1] if isinstance(case[-1], dict) else {}
    return fn(*args, **kwargs)


def _params():
    for name, cases in CASES.items():
        for i, case in enumerate(cases):
            yield pytest.param(name, case, id=f"{name}-{i}")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name,case", list(_params()))
def test_matches_optax(name, case):
    ours = _call(getattr(ol, name), case)
    theirs = _call(getattr(optax.losses, name), case)
    assert ours.shape == theirs.shape
    assert ours.dtype == theirs.dtype
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-6)


def test_every_optax_loss_is_covered():
    optax_losses = {n for n in dir(optax.losses) if not n.startswith("_")}
    assert optax_losses == set(ol.__all__)
    assert set(CASES) | {"make_fenchel_young_loss", "ctc_loss", "ctc_loss_with_forward_probs"} == optax_losses


def test_fenchel_young_matches_optax():
    scores, targets = _normal(3, 5), _probs(3, 5)
    ours = ol.make_fenchel_young_loss(jax.nn.logsumexp)
    theirs = optax.losses.make_fenchel_young_loss(jax.nn.logsumexp)
    np.testing.assert_allclose(ours(scores, targets), theirs(scores, targets), rtol=1e-6)
    np.testing.assert_allclose(
        jax.grad(lambda s: ours(s, targets).sum())(scores),
        jax.grad(lambda s: theirs(s, targets).sum())(scores),
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.parametrize("blank_id", [0, 3])
def test_ctc_matches_optax(blank_id):
    logits = _normal(3, 7, 5)
    logit_paddings = jnp.array([[0] * 7, [0] * 5 + [1] * 2, [0] * 6 + [1]], jnp.float32)
    labels = jnp.array([[1, 2, 2, 4], [4, 4, 1, 1], [1, 2, 1, 1]])
    label_paddings = jnp.array([[0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]], jnp.float32)
    ours = ol.ctc_loss_with_forward_probs(logits, logit_paddings, labels, label_paddings, blank_id=blank_id)
    theirs = optax.losses.ctc_loss_with_forward_probs(logits, logit_paddings, labels, label_paddings, blank_id=blank_id)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-2)  # atol: states near log_epsilon=-1e5
    np.testing.assert_allclose(
        ol.ctc_loss(logits, logit_paddings, labels, label_paddings, blank_id=blank_id),
        optax.losses.ctc_loss(logits, logit_paddings, labels, label_paddings, blank_id=blank_id),
        rtol=1e-5,
    )


@pytest.mark.parametrize("shape", [(4, 4), (3, 6), (6, 3)])
def test_hungarian_matches_optax(shape):
    cost = jnp.asarray(RNG.random(shape), jnp.float32)
    for ours_fn, theirs_fn in [
        (assignment.hungarian_algorithm, optax.assignment.hungarian_algorithm),
        (assignment.base_hungarian_algorithm, optax.assignment.base_hungarian_algorithm),
    ]:
        ours = ours_fn(cost)
        theirs = theirs_fn(cost)
        # Optax's jitted solver lists the same pairs in another order.
        assert sorted(zip(*map(np.asarray, ours))) == sorted(zip(*map(np.asarray, theirs)))


@pytest.mark.parametrize(
    "name", ["sigmoid_binary_cross_entropy", "sigmoid_focal_loss", "softmax_cross_entropy", "poly_loss_cross_entropy"]
)
def test_gradients_match_optax(name):
    logits = _normal(3, 4) * 3
    labels = _probs(3, 4)
    ours = jax.grad(lambda x: getattr(ol, name)(x, labels).sum())(logits)
    theirs = jax.grad(lambda x: getattr(optax.losses, name)(x, labels).sum())(logits)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    "name",
    [
        "softmax_cross_entropy",
        "safe_softmax_cross_entropy",
        "poly_loss_cross_entropy",
        "sigmoid_binary_cross_entropy",
        "sigmoid_focal_loss",
        "kl_divergence",
        "generalized_kl_divergence",
    ],
)
def test_label_gradients_match_optax(name):
    # Soft targets with exact zeros (distillation from a pruned teacher): the
    # derivative in the labels at a zero label must be -log p, as in Optax.
    logits = _normal(3, 4) * 2
    labels = np.array(_probs(3, 4))
    labels[:, 1] = 0.0
    labels = jnp.asarray(labels / labels.sum(-1, keepdims=True))
    if "kl" in name:
        logits = jax.nn.log_softmax(logits)
        labels = labels + 0.05  # log(0) has no derivative

    def loss_in_labels(module):
        return lambda y: getattr(module, name)(logits, y).sum()

    for transform in (jax.grad, jax.jacfwd):
        np.testing.assert_allclose(
            transform(loss_in_labels(ol))(labels), transform(loss_in_labels(optax.losses))(labels), rtol=1e-5, atol=1e-6
        )


def _integer_label_axis_cases():
    logits = _normal(2, 3, 4)
    flat_labels = _ints((2,), 12)
    mask = jnp.asarray(RNG.random((2, 3, 4)) > 0.3)
    row_mask = jnp.array([True, False])
    for axis in [(1, 2), (-2, -1), (2, 1), (1,), -1, 1]:
        axes = (axis,) if isinstance(axis, int) else axis
        num_classes = int(np.prod([logits.shape[a] for a in axes]))
        labels = flat_labels % num_classes
        if len(axes) == 1:
            labels = _ints(tuple(s for i, s in enumerate(logits.shape) if i != axes[0] % 3), num_classes)
        for where_name, where in [("none", None), ("logits", mask), ("labels", row_mask if len(axes) == 2 else None)]:
            if where_name == "labels" and where is None:
                continue
            yield pytest.param(logits, labels, axis, where, id=f"axis{axis}-where_{where_name}")


@pytest.mark.parametrize("logits,labels,axis,where", list(_integer_label_axis_cases()))
def test_integer_labels_with_tuple_axis_match_optax(logits, labels, axis, where):
    # Optax 0.2.8: a tuple of axes is flattened in the given order and a label
    # is a flat index into it; an example with nothing in `where` has loss 0.
    ours = ol.softmax_cross_entropy_with_integer_labels(logits, labels, axis=axis, where=where)
    theirs = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels, axis=axis, where=where)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-6)
    grad = lambda module: jax.grad(
        lambda x: module.softmax_cross_entropy_with_integer_labels(x, labels, axis=axis, where=where).sum()
    )(logits)
    np.testing.assert_allclose(grad(ol), grad(optax.losses), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "poly_loss_cross_entropy", "kl_divergence", "cosine_similarity"])
@pytest.mark.parametrize("axis", [(1, 2), (-2, -1), (2, 1)])
def test_probability_losses_with_tuple_axis_match_optax(name, axis):
    logits = _normal(2, 3, 4)
    labels = jax.nn.softmax(_normal(2, 12)).reshape(2, 3, 4)
    first = jax.nn.log_softmax(logits, axis=axis) if name == "kl_divergence" else logits
    ours = getattr(ol, name)(first, labels, axis=axis)
    theirs = getattr(optax.losses, name)(first, labels, axis=axis)
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-6)


def test_per_example_where_gradient_matches_optax():
    # Optax inserts the class axis into a mask of the logits' rank minus one;
    # the excluded example gets a zero (finite) gradient.
    logits, labels, where = _normal(3, 4) * 3, _probs(3, 4), jnp.array([True, False, True])
    grad = lambda module: jax.grad(lambda x: module.softmax_cross_entropy(x, labels, where=where).sum())(logits)
    ours = grad(ol)
    np.testing.assert_allclose(ours, grad(optax.losses), rtol=1e-5, atol=1e-7)
    assert np.all(ours[1] == 0)


@pytest.mark.parametrize("reduce_fn", [jnp.mean, jnp.sum, None])
def test_ranking_with_every_item_masked_matches_optax(reduce_fn):
    # Optax's _safe_reduce turns the 0/0 of a mean over no list into 0; the
    # gradient is 0 too.
    logits, labels, where = _normal(2, 4), jnp.array([[0.0, 0, 1, 1], [1, 0, 0, 0]]), jnp.zeros((2, 4), bool)

    def loss(module):
        return lambda x: jnp.sum(module.ranking_softmax_loss(x, labels, where=where, reduce_fn=reduce_fn))

    np.testing.assert_array_equal(loss(ol)(logits), loss(optax.losses)(logits))
    np.testing.assert_array_equal(jax.grad(loss(ol))(logits), jax.grad(loss(optax.losses))(logits))


def test_dice_rejects_unnormalised_probabilities_like_optax():
    # Optax's check: with apply_softmax=False, predictions must sum to 1 over
    # the classes (jnp.allclose, rtol=1e-5), else ValueError.
    probs = jnp.asarray(RNG.random((2, 3, 3, 4)), jnp.float32)
    for module in (ol, optax.losses):
        with pytest.raises(ValueError, match="valid probability distributions"):
            module.dice_loss(probs, SEG_TARGETS, apply_softmax=False)
