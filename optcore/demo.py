"""``optcore demo``: trains a small MLP on a synthetic two-spirals data set.

It shows the whole stack at work: an optimizer looked up by name, a chain of
gradient clipping and AdamW with a learning-rate schedule, and the loss of the
optcore-losses plugin when it is installed.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import optcore


def two_spirals(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals in the plane: a classic non-linearly-separable set."""
    rng = np.random.default_rng(seed)
    theta = np.sqrt(rng.uniform(0.0, 1.0, n_per_class)) * 3 * np.pi
    radius = theta / (3 * np.pi)
    arm = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
    x = np.concatenate([arm, -arm]) + rng.normal(0.0, 0.02, (2 * n_per_class, 2))
    y = np.concatenate([np.zeros(n_per_class, np.int32), np.ones(n_per_class, np.int32)])
    return x.astype(np.float32), y


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> list[dict[str, jax.Array]]:
    params = []
    for fan_in, fan_out, k in zip(sizes[:-1], sizes[1:], jax.random.split(key, len(sizes) - 1)):
        params.append({"w": jax.random.normal(k, (fan_in, fan_out)) * jnp.sqrt(2.0 / fan_in), "b": jnp.zeros(fan_out)})
    return params


def mlp(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def _cross_entropy():
    """The plugin's loss when installed; otherwise the same formula written here."""
    try:
        return optcore.get("softmax_cross_entropy_with_integer_labels"), "optcore-losses"
    except optcore.UnknownNameError:
        pass
    try:
        loss = optcore.get("softmax_cross_entropy")
        return (lambda logits, labels: loss(logits, jax.nn.one_hot(labels, logits.shape[-1]))), "optcore-losses"
    except optcore.UnknownNameError:

        def cross_entropy(logits, labels):
            log_probs = jax.nn.log_softmax(logits)
            return -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]

        return cross_entropy, "built-in fallback (install optcore-losses to use the plugin)"


def main(steps: int = 300, seed: int = 0) -> int:
    from optcore import plugins

    loaded = [p for p in plugins.list_plugins() if p.status == "loaded"]
    print(f"optcore {optcore.__version__} on {jax.default_backend()}; plugins loaded: "
          + ", ".join(f"{p.distribution or p.name} {p.version or ''}".strip() for p in loaded))
    cross_entropy, loss_source = _cross_entropy()
    print(f"loss: softmax cross-entropy from {loss_source}")

    x, y = two_spirals(256, seed)
    params = init_mlp(jax.random.PRNGKey(seed), (2, 32, 32, 2))
    schedule = optcore.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=3e-2, warmup_steps=max(1, steps // 10), decay_steps=steps, end_value=1e-3
    )
    optimizer = optcore.chain(
        optcore.clip_by_global_norm(1.0),
        optcore.get("adamw", learning_rate=schedule, weight_decay=1e-4),
    )
    print("optimizer: chain(clip_by_global_norm(1.0), adamw(warmup_cosine_decay_schedule(0 -> 3e-2 -> 1e-3), "
          "weight_decay=1e-4))")
    opt_state = optimizer.init(params)

    def loss_fn(params, x, y):
        return jnp.mean(cross_entropy(mlp(params, x), y))

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optcore.apply_updates(params, updates), opt_state, loss

    def accuracy(params):
        return float(jnp.mean(jnp.argmax(mlp(params, x), axis=-1) == y))

    start = time.perf_counter()
    first_loss = None
    report_every = max(1, steps // 10)
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, x, y)
        if first_loss is None:
            first_loss = float(loss)
        if i % report_every == 0 or i == steps - 1:
            print(f"step {i:4d}  loss {float(loss):.4f}  accuracy {accuracy(params):.3f}")
    final_loss = float(loss_fn(params, x, y))
    print(f"trained {steps} steps in {time.perf_counter() - start:.1f}s: loss {first_loss:.4f} -> {final_loss:.4f}, "
          f"accuracy {accuracy(params):.3f}")
    return 0 if final_loss < first_loss else 1
