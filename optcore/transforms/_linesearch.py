"""Line searches: backtracking (Armijo) and zoom (strong Wolfe), plus value/grad reuse.

Both are transformations with extra arguments: ``update(updates, state,
params, *, value, grad, value_fn, **extra_args)`` where ``updates`` is the
search direction, ``value``/``grad`` the objective and its gradient at
``params`` and ``value_fn(params, **extra_args)`` the objective. They return
the direction scaled by the accepted step size and keep, in their state, the
value and gradient at the new params so that :func:`value_and_grad_from_state`
can skip recomputing them. Every loop is a ``lax.while_loop``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from optcore import base, tree_utils, validate
from optcore.tree_utils._tree_math import real_vdot

# The defaults are read at init (a jax.enable_x64 context may change them after
# import) and used as strong (not weak) types, so that states keep one type
# across steps inside lax loops.


def _default_float() -> jnp.dtype:
    """JAX's default float at init time: float32, float64 under x64 (Optax's ``jnp.asarray(1.0)``)."""
    return jnp.result_type(float)


def _default_int() -> jnp.dtype:
    """JAX's default int at init time: int32, int64 under x64 (Optax's ``jnp.asarray(0)``)."""
    return jnp.result_type(int)


class BacktrackingLinesearchInfo(NamedTuple):
    """Diagnostics of :func:`scale_by_backtracking_linesearch`."""

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """State of :func:`scale_by_backtracking_linesearch`.

    Attributes:
      learning_rate: the step size accepted at the last step.
      value: the objective at the new params (``inf`` before the first step).
      grad: the gradient at the new params if ``store_grad``, else ``None``.
      info: a :class:`BacktrackingLinesearchInfo`.
    """

    learning_rate: jax.Array
    value: jax.Array
    grad: Optional[base.Updates]
    info: BacktrackingLinesearchInfo


class ZoomLinesearchInfo(NamedTuple):
    """Diagnostics of :func:`scale_by_zoom_linesearch`.

    Attributes:
      num_linesearch_steps: the number of step sizes tried.
      decrease_error: how much the accepted step misses the (approximate)
        sufficient decrease condition (0 when met).
      curvature_error: how much it misses the curvature condition (0 when met).
    """

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array


class ScaleByZoomLinesearchState(NamedTuple):
    """State of :func:`scale_by_zoom_linesearch`: accepted step, value and grad there, info."""

    learning_rate: jax.Array
    value: jax.Array
    grad: base.Updates
    info: ZoomLinesearchInfo


def _step(params, stepsize, direction):
    # jnp.result_type, not p.dtype: params may be Python floats (as Optax accepts), which get
    # the default float dtype; array leaves keep theirs.
    return jax.tree.map(lambda p, d: (p + stepsize * d).astype(jnp.result_type(p)), params, direction)


def _scale(stepsize, tree):
    return jax.tree.map(lambda d: (stepsize * d).astype(jnp.result_type(d)), tree)


def _kwargs_for(fn: Callable, extra_args: dict) -> dict:
    """The extra arguments ``fn`` accepts (all of them if it takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return dict(extra_args)
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(extra_args)
    return {k: v for k, v in extra_args.items() if k in parameters}


def _cast_like(tree, reference):
    """``tree`` with each leaf cast to the dtype of the matching leaf of ``reference``.

    A leaf whose reference is a Python scalar (a learning rate put in the state
    with ``tree.set``, as Optax's tests do) keeps the dtype it was computed in, as
    in Optax's ``tree.cast_like``; so does one whose reference is of another kind
    (an int learning rate, traced under jit), which must not truncate it.
    """
    def cast(x, ref):
        x = jnp.asarray(x)
        if not hasattr(ref, "dtype") or jnp.issubdtype(ref.dtype, jnp.inexact) != jnp.issubdtype(x.dtype, jnp.inexact):
            return x
        return x.astype(jnp.result_type(ref))

    return jax.tree.map(cast, tree, reference)


def _check_extra_args(value, grad, value_fn, name):
    validate.require_update_args(name, value=value, grad=grad, value_fn=value_fn)


def scale_by_backtracking_linesearch(
    max_backtracking_steps: int,
    slope_rtol: float = 1e-4,
    decrease_factor: float = 0.8,
    increase_factor: float = 1.5,
    max_learning_rate: float = 1.0,
    atol: float = 0.0,
    rtol: float = 0.0,
    store_grad: bool = False,
    verbose: bool = False,
) -> base.GradientTransformationExtraArgs:
    r"""Backtracking line search: the largest tried step with sufficient decrease.

    Starting from :math:`\eta = \min(\eta_{\text{prev}} \cdot \text{increase},
    \eta_{\max})`, the step is multiplied by ``decrease_factor`` until

    .. math::
        f(w + \eta u) \le (1 + \delta) f(w) + \eta c \langle u, \nabla f(w) \rangle + \epsilon

    (Armijo's condition; a NaN value counts as a failure). Nocedal & Wright,
    *Numerical Optimization*, Algorithm 3.1, 1999.

    Args:
      max_backtracking_steps: the largest number of decreases of the step.
      slope_rtol: :math:`c`, the fraction of the linear decrease required.
      decrease_factor: the factor in :math:`(0, 1)` applied at each backtrack.
      increase_factor: the factor applied to the previous step to start the
        next search (``math.inf`` starts from ``max_learning_rate``).
      max_learning_rate: :math:`\eta_{\max}`, the largest step tried.
      atol: :math:`\epsilon`, the absolute tolerance of the condition.
      rtol: :math:`\delta`, the relative tolerance of the condition.
      store_grad: also compute and store the gradient at the new params (for
        :func:`value_and_grad_from_state`).
      verbose: print a message (through ``jax.debug.print``) when the search fails.
    """
    validate.check_integer("max_backtracking_steps", max_backtracking_steps, 0)
    validate.check_range("slope_rtol", slope_rtol, low=0.0, high=1.0)
    validate.check_range("decrease_factor", decrease_factor, low=0.0, high=1.0, low_inclusive=False)
    validate.check_range("increase_factor", increase_factor, low=1.0, high=float("inf"), high_inclusive=True)
    validate.check_range("max_learning_rate", max_learning_rate, low=0.0, low_inclusive=False)
    validate.check_non_negative("atol", atol)
    validate.check_non_negative("rtol", rtol)

    def init_fn(params):
        return ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.array(1.0, _default_float()),
            value=jnp.array(jnp.inf, _default_float()),
            grad=tree_utils.state_zeros_like(params) if store_grad else None,
            info=BacktrackingLinesearchInfo(num_linesearch_steps=jnp.array(0, _default_int()), decrease_error=jnp.array(jnp.inf, _default_float())),
        )

    def update_fn(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra_args):
        if params is None:
            raise ValueError(base.NO_PARAMS_MSG)
        _check_extra_args(value, grad, value_fn, "scale_by_backtracking_linesearch")
        fn_kwargs = _kwargs_for(value_fn, extra_args)
        slope = real_vdot(updates, grad)
        value = jnp.asarray(value)

        def evaluate(stepsize):
            new_params = _step(params, stepsize, updates)
            if store_grad:
                new_value, new_grad = jax.value_and_grad(value_fn)(new_params, **fn_kwargs)
            else:
                new_value, new_grad = value_fn(new_params, **fn_kwargs), None
            bound = (1 + rtol) * value + stepsize * slope_rtol * slope + atol
            error = jnp.where(jnp.isnan(new_value), jnp.inf, jnp.maximum(new_value - bound, 0.0))
            return new_value, new_grad, error

        start = jnp.minimum(state.learning_rate * increase_factor, max_learning_rate).astype(value.dtype)
        first_value, first_grad, first_error = evaluate(start)

        def cond_fn(carry):
            steps, _, _, _, error = carry
            return jnp.logical_and(steps < max_backtracking_steps, error > 0)

        def body_fn(carry):
            steps, stepsize, _, _, _ = carry
            stepsize = stepsize * decrease_factor
            new_value, new_grad, error = evaluate(stepsize)
            return steps + 1, stepsize, new_value, new_grad, error

        carry = (jnp.array(0, jnp.int32), start, first_value, first_grad, first_error)
        steps, stepsize, new_value, new_grad, error = lax.while_loop(cond_fn, body_fn, carry)
        if verbose:
            lax.cond(error > 0, lambda: jax.debug.print("Backtracking linesearch failed: decrease error {e}", e=error), lambda: None)
        new_state = ScaleByBacktrackingLinesearchState(
            learning_rate=stepsize,
            value=new_value,
            grad=new_grad,
            # Counted as function evaluations, the first guess included.
            info=BacktrackingLinesearchInfo(num_linesearch_steps=steps + 1, decrease_error=error),
        )
        return _scale(stepsize, updates), _cast_like(new_state, state)

    return base.GradientTransformationExtraArgs(init_fn, update_fn)


