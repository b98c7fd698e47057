r"""Adam, Lion and momentum with block-quantized states: the ``scale_by_*`` transforms.

Each keeps its float twin's equations (:func:`optcore.scale_by_adam`,
:func:`optcore.scale_by_lion`, :func:`optcore.trace`) and its arithmetic in
float32; only the storage of the params-shaped state changes. Every step
dequantizes each state leaf, applies the twin's update, and requantizes the
new state block-wise (see :mod:`optcore_lowbit._quantize`); the update is
computed from the new float moments, before they are rounded, as in
bitsandbytes. Leaves with fewer than ``min_quantized_size`` entries (and
complex ones) keep a float state.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from optcore import base, kit, numerics
from optcore_lowbit import _common
from optcore_lowbit._codes import FLOAT_NO_ZERO, LINEAR_NO_ZERO, SIGNED, UNSIGNED, rounding_seed

_LION_MODES = ("hard", "smooth", "refined")


class ScaleByAdamLowBitState(NamedTuple):
    """State of :func:`scale_by_adam_8bit` and :func:`scale_by_adam_4bit`."""

    count: jax.Array  # shape=(), dtype=int32
    mu: base.Updates  # first moment: QuantizedArray leaves (signed dynamic code) or float leaves
    nu: base.Updates  # second moment: QuantizedArray leaves (unsigned dynamic / linear code) or float leaves


class ScaleByLionLowBitState(NamedTuple):
    """State of :func:`scale_by_lion_8bit`."""

    count: jax.Array  # shape=(), dtype=int32
    mu: base.Updates  # momentum: QuantizedArray leaves (signed dynamic code) or float leaves


class TraceLowBitState(NamedTuple):
    """State of :func:`trace_8bit`."""

    trace: base.Updates  # momentum buffer: QuantizedArray leaves (signed dynamic code) or float leaves


def _bias_correction(decay, count):
    return 1 - decay ** count.astype(jnp.float32)


def _adam_step(options, b1, b2, eps, eps_root, c1, c2, c1_next):
    """Adam's elementwise step ``(g, mu, nu) -> (mu, nu, update)``; ``c1``, ``c2``: the bias corrections."""
    (nesterov,) = options

    def step(g32, mu, nu):
        mu = b1 * mu + (1 - b1) * g32
        nu = b2 * nu + (1 - b2) * jnp.real(g32 * jnp.conj(g32))
        mu_hat = b1 * mu / c1_next + (1 - b1) * g32 / c1 if nesterov else mu / c1
        return mu, nu, mu_hat / (jnp.sqrt(nu / c2 + eps_root) + eps)

    return step


def _scale_by_adam_lowbit(b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype, fmt, nu_kind, nu_rank1, mu_rounding,
                          nu_rounding):
    kit.check_one_of("mu_rounding", mu_rounding, _common.ROUNDINGS)
    kit.check_one_of("nu_rounding", nu_rounding, _common.ROUNDINGS)
    kit.check_beta("b1", b1)
    kit.check_beta("b2", b2)
    kit.check_non_negative("eps", eps)
    kit.check_non_negative("eps_root", eps_root)
    mu_dtype, nu_dtype = kit.dtype_or_none(mu_dtype), kit.dtype_or_none(nu_dtype)

    def init_fn(params):
        return ScaleByAdamLowBitState(
            count=kit.zero_count(),
            mu=_common.init_field(params, fmt, SIGNED, mu_dtype),
            nu=_common.init_field(params, fmt, nu_kind, nu_dtype, rank1=nu_rank1),
        )

    def update_fn(updates, state, params=None):
        _common.check_updates(updates, state.mu, params)
        count = numerics.safe_increment(state.count)

        @functools.cache
        def scalars(dtype):
            """Adam's hyperparameters and bias corrections in ``dtype`` (:func:`_common.step_dtype`)."""
            b1_, b2_, eps_, eps_root_ = (kit.f32(x, dtype) for x in (b1, b2, eps, eps_root))
            c1_next = _bias_correction(b1_, numerics.safe_increment(count)) if nesterov else None
            return b1_, b2_, eps_, eps_root_, _bias_correction(b1_, count), _bias_correction(b2_, count), c1_next

        leaf_ids = itertools.count()  # the leaf's position in the tree: its salt for stochastic rounding

        def leaf(g, mu_leaf, nu_leaf):
            salt = next(leaf_ids)
            mu_seed = rounding_seed(count, salt) if mu_rounding == "stochastic" else None
            nu_seed = rounding_seed(count, _common.NONNEGATIVE_SALT + salt) if nu_rounding == "stochastic" else None
            likes = (mu_leaf, nu_leaf)
            return _common.leaf_step(_adam_step, (nesterov,), scalars(_common.step_dtype(g, likes)), g, likes,
                                     (mu_seed, nu_seed), separable=True)

        new_updates, mu, nu = _common.map_leaves(leaf, updates, state.mu, state.nu)
        return new_updates, ScaleByAdamLowBitState(count=count, mu=mu, nu=nu)

    return base.GradientTransformation(init_fn, update_fn)


