"""Reading and rewriting optimizer states by name.

An optimizer state is a pytree of NamedTuples, tuples and dicts; these helpers
find the parts named ``key`` at any depth (``"learning_rate"`` inside
``inject_hyperparams``' dict, ``"count"`` inside a chain), so a training loop
does not have to know how the state nests.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Optional

import jax

KeyPath = tuple
Filtering = Callable[[KeyPath, Any], bool]


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
    """The path entry of a NamedTuple field: the NamedTuple's class name and the field name.

    Attributes:
      tuple_name: ``type(state).__name__``, e.g. ``"ScaleByAdamState"``.
      name: the field name, e.g. ``"count"``.
    """

    tuple_name: str
    name: str

    def __str__(self) -> str:
        return f"{self.tuple_name}.{self.name}"


def _is_named_tuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _children(node: Any):
    """One level of ``node``: ``(keys, children, treedef)``, or None if ``node`` is a leaf.

    ``None`` children are kept as children (they are empty subtrees, never
    matches of their own but still positions a value can be set in).
    """
    entries, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if not entries or (len(entries) == 1 and entries[0][0] == ()):
        return None
    keys = []
    for path, _ in entries:
        (key,) = path
        if _is_named_tuple(node) and isinstance(key, jax.tree_util.GetAttrKey):
            key = NamedTupleKey(type(node).__name__, key.name)
        keys.append(key)
    return keys, [child for _, child in entries], treedef


def _key_name(key: Any) -> Any:
    """The name a path entry answers to (field name, dict key, attribute name)."""
    if isinstance(key, NamedTupleKey):
        return key.name
    if isinstance(key, jax.tree_util.DictKey):
        return key.key
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    return None


def _matches(key_name: Any, value: Any, key: Any) -> bool:
    # A NamedTuple state can also be found by its class name ("ScaleByAdamState").
    same_name = key_name is not None and _safe_equal(key_name, key)
    return same_name or (_is_named_tuple(value) and type(value).__name__ == key)


def _safe_equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # pylint: disable=broad-except  # unorderable/array keys never match
        return False


def _walk(node: Any, path: KeyPath) -> Iterator[tuple[KeyPath, Any, Any]]:
    """Every ``(path, key name, value)`` below ``node``, parents before children."""
    level = _children(node)
    if level is None:
        return
    keys, children, _ = level
    for key, child in zip(keys, children):
        child_path = path + (key,)
        yield child_path, _key_name(key), child
        yield from _walk(child, child_path)


def tree_get_all_with_path(tree: Any, key: Any, filtering: Optional[Filtering] = None) -> list[tuple[KeyPath, Any]]:
    """Every part of ``tree`` named ``key``, with its path.

    A part is named ``key`` if it is a NamedTuple field, dict entry or
    attribute called ``key``, or a NamedTuple whose class is called ``key``.
    The tree itself is returned (with path ``()``) if it is such a NamedTuple.

    Args:
      tree: a pytree, typically an optimizer state.
      key: the name to look for, e.g. ``"learning_rate"`` or ``"ScaleByAdamState"``.
      filtering: optional ``filtering(path, value) -> bool`` keeping only some matches.

    Returns:
      A list of ``(path, value)`` in depth-first order; NamedTuple fields appear
      in paths as :class:`NamedTupleKey`.
    """
    found = []
    if _is_named_tuple(tree) and type(tree).__name__ == key:
        found.append(((), tree))
    for path, key_name, value in _walk(tree, ()):
        if _matches(key_name, value, key):
            found.append((path, value))
    if filtering is not None:
        found = [(path, value) for path, value in found if filtering(path, value)]
    return found


def tree_get(tree: Any, key: Any, default: Optional[Any] = None, filtering: Optional[Filtering] = None) -> Any:
    """The unique part of ``tree`` named ``key`` (see :func:`tree_get_all_with_path`).

    Example: ``tree_get(state, "learning_rate")`` reads the current learning
    rate of an ``inject_hyperparams`` optimizer, however deeply it is nested.

    Args:
      tree: a pytree, typically an optimizer state.
      key: the name to look for.
      default: returned when nothing matches.
      filtering: optional ``filtering(path, value) -> bool`` keeping only some matches.

    Raises:
      KeyError: if several parts match (narrow them with ``filtering``).
    """
    found = tree_get_all_with_path(tree, key, filtering)
    if len(found) > 1:
        paths = ", ".join(jax.tree_util.keystr(path) or "<root>" for path, _ in found)
        raise KeyError(f"Found multiple values for {key!r} (at {paths}); pass `filtering` to choose one.")
    if not found:
        return default
    return found[0][1]


def tree_set(tree: Any, filtering: Optional[Filtering] = None, /, **kwargs: Any) -> Any:
    """A copy of ``tree`` whose parts named by the keywords are replaced.

    Example: ``tree_set(state, learning_rate=0.01)`` changes the learning rate
    of an ``inject_hyperparams`` optimizer without recompiling.

    Every match of a name is replaced (all the ``count`` fields of a chain, say;
    use ``filtering`` to pick some); a replaced part is not searched further.

    Args:
      tree: a pytree, typically an optimizer state.
      filtering: optional ``filtering(path, value) -> bool``; only matches for
        which it is true are replaced. Positional only, so a field called
        ``filtering`` can be set.
      **kwargs: ``name=new_value`` pairs.

    Raises:
      KeyError: if a name matches nothing (after filtering).
    """
    for key in kwargs:
        if not tree_get_all_with_path(tree, key, filtering):
            raise KeyError(f"Found no values matching {key!r} in the tree; nothing to set.")

    def replacement(path: KeyPath, key_name: Any, value: Any):
        for key, new_value in kwargs.items():
            if _matches(key_name, value, key) and (filtering is None or filtering(path, value)):
                return True, new_value
        return False, None

    def rebuild(node: Any, path: KeyPath) -> Any:
        level = _children(node)
        if level is None:
            return node
        keys, children, treedef = level
        new_children = []
        for key, child in zip(keys, children):
            child_path = path + (key,)
            replace, new_value = replacement(child_path, _key_name(key), child)
            new_children.append(new_value if replace else rebuild(child, child_path))
        return jax.tree.unflatten(treedef, new_children)

    root_replace, root_value = replacement((), None, tree)
    if root_replace:
        return root_value
    return rebuild(tree, ())


class _ParamsPlaceholder:
    """A leafless pytree standing in for the params when probing a state's layout."""