def _cubic_minimizer(a, fa, ga, b, fb, c, fc):
    """Minimiser of the cubic with value and slope at ``a`` and values at ``b``, ``c`` (NaN if none)."""
    db, dc = b - a, c - a
    denominator = (db * dc) ** 2 * (db - dc)
    rb, rc = fb - fa - ga * db, fc - fa - ga * dc
    coef_a = (dc**2 * rb - db**2 * rc) / denominator
    coef_b = (-(dc**3) * rb + db**3 * rc) / denominator
    radical = coef_b * coef_b - 3 * coef_a * ga
    return a + (-coef_b + jnp.sqrt(radical)) / (3 * coef_a)


def _quadratic_minimizer(a, fa, ga, b, fb):
    """Minimiser of the quadratic with value and slope at ``a`` and value at ``b``."""
    width = b - a
    curvature = (fb - fa - ga * width) / (width * width)
    return a - ga / (2 * curvature)


class _Zoom(NamedTuple):
    """The carry of the zoom line search loop."""

    steps: jax.Array
    done: jax.Array
    bracketing: jax.Array  # still growing the step to bracket a solution
    # Why the search stopped short of the strong Wolfe conditions (for verbose).
    capped: jax.Array  # max_learning_rate reached before anything was bracketed
    narrowed: jax.Array  # the interval got narrower than stepsize_precision
    # The last tried step, and the previous one while bracketing.
    prev_step: jax.Array
    prev_value: jax.Array
    prev_slope: jax.Array
    # The interval [lo, hi] during zoom; lo has the lowest value with sufficient decrease.
    lo: jax.Array
    lo_value: jax.Array
    lo_slope: jax.Array
    hi: jax.Array
    hi_value: jax.Array
    hi_slope: jax.Array
    # The endpoint replaced last, a third point for the cubic interpolation.
    rec: jax.Array
    rec_value: jax.Array
    zoom_steps: jax.Array
    # The accepted (or, on failure, best safe) step and its value, gradient and errors.
    step: jax.Array
    value: jax.Array
    grad: Any
    decrease_error: jax.Array
    curvature_error: jax.Array
    safe_step: jax.Array
    safe_value: jax.Array
    safe_grad: Any


