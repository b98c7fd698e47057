"""The three tasks of the low-bit quality study: data, models and losses in plain JAX.

Each task builds a :class:`Problem` for a seed. The seed fixes everything that
varies between runs (the initial parameters, the order of the minibatches and,
for the synthetic task, the data), so every optimizer sees exactly the same
problem and the same batches for a given seed.

* ``digits``: a two-hidden-layer MLP on scikit-learn's 8x8 digits (needs
  scikit-learn; the data ships inside it, nothing is downloaded).
* ``charlm``: a small causal transformer language model over bytes, on a corpus
  made of this Python's standard library sources.
* ``logreg``: multinomial logistic (softmax) regression on synthetic data with
  label noise, so the loss has a floor well above zero.

Sizes are chosen so that the large weight matrices are well above the low-bit
optimizers' float32 threshold (about 4096 elements): the quantization is
exercised, and only biases and norm parameters stay in float32.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sysconfig
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SKLEARN_HINT = (
    "the digits task needs scikit-learn (its data ships inside it): "
    "pip install -r plugins/optcore-lowbit/study/requirements.txt, "
    "or leave the task out: --tasks charlm,logreg"
)


class Problem(NamedTuple):
    """One task at one seed: everything a training run needs."""

    params: Any  # initial parameters
    data: Any  # device arrays the batches are taken from
    order: np.ndarray  # (steps, ...) integer batch selectors, one row per step
    train_eval: Any  # a fixed batch for the training loss
    heldout_eval: Any  # a fixed batch for the held-out loss
    info: dict  # sizes, for the report


@dataclasses.dataclass(frozen=True)
class Task:
    """A task: how to build its problem, its batches and its loss."""

    name: str
    title: str
    learning_rate: float
    steps: int
    eval_every: int
    build: Callable[[int], Problem]  # seed -> Problem
    select: Callable[[Any, jax.Array], Any]  # (data, order row) -> batch; traced
    loss: Callable[[Any, Any], jax.Array]  # (params, batch) -> mean loss; traced


def _dense(key, fan_in, fan_out):
    """He-style uniform init for a weight matrix and a zero bias."""
    limit = np.sqrt(6.0 / fan_in)
    return {
        "w": jax.random.uniform(key, (fan_in, fan_out), jnp.float32, -limit, limit),
        "b": jnp.zeros((fan_out,), jnp.float32),
    }


def _cross_entropy(logits, labels):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))


def _select_rows(data, rows):
    x, y = data
    return x[rows], y[rows]


# ---------------------------------------------------------------------------
# (a) MLP on scikit-learn's digits


def load_digits_arrays():
    """(x, y): the 1797 digits, pixels scaled to [0, 1]; a clear error without scikit-learn."""
    try:
        from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise SystemExit(f"error: {SKLEARN_HINT}") from err
    digits = load_digits()
    return digits.data.astype(np.float32) / 16.0, digits.target.astype(np.int32)


def digits_task(quick: bool) -> Task:
    hidden = 256  # weights 64x256 and 256x256 are quantized; 256x10 (2560) stays float32
    batch = 64
    steps = 40 if quick else 300
    cache = {}

    def arrays():
        if "xy" not in cache:
            cache["xy"] = load_digits_arrays()
        return cache["xy"]

    def build(seed: int) -> Problem:
        x, y = arrays()
        # One fixed split for every seed: the held-out set never changes.
        perm = np.random.RandomState(12345).permutation(len(x))
        n_test = 360
        test, train = perm[:n_test], perm[n_test:]
        rng = np.random.RandomState(seed)
        order = np.stack([rng.choice(len(train), batch, replace=False) for _ in range(steps)])
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
        params = {"l1": _dense(k1, 64, hidden), "l2": _dense(k2, hidden, hidden), "out": _dense(k3, hidden, 10)}
        train_xy = (jnp.asarray(x[train]), jnp.asarray(y[train]))
        info = {"train_examples": len(train), "heldout_examples": n_test, "batch": batch, "hidden": hidden}
        return Problem(params, train_xy, order, train_xy, (jnp.asarray(x[test]), jnp.asarray(y[test])), info)

    def loss(params, batch_xy):
        x, y = batch_xy
        h = jax.nn.relu(x @ params["l1"]["w"] + params["l1"]["b"])
        h = jax.nn.relu(h @ params["l2"]["w"] + params["l2"]["b"])
        return _cross_entropy(h @ params["out"]["w"] + params["out"]["b"], y)

    return Task("digits", "MLP 64-256-256-10 on scikit-learn digits", 2e-3, steps, 10 if quick else 20,
                build, _select_rows, loss)


# ---------------------------------------------------------------------------
# (b) character-level transformer LM on the standard library's sources


def stdlib_corpus(n_bytes: int) -> tuple[np.ndarray, dict]:
    """The first ``n_bytes`` bytes of this Python's top-level stdlib ``*.py`` files, in sorted order.

    Deterministic for a given Python version (the sources differ between
    versions; the report records the version and the corpus hash).
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"), key=lambda p: p.name)
    chunks, total = [], 0
    for path in files:
        chunks.append(path.read_bytes() + b"\n")
        total += len(chunks[-1])
        if total >= n_bytes:
            break
    if total < n_bytes:
        raise SystemExit(f"error: the stdlib sources under {root} hold {total} bytes, fewer than {n_bytes}.")
    text = b"".join(chunks)[:n_bytes]
    meta = {
        "root": str(root),
        "files_used": len(chunks),
        "bytes": n_bytes,
        "sha256": hashlib.sha256(text).hexdigest(),
    }
    return np.frombuffer(text, dtype=np.uint8).astype(np.int32), meta


