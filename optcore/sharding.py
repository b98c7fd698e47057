"""Shardings for optimizer state: ZeRO-style splitting of the state over a data-parallel mesh axis.

Layer 2: depends on nothing in optcore but the optimizers it is given.

In data-parallel training every device holds the whole params and, by
default, the whole optimizer state: Adam's two moments cost twice the params
on every device. Most of that copy is redundant. ZeRO (Rajbhandari et al.,
2020, stage 1) keeps one :math:`1/N` slice of the state per device on an
:math:`N`-device data axis; the step then updates each slice from the same
slice of the (replicated) gradient and gathers the *updates* back into the
replicated params. :func:`state_shardings` computes that layout for any
optimizer; pass it to ``jax.jit`` as ``out_shardings`` of ``init`` and as
in/out shardings of the training step, and XLA does the slicing and gathering.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["state_shardings"]


def state_shardings(opt: Any, params: Any, mesh: Mesh, axis: str = "data") -> Any:
    """Shardings that split an optimizer's state over the mesh axis ``axis`` (ZeRO stage 1).

    Returns a pytree of :class:`~jax.sharding.NamedSharding` with the structure
    of ``jax.eval_shape(opt.init, params)``, for
    ``jax.jit(opt.init, out_shardings=...)`` and for the training step's in and
    out shardings (meshes with auto axes: the step mixes the params' and the
    state's layouts and lets XLA move between them).

    Each param's layout (its own :class:`~jax.sharding.NamedSharding`, so a
    split over other axes, FSDP or tensor parallel, is kept; replicated when
    it has none) is also split over ``axis`` along its longest dimension that
    still divides evenly: with :math:`k` shards on that dimension already and
    :math:`n` devices on ``axis``, a dimension of size :math:`d` qualifies when
    :math:`k n \\mid d`. The state's shardings are then what ``init`` gives
    params laid out that way (XLA's sharding propagation through the jitted
    ``init``; optcore's inits derive their state from the params, see
    :func:`optcore.tree_utils.state_zeros_like`): params-shaped leaves (``mu``,
    ``nu``) get the split, derived leaves follow consistently (Adafactor's
    factored moment along the split dimension is split, the one reduced over
    it stays whole, so the step needs no resharding), and scalars (counts,
    injected hyperparameters) are replicated. A param of at least :math:`n`
    entries with no dimension that divides is named in a ``UserWarning``: its
    state stays whole over ``axis`` and costs its full size on every device.

    Per device, params-shaped state then costs :math:`1/n` of its replicated
    size. The step's extra communication is one all-gather of the updates over
    ``axis`` (for params not split over it), never a gather of the state.

    Args:
      opt: a gradient transformation (anything with ``init``).
      params: the params (arrays, or :class:`jax.ShapeDtypeStruct`), each
        either with a :class:`~jax.sharding.NamedSharding` on ``mesh`` (its
        split is kept) or without one (taken as replicated).
      mesh: the device mesh.
      axis: the name of the mesh axis to split the state over.

    Raises:
      ValueError: if ``axis`` is not an axis of ``mesh``, or a param is sharded
        over a different mesh.
    """
    if axis not in mesh.axis_names:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh; its axes are {tuple(mesh.axis_names)}.")
    init = opt.init if hasattr(opt, "init") else opt
    whole = []  # params too small or too oddly shaped to split, so their state stays whole
    split_params = jax.tree_util.tree_map_with_path(lambda path, p: _split_abstract(mesh, axis, path, p, whole), params)
    if whole:
        warnings.warn(
            f"state_shardings: the state of {len(whole)} params is not split over mesh axis {axis!r} (no dimension "
            f"divides evenly into {mesh.shape[axis]} more shards) and costs its full size on each device of the "
            "axis: " + ", ".join(whole),
            UserWarning,
            stacklevel=2,
        )
    with jax.set_mesh(mesh) if _has_explicit_axes(mesh) else contextlib.nullcontext():
        propagated = jax.jit(init).lower(split_params).compile().output_shardings
    replicated = NamedSharding(mesh, PartitionSpec())
    result = jax.tree.map(
        lambda s: NamedSharding(mesh, s.spec) if isinstance(s, NamedSharding) else replicated, propagated
    )
    return result


def _split_abstract(mesh: Mesh, axis: str, path: Any, p: Any, whole: list) -> jax.ShapeDtypeStruct:
    """``p`` as an abstract value on ``mesh``, its layout also split over ``axis`` where a dimension allows."""
    sharding = getattr(p, "sharding", None)
    if isinstance(sharding, NamedSharding):
        if dict(sharding.mesh.shape) != dict(mesh.shape):
            raise ValueError(
                f"params{jax.tree_util.keystr(path)} is sharded over a mesh {dict(sharding.mesh.shape)}, "
                f"not over the given mesh {dict(mesh.shape)}."
            )
        spec = list(sharding.spec)
    else:
        spec = []
    shape = tuple(jax.numpy.shape(p))
    spec = (spec + [None] * len(shape))[: len(shape)]
    dim = None if axis in _axes_in(spec) else _dimension_to_split(shape, spec, mesh, axis)
    if dim is None and axis not in _axes_in(spec) and math.prod(shape) >= mesh.shape[axis]:
        whole.append(f"params{jax.tree_util.keystr(path)} {shape}")  # smaller ones cost nothing
    if dim is not None:
        entry = spec[dim]
        existing = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        spec[dim] = existing + (axis,) if existing else axis
    return jax.ShapeDtypeStruct(shape, jax.numpy.result_type(p), sharding=NamedSharding(mesh, PartitionSpec(*spec)))


def _has_explicit_axes(mesh: Mesh) -> bool:
    return any(kind == jax.sharding.AxisType.Explicit for kind in getattr(mesh, "axis_types", ()))


def _axes_in(spec: list) -> set:
    axes = set()
    for entry in spec:
        if isinstance(entry, str):
            axes.add(entry)
        elif entry is not None:
            axes.update(entry)
    return axes


def _dimension_to_split(shape: tuple, spec: list, mesh: Mesh, axis: str):
    """The longest dimension whose size divides evenly into its current shards times the axis size."""
    best = None
    for dim, size in enumerate(shape):
        entry = spec[dim]
        names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        shards = math.prod(mesh.shape[name] for name in names) * mesh.shape[axis]
        if size % shards == 0 and (best is None or size > shape[best]):
            best = dim
    return best
