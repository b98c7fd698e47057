"""The conformance kit: check that an optimizer keeps optcore's guarantees.

The core tests every registered optimizer for the same guarantees; a plugin
(or any code defining an optimizer) runs them on its own with one call::

    import optcore.testing

    def test_my_optimizer_conforms():
        optcore.testing.check_optimizer(my_package.my_optimizer, learning_rate=0.01)

or, for every optimizer a distribution registers, with pytest::

    @optcore.testing.parametrize_registry(distribution="my-package")
    def test_conforms(case):
        case.check()

The guarantees (:data:`CHECKS`, select some with ``checks=``):

``jit_matches_eager``
    a jitted ``init`` and step give the numbers of eager ones;
``dtypes``
    float32/bfloat16/float16 params get updates of their own dtypes (unless
    the factory was given a ``*_dtype`` argument, which may promote them),
    and the state keeps the dtypes ``init`` gave it;
``path_errors``
    a gradient tree that does not match the params fails with a
    ``ValueError`` naming the mismatched leaf's path;
``checkpoint``
    a run saved (pickle, or ``numpy.savez`` of the leaves restored onto a
    fresh ``init``) and continued is bit-identical to an uninterrupted run,
    and the state matters to the update;
``donation``
    the state is its own buffers (shared with neither itself, the params,
    nor the optimizer), and a step donating params and state gives the
    undonated numbers;
``scan_carry``
    the state after ``update`` has ``init``'s layout, and ``lax.scan`` over
    steps equals a loop;
``apply_if_finite``
    under :func:`optcore.apply_if_finite`, a NaN or Inf gradient leaves the
    params and the inner state bit-identical.

Extra ``update`` arguments (``value``, ``grad``, ``value_fn``, ``obj_fn``)
come from a built-in quadratic objective, :func:`objective`; pass
``update_kwargs=`` to supply others.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import jax.numpy as jnp

from optcore.testing._checks import (
    INIT_MODES,
    Harness,
    check_apply_if_finite,
    check_checkpoint,
    check_donation,
    check_dtypes,
    check_jit_matches_eager,
    check_path_errors,
    check_scan_carry,
    check_state_buffers,
)
from optcore.testing._devices import PATIENT_COLLECTIVES, fake_devices_env
from optcore.testing._trees import (
    assert_bitwise_equal,
    assert_close,
    buffers,
    extra_update_args,
    is_key,
    leaf_types,
    load_leaves,
    nonfinite_paths,
    objective,
    objective_grad,
    raw,
    save_leaves,
    small_params,
)

CHECKS = ("jit_matches_eager", "dtypes", "path_errors", "checkpoint", "donation", "scan_carry", "apply_if_finite")
"""The names of the guarantees :func:`check_optimizer` checks, in the order it runs them."""

LEARNING_RATE = 0.01
"""The learning rate :func:`optimizer_cases` gives every optimizer that takes one."""


@dataclasses.dataclass
class ConformanceReport:
    """What :func:`check_optimizer` found: the checks that passed, and each failure's message."""

    name: str
    passed: list = dataclasses.field(default_factory=list)
    failed: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        lines = [f"{self.name}: {len(self.passed)} passed, {len(self.failed)} failed"]
        lines += [f"  {check}: {message}" for check, message in self.failed.items()]
        return "\n".join(lines)


def _mixed_precision_params(scalar: bool) -> dict:
    params = small_params(scalar=scalar)
    return {
        "layer1": {"w": params["layer1"]["w"].astype(jnp.float16)},
        "scale": params["scale"].astype(jnp.bfloat16),
        "bias": jnp.linspace(-0.5, 0.5, 3, dtype=jnp.float32),
    }


def _asks_for_a_dtype(kwargs: Mapping[str, Any]) -> bool:
    return any(name.endswith("_dtype") and value is not None for name, value in kwargs.items())