@kit.static_args("block_size", "min_quantized_size")
def scale_by_adam_8bit(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[Any] = None,
    block_size: int = 256,
    min_quantized_size: int = _common.MIN_QUANTIZED_SIZE,
    mu_rounding: str = "nearest",
    nu_rounding: str = "stochastic",
) -> base.GradientTransformation:
    r"""Adam's rescaling (:func:`optcore.scale_by_adam`) with 8-bit block-quantized moments.

    .. math::
        m_t = \beta_1 Q^{-1}(\bar m_{t-1}) + (1-\beta_1) g_t, \quad
        v_t = \beta_2 Q^{-1}(\bar v_{t-1}) + (1-\beta_2) g_t^2, \\
        u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon}, \quad
        \bar m_t = Q_{signed}(m_t), \quad \bar v_t = Q_{unsigned}(v_t)

    where :math:`Q` rounds each entry, divided by its block's absolute
    maximum, to a level of the dynamic code (signed for :math:`m`, unsigned
    for :math:`v`, whose level 0 is never written): one byte per entry and a
    float32 scale per block of ``block_size`` entries. By default :math:`m`
    goes to the nearest level, as in the paper, and :math:`v` stochastically
    to one of the two levels around it (see ``nu_rounding``).

    Dettmers et al., `8-bit Optimizers via Block-wise Quantization
    <https://arxiv.org/abs/2110.02861>`_, ICLR 2022.

    Args:
      b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype: as :func:`optcore.scale_by_adam`;
        ``mu_dtype`` and ``nu_dtype`` give the dtype of the moments kept in
        float (small leaves) and the dtype quantized moments stand for.
      block_size: entries per quantization block (256, as bitsandbytes; the paper's 2048).
      min_quantized_size: leaves with fewer entries keep float moments.
      mu_rounding: ``"nearest"`` (the paper's) or ``"stochastic"``: how the
        first moment is rounded (see :func:`scale_by_adam_4bit`).
      nu_rounding: ``"stochastic"`` (the default) or ``"nearest"`` (the
        paper's): how the second moment is rounded. Each step changes it by
        a fraction of itself (:math:`1-\beta_2 = 0.1\%` when it decays)
        smaller than the gap between neighbouring levels, so rounding to the
        nearest level holds it in place, and relative to its block's maximum
        (stored exactly) it drifts: on the quality study's digits MLP its
        median entry ends 5% below the float32 one of the same gradients
        (bfloat16's, held in place absolutely, 14% above), and the training
        loss 2.1% below float32 AdamW's (16 seeds). Rounded stochastically,
        its expected value follows the float one: +0.3% ± 0.4 training and
        +0.1% ± 0.4 held-out loss over those 16 seeds, for 0-7% more step
        time on the CPU. The random numbers are drawn as for
        ``mu_rounding``, from a salt of the second moment's own.
    """
    fmt = _common.make_format(8, block_size, min_quantized_size)
    return _scale_by_adam_lowbit(b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype, fmt, UNSIGNED, False, mu_rounding,
                                 nu_rounding)


