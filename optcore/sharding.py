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
from typing import Any, NamedTuple

import jax
import jax.extend.core as jex_core
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
    injected hyperparameters) are replicated. State that ``init`` makes from
    no param at all (constants to XLA, such as the ``jnp.zeros_like``
    moments of Optax's inits, which propagation cannot place) takes the
    layout of the params of its shape, where those all have one. A param of
    at least :math:`n` entries with no dimension that divides is named in a
    ``UserWarning``: its state stays whole over ``axis`` and costs its full
    size on every device.

    Some states cannot follow every split: one that regroups a param's
    entries, such as an optcore-lowbit quantized moment whose blocks would run
    across shard boundaries, comes out of ``init`` whole. A param's own state
    is what ``init`` computes from that param alone (read from its jaxpr;
    leaves of at least :math:`n` entries). Where none of it is split over
    ``axis``, or a leaf of at least a quarter of the param's entries is not
    (smaller ones may be reductions over the split dimension), the param's
    next longest dimension that divides is tried instead. A param for which
    no dimension works is left where its own state costs least per device and
    named in a ``UserWarning``, so no state is whole silently. The warnings
    ``init`` itself raises are passed on for the layout chosen. Each such
    retry compiles ``init`` once more (for all the params that need it at
    once; none of optcore's float optimizers needs one).

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
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    plans = [_SplitPlan.of(mesh, axis, path, p) for path, p in leaves]
    whole = [plan for plan in plans if plan.whole(mesh)]
    if whole:
        warnings.warn(
            f"state_shardings: the state of {len(whole)} params is not split over mesh axis {axis!r} (no dimension "
            f"divides evenly into {mesh.shape[axis]} more shards) and costs its full size on each device of the "
            "axis: " + ", ".join(f"{plan.name} {plan.shape}" for plan in whole),
            UserWarning,
            stacklevel=2,
        )
    jaxpr, propagated, lost, init_warnings, choice = _search_splits(init, treedef, plans, mesh)
    for seen in init_warnings:  # the init's own, for the layout chosen (a plugin's advice on a split it cannot follow)
        warnings.warn_explicit(seen.message, seen.category, seen.filename, seen.lineno)
    if lost:
        warnings.warn(
            f"state_shardings: the optimizer's init does not keep the split over mesh axis {axis!r} of {len(lost)} "
            "params along any dimension that divides, so their state (or its largest part) stays whole and costs "
            "its full size on each device of the axis (a state that regroups a param's entries, such as "
            "quantization blocks longer than a shard, cannot follow a split; an optimizer setting that fits the "
            "shards can): "
            + ", ".join(f"{plans[i].name} {plans[i].shape}" for i in lost),
            UserWarning,
            stacklevel=2,
        )
    replicated = NamedSharding(mesh, PartitionSpec())
    shardings, out_tree = jax.tree.flatten(propagated)
    shardings = [NamedSharding(mesh, s.spec) if isinstance(s, NamedSharding) else replicated for s in shardings]
    return jax.tree.unflatten(out_tree, _split_constants(jaxpr, shardings, plans, choice, mesh, axis))


def _propagate(init: Any, split_params: Any, mesh: Mesh) -> tuple:
    """``init``'s jaxpr, the shardings XLA gives its outputs for ``split_params``, and the warnings it raised."""
    with jax.set_mesh(mesh) if _has_explicit_axes(mesh) else contextlib.nullcontext(), \
            warnings.catch_warnings(record=True) as init_warnings:
        warnings.simplefilter("always")
        traced = jax.jit(init).trace(split_params)
        return traced.jaxpr.jaxpr, traced.lower().compile().output_shardings, init_warnings


class _SplitPlan(NamedTuple):
    """A param's own layout, and the dimensions along which its state may also be split over the axis."""

    name: str
    shape: tuple
    dtype: Any
    spec: tuple  # the param's layout, one entry per dimension
    axis: str
    dims: tuple  # dimensions that divide evenly into more shards over the axis, longest first

    @classmethod
    def of(cls, mesh: Mesh, axis: str, path: Any, p: Any) -> "_SplitPlan":
        name = f"params{jax.tree_util.keystr(path)}"
        sharding = getattr(p, "sharding", None)
        spec = []
        if isinstance(sharding, NamedSharding):
            if dict(sharding.mesh.shape) != dict(mesh.shape):
                raise ValueError(
                    f"{name} is sharded over a mesh {dict(sharding.mesh.shape)}, "
                    f"not over the given mesh {dict(mesh.shape)}."
                )
            spec = list(sharding.spec)
        shape = tuple(jax.numpy.shape(p))
        spec = tuple((spec + [None] * len(shape))[: len(shape)])
        dims = () if axis in _axes_in(spec) else _dimensions_to_split(shape, spec, mesh, axis)
        return cls(name, shape, jax.numpy.result_type(p), spec, axis, dims)

    @property
    def split(self) -> bool:
        """Split over the axis: by the param's own layout, or along one of ``dims``."""
        return bool(self.dims) or self.axis in _axes_in(self.spec)

    def whole(self, mesh: Mesh) -> bool:
        """Not split, though big enough for a split to matter (smaller params' state costs nothing)."""
        return not self.split and math.prod(self.shape) >= mesh.shape[self.axis]

    def abstract(self, mesh: Mesh, choice: int) -> jax.ShapeDtypeStruct:
        """The param as an abstract value on ``mesh``, also split over the axis along ``dims[choice]``."""
        spec = list(self.spec)
        if self.dims:
            dim = self.dims[choice]
            spec[dim] = _names(spec[dim]) + (self.axis,) if spec[dim] is not None else self.axis
        return jax.ShapeDtypeStruct(self.shape, self.dtype, sharding=NamedSharding(mesh, PartitionSpec(*spec)))


def _search_splits(init: Any, treedef: Any, plans: list, mesh: Mesh) -> tuple:
    """Propagates each param's split through ``init``, moving it to the next dimension where the state drops it.

    Returns ``init``'s jaxpr, the state's shardings, the indices of the params whose state keeps no split tried
    (each left on the dimension where its state cost least per device), the warnings ``init`` raised for that
    layout, and the dimension chosen for each param (an index into its ``dims``).
    """
    choice = [0] * len(plans)  # index into each plan's dims: the longest dimension first
    tried: list = [{} for _ in plans]  # per param: choice -> bytes per device of its own state
    while True:
        split_params = jax.tree_util.tree_unflatten(treedef, [plan.abstract(mesh, c) for plan, c in zip(plans, choice)])
        jaxpr, propagated, init_warnings = _propagate(init, split_params, mesh)
        own = _own_state(jaxpr, jax.tree.leaves(propagated), plans, mesh)
        for i, (cost, _) in own.items():
            tried[i][choice[i]] = cost
        lost = [i for i, (_, kept) in own.items() if not kept]
        retry = [i for i in lost if choice[i] + 1 < len(plans[i].dims)]
        if not retry:
            break
        for i in retry:
            choice[i] += 1
    cheapest = [min(costs, key=lambda c: (costs[c], c)) if i in lost else choice[i] for i, costs in enumerate(tried)]
    if cheapest != choice:
        split_params = jax.tree_util.tree_unflatten(treedef, [p.abstract(mesh, c) for p, c in zip(plans, cheapest)])
        jaxpr, propagated, init_warnings = _propagate(init, split_params, mesh)
    return jaxpr, propagated, lost, init_warnings, cheapest


def _own_state(jaxpr: Any, out_shardings: list, plans: list, mesh: Mesh) -> dict:
    """For each param split over the axis: the bytes per device of its own state, and whether it keeps the split.

    A param's own state is every output of ``init`` computed from that param alone with at least as many
    entries as the axis has devices (scalars, and leaves that mix several params, say nothing about one
    split). It keeps the split unless none of those outputs is split over the axis, or one holding a quarter
    of the param's entries or more is not (quantization codes that regroup the entries into blocks longer
    than a shard). Smaller outputs may stay whole: a reduction over the split dimension (Adafactor's
    factored moment along it) is.
    """
    own: dict = {}  # param index -> (bytes per device, [(entries, split over the axis)])
    for deps, var, sharding in zip(_inputs_of_outputs(jaxpr), jaxpr.outvars, out_shardings):
        if len(deps) != 1:
            continue
        plan = plans[i := next(iter(deps))]
        entries = math.prod(var.aval.shape)
        if plan.split and entries >= mesh.shape[plan.axis]:
            axes = _axes_in(sharding.spec if isinstance(sharding, NamedSharding) else ())
            cost, outputs = own.get(i, (0, []))
            per_device = entries * var.aval.dtype.itemsize // math.prod(mesh.shape[a] for a in axes)
            own[i] = (cost + per_device, outputs + [(entries, plan.axis in axes)])
    kept = {
        i: any(split for _, split in outputs)
        and all(split for entries, split in outputs if 4 * entries >= math.prod(plans[i].shape))
        for i, (_, outputs) in own.items()
    }
    return {i: (cost, kept[i]) for i, (cost, _) in own.items()}


def _split_constants(jaxpr: Any, shardings: list, plans: list, choice: list, mesh: Mesh, axis: str) -> list:
    """``shardings`` with the state that ``init`` makes from no param at all split like the params of its shape.

    Such leaves are constants to XLA (Optax's inits make their moments with ``jnp.zeros_like``, which ignores
    the param's value), so propagation leaves them whole; any layout is theirs to take. A leaf with the shape
    of params that all have one layout takes it, so it lines up with its param in the step; others keep theirs.
    """
    layouts: dict = {}  # shape -> the layouts chosen for the params of that shape
    for plan, c in zip(plans, choice):
        if plan.split:
            layouts.setdefault(plan.shape, set()).add(plan.abstract(mesh, c).sharding.spec)
    out = []
    for deps, var, sharding in zip(_inputs_of_outputs(jaxpr), jaxpr.outvars, shardings):
        candidates = layouts.get(tuple(var.aval.shape), set())
        if not deps and len(candidates) == 1 and axis not in _axes_in(sharding.spec):
            sharding = NamedSharding(mesh, next(iter(candidates)))
        out.append(sharding)
    return out


_CALLS = frozenset({"jit", "pjit", "closed_call", "checkpoint", "remat"})  # primitives that call their "jaxpr" once


def _inputs_of_outputs(jaxpr: Any) -> list:
    """For each output of ``jaxpr``, the indices of the inputs it is computed from (a superset where unsure).

    Calls (``jit``, ``remat``) are followed into; any other equation's outputs are taken to depend on all its
    inputs (a loop's carry may pass any input to any output over its iterations).
    """
    deps = {var: frozenset([i]) for i, var in enumerate(jaxpr.invars)}

    def of(var):
        return deps.get(var, frozenset()) if isinstance(var, jex_core.Var) else frozenset()

    for eqn in jaxpr.eqns:
        inner = eqn.params.get("jaxpr") if eqn.primitive.name in _CALLS else None
        inner = getattr(inner, "jaxpr", inner)  # a ClosedJaxpr's Jaxpr
        if isinstance(inner, jex_core.Jaxpr) and len(inner.invars) == len(eqn.invars):
            outs = [frozenset().union(*(of(eqn.invars[j]) for j in used)) for used in _inputs_of_outputs(inner)]
        else:
            outs = [frozenset().union(*map(of, eqn.invars))] * len(eqn.outvars)
        deps.update(zip(eqn.outvars, outs))
    return [of(var) for var in jaxpr.outvars]


def _has_explicit_axes(mesh: Mesh) -> bool:
    return any(kind == jax.sharding.AxisType.Explicit for kind in getattr(mesh, "axis_types", ()))


def _names(entry: Any) -> tuple:
    """The mesh axes of one entry of a ``PartitionSpec``: ``None``, an axis name, or a tuple of them."""
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def _axes_in(spec: Any) -> set:
    return {name for entry in spec for name in _names(entry)}


def _dimensions_to_split(shape: tuple, spec: tuple, mesh: Mesh, axis: str) -> tuple:
    """The dimensions whose size divides evenly into their current shards times the axis size, longest first."""
    def divides(dim):
        return shape[dim] % (math.prod(mesh.shape[name] for name in _names(spec[dim])) * mesh.shape[axis]) == 0

    return tuple(sorted(filter(divides, range(len(shape))), key=lambda dim: -shape[dim]))  # stable: ties keep order
