"""Each loss against a NumPy/SciPy reference written from its formula."""

import jax
import numpy as np
import pytest
from scipy import special

import optcore_losses as ol

RNG = np.random.default_rng(1)


def normal(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def probs(*shape):
    return special.softmax(normal(*shape), axis=-1).astype(np.float32)


def close(ours, ref, rtol=2e-5, atol=2e-6):
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=rtol, atol=atol)


def test_regression():
    p, t = normal(3, 4) * 3, normal(3, 4)
    e = p - t
    close(ol.squared_error(p, t), e**2)
    close(ol.squared_error(p), p**2)
    close(ol.l2_loss(p, t), 0.5 * e**2)
    close(ol.huber_loss(p, t, delta=0.7), np.where(np.abs(e) <= 0.7, 0.5 * e**2, 0.7 * (np.abs(e) - 0.35)))
    close(ol.log_cosh(p, t), np.log(np.cosh(e.astype(np.float64))), rtol=1e-5)
    dot, np_, nt = (p * t).sum(-1), (p * p).sum(-1), (t * t).sum(-1)
    close(ol.cosine_similarity(p, t), dot / np.sqrt(np_ * nt))
    close(ol.cosine_distance(p, t, epsilon=5.0), 1 - dot / np.sqrt(np.maximum(np_, 5.0) * np.maximum(nt, 5.0)))
    mask = np.array([True, False, True, True])
    close(ol.cosine_similarity(p, t, where=mask), (p * t)[:, mask].sum(-1) / np.sqrt((p * p)[:, mask].sum(-1) * (t * t)[:, mask].sum(-1)))


def test_binary_classification():
    x = normal(3, 4) * 3
    y = RNG.random((3, 4)).astype(np.float32)
    sig = special.expit(x.astype(np.float64))
    bce = -y * np.log(sig) - (1 - y) * np.log1p(-sig)
    close(ol.sigmoid_binary_cross_entropy(x, y), bce, rtol=1e-5)
    pt = sig * y + (1 - sig) * (1 - y)
    close(ol.sigmoid_focal_loss(x, y, alpha=0.3, gamma=1.5), (0.3 * y + 0.7 * (1 - y)) * (1 - pt) ** 1.5 * bce, rtol=1e-4)
    s = np.where(RNG.random(6) < 0.5, -1.0, 1.0).astype(np.float32)
    f = normal(6)
    close(ol.hinge_loss(f, s), np.maximum(0, 1 - f * s))
    close(ol.perceptron_loss(f, s), np.maximum(0, -f * s))
    b = (RNG.random(6) < 0.5).astype(np.int32)
    z = np.where(b == 1, -f * 3, f * 3)
    close(ol.sparsemax_loss(f * 3, b), np.where(z <= -1, 0, np.where(z >= 1, z, (z + 1) ** 2 / 4)))


def test_softmax_family():
    x, y = normal(3, 5), probs(3, 5)
    logp = special.log_softmax(x.astype(np.float64), axis=-1)
    close(ol.softmax_cross_entropy(x, y), -(y * logp).sum(-1))
    close(ol.safe_softmax_cross_entropy(x, y), -(y * logp).sum(-1))
    c = RNG.integers(0, 5, 3)
    close(ol.softmax_cross_entropy_with_integer_labels(x, c), -logp[np.arange(3), c])
    close(ol.poly_loss_cross_entropy(x, y, epsilon=1.5), -(y * logp).sum(-1) + 1.5 * (y * (1 - np.exp(logp))).sum(-1))
    close(ol.multiclass_hinge_loss(x, c), np.max(x + 1 - np.eye(5)[c], -1) - x[np.arange(3), c])
    close(ol.multiclass_perceptron_loss(x, c), np.max(x, -1) - x[np.arange(3), c])
    # Fenchel-Young of logsumexp is the cross-entropy (up to the entropy of y).
    fy = ol.make_fenchel_young_loss(jax.nn.logsumexp)
    close(fy(x, np.eye(5, dtype=np.float32)[c]), -logp[np.arange(3), c])
    close(ol.smooth_labels(np.eye(5, dtype=np.float32)[c], 0.2), 0.8 * np.eye(5)[c] + 0.04)


