"""Checking a plugin's declared range of core versions.

optcore depends on no packaging library, so this understands the subset of
PEP 440 that version ranges of plugins use: release numbers compared with
``==``, ``!=``, ``>=``, ``<=``, ``>``, ``<``, ``~=`` (and ``.*`` with ``==``/``!=``).
Pre-, post- and dev-release suffixes are ignored.
"""

from __future__ import annotations

import re
from typing import Optional

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*\(?([^;()]*)\)?\s*(;.*)?$")
_CLAUSE = re.compile(r"^\s*(~=|==|!=|<=|>=|<|>|===)\s*([0-9][0-9a-zA-Z.*+!-]*)\s*$")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"^\s*v?(\d+(?:\.\d+)*)", version)
    if not match:
        raise ValueError(f"Cannot read the version {version!r}.")
    return tuple(int(part) for part in match.group(1).split("."))


def _pad(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))


def _satisfies(version: tuple[int, ...], op: str, target_text: str) -> bool:
    if target_text.endswith(".*"):
        prefix = _release(target_text[:-2])
        matches = version[: len(prefix)] == prefix
        if op == "==":
            return matches
        if op == "!=":
            return not matches
        raise ValueError(f"A wildcard is only valid with == or !=, got {op}{target_text}.")
    v, t = _pad(version, _release(target_text))
    if op in ("==", "==="):
        return v == t
    if op == "!=":
        return v != t
    if op == ">=":
        return v >= t
    if op == "<=":
        return v <= t
    if op == ">":
        return v > t
    if op == "<":
        return v < t
    if op == "~=":
        target = _release(target_text)
        if len(target) < 2:
            raise ValueError(f"~= needs at least two release numbers, got {target_text}.")
        upper = target[:-2] + (target[-2] + 1,)
        lo, hi = _pad(version, upper)
        return v >= t and lo < hi
    raise ValueError(f"Unknown version operator {op!r}.")


def core_requirement(requires: Optional[list[str]], core_name: str = "optcore") -> Optional[str]:
    """The specifier a distribution puts on ``core_name`` (unconditional ones only)."""
    for line in requires or ():
        match = _REQUIREMENT.match(line)
        if not match or _normalize(match.group(1)) != _normalize(core_name):
            continue
        if match.group(4):  # an environment marker or an extra: not a hard requirement
            continue
        return match.group(3).strip()
    return None


def version_satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` lies in ``specifier`` (e.g. ``">=0.1,<0.2"``)."""
    release = _release(version)
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        match = _CLAUSE.match(clause)
        if not match:
            raise ValueError(f"Cannot read the version clause {clause!r}.")
        if not _satisfies(release, match.group(1), match.group(2)):
            return False
    return True
