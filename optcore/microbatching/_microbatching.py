"""Evaluating a function on a large batch as a sequential loop over micro-batches.

``microbatch`` splits the batch arguments of a function into ``n`` micro-batches,
evaluates the function on each inside a ``lax.fori_loop`` (so peak memory is
that of one micro-batch) and combines the results with an :class:`Accumulator`.
``micro_vmap`` and ``micro_grad`` build on it.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp


class AccumulationType(enum.Enum):
    """How per-micro-batch results are combined.

    - MEAN: the mean over micro-batches (sum, then one division by their number).
    - SUM: the sum over micro-batches.
    - RUNNING_MEAN: the mean, updated as ``a + (x - a) / (i + 1)`` (bounded magnitude).
    - CONCAT: the results concatenated back along the batch axis, in the
      original order of the batch.
    """

    MEAN = 1
    SUM = 2
    RUNNING_MEAN = 3
    CONCAT = 4


@dataclasses.dataclass(frozen=True)
class Accumulator:
    """A custom way of combining micro-batch results.

    Given micro-batch results ``x_0 .. x_{n-1}`` (one leaf of the output), the
    result is::

        carry = init(jax.ShapeDtypeStruct of x_0)
        for i in range(n):
            carry = update(carry, x_i, i)
        result = finalize(carry)

    ``aggregate(x)`` reduces a value with a leading batch axis (the output of a
    vmapped micro-batch) to one micro-batch result; :func:`micro_vmap` uses it.

    Attributes:
      init: ``f(shape_dtype_struct) -> carry``.
      update: ``f(carry, value, index) -> carry``.
      finalize: ``f(carry) -> result``.
      aggregate: ``f(batched_value) -> value``.
    """

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any], Any]
    finalize: Callable[[Any], Any]
    aggregate: Callable[[Any], Any]


def _inexact(dtype):
    return dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.result_type(float)


def _builtin(kind: AccumulationType, num_microbatches: int) -> Accumulator:
    """The accumulator of ``kind`` for ``num_microbatches`` micro-batches."""
    n = num_microbatches
    identity = lambda x: x  # noqa: E731
    if kind == AccumulationType.SUM:
        return Accumulator(
            init=lambda s: jnp.zeros(s.shape, s.dtype),
            update=lambda c, x, i: c + x,
            finalize=identity,
            aggregate=lambda x: jnp.sum(x, axis=0),
        )
    if kind == AccumulationType.MEAN:
        return Accumulator(
            init=lambda s: jnp.zeros(s.shape, _inexact(s.dtype)),
            update=lambda c, x, i: c + x,
            finalize=lambda c: c / n,
            aggregate=lambda x: jnp.mean(x, axis=0),
        )
    if kind == AccumulationType.RUNNING_MEAN:
        return Accumulator(
            init=lambda s: jnp.zeros(s.shape, _inexact(s.dtype)),
            update=lambda c, x, i: c + (x - c) / (i + 1),
            finalize=identity,
            aggregate=lambda x: jnp.mean(x, axis=0),
        )
    if kind == AccumulationType.CONCAT:
        # Micro-batch i holds the batch rows i, i + n, i + 2n, ... (see
        # reshape_batch_axis), so the carry is (m, n, ...) filled column i at
        # step i and a row-major reshape restores the original order. A scalar
        # result per micro-batch is stacked into shape (n,).
        # The carry is a one-entry dict whose key records which case it is.
        def init(s):
            if not s.shape:
                return {"stacked": jnp.zeros((n,), s.dtype)}
            return {"rows": jnp.zeros((s.shape[0], n) + tuple(s.shape[1:]), s.dtype)}

        def update(c, x, i):
            if "stacked" in c:
                return {"stacked": c["stacked"].at[i].set(x)}
            return {"rows": c["rows"].at[:, i].set(x)}

        def finalize(c):
            if "stacked" in c:
                return c["stacked"]
            rows = c["rows"]
            return jnp.reshape(rows, (rows.shape[0] * rows.shape[1],) + rows.shape[2:])

        return Accumulator(init=init, update=update, finalize=finalize, aggregate=identity)
    raise TypeError(f"Unknown accumulation type {kind!r}.")


def _accumulators_for(accumulator: Any, outputs: Any, num_microbatches: int) -> Any:
    """One :class:`Accumulator` per leaf of ``outputs`` (``accumulator`` may be a prefix tree)."""

    def resolve(acc):
        if isinstance(acc, AccumulationType):
            return _builtin(acc, num_microbatches)
        if isinstance(acc, Accumulator):
            return acc
        raise TypeError(f"accumulator leaves must be AccumulationType or Accumulator, got {type(acc).__name__}.")

    return jax.tree.map(lambda acc, sub: jax.tree.map(lambda _: resolve(acc), sub), accumulator, outputs)


def reshape_batch_axis(tree: Any, microbatch_size: int, axis: int = 0) -> Any:
    """Splits the batch axis of every leaf into ``(num_microbatches, microbatch_size)``.

    Column-major: micro-batch ``i`` holds the rows ``i, i + n, i + 2n, ...``, so
    a sharding of the batch axis carries over to the ``microbatch_size`` axis.

    Args:
      tree: a pytree of arrays sharing a batch axis.
      microbatch_size: the rows per micro-batch; must divide the batch size.
      axis: the batch axis.
    """

    def split(x):
        x = jnp.asarray(x)
        ax = axis % x.ndim
        batch = x.shape[ax]
        if microbatch_size <= 0 or batch % microbatch_size:
            raise ValueError(
                f"microbatch_size={microbatch_size} must be positive and divide the batch size {batch} (axis {axis})."
            )
        n = batch // microbatch_size
        shape = x.shape[:ax] + (microbatch_size, n) + x.shape[ax + 1 :]
        return jnp.swapaxes(jnp.reshape(x, shape), ax, ax + 1)

    return jax.tree.map(split, tree)


def _as_tuple(x) -> tuple:
    if isinstance(x, (str, int)):
        return (x,)
    return tuple(x)


def microbatch(
    fun: Callable[..., Any],
    argnums: Union[int, Sequence[int]],
    microbatch_size: Optional[int],
    accumulator: Any = AccumulationType.SUM,
    *,
    argnames: Union[str, Sequence[str]] = (),
    in_axes: Union[int, Sequence[int]] = 0,
    num_real_microbatches: Optional[Union[int, jax.Array]] = None,
) -> Callable[..., Any]:
    r"""Evaluates ``fun`` sequentially on micro-batches and combines the results.

    .. math::
        \mathrm{out} = \mathrm{finalize}\big(\mathrm{update}(\dots\mathrm{update}(\mathrm{init}, f(B_0), 0)\dots, f(B_{n-1}), n-1)\big)

    With SUM, ``out = sum_i f(B_i)``; with MEAN, ``(1/n) sum_i f(B_i)``; with
    CONCAT, the ``f(B_i)`` stitched back in batch order. The loop is a
    ``lax.fori_loop``: one micro-batch is live at a time.

    Args:
      fun: the function to evaluate.
      argnums: the positional arguments that have a batch axis.
      microbatch_size: rows per micro-batch (must divide the batch size);
        ``None`` evaluates ``fun`` once on the whole batch.
      accumulator: an :class:`AccumulationType`, an :class:`Accumulator`, or a
        pytree of them that is a prefix of ``fun``'s output.
      argnames: the keyword arguments that have a batch axis.
      in_axes: the batch axis, one for all or one per entry of ``argnums + argnames``.
      num_real_microbatches: evaluate only the first this-many micro-batches
        (the others contribute nothing; CONCAT leaves zeros in their rows). May
        be a traced value, to handle variable batch sizes without recompiling.

    Returns:
      A function with ``fun``'s signature.
    """
    argnums = _as_tuple(argnums)
    argnames = _as_tuple(argnames)
    n_batched = len(argnums) + len(argnames)
    axes = (in_axes,) * n_batched if isinstance(in_axes, int) else tuple(in_axes)
    if len(axes) != n_batched:
        raise ValueError(f"in_axes has {len(axes)} entries for {n_batched} batched arguments (argnums + argnames).")
    if microbatch_size is None:
        return fun
    if microbatch_size < 1:
        raise ValueError(f"microbatch_size must be a positive int or None, got {microbatch_size}.")

    def wrapped(*args, **kwargs):
        args = list(args)
        keys = [("pos", i) for i in argnums] + [("kw", k) for k in argnames]
        split = {}
        sizes = set()
        for key, ax in zip(keys, axes):
            value = args[key[1]] if key[0] == "pos" else kwargs[key[1]]
            split[key] = reshape_batch_axis(value, microbatch_size, ax)
            sizes.update(jnp.shape(leaf)[ax % jnp.ndim(leaf)] for leaf in jax.tree.leaves(split[key]))
        if len(sizes) != 1:
            raise ValueError(f"The batched arguments have different batch sizes: {sorted(s * microbatch_size for s in sizes)}.")
        n = sizes.pop()

        def call(i):
            call_args, call_kwargs = list(args), dict(kwargs)
            for key, ax in zip(keys, axes):
                piece = jax.tree.map(
                    lambda x, ax=ax: jax.lax.dynamic_index_in_dim(x, i, ax % x.ndim, keepdims=False), split[key]
                )
                if key[0] == "pos":
                    call_args[key[1]] = piece
                else:
                    call_kwargs[key[1]] = piece
            return fun(*call_args, **call_kwargs)

        out_shapes = jax.eval_shape(call, 0)
        accs = _accumulators_for(accumulator, out_shapes, n)
        carry = jax.tree.map(lambda a, s: a.init(s), accs, out_shapes, is_leaf=lambda x: isinstance(x, Accumulator))

        def body(i, carry):
            out = call(i)
            return jax.tree.map(
                lambda a, c, x: a.update(c, x, i), accs, carry, out, is_leaf=lambda x: isinstance(x, Accumulator)
            )

        upper = n if num_real_microbatches is None else jnp.minimum(num_real_microbatches, n)
        carry = jax.lax.fori_loop(0, upper, body, carry)
        return jax.tree.map(lambda a, c: a.finalize(c), accs, carry, is_leaf=lambda x: isinstance(x, Accumulator))

    return wrapped


def micro_vmap(
    fun: Callable[..., Any],
    in_axes: Union[int, Sequence[Optional[int]]] = 0,
    out_axes: Any = 0,
    *,
    microbatch_size: Optional[int] = None,
    vmap_fn: Callable[..., Callable[..., Any]] = jax.vmap,
    accumulator: Any = AccumulationType.CONCAT,
    num_real_microbatches: Optional[Union[int, jax.Array]] = None,
) -> Callable[..., Any]:
    r"""``jax.vmap`` evaluated one micro-batch at a time, with optional reduction.

    .. math::
        \mathrm{out} = \mathrm{combine}_i\ \mathrm{aggregate}(\mathrm{vmap}(f)(B_i))

    With CONCAT (the default) this equals ``jax.vmap(fun)``; SUM and MEAN
    reduce over the batch axis without ever materialising the full output.

    Args:
      fun: the function to map over the batch axis.
      in_axes: the batch axis of the positional arguments (an int for all, or
        one entry per argument, ``None`` for unbatched ones). Keyword arguments
        are mapped over their leading axis, as by ``jax.vmap``.
      out_axes: must be 0.
      microbatch_size: rows per micro-batch; ``None`` maps the whole batch at once.
      vmap_fn: a function with ``jax.vmap``'s signature ``(fun, in_axes, out_axes)``.
      accumulator: how to combine the outputs (a prefix tree of AccumulationType/Accumulator).
      num_real_microbatches: see :func:`microbatch`.
    """
    if out_axes != 0:
        raise ValueError(f"micro_vmap supports only out_axes=0, got {out_axes!r}.")

    def wrapped(*args, **kwargs):
        axes = (in_axes,) * len(args) if isinstance(in_axes, int) else tuple(in_axes)
        if len(axes) != len(args):
            raise ValueError(f"in_axes has {len(axes)} entries for {len(args)} positional arguments.")
        # As in jax.vmap, keyword arguments are mapped over their leading axis: they travel
        # as one more positional argument, a dict batched on axis 0.
        args, axes = (*args, kwargs), (*axes, 0 if kwargs else None)
        vmapped = vmap_fn(lambda *a: fun(*a[:-1], **a[-1]), axes, 0)

        def reduced(*a):
            out = vmapped(*a)
            accs = _accumulators_for(accumulator, out, 1)
            return jax.tree.map(lambda acc, x: acc.aggregate(x), accs, out, is_leaf=lambda x: isinstance(x, Accumulator))

        if microbatch_size is None:
            return reduced(*args)
        batched = [i for i, ax in enumerate(axes) if ax is not None]
        return microbatch(
            reduced,
            argnums=batched,
            microbatch_size=microbatch_size,
            accumulator=accumulator,
            in_axes=[axes[i] for i in batched],
            num_real_microbatches=num_real_microbatches,
        )(*args)

    return wrapped


class Aux(NamedTuple):
    """Per-example outputs of :func:`micro_grad`: loss values, metrics and the function's aux."""

    values: Any
    metrics: Any
    aux: Any