def _sparsemax_reference(z):
    """Projection onto the simplex by bisection on the threshold."""
    lo, hi = z.min() - 1, z.max()
    for _ in range(100):
        tau = (lo + hi) / 2
        lo, hi = (tau, hi) if np.maximum(z - tau, 0).sum() > 1 else (lo, tau)
    return np.maximum(z - (lo + hi) / 2, 0)


def test_multiclass_sparsemax_loss():
    s = normal(4, 6) * 2
    c = RNG.integers(0, 6, 4)
    ref = []
    for row, label in zip(s.astype(np.float64), c):
        p = _sparsemax_reference(row)
        ref.append(row @ p - 0.5 * p @ p + 0.5 - row[label])
    close(ol.multiclass_sparsemax_loss(s, c), np.array(ref), rtol=1e-5, atol=1e-5)
    grad = jax.grad(lambda v: ol.multiclass_sparsemax_loss(v, c).sum())(s)
    close(grad, np.stack([_sparsemax_reference(r) for r in s.astype(np.float64)]) - np.eye(6)[c], atol=1e-5)


def test_divergences():
    logp = np.log(probs(3, 4))
    t = probs(3, 4)
    t[0, 1] = 0.0
    kl = np.where(t > 0, t * (np.log(np.where(t > 0, t, 1)) - logp), 0).sum(-1)
    close(ol.kl_divergence(logp, t), kl)
    with np.errstate(divide="ignore"):
        close(ol.kl_divergence_with_log_targets(logp, np.log(t)), kl)
    close(ol.generalized_kl_divergence(logp, t), kl + (np.exp(logp) - t).sum(-1))
    with pytest.warns(DeprecationWarning):
        close(ol.convex_kl_divergence(logp, t), kl + (np.exp(logp) - t).sum(-1))


def test_ranking_softmax_loss():
    x = normal(3, 5)
    y = RNG.integers(0, 3, (3, 5)).astype(np.float32)
    per_list = -(y * special.log_softmax(x, axis=-1)).sum(-1)
    close(ol.ranking_softmax_loss(x, y, reduce_fn=None), per_list, rtol=1e-5)
    close(ol.ranking_softmax_loss(x, y), per_list.mean(), rtol=1e-5)
    mask = np.ones((3, 5), bool)
    mask[0, :2] = False
    mask[2] = False
    masked = -(np.where(mask, y, 0) * np.where(mask, special.log_softmax(np.where(mask, x, -np.inf), axis=-1), 0)).sum(-1)
    close(ol.ranking_softmax_loss(x, y, where=mask, reduce_fn=None), masked, rtol=1e-5)
    close(ol.ranking_softmax_loss(x, y, where=mask), masked[:2].mean(), rtol=1e-5)


def test_ranking_softmax_loss_with_no_valid_list():
    # The mean over no list is 0 (with a zero gradient), not 0/0.
    x = normal(3, 5)
    y = RNG.integers(0, 3, (3, 5)).astype(np.float32)
    none_valid = np.zeros((3, 5), bool)
    close(ol.ranking_softmax_loss(x, y, where=none_valid), 0.0)
    grad = jax.grad(lambda v: ol.ranking_softmax_loss(v, y, where=none_valid))(x)
    np.testing.assert_array_equal(grad, np.zeros_like(x))
    close(jax.jit(ol.ranking_softmax_loss)(x, y, where=none_valid), 0.0)


def _dice_reference(p, t, axes, alpha=0.5, beta=0.5, smooth=1.0):
    i, ps, ts = (p * t).sum(axes), p.sum(axes), t.sum(axes)
    return 1 - (i + smooth) / (i + alpha * (ps - i) + beta * (ts - i) + smooth)


