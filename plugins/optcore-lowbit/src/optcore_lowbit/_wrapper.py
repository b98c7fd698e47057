r"""``quantize_state``: block-quantized storage for the state of any transformation."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import jax
import numpy as np

import optcore
from optcore import base, kit
from optcore_lowbit import _common
from optcore_lowbit._codes import FLOAT_NO_ZERO, LINEAR_NO_ZERO, SIGNED, UNSIGNED, rounding_seed
from optcore_lowbit._quantize import is_quantized

NONNEGATIVE_FIELDS = ("nu", "nu_max", "sum_of_squares", "v_row", "v_col", "v")
"""State fields the wrapper stores on an unsigned code by default: second moments, non-negative by construction."""


class QuantizeStateState(NamedTuple):
    """State of ``quantize_state`` with stochastic rounding (``rounding`` or ``nonnegative_rounding``): the step
    count that seeds the rounding."""

    count: jax.Array  # shape=(), dtype=int32
    inner_state: Any  # the inner transformation's state, its large float leaves quantized


def _owners(state: Any, updates: Any) -> list:
    """Per leaf of ``state`` (quantized leaves as leaves), in flatten order: ``(path, leaf, param index)``.

    The param of a leaf is the longest param path in ``updates`` that ends the
    leaf's path; ``None`` for a leaf stored under other keys.
    """
    param_paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(updates)[0]]
    owners = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state, is_leaf=is_quantized)[0]:
        matches = [i for i, p in enumerate(param_paths) if len(p) <= len(path) and path[len(path) - len(p):] == p]
        owners.append((path, leaf, max(matches, key=lambda i: len(param_paths[i])) if matches else None))
    return owners


def _rounding_salts(state: Any, updates: Any, signed: bool, nonnegative: bool) -> list:
    """A distinct salt per quantized leaf of ``state`` rounded stochastically, in flatten order (``None`` for
    other leaves): the ``signed`` ones, the ``nonnegative`` ones (unsigned codes), or both.

    The salt of a leaf is its param's position in ``updates`` plus the number
    of params times the rank of its field (the path above the param) among
    the fields of its sign, plus ``NONNEGATIVE_SALT`` for non-negative ones:
    the first signed field (Adam's ``mu``) and the first non-negative one
    (``nu``) get the salts the Adam transforms use, so their stochastic
    rounding is reproduced.
    """
    param_paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(updates)[0]]
    fields: dict = {True: {}, False: {}}  # by signedness: field path -> rank
    salts = []
    for path, leaf, index in _owners(state, updates):
        is_signed = is_quantized(leaf) and leaf.kind == SIGNED
        if not is_quantized(leaf) or not (signed if is_signed else nonnegative):
            salts.append(None)
            continue
        # A leaf without a param (a param-shaped leaf stored under other keys) is a field of its own.
        field_path = path if index is None else path[: len(path) - len(param_paths[index])]
        ranks = fields[is_signed]
        salt = ranks.setdefault(field_path, len(ranks)) * len(param_paths) + (index or 0)
        salts.append(salt if is_signed else _common.NONNEGATIVE_SALT + salt)
    return salts


def _dequantized(state: Any, updates: Any) -> Any:
    """``state`` with its quantized leaves as float arrays, each split as its param's gradient.

    On explicit mesh axes a block layout that merges split axes dequantizes
    to a split of its own (:func:`optcore.kit.reshard_like`).
    """
    grads = jax.tree.leaves(updates)
    floats = []
    for (_, leaf, index) in _owners(state, updates):
        if is_quantized(leaf):
            leaf = _common.dequantize_leaf(leaf).astype(leaf.dtype)
            if index is not None and grads[index].shape == leaf.shape:
                leaf = kit.reshard_like(leaf, grads[index])
        floats.append(leaf)
    return jax.tree.unflatten(jax.tree.structure(state, is_leaf=is_quantized), floats)


def _field_name(path) -> Optional[str]:
    """The name of the innermost named field (a ``NamedTuple`` attribute) on ``path``.

    Dict keys are skipped: below a state field they are the params' names.
    """
    for key in reversed(path):
        if isinstance(key, jax.tree_util.GetAttrKey):
            return key.name
    return None


@kit.static_args("inner", "bits", "block_size", "min_quantized_size", "nonnegative_fields", "nonnegative_scaling")
def quantize_state(
    inner: base.GradientTransformation,
    bits: int = 8,
    block_size: Optional[int] = None,
    min_quantized_size: int = _common.MIN_QUANTIZED_SIZE,
    *,
    nonnegative_fields: Sequence[str] = NONNEGATIVE_FIELDS,
    nonnegative_scaling: str = "block",
    rounding: str = "nearest",
    nonnegative_rounding: str = "nearest",
) -> base.GradientTransformationExtraArgs:
    r"""Stores the params-shaped float state of ``inner`` block-quantized, to ``bits`` bits.

    ``init`` quantizes each state leaf of ``inner`` that is a real float array
    of at least ``min_quantized_size`` entries with the shape of one of the
    params (moments, momentum buffers, EMAs); ``update`` dequantizes them,
    runs ``inner.update`` on the float state and quantizes the new state
    again. Other leaves (counts, keys, small or factored statistics) are kept
    as they are. So any transformation, a plugin's included, gets 8-bit (or
    4-bit) state; its equations are unchanged, applied to the rounded state.

    Codes: a leaf whose innermost field is named in ``nonnegative_fields``
    (second moments: ``nu``, ``sum_of_squares``...) is stored on the unsigned
    dynamic code (8 bits) or, for 4 bits, a code without zero: the linear one
    (the paper's) when rounded to nearest, the 4-bit float one when rounded
    stochastically (each code is the one that works with its rounding, see
    :func:`scale_by_adam_4bit`), as :func:`scale_by_adam_8bit` and
    :func:`scale_by_adam_4bit` store ``nu``, normalized as
    ``nonnegative_scaling`` says: block scales (the default),
    or ``"rank1"``, the rank-1 normalization that :func:`scale_by_adam_4bit`
    gives its second moment by default (Li et al.'s recipe; leaves of one
    axis, and skinny ones, keep blocks). Any other leaf is stored on the
    signed dynamic code, which is right for any sign, with block scales.
    The field is the innermost ``NamedTuple`` attribute on the leaf's path.
    A negative value in a leaf declared non-negative is stored as 0.

    Rounding: to the nearest code level, or with ``rounding="stochastic"``,
    signed leaves go up or down to one of the two levels around each entry,
    so that the stored value is unbiased (what :func:`scale_by_adam_4bit`
    does to its first moment by default: with 4 bits, rounding to nearest
    turns the small entries of a block with a large maximum into 0 at every
    step). ``nonnegative_rounding`` does the same for non-negative leaves:
    rounded to nearest, a second moment that changes by less than half a
    gap per step stays on its level and drifts below the float one (see
    :func:`scale_by_adam_8bit`); the Adam transforms round it stochastically
    by default. The random numbers are a hash of a step count, which the
    state then holds: :class:`QuantizeStateState` ``(count, inner_state)``.
    ``quantize_state(adamw(...), rounding=..., nonnegative_rounding=...)``
    stores what ``adamw_8bit(..., mu_rounding=..., nu_rounding=...)`` does,
    and at 4 bits with ``nonnegative_scaling="rank1"`` what ``adamw_4bit``
    does (the two defaults rounding stochastically: ``rounding`` too for 4 bits).

    Unlike the dedicated transforms, the dequantized state exists as a whole
    float array during ``update`` (the inner update is a black box that XLA
    may or may not fuse with the quantization), so the memory of the step is
    larger than that of :func:`scale_by_adam_8bit`; the stored state is as small.

    Args:
      inner: the transformation whose state to quantize.
      bits: 8 or 4.
      block_size: entries per block (default: 256 for 8 bits, 128 for 4).
      min_quantized_size: leaves with fewer entries stay float.
      nonnegative_fields: state field names stored on the unsigned code.
      nonnegative_scaling: ``"block"`` or ``"rank1"``: how those fields are normalized.
      rounding: ``"nearest"`` or ``"stochastic"``: how signed fields are rounded.
      nonnegative_rounding: ``"nearest"`` or ``"stochastic"``: how non-negative fields are rounded.
    """
    fmt = _common.make_format(bits, block_size, min_quantized_size)
    kit.check_one_of("nonnegative_scaling", nonnegative_scaling, _common.NU_SCALINGS)
    kit.check_one_of("rounding", rounding, _common.ROUNDINGS)
    kit.check_one_of("nonnegative_rounding", nonnegative_rounding, _common.ROUNDINGS)
    stochastic = {"signed": rounding == "stochastic", "nonnegative": nonnegative_rounding == "stochastic"}
    counts = any(stochastic.values())  # the state holds a step count to seed the rounding
    nonnegative = frozenset(nonnegative_fields)
    inner = optcore.with_extra_args_support(inner)

    def init_fn(params):
        state = inner.init(params)
        shapes = {tuple(np.shape(p)) for p in jax.tree.leaves(params)}

        def maybe_quantize(path, leaf):
            if not (hasattr(leaf, "dtype") and tuple(np.shape(leaf)) in shapes and fmt.quantizes(leaf)):
                return leaf
            if _field_name(path) not in nonnegative:
                return _common.quantize_stored(leaf, fmt, SIGNED)
            kind = UNSIGNED if fmt.bits == 8 else FLOAT_NO_ZERO if stochastic["nonnegative"] else LINEAR_NO_ZERO
            return _common.quantize_stored(leaf, fmt, kind, rank1=nonnegative_scaling == "rank1")

        # A quantized leaf replaces a variable wrapping the inner state's array (flax.nnx): kit.map_params.
        state = kit.map_params(maybe_quantize, state, with_path=True)
        return QuantizeStateState(count=kit.zero_count(), inner_state=state) if counts else state

    def update_fn(updates, state, params=None, **extra_args):
        if counts:
            count, state = optcore.safe_increment(state.count), state.inner_state
        floats = _dequantized(state, updates)
        new_updates, new_floats = inner.update(updates, floats, params, **extra_args)
        leaves, treedef = jax.tree.flatten(state, is_leaf=is_quantized)
        salts = _rounding_salts(state, updates, **stochastic) if counts else [None] * len(leaves)
        new_leaves = [
            _common.store(new, old, None if salt is None else rounding_seed(count, salt)) if is_quantized(old) else new
            for old, new, salt in zip(leaves, treedef.flatten_up_to(new_floats), salts)
        ]
        new_state = jax.tree.unflatten(treedef, new_leaves)
        if counts:
            new_state = QuantizeStateState(count=count, inner_state=new_state)
        return new_updates, new_state

    return base.GradientTransformationExtraArgs(init_fn, update_fn)