def _layer_norm(x, p):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * p["scale"] + p["bias"]


def charlm_task(quick: bool) -> Task:
    vocab, d, heads, ctx, mlp = 256, 64, 4, 64, 256
    layers = 1 if quick else 2  # one layer compiles in half the time; its leaves have the same sizes
    batch = 16 if quick else 32
    # 1600 steps, 1.6 passes over the training text. Stopped at 400 (mid-descent: the loss still fell by
    # 0.1 per 100 steps), float32 AdamW's own final losses varied over the seeds by 2.7% (one standard
    # deviation), too much to resolve a 1% tolerance; at 1600 steps by 0.14%.
    steps = 30 if quick else 1600
    # Two megabytes of training text (many modules, so the held-out modules are not a
    # different style from everything seen), then 200 kB of later modules held out.
    n_train = 50_000 if quick else 2_000_000
    n_heldout = 20_000 if quick else 200_000
    n_eval = 16 if quick else 128  # windows in each evaluation batch
    cache = {}

    def corpus():
        if "tokens" not in cache:
            cache["tokens"], cache["meta"] = stdlib_corpus(n_train + n_heldout)
        return cache["tokens"], cache["meta"]

    def windows(tokens, starts):
        idx = starts[:, None] + np.arange(ctx + 1)[None, :]
        return jnp.asarray(tokens[idx])

    def init(key):
        keys = iter(jax.random.split(key, 4 + 4 * layers))
        std = 0.02
        params = {
            "embed": std * jax.random.normal(next(keys), (vocab, d)),  # 16384: quantized
            "pos": std * jax.random.normal(next(keys), (ctx, d)),  # 4096: at the threshold
            "final_norm": {"scale": jnp.ones((d,)), "bias": jnp.zeros((d,))},
            "unembed": std * jax.random.normal(next(keys), (d, vocab)),  # 16384: quantized
            "blocks": [],
        }
        for _ in range(layers):
            params["blocks"].append({
                "norm1": {"scale": jnp.ones((d,)), "bias": jnp.zeros((d,))},
                "qkv": std * jax.random.normal(next(keys), (d, 3 * d)),  # 12288
                "proj": std / np.sqrt(2 * layers) * jax.random.normal(next(keys), (d, d)),  # 4096
                "norm2": {"scale": jnp.ones((d,)), "bias": jnp.zeros((d,))},
                "fc": {"w": std * jax.random.normal(next(keys), (d, mlp)), "b": jnp.zeros((mlp,))},  # 16384
                "fc_out": {"w": std / np.sqrt(2 * layers) * jax.random.normal(next(keys), (mlp, d)),
                           "b": jnp.zeros((d,))},  # 16384
            })
        return params

    def build(seed: int) -> Problem:
        tokens, meta = corpus()
        rng = np.random.RandomState(seed)
        order = rng.randint(0, n_train - ctx - 1, size=(steps, batch)).astype(np.int32)
        # Fixed evaluation windows, evenly spaced: the training loss over the training
        # text, the held-out loss over the later slice that training never sees.
        train_starts = np.linspace(0, n_train - ctx - 1, n_eval).astype(np.int64)
        heldout_starts = np.linspace(n_train, n_train + n_heldout - ctx - 1, n_eval).astype(np.int64)
        info = {"corpus": meta, "train_bytes": n_train, "heldout_bytes": n_heldout, "batch": batch,
                "context": ctx, "d_model": d, "heads": heads, "layers": layers, "mlp": mlp,
                "eval_windows": n_eval}
        return Problem(init(jax.random.PRNGKey(seed)), jnp.asarray(tokens[:n_train]), order,
                       windows(tokens, train_starts), windows(tokens, heldout_starts), info)

    def select(tokens, starts):
        idx = starts[:, None] + jnp.arange(ctx + 1)[None, :]
        return tokens[idx]

    def loss(params, seqs):
        inputs, targets = seqs[:, :-1], seqs[:, 1:]
        x = params["embed"][inputs] + params["pos"][None, : inputs.shape[1]]
        t = inputs.shape[1]
        causal = jnp.tril(jnp.ones((t, t), bool))
        for blk in params["blocks"]:
            h = _layer_norm(x, blk["norm1"])
            q, k, v = jnp.split(h @ blk["qkv"], 3, axis=-1)
            split = lambda a: a.reshape(a.shape[0], t, heads, d // heads)  # noqa: E731
            q, k, v = split(q), split(k), split(v)
            scores = jnp.einsum("bqhc,bkhc->bhqk", q, k) / np.sqrt(d // heads)
            scores = jnp.where(causal, scores, -1e30)
            att = jnp.einsum("bhqk,bkhc->bqhc", jax.nn.softmax(scores, axis=-1), v).reshape(x.shape)
            x = x + att @ blk["proj"]
            h = _layer_norm(x, blk["norm2"])
            h = jax.nn.gelu(h @ blk["fc"]["w"] + blk["fc"]["b"])
            x = x + h @ blk["fc_out"]["w"] + blk["fc_out"]["b"]
        logits = _layer_norm(x, params["final_norm"]) @ params["unembed"]
        return _cross_entropy(logits, targets)

    title = f"byte-level causal transformer ({layers} layers, d={d}, {heads} heads, context {ctx}) on stdlib sources"
    return Task("charlm", title, 3e-3, steps, 10 if quick else 50, build, select, loss)


# ---------------------------------------------------------------------------
# (c) multinomial logistic regression on synthetic data


def logreg_task(quick: bool) -> Task:
    features, classes = 256, 20  # W is 256x20 = 5120 elements: quantized
    # Eight examples per parameter: held-out loss follows the training loss down to
    # near the labels' entropy instead of overfitting.
    n_train = 4096 if quick else 32768
    n_heldout = 1024 if quick else 4096
    batch = 256
    steps = 30 if quick else 600

    def build(seed: int) -> Problem:
        rng = np.random.RandomState(seed)
        true_w = rng.normal(size=(features, classes)).astype(np.float32) * (3.0 / np.sqrt(features))
        x = rng.normal(size=(n_train + n_heldout, features)).astype(np.float32)
        # Labels drawn from the true model's softmax (Gumbel-max): noisy, so the
        # loss floor (the labels' entropy) is far from zero.
        y = np.argmax(x @ true_w + rng.gumbel(size=(len(x), classes)), axis=1).astype(np.int32)
        order = np.stack([rng.choice(n_train, batch, replace=False) for _ in range(steps)])
        params = {"w": jnp.zeros((features, classes), jnp.float32), "b": jnp.zeros((classes,), jnp.float32)}
        train = (jnp.asarray(x[:n_train]), jnp.asarray(y[:n_train]))
        heldout = (jnp.asarray(x[n_train:]), jnp.asarray(y[n_train:]))
        info = {"features": features, "classes": classes, "train_examples": n_train,
                "heldout_examples": n_heldout, "batch": batch}
        return Problem(params, train, order, train, heldout, info)

    def loss(params, batch_xy):
        x, y = batch_xy
        return _cross_entropy(x @ params["w"] + params["b"], y)

    return Task("logreg", f"multinomial logistic regression ({features} features, {classes} classes), synthetic",
                6e-3, steps, 10 if quick else 30, build, _select_rows, loss)


TASKS = {"digits": digits_task, "charlm": charlm_task, "logreg": logreg_task}