@kit.static_args("block_size", "min_quantized_size")
def scale_by_adam_4bit(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[Any] = None,
    block_size: int = 128,
    min_quantized_size: int = _common.MIN_QUANTIZED_SIZE,
    nu_scaling: str = "rank1",
    mu_rounding: str = "stochastic",
    nu_rounding: str = "stochastic",
    nu_code: str = "float",
) -> base.GradientTransformation:
    r"""Adam's rescaling with 4-bit quantized moments (two codes per byte).

    The equations of :func:`scale_by_adam_8bit`, with the layout of Li et al.
    for 4-bit AdamW:

    - the first moment: blocks of 128 entries, the signed 4-bit dynamic
      exponent code (their B128/DE);
    - the second moment: a code *without zero*. A second moment rounded to
      zero would make :math:`m / (\sqrt{v} + \epsilon)` explode (the paper's
      zero-point problem). With ``nu_scaling="rank1"`` (their Rank-1, the
      default), a leaf of two or more axes is scaled entry-wise by the
      smallest of its row, column (and further axes') maxima
      (:class:`~optcore_lowbit.Rank1QuantizedArray`); 1-D leaves, skinny
      ones (more than one maximum per 16 entries, such as ``(3, 5000)``),
      and all leaves with ``nu_scaling="block"`` use blocks of
      ``block_size``.

    Two choices differ from the paper's by default, both measured on the
    quality study's digits MLP (see the plugin's README):

    - Both moments are rounded *stochastically*, up or down to one of the
      two levels around each entry with the probabilities that make the
      stored value unbiased. With 15 levels, rounding the first moment to
      the nearest (the paper's, ``mu_rounding="nearest"``) zeroes the many
      small entries of a block with a large maximum, step after step (the
      training loss ended 12% above float32 AdamW's). A second moment
      rounded to the nearest level stays on it (each step changes it by
      :math:`1-\beta_2 = 0.1\%` when it decays, less than half a gap) and
      drifts relative to its scale: in the linear code its median entry
      ended 7.6% low, in the float code 17.3% low (stochastically
      rounded: 0.8% low; only ``v`` rounded, 16 seeds).
    - The second moment's code is a 4-bit float without zero
      (``nu_code="float"``, :data:`~optcore_lowbit.FLOAT_NO_ZERO`): two levels
      per octave, :math:`2^{-6} \dots 1` of the scale, anything smaller
      stored as :math:`2^{-6}`; decoding it is an integer add and a shift.
      The paper's linear code, levels :math:`(i+1)/16` (``nu_code="linear"``),
      has nothing below 1/16 of the scale: rounded stochastically, every
      smaller entry is lifted to 1/16 and the steps come out too small
      (training loss +8.6% over 16 seeds); to nearest it drifts low
      (-4.6%). The float code, stochastically rounded, lands at
      -0.9% ± 0.6 training and +0.9% ± 0.5 held-out loss (16 seeds). Its
      floor matters: in a simulation (same seeds, both moments rounded),
      storing values down to the code's lowest level, 0.0059 of the
      scale, gave -4.0%, a floor of 0.01 -2.1%, and :math:`2^{-6}` -0.7%.

    The random numbers are a hash of the step count, the leaf's position in
    the tree and the entry's index: there is no key in the state, and a run
    restored from a checkpoint rounds exactly as the original did.
    ``nu_code="linear", nu_rounding="nearest"`` is optcore-lowbit 0.5's
    ``adamw_4bit`` (and the paper's): states saved by 0.5 restore with these.

    Li et al., `Memory Efficient Optimizers with 4-bit States
    <https://arxiv.org/abs/2309.01507>`_, NeurIPS 2023.

    Args:
      b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype: as :func:`optcore.scale_by_adam`.
      block_size: entries per quantization block (even; the paper's 128).
      min_quantized_size: leaves with fewer entries keep float moments.
      nu_scaling: ``"rank1"`` or ``"block"``: the second moment's normalization.
      mu_rounding: ``"stochastic"`` or ``"nearest"`` (the paper's): how the first moment is rounded.
      nu_rounding: ``"stochastic"`` or ``"nearest"`` (the paper's): how the second moment is rounded.
      nu_code: ``"float"`` or ``"linear"`` (the paper's): the second moment's code.
    """
    kit.check_one_of("nu_scaling", nu_scaling, _common.NU_SCALINGS)
    kit.check_one_of("nu_code", nu_code, _common.NU_CODES)
    fmt = _common.make_format(4, block_size, min_quantized_size)
    nu_kind = FLOAT_NO_ZERO if nu_code == "float" else LINEAR_NO_ZERO
    return _scale_by_adam_lowbit(
        b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype, fmt, nu_kind, nu_scaling == "rank1", mu_rounding,
        nu_rounding,
    )


def _lion_step(options, b1, b2, smooth_beta):
    """Lion's elementwise step ``(g, mu) -> (mu, update)``."""
    (mode,) = options

    def squash(c):
        if mode == "hard":
            return jnp.sign(c)
        if mode == "smooth":
            return jnp.tanh(smooth_beta * c)
        return jnp.clip(c, -1, 1)

    def step(g32, mu):
        return b2 * mu + (1 - b2) * g32, squash(b1 * mu + (1 - b1) * g32)

    return step