# The verbose messages of the zoom line search (Optax's names, so that its tests can look for them).
FLAG_INTERVAL_NOT_FOUND = (
    "No step up to max_learning_rate brackets one with small curvature: try a larger max_learning_rate."
)
FLAG_INTERVAL_TOO_SMALL = "The search interval got narrower than stepsize_precision."
FLAG_CURVATURE_COND_NOT_SATISFIED = "Taking a step with sufficient decrease that misses the curvature condition."
FLAG_NO_STEPSIZE_FOUND = "No step with sufficient decrease was found."
FLAG_NOT_A_DESCENT_DIRECTION = "The update is not a descent direction: its slope at step 0 is not negative."


_ZOOM_HEAD = ("scale_by_zoom_linesearch: {steps} steps, step size {stepsize}, decrease error {dec}, "
              "curvature error {curv}, slope at 0 {slope0}.\n")
# Why the step taken misses the strong Wolfe conditions: it has sufficient decrease
# only, or it has not (not a descent direction, too few steps, inf/NaN values).
_ZOOM_FAILURES = (
    FLAG_CURVATURE_COND_NOT_SATISFIED,
    FLAG_NO_STEPSIZE_FOUND + "\n" + FLAG_NOT_A_DESCENT_DIRECTION,
    FLAG_NO_STEPSIZE_FOUND + " More max_linesearch_steps may help; the step taken may increase the objective.",
    FLAG_NO_STEPSIZE_FOUND + " The last step tried gave an inf or NaN value or slope.",
)
# Indexed by the outcome: success, the cap reached unbracketed, a failure, a failure in a narrow interval.
_ZOOM_MESSAGES = (
    None,
    FLAG_INTERVAL_NOT_FOUND + "\n" + FLAG_CURVATURE_COND_NOT_SATISFIED,
    *_ZOOM_FAILURES,
    *(FLAG_INTERVAL_TOO_SMALL + "\n" + m for m in _ZOOM_FAILURES),
)


