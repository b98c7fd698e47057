"""make_perturbed_fun against closed forms (Gumbel-max gives softmax; E|x + sigma Z| for Gaussians)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import optcore_stochastic.perturbations as perturbations


def _one_hot_argmax(x):
    return jax.nn.one_hot(jnp.argmax(x), x.shape[0])


def test_gumbel_argmax_smooths_to_softmax():
    """E[one_hot(argmax(x + s G))] = softmax(x / s) (Gumbel-max trick), and its Jacobian.

    Tolerances: each value entry is a mean of N Bernoullis (standard error <= 0.5/sqrt(N));
    each Jacobian entry a mean of r * (1 - exp(-g)) / s with |r| <= 1 and Var(exp(-g)) = 1
    (exp(-g) is Exp(1) for standard Gumbel g), so its standard error is <= 1/(s sqrt(N)).
    """
    num_samples, sigma = 10_000, 0.8
    smoothed = perturbations.make_perturbed_fun(_one_hot_argmax, num_samples=num_samples, sigma=sigma)
    x = jnp.array([0.2, -0.1, 0.5])
    key = jax.random.key(0)
    value = jax.jit(smoothed)(key, x)
    jacobian = jax.jit(jax.jacrev(smoothed, argnums=1))(key, x)
    np.testing.assert_allclose(value, jax.nn.softmax(x / sigma), atol=4 * 0.5 / math.sqrt(num_samples))
    np.testing.assert_allclose(jacobian, jax.jacobian(lambda y: jax.nn.softmax(y / sigma))(x), atol=4 / (sigma * math.sqrt(num_samples)))
    # forward mode gives the same estimate from the same noise
    np.testing.assert_allclose(jax.jit(jax.jacfwd(smoothed, argnums=1))(key, x), jacobian, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("use_baseline", [True, False])
def test_normal_noise_absolute_value(use_baseline):
    r"""E|x + s Z| = s sqrt(2/pi) exp(-x^2 / 2 s^2) + x (1 - 2 Phi(-x/s)); derivative erf(x / (s sqrt 2)).

    Tolerances: the per-sample gradient is (|x + s z| - b) z / s, bounded by z^2 with the
    baseline b = |x| (variance <= E z^4 = 3) and by (|x|/s)|z| + z^2 without it (second
    moment (x/s)^2 + 2 (|x|/s) E|z|^3 + 3, with E|z|^3 = 2 sqrt(2/pi)); 4 standard errors.
    """
    num_samples, sigma = 20_000, 0.5
    smoothed = perturbations.make_perturbed_fun(
        jnp.abs, num_samples=num_samples, sigma=sigma, noise=perturbations.Normal(), use_baseline=use_baseline)
    value_and_grad = jax.jit(jax.value_and_grad(smoothed, argnums=1))
    for seed, x in enumerate([-0.6, 0.1, 0.3]):
        value, grad = value_and_grad(jax.random.key(seed), jnp.float32(x))
        expected_value = sigma * math.sqrt(2 / math.pi) * math.exp(-(x**2) / (2 * sigma**2)) + x * (1 - 2 * stats.norm.cdf(-x / sigma))
        ratio = abs(x) / sigma
        second_moment = 3.0 if use_baseline else ratio**2 + 2 * ratio * 2 * math.sqrt(2 / math.pi) + 3.0
        np.testing.assert_allclose(value, expected_value, atol=4 * sigma * 1.0 / math.sqrt(num_samples))
        np.testing.assert_allclose(grad, special.erf(x / (sigma * math.sqrt(2))), atol=4 * math.sqrt(second_moment / num_samples))


def test_pytree_inputs_and_outputs_and_determinism():
    def fun(tree):
        return {"sum": jnp.sum(tree["a"]) + tree["b"], "max": jnp.max(tree["a"])}

    smoothed = perturbations.make_perturbed_fun(fun, num_samples=64, sigma=0.3, noise=perturbations.Normal())
    tree = {"a": jnp.array([0.1, 0.7]), "b": jnp.float32(2.0)}
    run = jax.jit(smoothed)
    out = run(jax.random.key(0), tree)
    assert set(out) == {"sum", "max"} and out["max"].shape == ()
    np.testing.assert_array_equal(run(jax.random.key(0), tree)["max"], out["max"])
    assert not np.allclose(run(jax.random.key(1), tree)["max"], out["max"])
    grads = jax.jit(jax.grad(lambda t: smoothed(jax.random.key(0), t)["sum"]))(tree)
    assert jax.tree.structure(grads) == jax.tree.structure(tree)
    # sum(a) + b is linear: with the baseline, (f(x + s z) - f(x)) is exactly s (z_a1 + z_a2 + z_b),
    # so each gradient entry is mean((z_a1 + z_a2 + z_b) z_i), about 1 (standard error sqrt(4/64)).
    for leaf in jax.tree.leaves(grads):
        np.testing.assert_allclose(leaf, 1.0, atol=4 * math.sqrt(4 / 64))


def test_noise_distributions():
    z = jnp.array([-1.0, 0.0, 2.0])
    np.testing.assert_allclose(perturbations.Gumbel().log_prob(z), -z - jnp.exp(-z), rtol=1e-6)
    np.testing.assert_allclose(perturbations.Normal().log_prob(z), -0.5 * z**2, rtol=1e-6)
    draws = perturbations.Gumbel().sample(jax.random.key(0), (4_000,))
    # Standard Gumbel: mean = Euler's gamma, variance pi^2 / 6.
    np.testing.assert_allclose(np.mean(draws), np.euler_gamma, atol=4 * math.pi / math.sqrt(6 * 4_000))
    assert perturbations.Normal().sample(jax.random.key(0), (3, 2), jnp.bfloat16).dtype == jnp.bfloat16


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="sigma"):
        perturbations.make_perturbed_fun(jnp.abs, sigma=0.0)
    with pytest.raises(ValueError, match="num_samples"):
        perturbations.make_perturbed_fun(jnp.abs, num_samples=0)
    with pytest.raises(TypeError, match="noise"):
        perturbations.make_perturbed_fun(jnp.abs, noise=object())


@pytest.mark.parametrize(
    "differentiate",
    [
        pytest.param(lambda f: jax.jacrev(jax.jit(f), argnums=1), id="jacrev_of_jit"),
        pytest.param(lambda f: jax.jacrev(lambda k, y: jax.jit(f)(k, y), argnums=1), id="jacrev_through_jit_call"),
        pytest.param(lambda f: jax.grad(lambda k, y: jax.jit(f)(k, y)[0], argnums=1), id="grad_of_jit_component"),
    ],
)
def test_reverse_mode_through_jit_does_not_leak_a_tracer(differentiate):
    # The noise drawn inside jit is a tracer of that trace; a custom_jvp that
    # closed over it failed under reverse mode with "No constant handler for
    # type DynamicJaxprTracer". Reference: forward mode on the same noise, and
    # the closed form softmax(x / sigma) of Gumbel-max smoothing.
    num_samples, sigma = 10_000, 0.8
    smoothed = perturbations.make_perturbed_fun(_one_hot_argmax, num_samples=num_samples, sigma=sigma)
    x = jnp.array([0.2, -0.1, 0.5])
    key = jax.random.key(0)
    result = differentiate(smoothed)(key, x)
    forward = jax.jacfwd(smoothed, argnums=1)(key, x)
    exact = jax.jacobian(lambda y: jax.nn.softmax(y / sigma))(x)
    if result.ndim == 1:  # the gradient of output 0
        forward, exact = forward[0], exact[0]
    np.testing.assert_allclose(result, forward, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result, exact, atol=4 / (sigma * math.sqrt(num_samples)))