def _trace_step(options, decay):
    """Momentum's elementwise step ``(g, t) -> (t, update)``."""
    (nesterov,) = options

    def step(g32, t):
        t = g32 + decay * t
        return t, (g32 + decay * t if nesterov else t)

    return step


@kit.static_args("block_size", "min_quantized_size")
def scale_by_lion_8bit(
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Optional[Any] = None,
    *,
    mode: str = "hard",
    smooth_beta: float = 1.0,
    block_size: int = 256,
    min_quantized_size: int = _common.MIN_QUANTIZED_SIZE,
) -> base.GradientTransformation:
    r"""Lion's rescaling (:func:`optcore.scale_by_lion`) with an 8-bit block-quantized momentum.

    .. math::
        u_t = \sigma(\beta_1 Q^{-1}(\bar m_{t-1}) + (1-\beta_1) g_t), \quad
        \bar m_t = Q_{signed}(\beta_2 Q^{-1}(\bar m_{t-1}) + (1-\beta_2) g_t)

    Chen et al., `Symbolic Discovery of Optimization Algorithms
    <https://arxiv.org/abs/2302.06675>`_, 2023; the quantization of
    :func:`scale_by_adam_8bit` (Dettmers et al., 2022).

    Args:
      b1, b2, mu_dtype, mode, smooth_beta: as :func:`optcore.scale_by_lion`.
      block_size: entries per quantization block.
      min_quantized_size: leaves with fewer entries keep a float momentum.
    """
    kit.check_decay("b1", b1)
    kit.check_decay("b2", b2)
    kit.check_one_of("mode", mode, _LION_MODES)
    fmt = _common.make_format(8, block_size, min_quantized_size)
    mu_dtype = kit.dtype_or_none(mu_dtype)

    def init_fn(params):
        return ScaleByLionLowBitState(
            count=kit.zero_count(),
            mu=_common.init_field(params, fmt, SIGNED, mu_dtype),
        )

    def update_fn(updates, state, params=None):
        _common.check_updates(updates, state.mu, params)

        def leaf(g, mu_leaf):
            dtype = _common.step_dtype(g, (mu_leaf,))
            scalars = tuple(kit.f32(x, dtype) for x in (b1, b2, smooth_beta))
            return _common.leaf_step(_lion_step, (mode,), scalars, g, (mu_leaf,))

        new_updates, mu = _common.map_leaves(leaf, updates, state.mu)
        return new_updates, ScaleByLionLowBitState(count=numerics.safe_increment(state.count), mu=mu)

    return base.GradientTransformation(init_fn, update_fn)


@kit.static_args("block_size", "min_quantized_size")
def trace_8bit(
    decay: float = 0.9,
    nesterov: bool = False,
    accumulator_dtype: Optional[Any] = None,
    *,
    block_size: int = 256,
    min_quantized_size: int = _common.MIN_QUANTIZED_SIZE,
) -> base.GradientTransformation:
    r"""Momentum (:func:`optcore.trace`) with an 8-bit block-quantized buffer.

    .. math::
        m_t = g_t + \beta Q^{-1}(\bar m_{t-1}), \quad \bar m_t = Q_{signed}(m_t), \quad
        u_t = m_t \ (\text{Nesterov: } g_t + \beta m_t)

    The quantization of :func:`scale_by_adam_8bit` (Dettmers et al., 2022).

    Args:
      decay, nesterov, accumulator_dtype: as :func:`optcore.trace`.
      block_size: entries per quantization block.
      min_quantized_size: leaves with fewer entries keep a float buffer.
    """
    kit.check_decay("decay", decay)
    fmt = _common.make_format(8, block_size, min_quantized_size)
    accumulator_dtype = kit.dtype_or_none(accumulator_dtype)

    def init_fn(params):
        return TraceLowBitState(
            trace=_common.init_field(params, fmt, SIGNED, accumulator_dtype)
        )

    def update_fn(updates, state, params=None):
        _common.check_updates(updates, state.trace, params)

        def leaf(g, t_leaf):
            dtype = _common.step_dtype(g, (t_leaf,))
            return _common.leaf_step(_trace_step, (nesterov,), (kit.f32(decay, dtype),), g, (t_leaf,))

        new_updates, trace = _common.map_leaves(leaf, updates, state.trace)
        return new_updates, TraceLowBitState(trace=trace)

    return base.GradientTransformation(init_fn, update_fn)