def _print_zoom_outcome(index, **numbers) -> None:
    """Host side of :func:`_report_zoom`: print the message of outcome ``index`` (none on success)."""
    message = _ZOOM_MESSAGES[int(index)]
    if message is not None:
        print((_ZOOM_HEAD + message).format(**numbers))


def _report_zoom(final: _Zoom, stepsize, decrease_error, slope0, stepsize_precision) -> None:
    """Print why the search missed the strong Wolfe conditions, if it did.

    The outcomes are told apart as in Optax's diagnostics (see ``_ZOOM_MESSAGES``);
    ``stepsize`` and ``decrease_error`` are those of the step taken. The message
    is picked on the host from the outcome's index, so that one print happens per
    search (also under ``vmap``, where a ``lax.switch`` would run every branch).
    """
    failure = jnp.select([decrease_error <= 0, slope0 >= 0, jnp.isfinite(final.decrease_error)], [0, 1, 2], default=3)
    narrow = jnp.abs(final.hi - final.lo) <= stepsize_precision
    succeeded = final.done & ~final.capped & ~final.narrowed
    index = jnp.where(succeeded, 0, jnp.where(final.capped, 1, 2 + failure + len(_ZOOM_FAILURES) * narrow))
    jax.debug.callback(_print_zoom_outcome, index, steps=final.steps, stepsize=stepsize, dec=decrease_error,
                       curv=final.curvature_error, slope0=slope0)


