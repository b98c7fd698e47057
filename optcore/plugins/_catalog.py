"""What the first-party plugins provide, known to the core without importing them.

The core uses this table only to turn a lookup of a name whose plugin is not
installed into an error that says which distribution provides it and how to
install it. The ``all`` test environment checks that every installed
first-party plugin registers exactly the names listed here.
"""

from __future__ import annotations

from typing import NamedTuple


class FirstParty(NamedTuple):
    distribution: str  # the name to pip install
    extra: str  # the extra of the core distribution that pulls it in
    source_path: str  # its folder in a source checkout
    namespaces: tuple[str, ...]  # modules reachable as optcore.<namespace>
    names: tuple[str, ...]  # registered names


FIRST_PARTY: tuple[FirstParty, ...] = (
    FirstParty(
        distribution="optcore-losses",
        extra="losses",
        source_path="plugins/optcore-losses",
        namespaces=("losses", "assignment"),
        names=(
            # BEGIN optcore-losses names
            "base_hungarian_algorithm",
            "binary_dice_loss",
            "convex_kl_divergence",
            "cosine_distance",
            "cosine_similarity",
            "ctc_loss",
            "ctc_loss_with_forward_probs",
            "dice_loss",
            "generalized_kl_divergence",
            "hinge_loss",
            "huber_loss",
            "hungarian_algorithm",
            "kl_divergence",
            "kl_divergence_with_log_targets",
            "l2_loss",
            "log_cosh",
            "make_fenchel_young_loss",
            "multiclass_generalized_dice_loss",
            "multiclass_hinge_loss",
            "multiclass_perceptron_loss",
            "multiclass_sparsemax_loss",
            "ntxent",
            "perceptron_loss",
            "poly_loss_cross_entropy",
            "ranking_softmax_loss",
            "safe_softmax_cross_entropy",
            "sigmoid_binary_cross_entropy",
            "sigmoid_focal_loss",
            "smooth_labels",
            "softmax_cross_entropy",
            "softmax_cross_entropy_with_integer_labels",
            "sparsemax_loss",
            "squared_error",
            "triplet_margin_loss",
            # END optcore-losses names
        ),
    ),
    FirstParty(
        distribution="optcore-stochastic",
        extra="stochastic",
        source_path="plugins/optcore-stochastic",
        namespaces=("stochastic", "perturbations"),
        names=(
            # BEGIN optcore-stochastic names
            "Gumbel",
            "Normal",
            "control_delta_method",
            "control_variates_jacobians",
            "estimate_control_variate_coefficients",
            "make_perturbed_fun",
            "measure_valued_estimation_mean",
            "measure_valued_estimation_std",
            "measure_valued_jacobians",
            "moving_avg_baseline",
            "multi_normal",
            "pathwise_jacobians",
            "score_function_jacobians",
            # END optcore-stochastic names
        ),
    ),
    FirstParty(
        distribution="optcore-second-order",
        extra="second-order",
        source_path="plugins/optcore-second-order",
        namespaces=("second_order",),
        names=(
            # BEGIN optcore-second-order names
            "empirical_fisher_diag",
            "fisher_diag",
            "gauss_newton_diag",
            "hessian_diag",
            "hutchinson_hessian_diag",
            "hvp",
            # END optcore-second-order names
        ),
    ),
    FirstParty(
        distribution="optcore-contrib",
        extra="contrib",
        source_path="plugins/optcore-contrib",
        namespaces=("contrib",),
        names=(
            # BEGIN optcore-contrib names
            "DifferentiallyPrivateAggregateState",
            "acprop",
            "ademamix",
            "adopt",
            "cocob",
            "dadapt_adamw",
            "differentially_private_aggregate",
            "dog",
            "dowg",
            "dpsgd",
            "galore",
            "hutchinson_estimator_diag_hessian",
            "madgrad",
            "mechanize",
            "momo",
            "momo_adam",
            "muon",
            "normalize",
            "prodigy",
            "reduce_on_plateau",
            "sam",
            "scale_by_acprop",
            "scale_by_ademamix",
            "scale_by_adopt",
            "scale_by_cocob",
            "scale_by_galore",
            "scale_by_madgrad",
            "scale_by_muon",
            "scale_by_simplified_ademamix",
            "schedule_free",
            "schedule_free_adamw",
            "schedule_free_eval_params",
            "schedule_free_sgd",
            "simplified_ademamix",
            "sophia",
            "split_real_and_imaginary",
            # END optcore-contrib names
        ),
    ),
    FirstParty(
        distribution="optcore-lowbit",
        extra="lowbit",
        source_path="plugins/optcore-lowbit",
        namespaces=("lowbit",),
        names=(
            # BEGIN optcore-lowbit names
            "adam_8bit",
            "adamw_4bit",
            "adamw_8bit",
            "lion_8bit",
            "quantize_state",
            "scale_by_adam_4bit",
            "scale_by_adam_8bit",
            "scale_by_lion_8bit",
            "sgd_8bit",
            "trace_8bit",
            # END optcore-lowbit names
        ),
    ),
)


def install_command(plugin: FirstParty) -> str:
    """The command that installs ``plugin``, as published and from a checkout."""
    return (
        f'pip install "optcore[{plugin.extra}]"  '
        f"(from a source checkout: pip install ./{plugin.source_path})"
    )


def provider_of(name: str):
    """The first-party plugin that provides ``name`` (a name or a namespace), or None."""
    for plugin in FIRST_PARTY:
        if name in plugin.names or name in plugin.namespaces:
            return plugin
    return None


def by_distribution(distribution):
    """The first-party plugin shipped as ``distribution``, or None."""
    for plugin in FIRST_PARTY:
        if plugin.distribution == distribution:
            return plugin
    return None


def distributions_for(name: str) -> tuple[str, ...]:
    """The first-party distributions ``optcore install NAME`` installs.

    ``name`` may be a name or namespace a plugin provides (``muon``,
    ``losses``), a distribution (``optcore-contrib``), an extra or a plugin
    name (``contrib``, ``second_order``), or ``all``. Compared the PEP 503 way.

    Raises:
      LookupError: no first-party plugin matches ``name``.
    """
    from packaging.utils import canonicalize_name

    plugin = provider_of(name)
    if plugin is not None:
        return (plugin.distribution,)
    wanted = canonicalize_name(name)
    if wanted == "all":
        return tuple(p.distribution for p in FIRST_PARTY)
    for plugin in FIRST_PARTY:
        if wanted in (canonicalize_name(plugin.distribution), canonicalize_name(plugin.extra)):
            return (plugin.distribution,)
    choices = ", ".join(p.extra for p in FIRST_PARTY)
    raise LookupError(
        f"No first-party plugin provides {name!r}. `optcore install` takes a name a first-party plugin "
        f"provides, a plugin ({choices} or all) or its distribution; install other plugins with pip."
    )
