"""Composition of gradient transformations: ``chain`` and ``named_chain``."""

from __future__ import annotations

import collections
from typing import Hashable

from optcore import base


def chain(*args: base.GradientTransformationLike) -> base.GradientTransformationExtraArgs:
    """Applies transformations in sequence: ``u -> t_n(...t_2(t_1(u)))``.

    The state is the tuple of the members' states. Extra keyword arguments
    given to ``update`` are forwarded to every member; members that do not take
    them ignore them.

    Args:
      *args: the transformations, applied first to last: any objects with
        callable ``init`` and ``update`` (optcore's, Optax's, a user's class).
        Each receives the extra arguments its ``update`` takes (see
        :func:`optcore.with_extra_args_support`).

    Returns:
      A :class:`GradientTransformationExtraArgs`.
    """
    for i, tx in enumerate(args):
        base.check_gradient_transformation(tx, f"chain() argument {i}")
    transforms = tuple(base.with_extra_args_support(tx) for tx in args)

    def init_fn(params):
        return tuple(tx.init(params) for tx in transforms)

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            got = len(state) if isinstance(state, tuple) else type(state).__name__
            raise ValueError(
                f"chain of {len(transforms)} transformations received a state of {got} entries; "
                "was the state built by this chain's init?"
            )
        new_state = []
        for tx, s in zip(transforms, state):
            updates, s = tx.update(updates, s, params, **extra_args)
            new_state.append(s)
        return updates, tuple(new_state)

    return base.GradientTransformationExtraArgs(init_fn, update_fn)


def named_chain(
    *args: tuple[Hashable, base.GradientTransformationLike],
) -> base.GradientTransformationExtraArgs:
    """Applies named transformations in sequence, keeping each state under its name.

    Same numbers as :func:`chain`; the state is an ordered mapping
    ``{name: state}`` (a ``collections.OrderedDict``, so the order of the
    members is the order of the state's leaves), which makes a member's state
    easy to find: ``state["adam"]``.

    Args:
      *args: ``(name, transformation)`` pairs, applied first to last. Names
        must be distinct; a transformation is any object with callable
        ``init`` and ``update``.

    Returns:
      A :class:`GradientTransformationExtraArgs`.
    """
    names = []
    for i, pair in enumerate(args):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"named_chain() argument {i} must be a (name, transformation) pair, got {pair!r}.")
        base.check_gradient_transformation(pair[1], f"named_chain() argument {i} ({pair[0]!r})")
        names.append(pair[0])
    if len(set(names)) != len(names):
        raise ValueError(f"named_chain() names must be distinct, got {names}.")
    transforms = [(name, base.with_extra_args_support(tx)) for name, tx in args]

    def init_fn(params):
        return collections.OrderedDict((name, tx.init(params)) for name, tx in transforms)

    def update_fn(updates, state, params=None, **extra_args):
        new_state = collections.OrderedDict()
        for name, tx in transforms:
            updates, new_state[name] = tx.update(updates, state[name], params, **extra_args)
        return updates, new_state

    return base.GradientTransformationExtraArgs(init_fn, update_fn)