def scale_by_zoom_linesearch(
    max_linesearch_steps: int,
    max_learning_rate: Optional[float] = None,
    tol: float = 0.0,
    increase_factor: float = 2.0,
    slope_rtol: float = 1e-4,
    curv_rtol: float = 0.9,
    approx_dec_rtol: Optional[float] = 1e-6,
    stepsize_precision: float = 1e-5,
    initial_guess_strategy: str = "keep",
    verbose: bool = False,
) -> base.GradientTransformationExtraArgs:
    r"""Zoom line search: a step satisfying the strong Wolfe conditions.

    Finds :math:`\eta` with, for :math:`\phi(\eta) = f(w + \eta u)`,

    .. math::
        \phi(\eta) \le \phi(0) + c_1 \eta \phi'(0) + \epsilon, \qquad
        |\phi'(\eta)| \le c_2 |\phi'(0)| + \epsilon

    by growing the step by ``increase_factor`` until an interval containing
    such a step is bracketed, then shrinking the interval by safeguarded cubic
    (or quadratic, or bisection) interpolation (Nocedal & Wright, *Numerical
    Optimization*, Algorithms 3.5 and 3.6, 1999). For very flat functions the
    decrease condition may be replaced by Hager & Zhang's approximate one,
    :math:`\phi'(\eta) \le (1 - 2 c_1)|\phi'(0)| + \epsilon` when
    :math:`\phi(\eta) \le \phi(0) + c_3 |\phi(0)|` (`A new conjugate gradient
    method with guaranteed descent and an efficient line search
    <https://doi.org/10.1137/030601880>`_, 2005). If no such step is found in
    ``max_linesearch_steps`` tries, the best step with sufficient decrease is
    used (or the last one tried if none has).

    Args:
      max_linesearch_steps: the largest number of step sizes tried.
      max_learning_rate: the largest step size (``None``: no bound).
      tol: :math:`\epsilon`, the absolute tolerance of both conditions.
      increase_factor: the growth factor of the step while bracketing.
      slope_rtol: :math:`c_1`, the sufficient decrease coefficient.
      curv_rtol: :math:`c_2`, the curvature coefficient.
      approx_dec_rtol: :math:`c_3`; ``None`` uses only the exact decrease condition.
      stepsize_precision: once the interval is narrower than this and a step
        with sufficient decrease is known, that step is accepted.
      initial_guess_strategy: ``"one"`` starts each search from 1 (for
        quasi-Newton directions), ``"keep"`` from the previous step.
      verbose: print (``jax.debug.print``) why the search missed the strong
        Wolfe conditions, when it does; the messages contain this module's
        ``FLAG_*`` strings.
    """
    validate.check_integer("max_linesearch_steps", max_linesearch_steps, 1)
    if max_learning_rate is not None:
        validate.check_range("max_learning_rate", max_learning_rate, low=0.0, low_inclusive=False)
    validate.check_non_negative("tol", tol)
    validate.check_range("increase_factor", increase_factor, low=1.0, low_inclusive=False, high=float("inf"), high_inclusive=True)
    validate.check_range("slope_rtol", slope_rtol, low=0.0, high=1.0, low_inclusive=False)
    validate.check_range("curv_rtol", curv_rtol, low=0.0, high=1.0, low_inclusive=False)
    if not isinstance(slope_rtol, jax.Array) and not isinstance(curv_rtol, jax.Array) and slope_rtol >= curv_rtol:
        raise ValueError(f"slope_rtol ({slope_rtol}) must be smaller than curv_rtol ({curv_rtol}).")
    if approx_dec_rtol is not None:
        validate.check_non_negative("approx_dec_rtol", approx_dec_rtol)
    validate.check_non_negative("stepsize_precision", stepsize_precision)
    if initial_guess_strategy not in ("one", "keep"):
        raise ValueError(f"initial_guess_strategy must be 'one' or 'keep', got {initial_guess_strategy!r}.")
    cap = jnp.inf if max_learning_rate is None else max_learning_rate

    def init_fn(params):
        return ScaleByZoomLinesearchState(
            learning_rate=jnp.array(1.0, _default_float()),
            value=jnp.array(jnp.inf, _default_float()),
            grad=tree_utils.state_zeros_like(params),
            info=ZoomLinesearchInfo(
                num_linesearch_steps=jnp.array(0, _default_int()),
                decrease_error=jnp.array(jnp.inf, _default_float()),
                curvature_error=jnp.array(jnp.inf, _default_float()),
            ),
        )

    def update_fn(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra_args):
        if params is None:
            raise ValueError(base.NO_PARAMS_MSG)
        _check_extra_args(value, grad, value_fn, "scale_by_zoom_linesearch")
        fn_kwargs = _kwargs_for(value_fn, extra_args)
        value0 = jnp.asarray(value, jnp.result_type(state.value))
        slope0 = real_vdot(updates, grad).astype(value0.dtype)
        dtype = value0.dtype

        def evaluate(stepsize):
            new_value, new_grad = jax.value_and_grad(value_fn)(_step(params, stepsize, updates), **fn_kwargs)
            new_value = jnp.asarray(new_value, dtype)
            slope = real_vdot(updates, new_grad).astype(dtype)
            exact_error = jnp.maximum(new_value - (value0 + slope_rtol * stepsize * slope0 + tol), 0.0)
            if approx_dec_rtol is not None:
                approx_error = jnp.maximum(slope - ((1 - 2 * slope_rtol) * jnp.abs(slope0) + tol), 0.0)
                close = new_value <= value0 + approx_dec_rtol * jnp.abs(value0)
                decrease_error = jnp.where(close, jnp.minimum(exact_error, approx_error), exact_error)
            else:
                decrease_error = exact_error
            curvature_error = jnp.maximum(jnp.abs(slope) - (curv_rtol * jnp.abs(slope0) + tol), 0.0)
            bad = ~jnp.isfinite(new_value) | ~jnp.isfinite(slope)
            decrease_error = jnp.where(bad, jnp.inf, decrease_error)
            curvature_error = jnp.where(bad, jnp.inf, curvature_error)
            return new_value, slope, new_grad, decrease_error, curvature_error

        if initial_guess_strategy == "one":
            start = jnp.minimum(jnp.ones([], dtype), cap)
        else:
            start = jnp.minimum(jnp.asarray(state.learning_rate, dtype), cap)

        def accept(c: _Zoom, stepsize, new_value, new_grad, dec_err, curv_err, done):
            return c._replace(step=stepsize, value=new_value, grad=new_grad, decrease_error=dec_err,
                              curvature_error=curv_err, done=done)

        def body_fn(c: _Zoom) -> _Zoom:
            # The step to try: the bracketing guess, or an interpolated point inside [lo, hi].
            grown = jnp.minimum(c.prev_step * increase_factor, cap)
            trial_bracket = jnp.where(c.steps == 0, start, grown)
            low, high = jnp.minimum(c.lo, c.hi), jnp.maximum(c.lo, c.hi)
            width = high - low
            cubic = _cubic_minimizer(c.lo, c.lo_value, c.lo_slope, c.hi, c.hi_value, c.rec, c.rec_value)
            quadratic = _quadratic_minimizer(c.lo, c.lo_value, c.lo_slope, c.hi, c.hi_value)
            middle = c.lo + 0.5 * (c.hi - c.lo)
            # Safeguards: interpolated points must stay away from the interval's
            # ends (20% for the cubic, 10% for the quadratic); the first zoom
            # step has no third point, so it starts with the quadratic.
            inside = lambda t, margin: jnp.isfinite(t) & (t >= low + margin * width) & (t <= high - margin * width)  # noqa: E731
            use_cubic = (c.zoom_steps > 0) & inside(cubic, 0.2)
            trial_zoom = jnp.where(use_cubic, cubic, jnp.where(inside(quadratic, 0.1), quadratic, middle))
            trial = jnp.where(c.bracketing, trial_bracket, trial_zoom)

            new_value, new_slope, new_grad, dec_err, curv_err = evaluate(trial)
            sufficient = dec_err <= 0
            curvature_ok = curv_err <= 0
            steps = c.steps + 1

            # A better safe step is remembered in case the search fails.
            better_safe = sufficient & (new_value <= c.safe_value)
            c = c._replace(
                steps=steps,
                safe_step=jnp.where(better_safe, trial, c.safe_step),
                safe_value=jnp.where(better_safe, new_value, c.safe_value),
                safe_grad=jax.tree.map(lambda n, o: jnp.where(better_safe, n, o), new_grad, c.safe_grad),
            )

            # Bracketing phase (Algorithm 3.5).
            worse = (~sufficient) | ((steps > 1) & (new_value >= c.prev_value))
            b_done = (~worse) & curvature_ok
            b_flip = (~worse) & (~curvature_ok) & (new_slope >= 0)
            b_capped = (~worse) & (~curvature_ok) & (new_slope < 0) & (trial >= cap)
            bracket = c._replace(
                bracketing=~(worse | b_flip) & ~b_capped,
                prev_step=trial, prev_value=new_value, prev_slope=new_slope,
                lo=jnp.where(worse, c.prev_step, trial),
                lo_value=jnp.where(worse, c.prev_value, new_value),
                lo_slope=jnp.where(worse, c.prev_slope, new_slope),
                hi=jnp.where(worse, trial, c.prev_step),
                hi_value=jnp.where(worse, new_value, c.prev_value),
                hi_slope=jnp.where(worse, new_slope, c.prev_slope),
                rec=zero,
                rec_value=value0,
            )
            bracket = accept(bracket, trial, new_value, new_grad, dec_err, curv_err, b_done | b_capped)
            bracket = bracket._replace(capped=b_capped)

            # Zoom phase (Algorithm 3.6).
            z_hi = (~sufficient) | (new_value >= c.lo_value)
            z_done = (~z_hi) & curvature_ok
            z_swap = (~z_hi) & (new_slope * (c.hi - c.lo) >= 0)
            zoom = c._replace(
                hi=jnp.where(z_hi, trial, jnp.where(z_swap, c.lo, c.hi)),
                hi_value=jnp.where(z_hi, new_value, jnp.where(z_swap, c.lo_value, c.hi_value)),
                hi_slope=jnp.where(z_hi, new_slope, jnp.where(z_swap, c.lo_slope, c.hi_slope)),
                lo=jnp.where(z_hi, c.lo, trial),
                lo_value=jnp.where(z_hi, c.lo_value, new_value),
                lo_slope=jnp.where(z_hi, c.lo_slope, new_slope),
                rec=jnp.where(z_hi | z_swap, c.hi, c.lo),
                rec_value=jnp.where(z_hi | z_swap, c.hi_value, c.lo_value),
                zoom_steps=c.zoom_steps + 1,
            )
            zoom = accept(zoom, trial, new_value, new_grad, dec_err, curv_err, z_done)
            narrow = jnp.abs(zoom.hi - zoom.lo) < stepsize_precision
            give_up = (~z_done) & narrow & jnp.isfinite(zoom.safe_value)
            zoom = zoom._replace(done=zoom.done | give_up, narrowed=give_up)

            return jax.tree.map(lambda b, z: jnp.where(c.bracketing, b, z), bracket, zoom)

        def cond_fn(c: _Zoom):
            return (~c.done) & (c.steps < max_linesearch_steps)

        zero = jnp.zeros([], dtype)
        init = _Zoom(
            steps=jnp.array(0, jnp.int32), done=jnp.array(False), bracketing=jnp.array(True),
            capped=jnp.array(False), narrowed=jnp.array(False),
            prev_step=zero, prev_value=value0, prev_slope=slope0,
            lo=zero, lo_value=value0, lo_slope=slope0, hi=zero, hi_value=value0, hi_slope=slope0,
            rec=zero, rec_value=value0, zoom_steps=jnp.array(0, jnp.int32),
            step=zero, value=jnp.array(jnp.inf, dtype), grad=grad,
            decrease_error=jnp.array(jnp.inf, dtype), curvature_error=jnp.array(jnp.inf, dtype),
            safe_step=zero, safe_value=jnp.array(jnp.inf, dtype), safe_grad=grad,
        )
        final = lax.while_loop(cond_fn, body_fn, init)

        # On failure fall back to the best step with sufficient decrease, if any.
        use_safe = (~final.done | (final.decrease_error > 0)) & jnp.isfinite(final.safe_value)
        stepsize = jnp.where(use_safe, final.safe_step, final.step)
        new_value = jnp.where(use_safe, final.safe_value, final.value)
        new_grad = jax.tree.map(lambda s, g: jnp.where(use_safe, s, g), final.safe_grad, final.grad)
        decrease_error = jnp.where(use_safe, 0.0, final.decrease_error)
        if verbose:
            _report_zoom(final, stepsize, decrease_error, slope0, stepsize_precision)
        new_state = ScaleByZoomLinesearchState(
            learning_rate=stepsize,
            value=new_value,
            grad=new_grad,
            info=ZoomLinesearchInfo(num_linesearch_steps=final.steps, decrease_error=decrease_error,
                                    curvature_error=final.curvature_error),
        )
        return _scale(stepsize, updates), _cast_like(new_state, state)

    return base.GradientTransformationExtraArgs(init_fn, update_fn)


