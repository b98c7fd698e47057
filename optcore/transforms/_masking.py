"""Applying a transformation to a subset of the parameters: ``masked``.

Also holds the helpers that turn a mask or label argument into a tree aligned
with the params; :func:`optcore.partition` uses them too.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax

from optcore import base, validate
from optcore.kit import static_args
from optcore.tree_utils._state_utils import is_params_placeholder


class MaskedNode(NamedTuple):
    """Placeholder for a masked-out leaf: an empty pytree node, so tree maps skip it.

    Keeping a placeholder (rather than dropping the leaf) keeps the inner
    state's structure a mirror of the params' structure.
    """


class MaskedState(NamedTuple):
    """State of :func:`masked`: the inner state over the masked-in leaves."""

    inner_state: Any


def is_tree_function(mask_or_fn: Any) -> bool:
    """True if ``mask_or_fn`` is a function ``params -> tree``, False if it is a tree.

    ``callable()`` alone is not enough: an Equinox module (or any registered
    pytree class with ``__call__``) is callable *and* a tree of mask values.
    A plain function is a single pytree leaf; a registered container is not,
    so only callables that are their own only leaf count as functions.
    ``jax.tree_util.Partial`` is a registered pytree but still a function.
    """
    if not callable(mask_or_fn):
        return False
    if isinstance(mask_or_fn, jax.tree_util.Partial):
        return True
    leaves = jax.tree.leaves(mask_or_fn)
    return len(leaves) == 1 and leaves[0] is mask_or_fn


def resolve_tree(mask_or_fn: Any, tree: Any) -> Any:
    """The mask (or label) tree for ``tree``: calls ``mask_or_fn`` if it is a function."""
    return mask_or_fn(tree) if is_tree_function(mask_or_fn) else mask_or_fn


def _key_name(entry: Any) -> Any:
    """A container-independent name for one step of a key path."""
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return entry


def align_to(mask_tree: Any, tree: Any, what: str = "mask") -> Any:
    """Returns ``mask_tree`` as a tree that is a prefix of ``tree``'s structure.

    A mask with the params' structure (or a prefix of it) is returned as is.
    A mask built with another container type holding the same keys (a plain
    ``dict`` for Flax ``FrozenDict`` params, say) is re-keyed by key path onto
    the params' structure, one mask value per param leaf.

    Raises:
      ValueError: if a param has no entry in the mask, or the mask has an entry
        that matches no param.
    """
    if is_params_placeholder(tree):
        # tree_map_params probing the state layout: there are no params to align to.
        return mask_tree
    try:
        jax.tree.map(lambda m, t: None, mask_tree, tree)
        return mask_tree
    except (ValueError, TypeError):
        pass
    table = {
        tuple(_key_name(k) for k in path): value
        for path, value in jax.tree_util.tree_flatten_with_path(mask_tree)[0]
    }
    used = set()

    def lookup(path, _):
        keys = tuple(_key_name(k) for k in path)
        for n in range(len(keys), -1, -1):
            if keys[:n] in table:
                used.add(keys[:n])
                return table[keys[:n]]
        raise ValueError(
            f"The {what} has no entry for the parameter at {jax.tree_util.keystr(path)}; "
            f"the {what} must have the structure of the params (or a prefix of it)."
        )

    aligned = jax.tree_util.tree_map_with_path(lookup, tree)
    unused = set(table) - used
    if unused:
        raise ValueError(
            f"The {what} has entries that match no parameter: {sorted(map(str, unused))}; "
            f"the {what} must have the structure of the params (or a prefix of it)."
        )
    return aligned


def mask_tree(tree: Any, mask: Any) -> Any:
    """``tree`` with every masked-out subtree replaced by :class:`MaskedNode`."""
    return jax.tree.map(lambda m, t: t if m else MaskedNode(), mask, tree)


@static_args("mask")
def masked(
    inner: base.GradientTransformationLike,
    mask: Union[Any, Callable[[base.Params], Any]],
    *,
    mask_compatible_extra_args: bool = False,
) -> base.GradientTransformationExtraArgs:
    r"""Applies ``inner`` only where ``mask`` is True; other updates pass through.

    .. math::
        u_i \leftarrow \begin{cases} \mathrm{inner}(u)_i & m_i \\ u_i & \text{otherwise} \end{cases}

    The mask may be any pytree whose leaves are Python booleans: the params'
    own container types, a prefix of them, or (matched by key path) another
    container holding the same keys. A callable pytree (an Equinox module used
    as a mask) is a mask, not a mask function; see :func:`is_tree_function`.

    Args:
      inner: the transformation to apply to the masked-in leaves.
      mask: a tree of booleans with the structure of the params (or a prefix
        of it), or a function ``params -> mask``.
      mask_compatible_extra_args: also mask the extra arguments whose tree
        structure is that of the updates, so ``inner`` sees them aligned with
        the masked updates.

    Returns:
      A transformation whose state is ``MaskedState(inner_state)`` where the
      masked-out leaves are :class:`MaskedNode` placeholders.
    """
    base.check_gradient_transformation(inner, "masked inner")
    inner = base.with_extra_args_support(inner)

    def resolve(tree):
        return align_to(resolve_tree(mask, tree), tree)

    def mask_extra_args(extra_args, mask_values, updates_treedef):
        if not mask_compatible_extra_args:
            return extra_args
        out = {}
        for key, value in extra_args.items():
            try:
                same = jax.tree.structure(value) == updates_treedef
            except Exception:  # noqa: BLE001 - a non-pytree extra arg passes through
                same = False
            out[key] = mask_tree(value, mask_values) if same else value
        return out

    def init_fn(params):
        if is_params_placeholder(params):
            # tree_map_params: the inner state's params-shaped parts are found through the placeholder.
            return MaskedState(inner_state=inner.init(params))
        return MaskedState(inner_state=inner.init(mask_tree(params, resolve(params))))

    def update_fn(updates, state, params=None, **extra_args):
        if params is not None:
            # Structure only: masked-out leaves may be integers (counters, ids), and per-example gradients
            # (dpsgd) carry a leading batch axis that the params lack, as in Optax's masked.
            validate.check_tree_match(updates, params, against="params", shapes=False, floating=False)
        mask_values = resolve(updates)
        masked_params = None if params is None else mask_tree(params, mask_values)
        extra_args = mask_extra_args(extra_args, mask_values, jax.tree.structure(updates))
        new_masked, inner_state = inner.update(
            mask_tree(updates, mask_values), state.inner_state, masked_params, **extra_args
        )
        new_updates = jax.tree.map(
            lambda m, new, old: new if m else old, mask_values, new_masked, updates
        )
        return new_updates, MaskedState(inner_state=inner_state)

    return base.GradientTransformationExtraArgs(init_fn, update_fn)
