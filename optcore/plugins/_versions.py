"""Checking a plugin's declared range of core versions, with ``packaging`` (PEP 440).

A plugin declares the core versions it works with as an ordinary dependency
(``optcore>=0.1,<0.2``). The host reads that requirement from the plugin's
distribution metadata and checks the running core against it with
:class:`packaging.specifiers.SpecifierSet`, exactly as pip would: pre-releases
(``0.2.0rc1``, ``0.2.0.dev0``) do not satisfy ``>=0.2`` unless the range names
a pre-release itself (``>=0.2.0rc1``).
"""

from __future__ import annotations

from typing import Optional

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version


def core_requirement(requires: Optional[list[str]], core_name: str = "optcore") -> Optional[str]:
    """The specifier a distribution puts on ``core_name``, e.g. ``">=0.1,<0.2"``.

    Only requirements that apply here count: one behind an extra
    (``optcore>=0.3; extra == "new"``) or an environment marker that is false
    on this interpreter is not a hard requirement. Unreadable lines are skipped
    (pip would have refused to install such a distribution anyway).
    Returns None when the distribution does not name the core.
    """
    wanted = canonicalize_name(core_name)
    for line in requires or ():
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) != wanted:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        return str(requirement.specifier)
    return None


def version_satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` lies in ``specifier`` (PEP 440; pre-releases only if the range asks for them).

    Raises:
      ValueError: ``version`` or ``specifier`` is not valid PEP 440.
    """
    try:
        parsed = Version(version)
    except InvalidVersion as err:
        raise ValueError(f"Cannot read the version {version!r}: {err}") from None
    try:
        allowed = SpecifierSet(specifier)
    except InvalidSpecifier as err:
        raise ValueError(f"Cannot read the version range {specifier!r}: {err}") from None
    return allowed.contains(parsed)
