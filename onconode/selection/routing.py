"""Configured routing rules: whether a series meets a rule's own conditions.

A site narrows what its models read (or, with ``use_manifest: false``, overrides their manifests)
with rules in the configuration; ``match.choose`` combines them with the manifests.
"""

from __future__ import annotations

import re

from onconode.config import RoutingRule
from onconode.selection.series import SeriesInfo


def mismatch(rule: RoutingRule, series: SeriesInfo) -> str | None:
    """The first condition of ``rule`` that ``series`` fails, or None when it matches."""
    head = series.first
    if rule.modality and head.modality != rule.modality:
        return f"modality {head.modality} is not {rule.modality}"
    for field, value in (("body_part", head.body_part), ("study_description", head.study_description),
                         ("series_description", head.series_description)):
        pattern = getattr(rule, field)
        if pattern is not None and not re.search(pattern, value):
            return f"{field} {value!r} does not match {pattern!r}"
    if rule.sop_class and head.sop_class_uid not in rule.sop_class:
        return f"SOP class {head.sop_class_uid} not in {rule.sop_class}"
    for wanted in rule.image_type:
        absent = wanted.startswith("!")
        value = wanted.lstrip("!").upper()
        if (value in head.image_type) == absent:
            verb = "has" if absent else "lacks"
            return f"ImageType {'/'.join(head.image_type)} {verb} {value}"
    count = series.slice_count
    if count < rule.min_slices or (rule.max_slices is not None and count > rule.max_slices):
        return f"{count} slices outside [{rule.min_slices}, {rule.max_slices or '∞'}]"
    return None
