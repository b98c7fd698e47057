"""Training runs for the quality study: jitted ``lax.scan`` chunks, one host read at the end.

A run trains ``task.steps`` steps in chunks of ``task.eval_every`` steps; each
chunk is one jitted ``lax.scan`` and is followed by one jitted evaluation of the
training and held-out losses. Nothing is read back to the host until the run
ends, so the host never waits on a step. The chunk and evaluation functions are
built once per (task, optimizer) and reused for every seed (same shapes, so
one compilation).
"""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import optcore

from lowbit_tasks import Task


def adamw_default_weight_decay() -> float:
    """float32 adamw's default weight decay, read from its signature (every optimizer gets the same)."""
    return float(inspect.signature(optcore.get("adamw")).parameters["weight_decay"].default)


def learning_rate_schedule(peak: float, steps: int):
    """Linear warmup over the first 5% of the steps, then cosine decay to a tenth of ``peak``.

    The decay makes the final losses depend little on the noise of the last few
    steps, so optimizers are compared on where they converge, not on a lucky step.
    Returns the schedule and a description of it for the report.
    """
    warmup = max(1, steps // 20)
    schedule = optcore.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=steps, end_value=peak / 10)
    return schedule, f"warmup_cosine_decay(peak={peak:g}, warmup_steps={warmup}, decay_steps={steps}, end={peak / 10:g})"


def build_optimizer(name: str, learning_rate: Any, weight_decay: float) -> tuple[Any, dict]:
    """``optcore.get(name, learning_rate=..., weight_decay=...)``; the decay only where the factory takes one.

    Returns the optimizer and the names of the hyperparameters it was built with.
    """
    factory = optcore.get(name)
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    hyperparams: dict[str, Any] = {"learning_rate": learning_rate}
    if "weight_decay" in parameters:
        hyperparams["weight_decay"] = weight_decay
    return optcore.get(name, **hyperparams), sorted(hyperparams)


def min_quantized_size(name: str) -> Any:
    """The optimizer's default ``min_quantized_size`` (leaves with fewer entries keep float state), or None."""
    try:
        parameter = inspect.signature(optcore.get(name)).parameters.get("min_quantized_size")
    except (TypeError, ValueError):
        return None
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return int(parameter.default)


def state_bytes(state: Any) -> dict:
    """The optimizer state's size: total bytes and bytes per dtype, over the state tree's leaves."""
    by_dtype: dict[str, int] = {}
    for leaf in jax.tree_util.tree_leaves(state):
        if hasattr(leaf, "nbytes") and hasattr(leaf, "dtype"):
            key = str(leaf.dtype)
            by_dtype[key] = by_dtype.get(key, 0) + int(leaf.nbytes)
    return {"total": sum(by_dtype.values()), "by_dtype": dict(sorted(by_dtype.items()))}


@functools.lru_cache(maxsize=None)
def _evaluator(task: Task):
    """The jitted (training loss, held-out loss) of a task: compiled once, shared by its optimizers."""

    def evaluate(params, train_eval, heldout_eval):
        return task.loss(params, train_eval), task.loss(params, heldout_eval)

    return jax.jit(evaluate)


class Runner:
    """The compiled step chunk and evaluation of one (task, optimizer)."""

    def __init__(self, task: Task, optimizer: Any):
        self.task = task
        self.optimizer = optimizer

        def step(carry, row, data):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(task.loss)(params, task.select(data, row))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optcore.apply_updates(params, updates), opt_state), loss

        def chunk(params, opt_state, data, rows):
            (params, opt_state), losses = jax.lax.scan(
                lambda carry, row: step(carry, row, data), (params, opt_state), rows)
            return params, opt_state, losses

        self.chunk = jax.jit(chunk)
        self.evaluate = _evaluator(task)

    def chunks(self, problem):
        """Trains from ``problem.params``, yielding ``(params, opt_state, step losses)`` after each chunk of
        ``eval_every`` steps (device arrays; nothing is read back)."""
        task = self.task
        if task.steps % task.eval_every:
            raise ValueError(f"{task.name}: steps ({task.steps}) must be a multiple of eval_every ({task.eval_every}).")
        params = problem.params
        opt_state = self.optimizer.init(params)
        order = jnp.asarray(problem.order)
        for first in range(0, task.steps, task.eval_every):
            params, opt_state, losses = self.chunk(params, opt_state, problem.data, order[first:first + task.eval_every])
            yield params, opt_state, losses

    def run(self, problem) -> dict:
        """Trains from ``problem.params``; returns the loss curves and final losses as Python floats."""
        task = self.task
        start = time.perf_counter()
        step_losses, evals = [], [self.evaluate(problem.params, problem.train_eval, problem.heldout_eval)]
        for params, _, losses in self.chunks(problem):
            step_losses.append(losses)
            evals.append(self.evaluate(params, problem.train_eval, problem.heldout_eval))
        # The one host read of the run.
        step_losses, evals = jax.device_get((step_losses, evals))
        seconds = time.perf_counter() - start
        train_eval = [float(t) for t, _ in evals]
        heldout_eval = [float(h) for _, h in evals]
        return {
            # Six significant digits: the curves, not float32 noise (keeps results.json small).
            "step_loss": [float(f"{v:.6g}") for v in np.concatenate(step_losses)],
            "eval_steps": list(range(0, task.steps + 1, task.eval_every)),
            "train_loss": train_eval,
            "heldout_loss": heldout_eval,
            "final_train_loss": train_eval[-1],
            "final_heldout_loss": heldout_eval[-1],
            "finite": bool(np.all(np.isfinite(train_eval)) and np.all(np.isfinite(heldout_eval))
                           and np.all(np.isfinite(np.concatenate(step_losses)))),
            "seconds": seconds,
        }


def param_summary(params: Any, threshold: int) -> dict:
    """Parameter count and the share in leaves of at least ``threshold`` elements (the quantized ones)."""
    sizes = [int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(params)]
    large = sum(s for s in sizes if s >= threshold)
    return {
        "parameters": sum(sizes),
        "leaves": len(sizes),
        "largest_leaf": max(sizes),
        "threshold": threshold,
        "parameters_in_large_leaves": large,
        "fraction_in_large_leaves": large / sum(sizes),
    }