def test_dice_losses():
    x = normal(2, 3, 3, 4)
    t = np.eye(4, dtype=np.float32)[RNG.integers(0, 4, (2, 3, 3))]
    t[..., 0] = 0  # class 0 absent
    t[0, 0, 0] = [1, 0, 0, 0]
    p = special.softmax(x.astype(np.float64), axis=-1)
    per_class = _dice_reference(p, t, (1, 2), alpha=0.3, beta=0.7, smooth=0.5)
    close(ol.dice_loss(x, t, alpha=0.3, beta=0.7, smooth=0.5, reduction="none"), per_class, rtol=1e-5)
    w = np.array([1.0, 2.0, 3.0, 4.0])
    close(ol.dice_loss(x, t, alpha=0.3, beta=0.7, smooth=0.5, class_weights=w), (per_class * w).mean(-1), rtol=1e-5)
    close(ol.dice_loss(x, t, alpha=0.3, beta=0.7, smooth=0.5, ignore_background=True, reduction="sum"), per_class[:, 1:].sum(-1), rtol=1e-5)
    binary = _dice_reference(special.expit(x[..., 0].astype(np.float64)), t[..., 0], (1, 2))
    close(ol.binary_dice_loss(x[..., 0], t[..., 0]), binary, rtol=1e-5)
    close(ol.binary_dice_loss(special.expit(x[..., :1]), t[..., :1], apply_sigmoid=False), binary, rtol=1e-5)
    volume = t.sum((0, 1, 2))
    weights = 1 / (volume**2 + 1e-7)
    weights = 4 * weights / weights.sum()
    plain = _dice_reference(p, t, (1, 2))
    close(ol.multiclass_generalized_dice_loss(x, t), (plain * weights).mean(), rtol=1e-5)
    with pytest.raises(ValueError, match=r"reduction must be one of .*got 'max'"):
        ol.dice_loss(x, t, reduction="max")


def test_binary_dice_without_class_axis():
    # A binary input may leave out its class axis of size 1, and one class
    # has no background channel to drop.
    x = normal(2, 3, 3)
    t = (RNG.random((2, 3, 3)) < 0.5).astype(np.float32)
    binary = _dice_reference(special.expit(x.astype(np.float64)), t, (1, 2))
    close(ol.dice_loss(x, t[..., None]), binary, rtol=1e-5)
    close(ol.dice_loss(x[..., None], t), binary, rtol=1e-5)
    close(ol.dice_loss(x[..., None], t[..., None], ignore_background=True), binary, rtol=1e-5)
    close(ol.binary_dice_loss(x, t[..., None]), binary, rtol=1e-5)
    close(jax.jit(ol.dice_loss)(x, t[..., None] == 1), binary, rtol=1e-5)
    with pytest.raises(ValueError, match=r"predictions.shape=\(2, 3, 3\) and targets.shape=\(2, 3, 3, 2\)"):
        ol.dice_loss(x, np.stack([t, 1 - t], axis=-1))


def test_softmax_cross_entropy_with_a_mask_per_example():
    # A mask of the logits' shape without the class axis keeps or drops whole
    # examples; a dropped example has loss 0 and a zero gradient.
    x, y = normal(3, 4), probs(3, 4)
    per_example = -(y * special.log_softmax(x.astype(np.float64), axis=-1)).sum(-1)
    keep = np.array([True, False, True])
    close(ol.softmax_cross_entropy(x, y, where=keep), np.where(keep, per_example, 0.0))
    close(jax.jit(ol.softmax_cross_entropy)(x, y, where=keep), np.where(keep, per_example, 0.0))
    close(ol.softmax_cross_entropy(x.T, y.T, axis=0, where=keep), np.where(keep, per_example, 0.0))
    grad = jax.grad(lambda v: ol.softmax_cross_entropy(v, y, where=keep).sum())(x)
    np.testing.assert_array_equal(grad[1], 0.0)
    softmax = special.softmax(x.astype(np.float64), axis=-1)
    close(grad[keep], (softmax * y.sum(-1, keepdims=True) - y)[keep], rtol=1e-5, atol=1e-6)


def test_ntxent():
    e = normal(6, 3)
    e[5] = 0.0
    labels = np.array([0, 0, 1, 1, 2, 2])
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    u = e / np.where(norms > 0, norms, 1)
    s = (u @ u.T / 0.5).astype(np.float64)
    pair_losses = []
    for i in range(6):
        for j in range(6):
            if i != j and labels[i] == labels[j]:
                neg = s[i][labels != labels[i]]
                pair_losses.append(np.log(np.exp(s[i, j]) + np.exp(neg).sum()) - s[i, j])
    close(ol.ntxent(e, labels, temperature=0.5), np.mean(pair_losses), rtol=1e-5)
    assert float(ol.ntxent(e, np.arange(6))) == 0.0  # no positive pair


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_triplet_margin_loss(degree):
    a, p, n = normal(4, 3), normal(4, 3), normal(4, 3)

    def dist(x, y):
        return ((np.abs(x - y) ** degree).sum(-1) + 1e-3) ** (1 / degree)

    close(ol.triplet_margin_loss(a, p, n, norm_degree=degree, margin=0.8, eps=1e-3), np.maximum(dist(a, p) - dist(a, n) + 0.8, 0), rtol=1e-5)


