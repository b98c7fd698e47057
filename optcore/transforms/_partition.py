"""Different transformations for different groups of parameters.

``partition`` (alias ``multi_transform``) routes each parameter to the
transformation of its label; ``freeze`` and ``selective_transform`` are the
common case of keeping some parameters fixed.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, NamedTuple, Union

import jax

from optcore import base
from optcore.kit import static_args
from optcore.transforms import _masking


class PartitionState(NamedTuple):
    """State of :func:`partition`: ``{label: MaskedState(inner_state)}``."""

    inner_states: Mapping[Hashable, _masking.MaskedState]


MultiTransformState = PartitionState


def partition(
    transforms: Mapping[Hashable, base.GradientTransformationLike],
    param_labels: Union[Any, Callable[[base.Params], Any]],
    *,
    mask_compatible_extra_args: bool = False,
) -> base.GradientTransformationExtraArgs:
    r"""Applies a different transformation to each group of parameters.

    Each parameter carries a label; the updates of the parameters labelled
    :math:`\ell` are transformed by ``transforms[ℓ]`` alone:

    .. math::
        u_i \leftarrow T_{\ell(i)}(u_{\{j : \ell(j) = \ell(i)\}})_i

    Every transformation runs as ``masked(transforms[ℓ], labels == ℓ)``, so
    its state mirrors the params with :class:`MaskedNode` for the other groups.
    A transformation whose label no parameter carries is still initialised and
    updated (with no leaves), which keeps the state layout fixed.

    Args:
      transforms: a mapping from label to transformation (any object with
        callable ``init`` and ``update``).
      param_labels: a tree of labels with the structure of the params (or a
        prefix of it; any container, including a callable pytree such as an
        Equinox module), or a function ``params -> labels``.
      mask_compatible_extra_args: mask the extra arguments whose structure is
        that of the updates before passing them to each group.

    Returns:
      A transformation with state ``PartitionState(inner_states={label: MaskedState})``.

    Raises:
      ValueError: (at ``init``/``update``) if a parameter's label has no
        transformation.
    """
    if not isinstance(transforms, Mapping):
        raise TypeError(f"transforms must be a mapping from label to transformation, got {type(transforms).__name__}.")
    for label, tx in transforms.items():
        base.check_gradient_transformation(tx, f"transforms[{label!r}]")
    transforms = {label: base.with_extra_args_support(tx) for label, tx in transforms.items()}

    def labels_for(tree):
        labels = _masking.align_to(_masking.resolve_tree(param_labels, tree), tree, what="param_labels")
        missing = set(jax.tree.leaves(labels)) - set(transforms)
        if missing:
            raise ValueError(
                "Some parameters have no corresponding transformation: labels "
                f"{sorted(map(str, missing))} are not among the transforms' keys {sorted(map(str, transforms))}."
            )
        return labels

    def group_tx(labels, group, tx):
        mask = jax.tree.map(lambda label: label == group, labels)
        return _masking.masked(tx, mask, mask_compatible_extra_args=mask_compatible_extra_args)

    def init_fn(params):
        labels = labels_for(params)
        return PartitionState(
            inner_states={group: group_tx(labels, group, tx).init(params) for group, tx in transforms.items()}
        )

    def update_fn(updates, state, params=None, **extra_args):
        labels = labels_for(updates)
        new_states = {}
        for group, tx in transforms.items():
            updates, new_states[group] = group_tx(labels, group, tx).update(
                updates, state.inner_states[group], params, **extra_args
            )
        return updates, PartitionState(inner_states=new_states)

    return base.GradientTransformationExtraArgs(init_fn, update_fn)


multi_transform = partition


@static_args("mask")
def freeze(mask: Union[Any, Callable[[base.Params], Any]]) -> base.GradientTransformationExtraArgs:
    r"""Zeroes the updates of the parameters where ``mask`` is True (they stay fixed).

    .. math::
        u_i \leftarrow \begin{cases} 0 & m_i \\ u_i & \text{otherwise} \end{cases}

    Same as ``masked(set_to_zero(), mask)``; chain it after an optimizer. Note
    that the optimizer before it still spends state on the frozen parameters:
    :func:`selective_transform` avoids that.

    Args:
      mask: a tree of booleans (True = frozen) with the structure of the params
        or a prefix of it, or a function ``params -> mask``.
    """
    return _masking.masked(base.set_to_zero(), mask)


@static_args("freeze_mask")
def selective_transform(
    optimizer: base.GradientTransformationLike,
    *,
    freeze_mask: Union[Any, Callable[[base.Params], Any]],
) -> base.GradientTransformationExtraArgs:
    r"""Applies ``optimizer`` to the trainable parameters only and freezes the rest.

    .. math::
        u_i \leftarrow \begin{cases} 0 & f_i \\ \mathrm{optimizer}(u)_i & \text{otherwise} \end{cases}

    Built as ``partition({"train": optimizer, "freeze": set_to_zero()}, labels)``
    so the optimizer keeps no state for the frozen parameters.

    Args:
      optimizer: the transformation for the trainable parameters.
      freeze_mask: a tree of booleans (True = frozen) with the structure of the
        params or a prefix of it, or a function ``params -> mask``.
    """

    def to_labels(mask):
        return jax.tree.map(lambda frozen: "freeze" if frozen else "train", mask)

    if _masking.is_tree_function(freeze_mask):
        labels = lambda params: to_labels(freeze_mask(params))  # noqa: E731
    else:
        labels = to_labels(freeze_mask)
    return partition({"train": optimizer, "freeze": base.set_to_zero()}, labels)