def run_checks(
    harness: Harness,
    *,
    name: str = "optimizer",
    checks: Optional[Iterable[str]] = None,
    scalar_params: bool = True,
    updates_keep_param_dtypes: bool = True,
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Runs the selected :data:`CHECKS` on a built optimizer (see :func:`check_optimizer`)."""
    selected = CHECKS if checks is None else tuple(checks)
    unknown = [c for c in selected if c not in CHECKS]
    if unknown:
        raise ValueError(f"checks: unknown {unknown}; the checks are {list(CHECKS)}")

    def params():
        return small_params(scalar=scalar_params)

    runners: dict[str, Callable[[], None]] = {
        "jit_matches_eager": lambda: check_jit_matches_eager(harness, params()),
        "dtypes": lambda: check_dtypes(harness, _mixed_precision_params(scalar_params),
                                       updates_keep_param_dtypes=updates_keep_param_dtypes),
        "path_errors": lambda: check_path_errors(harness, params()),
        "checkpoint": lambda: check_checkpoint(harness, params()),
        "donation": lambda: [
            (check_state_buffers(harness, params(), init_mode=mode), check_donation(harness, params, init_mode=mode))
            for mode in INIT_MODES
        ],
        "scan_carry": lambda: [check_scan_carry(harness, params(), init_mode=mode) for mode in INIT_MODES],
        "apply_if_finite": lambda: check_apply_if_finite(harness, params()),
    }
    report = ConformanceReport(name)
    for check in selected:
        try:
            runners[check]()
        except AssertionError as err:
            report.failed[check] = str(err) or repr(err)
        else:
            report.passed.append(check)
    if raise_on_failure and report.failed:
        raise AssertionError(f"{name} breaks optcore's guarantees: {', '.join(report.failed)}\n{report}")
    return report


def check_optimizer(
    factory: Callable[..., Any],
    /,
    *args: Any,
    checks: Optional[Iterable[str]] = None,
    update_kwargs: Any = None,
    per_example: bool = False,
    scalar_params: bool = True,
    raise_on_failure: bool = True,
    **kwargs: Any,
) -> ConformanceReport:
    """Checks that ``factory(*args, **kwargs)`` keeps the guarantees of optcore's own optimizers.

    Args:
      factory: a function returning a gradient transformation (``optcore.adam``,
        a plugin's optimizer), called as ``factory(*args, **kwargs)``.
      checks: names among :data:`CHECKS` (default: all).
      update_kwargs: extra ``update`` arguments: a dict, a function
        ``(params, grads) -> dict``, or ``None`` for those of the built-in
        objective (:func:`extra_update_args`).
      per_example: ``update`` takes per-example gradients (a leading batch axis).
      scalar_params: the test params include a rank-0 leaf (else shape ``(1,)``).
      raise_on_failure: raise ``AssertionError`` on a failed check (else only report).

    Returns:
      A :class:`ConformanceReport`.

    Raises:
      AssertionError: naming the optimizer and each guarantee it breaks, with why.
    """
    name = getattr(factory, "__qualname__", None) or repr(factory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        opt = factory(*args, **kwargs)
    return run_checks(
        Harness(opt, update_kwargs, per_example=per_example),
        name=name,
        checks=checks,
        scalar_params=scalar_params,
        updates_keep_param_dtypes=not _asks_for_a_dtype(kwargs),
        raise_on_failure=raise_on_failure,
    )


# ---------------------------------------------------------------------------
# Walking the registry.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    """A registered optimizer with the arguments to build it (``skip`` says why it cannot be built)."""

    name: str
    factory: Optional[Callable]
    kwargs: dict
    skip: Optional[str] = None
    per_example: bool = False
    distribution: Optional[str] = None

    def build(self, **overrides):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return self.factory(**{**self.kwargs, **overrides})

    def harness(self, **overrides) -> Harness:
        return Harness(self.build(**overrides), per_example=self.per_example)

    def check(self, checks: Optional[Iterable[str]] = None, **options) -> ConformanceReport:
        """:func:`check_optimizer` on this case."""
        return check_optimizer(self.factory, checks=checks, per_example=self.per_example, **options, **self.kwargs)


def optimizer_cases(
    distribution: Optional[str] = None,
    *,
    arguments: Optional[Mapping[str, Mapping[str, Any]]] = None,
    keep_default_learning_rate: Sequence[str] = (),
    per_example: Sequence[str] = (),
) -> list[Case]:
    """One :class:`Case` per registered optimizer (of ``distribution`` if given), sorted by name.

    Each optimizer that takes a ``learning_rate`` gets :data:`LEARNING_RATE`
    (unless named in ``keep_default_learning_rate``); ``arguments[name]``
    supplies further arguments. An optimizer with a required argument left
    unsupplied gets ``skip`` set, naming it.
    """
    import optcore

    arguments = arguments or {}
    cases = []
    for row in optcore.available("optimizer"):
        if distribution is not None and row.distribution != distribution:
            continue
        try:
            factory = optcore.get(row.name)
        except LookupError as err:  # a name collision among installed plugins
            cases.append(Case(row.name, None, {}, f"cannot resolve: {err}", distribution=row.distribution))
            continue
        given = dict(arguments.get(row.name, {}))
        kwargs, missing = {}, []
        for parameter in inspect.signature(factory).parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if parameter.name in given:
                kwargs[parameter.name] = given.pop(parameter.name)
            elif parameter.name == "learning_rate":
                if row.name not in keep_default_learning_rate:
                    kwargs["learning_rate"] = LEARNING_RATE
            elif parameter.default is parameter.empty:
                missing.append(parameter.name)
        kwargs.update(given)
        skip = f"{row.name} needs arguments these tests cannot supply: {', '.join(missing)}" if missing else None
        cases.append(Case(row.name, factory, kwargs, skip, row.name in per_example, row.distribution))
    return cases


def case_params(cases: Iterable[Case]) -> list:
    """``pytest.param`` per case, with the name as id and a skip mark for unbuildable ones."""
    import pytest

    return [
        pytest.param(case, id=case.name, marks=[pytest.mark.skip(reason=case.skip)] if case.skip else [])
        for case in cases
    ]


def parametrize_registry(distribution: Optional[str] = None, *, argname: str = "case", **case_options):
    """A ``pytest.mark.parametrize`` over :func:`optimizer_cases`: one test per registered optimizer.

    ``distribution`` restricts it to one distribution's optimizers (a plugin's
    own, e.g. ``"optcore-contrib"``); other keywords go to :func:`optimizer_cases`.
    """
    import pytest

    return pytest.mark.parametrize(argname, case_params(optimizer_cases(distribution, **case_options)))


__all__ = [
    "CHECKS",
    "Case",
    "ConformanceReport",
    "Harness",
    "INIT_MODES",
    "LEARNING_RATE",
    "PATIENT_COLLECTIVES",
    "assert_bitwise_equal",
    "assert_close",
    "buffers",
    "case_params",
    "check_apply_if_finite",
    "check_checkpoint",
    "check_donation",
    "check_dtypes",
    "check_jit_matches_eager",
    "check_optimizer",
    "check_path_errors",
    "check_scan_carry",
    "check_state_buffers",
    "extra_update_args",
    "fake_devices_env",
    "is_key",
    "leaf_types",
    "load_leaves",
    "nonfinite_paths",
    "objective",
    "objective_grad",
    "optimizer_cases",
    "parametrize_registry",
    "raw",
    "run_checks",
    "save_leaves",
    "small_params",
]
