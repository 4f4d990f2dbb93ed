"""What the subgroup store refuses: more subgroups than it keeps, rules too long to list, changes by anyone but the owner."""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from lse_panel.cohort.rules import IdsStep, Rule, SubgroupError

__all__ = ["MAX_RULE_BYTES", "MAX_RULE_STEPS", "MAX_SUBGROUPS", "check_owner", "check_room", "check_rule_size"]

MAX_SUBGROUPS = 10_000
"""Subgroups one bundle keeps; the manager pages them, so a new session costs the same with this many."""

MAX_RULE_STEPS = 100
MAX_RULE_BYTES = 256_000
"""A rule's JSON (ids moved to files) beyond this would slow every session's read of the listing."""


def check_room(saved: int) -> None:
    """:class:`SubgroupError` when a bundle keeping ``saved`` subgroups has no room for one more."""
    if saved >= MAX_SUBGROUPS:
        raise SubgroupError(
            f"this bundle already keeps {saved:,} subgroups, the most it holds ({MAX_SUBGROUPS:,}); delete some "
            "you no longer need, then save again."
        )


def check_owner(entry: Mapping[str, Any], user: str | None, action: str) -> None:
    """:class:`SubgroupError` unless ``user`` may ``action`` the subgroup of ``entry`` (its owner, or nobody owns it)."""
    owner = entry.get("owner")
    if owner and owner != user:
        raise SubgroupError(
            f"cannot {action} subgroup {entry['name']!r}: it belongs to {owner!r}, and only they can {action} it. "
            "Save a copy under another name instead."
        )


def check_rule_size(name: str, rule: Rule, *, inline_ids: int) -> None:
    """:class:`SubgroupError` when a rule is too long for the listing every session reads."""
    if len(rule) > MAX_RULE_STEPS:
        raise SubgroupError(
            f"subgroup {name!r}: its rule has {len(rule)} steps; at most {MAX_RULE_STEPS}. Save the selection by ids "
            "instead (select it, then save), or combine fewer steps."
        )
    size = 0
    for step in rule:
        if isinstance(step, IdsStep) and step.ids.size > inline_ids:
            continue  # kept in a .npy beside the listing
        size += len(json.dumps(step.to_json(), default=_json_number))
    if size > MAX_RULE_BYTES:
        raise SubgroupError(
            f"subgroup {name!r}: its rule takes {size / 1e3:,.0f} kB as JSON; at most {MAX_RULE_BYTES / 1e3:,.0f} kB. "
            "Draw the lasso with fewer vertices, or save the selection by ids."
        )


def _json_number(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value.tolist() if isinstance(value, np.ndarray) else str(value)
