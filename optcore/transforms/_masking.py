"""Applying a transformation to a subset of the parameters: ``masked``."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax

from optcore import base


class MaskedNode(NamedTuple):
    """Placeholder for a masked-out leaf: an empty pytree node, so tree maps skip it."""


class MaskedState(NamedTuple):
    """State of :func:`masked`: the inner state over the masked-in leaves."""

    inner_state: Any


def _mask_tree(tree: Any, mask_tree: Any) -> Any:
    return jax.tree.map(lambda m, t: t if m else MaskedNode(), mask_tree, tree)


def masked(
    inner: base.GradientTransformation,
    mask: Union[Any, Callable[[base.Params], Any]],
    *,
    mask_compatible_extra_args: bool = False,
) -> base.GradientTransformationExtraArgs:
    """Applies ``inner`` only where ``mask`` is True; other updates pass through.

    Args:
      inner: the transformation to apply to the masked-in leaves.
      mask: a tree of booleans with the structure of the params (or a prefix
        of it), or a function ``params -> mask``.
      mask_compatible_extra_args: also mask extra arguments whose tree
        structure matches the params.

    Returns:
      A transformation whose state is ``MaskedState(inner_state)`` where the
      masked-out leaves are :class:`MaskedNode` placeholders.
    """
    inner = base.with_extra_args_support(inner)

    def resolve(params):
        return mask(params) if callable(mask) else mask

    def mask_extra_args(extra_args, mask_tree, params_treedef):
        if not mask_compatible_extra_args:
            return extra_args
        out = {}
        for key, value in extra_args.items():
            try:
                same = jax.tree.structure(value) == params_treedef
            except Exception:  # noqa: BLE001 - non-pytree extra args pass through
                same = False
            out[key] = _mask_tree(value, mask_tree) if same else value
        return out

    def init_fn(params):
        mask_tree = resolve(params)
        return MaskedState(inner_state=inner.init(_mask_tree(params, mask_tree)))

    def update_fn(updates, state, params=None, **extra_args):
        mask_tree = resolve(updates if params is None else params)
        masked_params = None if params is None else _mask_tree(params, mask_tree)
        extra_args = mask_extra_args(extra_args, mask_tree, jax.tree.structure(updates))
        new_masked, inner_state = inner.update(
            _mask_tree(updates, mask_tree), state.inner_state, masked_params, **extra_args
        )
        new_updates = jax.tree.map(
            lambda m, new, old: new if m else old, mask_tree, new_masked, updates
        )
        return new_updates, MaskedState(inner_state=inner_state)

    return base.GradientTransformationExtraArgs(init_fn, update_fn)
