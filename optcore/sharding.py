"""Shardings for optimizer state: ZeRO-style splitting of the state over a data-parallel mesh axis.

Layer 2: depends on :mod:`optcore.base` and :mod:`optcore.tree_utils`.

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

from optcore import tree_utils

__all__ = ["state_shardings"]


def state_shardings(opt: Any, params: Any, mesh: Mesh, axis: str = "data") -> Any:
    """Shardings that split an optimizer's state over the mesh axis ``axis`` (ZeRO stage 1).

    Returns a pytree of :class:`~jax.sharding.NamedSharding` with the structure
    of ``jax.eval_shape(opt.init, params)``, for
    ``jax.jit(opt.init, out_shardings=...)`` and for the training step's in and
    out shardings. Each state leaf starts from the sharding that ``init`` gives
    it for ``params`` (XLA's propagation through the jitted ``init``: a
    params-shaped leaf takes its param's sharding, so state of params already
    split over other axes, FSDP or tensor parallel, keeps that split) and is
    then also split over ``axis`` along its longest dimension that still
    divides evenly: with :math:`k` shards on that dimension already and
    :math:`n` devices on ``axis``, a dimension of size :math:`d` qualifies when
    :math:`k n \\mid d`. Scalars (step counts, injected hyperparameters),
    leaves already split over ``axis`` and leaves with no qualifying dimension
    stay as they are; a params-like leaf (one built from the params, such as
    ``mu``) left whole over ``axis`` is named in a ``UserWarning``, because it
    costs its full size on every device of the axis.

    Per device, the state then costs about :math:`1/n` of its replicated size.
    The step's extra communication is one all-gather of the updates over
    ``axis`` (for replicated params), never a gather of the state.

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
    abstract_params = jax.tree_util.tree_map_with_path(lambda path, p: _abstract_on(mesh, path, p), params)
    with jax.set_mesh(mesh) if _has_explicit_axes(mesh) else contextlib.nullcontext():
        base = jax.jit(init).lower(abstract_params).compile().output_shardings
    shapes = jax.eval_shape(init, abstract_params)
    params_like = _params_like_flags(init, shapes)

    replicated_paths = []

    def split(path, shape, sharding, is_params_like):
        spec = _spec_of(sharding, mesh, len(shape.shape))
        if shape.ndim == 0 or axis in _axes_in(spec):
            return NamedSharding(mesh, PartitionSpec(*spec))
        dim = _dimension_to_split(shape.shape, spec, mesh, axis)
        if dim is None:
            if is_params_like:
                replicated_paths.append(f"state{jax.tree_util.keystr(path)} {tuple(shape.shape)}")
            return NamedSharding(mesh, PartitionSpec(*spec))
        entry = spec[dim]
        existing = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        spec[dim] = existing + (axis,) if existing else axis
        return NamedSharding(mesh, PartitionSpec(*spec))

    result = jax.tree_util.tree_map_with_path(split, shapes, base, params_like)
    if replicated_paths:
        warnings.warn(
            f"state_shardings: {len(replicated_paths)} params-like state leaves have no dimension that splits "
            f"evenly over mesh axis {axis!r} ({mesh.shape[axis]} devices) and stay whole on each of its devices: "
            + ", ".join(replicated_paths),
            UserWarning,
            stacklevel=2,
        )
    return result


def _has_explicit_axes(mesh: Mesh) -> bool:
    return any(kind == jax.sharding.AxisType.Explicit for kind in getattr(mesh, "axis_types", ()))


def _abstract_on(mesh: Mesh, path: Any, p: Any) -> jax.ShapeDtypeStruct:
    """``p`` as an abstract value on ``mesh``: its own NamedSharding if it has one, else replicated."""
    sharding = getattr(p, "sharding", None)
    if isinstance(sharding, NamedSharding):
        if dict(sharding.mesh.shape) != dict(mesh.shape):
            raise ValueError(
                f"params{jax.tree_util.keystr(path)} is sharded over a mesh {dict(sharding.mesh.shape)}, "
                f"not over the given mesh {dict(mesh.shape)}."
            )
        sharding = NamedSharding(mesh, sharding.spec)
    else:
        sharding = NamedSharding(mesh, PartitionSpec())
    return jax.ShapeDtypeStruct(jax.numpy.shape(p), jax.numpy.result_type(p), sharding=sharding)


def _params_like_flags(init: Any, shapes: Any) -> Any:
    """True for each state leaf in a part of the state built from the params (``mu``, ``nu``, ...)."""
    try:
        return tree_utils.tree_map_params(
            init, lambda _: True, shapes, transform_non_params=lambda part: jax.tree.map(lambda _: False, part)
        )
    except Exception:  # noqa: BLE001 -- an init the placeholder probe cannot run: name every unsplit leaf
        return jax.tree.map(lambda _: True, shapes)


def _spec_of(sharding: Any, mesh: Mesh, ndim: int) -> list:
    """The partition spec of ``sharding`` as a list of ``ndim`` entries (replicated when not a NamedSharding)."""
    spec = list(sharding.spec) if isinstance(sharding, NamedSharding) else []
    return (spec + [None] * ndim)[:ndim]


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