def _find_linesearch_states(state: Any) -> list:
    is_ls = lambda x: isinstance(x, (ScaleByZoomLinesearchState, ScaleByBacktrackingLinesearchState))  # noqa: E731
    return [s for s in jax.tree.leaves(state, is_leaf=is_ls) if is_ls(s)]


def value_and_grad_from_state(value_fn: Callable[..., jax.Array]) -> Callable[..., tuple[jax.Array, base.Updates]]:
    r"""Like ``jax.value_and_grad(value_fn)``, reusing what a line search stored.

    The returned function is called as ``f(params, *args, state=opt_state,
    **kwargs)``. If ``opt_state`` holds exactly one line search state and its
    ``value`` is finite, that value and its ``grad`` are returned (they were
    computed at the accepted params); otherwise
    :math:`(f(w), \nabla f(w))` is computed. The returned function raises
    ``ValueError`` if ``opt_state`` holds no line search state, or one that
    stores no gradient (``store_grad=False``), and ``KeyError`` if it holds
    several.

    Args:
      value_fn: a scalar function of the params (and further arguments).
    """

    def value_and_grad(params, *fn_args, state, **fn_kwargs):
        found = _find_linesearch_states(state)
        if not found:
            raise ValueError(
                "value_and_grad_from_state found no line search state in the optimizer state: "
                "chain a scale_by_zoom_linesearch or scale_by_backtracking_linesearch."
            )
        if len(found) > 1:
            # Which search's value to reuse is ambiguous: a KeyError, as Optax's lookup of
            # the state's single ``value`` field raises when it finds several.
            raise KeyError(
                f"value_and_grad_from_state found {len(found)} line search states in the optimizer state; "
                "it can reuse the value and gradient of only one."
            )
        ls_state = found[0]
        if ls_state.grad is None:
            raise ValueError(
                "The line search state stores no gradient: use store_grad=True in "
                "scale_by_backtracking_linesearch to use value_and_grad_from_state."
            )
        compute = lambda: jax.value_and_grad(value_fn)(params, *fn_args, **fn_kwargs)  # noqa: E731
        value, grad = lax.cond(
            jnp.isfinite(ls_state.value),
            lambda: (jnp.asarray(ls_state.value), ls_state.grad),
            lambda: _cast_like(compute(), (ls_state.value, ls_state.grad)),
        )
        return value, grad

    return value_and_grad