def _ctc_reference(logits, labels, blank):
    """Forward algorithm on the blank-extended label sequence (Graves 2006)."""
    logp = special.log_softmax(logits.astype(np.float64), axis=-1)
    ext = [blank]
    for label in labels:
        ext += [label, blank]
    alpha = np.full(len(ext), -np.inf)
    alpha[0] = logp[0, blank]
    if len(ext) > 1:
        alpha[1] = logp[0, ext[1]]
    for t in range(1, len(logp)):
        new = np.full_like(alpha, -np.inf)
        for s in range(len(ext)):
            terms = [alpha[s]] + ([alpha[s - 1]] if s >= 1 else [])
            if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
                terms.append(alpha[s - 2])
            new[s] = np.logaddexp.reduce(terms) + logp[t, ext[s]]
        alpha = new
    return -np.logaddexp(alpha[-1], alpha[-2]) if len(ext) > 1 else -alpha[-1]


def test_ctc_loss():
    logits = normal(3, 6, 4)
    labels = np.array([[1, 2, 2], [3, 1, 0], [2, 0, 0]])
    label_pad = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 1]], np.float32)
    logit_pad = np.array([[0] * 6, [0] * 5 + [1], [0] * 4 + [1, 1]], np.float32)
    ours = ol.ctc_loss(logits, logit_pad, labels, label_pad)
    lengths = [(6, 3), (5, 2), (4, 1)]
    ref = [_ctc_reference(logits[b, :tl], labels[b, :ll], 0) for b, (tl, ll) in enumerate(lengths)]
    close(ours, np.array(ref), rtol=1e-5)
    loss, blank_alpha, label_alpha = ol.ctc_loss_with_forward_probs(logits, logit_pad, labels, label_pad, blank_id=3)
    assert blank_alpha.shape == (6, 3, 4) and label_alpha.shape == (6, 3, 3)
    ref3 = [_ctc_reference(logits[b, :tl], np.where(labels[b, :ll] == 3, 0, labels[b, :ll]), 3) for b, (tl, ll) in enumerate(lengths)]
    # blank_id=3 with label 3 in row 1 would be invalid: compare rows 0 and 2 only.
    close(loss[np.array([0, 2])], np.array(ref3)[np.array([0, 2])], rtol=1e-5)


@pytest.mark.parametrize("axis", [(1, 2), (-2, -1), (2, 1)])
def test_integer_labels_with_tuple_axis(axis):
    # Reference: the class axes moved last in the given order and flattened; a
    # label is a flat index into them; loss = logsumexp - logit of the label.
    logits = normal(2, 3, 4)
    labels = RNG.integers(0, 12, size=(2,))
    flat = np.moveaxis(logits.astype(np.float64), axis, (-2, -1)).reshape(2, 12)
    expected = special.logsumexp(flat, axis=-1) - flat[np.arange(2), labels]
    close(ol.softmax_cross_entropy_with_integer_labels(logits, labels, axis=axis), expected)
    # A mask of the labels' shape includes or drops whole examples; a dropped one has loss 0.
    masked = ol.softmax_cross_entropy_with_integer_labels(logits, labels, axis=axis, where=np.array([True, False]))
    close(masked, [expected[0], 0.0])
    with pytest.raises(ValueError, match="twice"):
        ol.softmax_cross_entropy_with_integer_labels(logits, labels, axis=(1, -2))
    with pytest.raises(ValueError, match="out of bounds"):
        ol.softmax_cross_entropy_with_integer_labels(logits, labels, axis=(1, 3))
    with pytest.raises(TypeError, match="tuple of ints"):
        ol.softmax_cross_entropy_with_integer_labels(logits, labels, axis=[1, 2])
