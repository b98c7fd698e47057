"""The entry-point module: optcore calls these hooks through pluggy.

* ``optcore_register`` adds the plugin's names to the registry (on the first lookup);
* ``optcore_add_commands`` adds ``optcore qhadam-fit`` to the command line.
"""

import json

import jax
import jax.numpy as jnp

import optcore

from optcore_plugin_example.qhadam import qhadam, scale_by_qhadam


@optcore.hookimpl
def optcore_register(register):
    register("qhadam", qhadam, kind="optimizer")
    register("scale_by_qhadam", scale_by_qhadam, kind="transform")


def fit_quadratic(target, steps: int, learning_rate: float):
    r"""Minimises :math:`f(x) = \tfrac12\lVert x - t\rVert^2` from :math:`x = 0` with QHAdam.

    The steps run in one jitted ``lax.scan``. Returns the final ``x`` and ``f(x)``.
    """
    target = jnp.asarray(target, jnp.float32)
    opt = qhadam(learning_rate)

    def step(carry, _):
        params, state = carry
        updates, state = opt.update(params - target, state, params)  # the gradient of f is x - t
        return (optcore.apply_updates(params, updates), state), None

    params = jnp.zeros_like(target)
    (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=steps))((params, opt.init(params)))
    return params, 0.5 * jnp.sum((params - target) ** 2)


def _qhadam_fit(args) -> int:
    target = [float(x) for x in args.target.split(",")]
    params, loss = fit_quadratic(target, args.steps, args.learning_rate)
    if args.json:
        print(json.dumps({"params": params.tolist(), "loss": float(loss)}))
    else:
        print(f"x = {params.tolist()} after {args.steps} QHAdam steps; f(x) = {float(loss):.6g}")
    return 0


@optcore.hookimpl
def optcore_add_commands(subparsers):
    parser = subparsers.add_parser(
        "qhadam-fit", help="(optcore-plugin-example) minimise 0.5*|x - target|^2 with QHAdam and print x"
    )
    parser.add_argument("--target", default="1,-2,3", help="comma-separated coordinates of the minimum")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.set_defaults(func=_qhadam_fit)