jax.tree_util.register_pytree_node(
    _ParamsPlaceholder, lambda _: ((), None), lambda _aux, _children: _ParamsPlaceholder()
)


def is_params_placeholder(x: Any) -> bool:
    """True for the stand-in params :func:`tree_map_params` passes to ``init``.

    An ``init`` that checks its params against something fixed at construction
    (a mask or label tree, ``LookaheadParams``) must accept the placeholder
    and initialise its inner transformation with it, so that the placeholder
    marks where the state holds params-shaped parts.
    """
    return isinstance(x, _ParamsPlaceholder)


def tree_map_params(
    initable: Any,
    f: Callable[..., Any],
    state: Any,
    /,
    *rest: Any,
    transform_non_params: Optional[Callable[..., Any]] = None,
    is_leaf: Optional[Callable[[Any], bool]] = None,
) -> Any:
    """Maps ``f`` over the parts of an optimizer state that are shaped like the params.

    The layout is found by calling ``initable.init`` (abstractly, with
    :func:`jax.eval_shape`) on a placeholder for the params: every subtree of
    the state built from the params (``mu``, ``nu``, ``trace``, ...) is mapped
    leafwise with ``f``; other leaves (counts, hyperparameters) are passed to
    ``transform_non_params`` or kept. Useful to shard, cast or offload the
    params-like state without knowing the optimizer.

    Args:
      initable: a gradient transformation, or an ``init`` function.
      f: applied as ``f(leaf, *rest_leaves)`` to each params-like leaf.
      state: the optimizer state, as returned by ``initable.init``.
      *rest: pytrees shaped like the params, whose leaves are passed to ``f``.
      transform_non_params: applied to every other leaf of the state (default:
        keep them).
      is_leaf: passed to :func:`jax.tree.map` when mapping a params-like subtree.
    """
    init = initable if callable(initable) and not hasattr(initable, "init") else initable.init
    layout = jax.eval_shape(init, _ParamsPlaceholder())

    def map_part(layout_part, state_part):
        if is_params_placeholder(layout_part):
            return jax.tree.map(f, state_part, *rest, is_leaf=is_leaf)
        if transform_non_params is not None:
            return transform_non_params(state_part)
        return state_part

    return jax.tree.map(map_part, layout, state, is_leaf=is_params_placeholder)
