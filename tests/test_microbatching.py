"""optcore.microbatching against direct evaluation on the full batch (NumPy / jax.vmap)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
from optcore import microbatching as mb

A = mb.AccumulationType


def test_reshape_batch_axis_is_column_major():
    x = jnp.arange(12.0).reshape(6, 2)
    r = mb.reshape_batch_axis(x, 2)
    assert r.shape == (3, 2, 2)
    # Micro-batch i holds rows i, i + 3.
    np.testing.assert_array_equal(r[1, :, 0], [2.0, 8.0])
    r = mb.reshape_batch_axis(jnp.arange(6.0)[None], 3, axis=1)
    np.testing.assert_array_equal(r[0], [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]])
    with pytest.raises(ValueError, match="divide"):
        mb.reshape_batch_axis(x, 4)


@pytest.mark.parametrize("size", [None, 1, 2, 3])
def test_microbatch_accumulators_match_full_batch(size):
    x = jnp.arange(6.0) * 0.5 - 1.0
    f = lambda v: (v**2 + 1, jnp.sum(v), jnp.mean(v), jnp.mean(v))  # noqa: E731
    out = jax.jit(mb.microbatch(f, 0, size, accumulator=(A.CONCAT, A.SUM, A.MEAN, A.RUNNING_MEAN)))(x)
    xn = np.asarray(x)
    np.testing.assert_allclose(out[0], xn**2 + 1, rtol=1e-6)
    np.testing.assert_allclose(out[1], xn.sum(), rtol=1e-6)
    np.testing.assert_allclose(out[2], xn.mean(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[3], xn.mean(), rtol=1e-6, atol=1e-7)


def test_microbatch_kwargs_axes_real_count_and_custom_accumulator():
    g = lambda w, x, y: (w * x, jnp.sum(y))  # noqa: E731
    out = mb.microbatch(g, (1,), 2, accumulator=A.CONCAT, argnames="y")(2.0, jnp.arange(4.0), y=jnp.arange(4.0))
    np.testing.assert_array_equal(out[0], 2.0 * np.arange(4.0))
    np.testing.assert_array_equal(out[1], [0 + 2, 1 + 3])  # one scalar per micro-batch
    x = jnp.arange(8.0).reshape(2, 4)
    out = mb.microbatch(lambda v: v.sum(0), 0, 2, in_axes=1)(x)
    np.testing.assert_allclose(out, np.asarray(x).sum(0).reshape(2, 2).sum(1))  # micro-batch i = columns i, i + 2
    # Only the first 2 of 3 micro-batches run (rows 0, 3 and 1, 4).
    out = mb.microbatch(jnp.sum, 0, 2, num_real_microbatches=jnp.array(2))(jnp.arange(6.0))
    assert float(out) == 0 + 3 + 1 + 4
    maximum = mb.Accumulator(
        init=lambda s: jnp.full(s.shape, -jnp.inf, s.dtype),
        update=lambda c, v, i: jnp.maximum(c, v),
        finalize=lambda c: c,
        aggregate=lambda v: jnp.max(v, axis=0),
    )
    out = mb.microbatch(jnp.max, 0, 2, accumulator=maximum)(jnp.array([3.0, -1.0, 7.0, 2.0]))
    assert float(out) == 7.0
    assert mb.microbatch(jnp.sum, 0, None) is jnp.sum
    assert optcore.microbatch is mb.microbatch


@pytest.mark.parametrize("acc", [A.CONCAT, A.SUM, A.MEAN])
@pytest.mark.parametrize("size", [None, 2])
def test_micro_vmap_matches_vmap(acc, size):
    f = lambda v, c: jnp.tanh(v) * c  # noqa: E731
    x = jnp.linspace(-1.0, 1.0, 8).reshape(4, 2)
    full = jax.vmap(f, in_axes=(0, None))(x, 3.0)
    out = mb.micro_vmap(f, in_axes=(0, None), microbatch_size=size, accumulator=acc)(x, 3.0)
    expected = {A.CONCAT: full, A.SUM: full.sum(0), A.MEAN: full.mean(0)}[acc]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="out_axes"):
        mb.micro_vmap(f, out_axes=1)


@pytest.mark.parametrize("size", [None, 2])
def test_micro_vmap_maps_keyword_arguments_as_vmap_does(size):
    # jax.vmap maps keyword arguments over their leading axis: row i of y goes with row i of x.
    def f(x, *, y):
        return jnp.sum(x + y)

    x = jnp.arange(32.0).reshape(4, 8)
    y = jnp.arange(4.0)[:, None] * jnp.ones((4, 8))
    expected = [np.sum(np.arange(8.0) + 8 * i) + 8 * i for i in range(4)]
    np.testing.assert_allclose(jax.vmap(f)(x, y=y), expected)  # the semantics matched
    np.testing.assert_allclose(mb.micro_vmap(f, microbatch_size=size)(x, y=y), expected)
    np.testing.assert_allclose(mb.micro_vmap(f, microbatch_size=size, accumulator=A.SUM)(x, y=y), sum(expected))


@pytest.mark.parametrize("keep_batch_dim", [True, False])
@pytest.mark.parametrize("size", [None, 2])
def test_micro_grad_per_example_gradients(keep_batch_dim, size):
    w = jnp.array([0.3, -0.2])
    xs = jnp.arange(8.0).reshape(4, 2) / 4
    ys = jnp.array([0.0, 1.0, -1.0, 2.0])

    def loss(params, x, y):
        r = x @ params - y
        return 0.5 * jnp.mean(r**2), {"r": r}

    clip = lambda g: g / jnp.maximum(1.0, jnp.linalg.norm(g))  # noqa: E731
    grads, aux = mb.micro_grad(
        loss,
        has_aux=True,
        batch_argnums=(1, 2),
        keep_batch_dim=keep_batch_dim,
        microbatch_size=size,
        transform_fn=clip,
        metrics_fn=jnp.linalg.norm,
    )(w, xs, ys)
    wn, xn, yn = np.asarray(w), np.asarray(xs), np.asarray(ys)
    per_example = [(xn[b] @ wn - yn[b]) * xn[b] for b in range(4)]
    norms = [np.linalg.norm(g) for g in per_example]
    clipped = sum(g / max(1.0, n) for g, n in zip(per_example, norms))
    np.testing.assert_allclose(grads, clipped, rtol=1e-5)
    np.testing.assert_allclose(aux.metrics, norms, rtol=1e-5)
    np.testing.assert_allclose(aux.values, [0.5 * (xn[b] @ wn - yn[b]) ** 2 for b in range(4)], rtol=1e-5)
    assert aux.aux["r"].shape == ((4, 1) if keep_batch_dim else (4,))
    assert aux._fields == ("values", "metrics", "aux")