def micro_grad(
    fun: Callable[..., Any],
    has_aux: bool = False,
    argnums: Union[int, Sequence[int]] = 0,
    *,
    batch_argnums: Union[int, Sequence[int]] = 1,
    keep_batch_dim: bool = True,
    microbatch_size: Optional[int] = None,
    accumulator: Any = AccumulationType.SUM,
    transform_fn: Callable[[Any], Any] = lambda grads: grads,
    metrics_fn: Callable[[Any], Any] = lambda grads: None,
    num_real_microbatches: Optional[Union[int, jax.Array]] = None,
) -> Callable[..., tuple[Any, Aux]]:
    r"""Per-example gradients, transformed and combined over the batch.

    .. math::
        G = \mathrm{combine}_{b}\ T\big(\nabla_\theta f(\theta, x_b)\big), \qquad
        \mathrm{metrics}_b = M\big(\nabla_\theta f(\theta, x_b)\big)

    With ``T`` = identity and SUM, ``G`` is the sum of per-example gradients;
    ``T`` can clip them (DP-SGD, Abadi et al., `Deep Learning with
    Differential Privacy <https://arxiv.org/abs/1607.00133>`_, 2016) or return
    moments ``(g, g**2)``.

    Args:
      fun: the loss ``fun(params, batch, ...)``; returns a scalar, or
        ``(scalar, aux)`` when ``has_aux``.
      has_aux: whether ``fun`` returns an aux output.
      argnums: the arguments to differentiate.
      batch_argnums: the arguments with a batch axis (axis 0).
      keep_batch_dim: give ``fun`` each example with a batch axis of size 1.
      microbatch_size: examples per sequential micro-batch (``None``: one vmap).
      accumulator: how to combine the transformed gradients (default SUM).
      transform_fn: ``T``, applied to each per-example gradient.
      metrics_fn: ``M``, a small per-example summary of the gradient.
      num_real_microbatches: see :func:`microbatch`.

    Returns:
      A function returning ``(combined transformed gradients, Aux(values, metrics, aux))``
      with per-example values, metrics and aux.
    """
    batch_argnums = _as_tuple(batch_argnums)
    value_and_grad = jax.value_and_grad(fun, argnums=argnums, has_aux=has_aux)

    def per_example(*args, **kwargs):
        if keep_batch_dim:
            args = tuple(
                jax.tree.map(lambda x: jnp.expand_dims(x, 0), a) if i in batch_argnums else a for i, a in enumerate(args)
            )
        if has_aux:
            (value, aux), grads = value_and_grad(*args, **kwargs)
        else:
            (value, grads), aux = value_and_grad(*args, **kwargs), None
        return transform_fn(grads), Aux(values=value, metrics=metrics_fn(grads), aux=aux)

    def wrapped(*args, **kwargs):
        in_axes = [0 if i in batch_argnums else None for i in range(len(args))]
        return micro_vmap(
            per_example,
            in_axes=in_axes,
            microbatch_size=microbatch_size,
            accumulator=(accumulator, AccumulationType.CONCAT),
            num_real_microbatches=num_real_microbatches,
        )(*args, **kwargs)

    return wrapped
