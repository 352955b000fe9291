"""Which model reads which series: each model's manifest (``accepts``) against each series' profile,
narrowed or overridden by configured routing rules, and a stated ranking among the series that pass.

With no rules every installed model is offered the study, in name order; with rules, each rule in
order offers its model the series its conditions match, and the manifest must accept them too
unless the rule says ``use_manifest: false``. The first offer that accepts a series is the one
analysed. Every series ends with a decision whose reason lists its evidence and, when it was not
taken, what each model found wrong with it; "no applicable model" is an outcome, never an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from onconode.config import RoutingRule
from onconode.models import Accepts, Manifest, RegisteredModel
from onconode.selection import routing
from onconode.selection.profile import Probe, SeriesProfile, classify, with_pixels
from onconode.selection.series import SeriesDecision, SeriesInfo, decide


def unmet(manifest: Manifest, profile: SeriesProfile) -> list[str]:
    """What ``profile`` lacks for ``manifest`` (empty: accepted). Region last: it may need pixels."""
    accepts = manifest.accepts
    reasons = []
    if profile.modality != manifest.modality:
        return [f"modality {profile.modality or '-'} is not {manifest.modality}"]
    geometry = profile.geometry
    if geometry.plane not in accepts.planes:
        reasons.append(f"plane {geometry.plane} not in {'/'.join(accepts.planes)}")
    if accepts.sequences and profile.kind not in accepts.sequences:
        reasons.append(f"sequence {profile.kind} not in {'/'.join(accepts.sequences)}")
    thickness = geometry.thickness_mm
    low, high = accepts.thickness_mm
    if thickness is not None and not low <= thickness <= high:
        reasons.append(f"slice thickness {thickness:.2f} mm outside {low:g}–{high:g} mm")
    if geometry.slices < accepts.min_slices:
        reasons.append(f"{geometry.slices} slices, fewer than {accepts.min_slices}")
    spacing = geometry.spacing_mm
    if thickness and spacing and thickness < accepts.min_imaged_fraction * spacing:
        reasons.append(f"slices {thickness:.2f} mm thick {spacing:.2f} mm apart image {thickness / spacing:.0%} of "
                       f"the volume, less than {accepts.min_imaged_fraction:.0%}")
    coverage = geometry.coverage_mm
    if coverage is not None and coverage < accepts.min_coverage_mm:
        reasons.append(f"covers {coverage:.0f} mm along the slice normal, less than the "
                       f"{accepts.min_coverage_mm:g} mm of the whole {_organ(accepts)}")
    if profile.matrix is not None and min(profile.matrix) < accepts.min_matrix:
        rows, columns = profile.matrix
        reasons.append(f"matrix {rows}×{columns}, smaller than {accepts.min_matrix}×{accepts.min_matrix}")
    if not profile.region.regions & set(accepts.regions):
        seen = "/".join(sorted(profile.region.regions)) or "unknown"
        reasons.append(f"region {seen} not in {'/'.join(accepts.regions)}")
    return reasons


def _organ(accepts: Accepts) -> str:
    return " and ".join(accepts.regions)


def rank_key(accepts: Accepts, profile: SeriesProfile) -> tuple[object, ...]:
    """Sort key, best first: consistent geometry, then the manifest's ``prefer`` order."""
    parts: list[object] = [not profile.consistent, not profile.geometry.regular]
    for preference in accepts.prefer:
        if preference == "sequence":
            kind = profile.kind
            parts.append(accepts.sequences.index(kind) if kind in accepts.sequences else len(accepts.sequences))
        elif preference == "original":
            parts.append(not profile.original)
        elif preference == "thinnest":
            parts.append(profile.geometry.thickness_mm if profile.geometry.thickness_mm is not None else 1e9)
        elif preference == "most_slices":
            parts.append(-profile.geometry.slices)
        elif preference == "latest":
            parts.append((-(profile.series_number or 0), _negated(profile.series_time)))
    parts.append(profile.series_uid)
    return tuple(parts)


def _negated(time: str) -> str:
    """A string that sorts later times first."""
    return "".join(chr(0x10FFFF - ord(c)) for c in time)


@dataclass(frozen=True)
class Offer:
    """A model offered the study, by a rule or (no rules) by its manifest alone."""

    name: str                      # the rule's name, or the model's
    model_name: str
    model: RegisteredModel | None  # None: the rule names a model that is not installed
    rule: RoutingRule | None


@dataclass(frozen=True)
class Choice:
    offer: Offer | None            # None: no model accepts any series
    series: SeriesInfo | None
    profile: SeriesProfile | None
    decisions: tuple[SeriesDecision, ...]
    reason: str                    # one line for the study
    # The other series the same offer accepted, best first: read in turn where the pixels of those
    # ranked above show nothing the model was made for (a mask or blank series stored as images).
    runners_up: tuple[SeriesInfo, ...] = ()


def offers(registry: Mapping[str, RegisteredModel], rules: Sequence[RoutingRule]) -> list[Offer]:
    if rules:
        return [Offer(rule.name, rule.model, registry.get(rule.model), rule) for rule in rules]
    return [Offer(name, name, model, None) for name, model in sorted(registry.items())]


class _Profiles:
    """Profiles computed once per series; the pixels are read only for a series whose region the
    header cannot tell and that passes everything else."""

    def __init__(self, probe: Probe | None) -> None:
        self._probe = probe
        self._cache: dict[str, SeriesProfile] = {}

    def header(self, info: SeriesInfo) -> SeriesProfile:
        if info.series_uid not in self._cache:
            self._cache[info.series_uid] = classify(info)
        return self._cache[info.series_uid]

    def full(self, info: SeriesInfo) -> SeriesProfile:
        profile = self.header(info)
        if profile.region.needs_pixels and not profile.pixels_read and self._probe is not None:
            profile = with_pixels(profile, self._probe(info))
            self._cache[info.series_uid] = profile
        return profile


def choose(candidates: Sequence[SeriesInfo], registry: Mapping[str, RegisteredModel],
           rules: Sequence[RoutingRule], probe: Probe | None = None) -> Choice:
    """The offer and series to analyse, with one decision per candidate (see the module docstring)."""
    profiles = _Profiles(probe)
    refusals: dict[str, list[str]] = {c.series_uid: [] for c in candidates}
    for offer in offers(registry, rules):
        if offer.model is None:
            for c in candidates:
                refusals[c.series_uid].append(f"rule {offer.name} wants model {offer.model_name}, which is not installed")
            continue
        manifest = offer.model.manifest
        accepted: list[tuple[SeriesInfo, SeriesProfile]] = []
        for info in candidates:
            reasons = []
            if offer.rule is not None:
                why = routing.mismatch(offer.rule, info)
                if why:
                    reasons.append(f"rule {offer.rule.name}: {why}")
            if not reasons and (offer.rule is None or offer.rule.use_manifest):
                reasons = unmet(manifest, profiles.header(info))
                if reasons == [r for r in reasons if r.startswith("region ")]:
                    reasons = unmet(manifest, profiles.full(info))
            if reasons:
                refusals[info.series_uid].append(f"{manifest.name}: " + "; ".join(reasons))
            else:
                accepted.append((info, profiles.full(info) if offer.rule is None or offer.rule.use_manifest
                                 else profiles.header(info)))
        if accepted:
            return _chosen(offer, accepted, candidates, profiles, refusals)
    decisions = tuple(decide(c, False, "; ".join(refusals[c.series_uid]), profiles.header(c).evidence())
                      for c in candidates)
    if not offers(registry, rules):
        why = "no model is installed"
    elif not candidates:
        why = "the study has no image series that a model could read"
    else:
        distinct = list(dict.fromkeys(r for c in candidates for r in refusals[c.series_uid]))
        why = "; ".join(distinct[:4]) + (f" (and {len(distinct) - 4} more)" if len(distinct) > 4 else "")
    return Choice(None, None, None, decisions, f"no applicable model: {why}")


def _chosen(offer: Offer, accepted: list[tuple[SeriesInfo, SeriesProfile]], candidates: Sequence[SeriesInfo],
            profiles: _Profiles, refusals: dict[str, list[str]]) -> Choice:
    assert offer.model is not None
    accepts = offer.model.manifest.accepts
    ranked = sorted(accepted, key=lambda pair: rank_key(accepts, pair[1]))
    best, best_profile = ranked[0]
    order = ", ".join(accepts.prefer)
    rule = f" (rule {offer.rule.name})" if offer.rule else ""
    ranking = f"; ranked first of {len(ranked)} accepted series by {order}" if len(ranked) > 1 else ""
    decisions = [decide(best, True, f"read by {offer.model_name}{rule}{ranking}", best_profile.evidence())]
    for info, profile in ranked[1:]:
        decisions.append(decide(info, False, f"accepted by {offer.model_name} but ranked below the chosen series "
                                f"by {order}", profile.evidence()))
    taken = {info.series_uid for info, _ in ranked}
    for info in candidates:
        if info.series_uid not in taken:
            decisions.append(decide(info, False, "; ".join(refusals[info.series_uid]),
                                    profiles.header(info).evidence()))
    return Choice(offer, best, best_profile, tuple(decisions), f"model {offer.model_name} reads series "
                  f"{best_profile.description or best.series_uid!r}", tuple(info for info, _ in ranked[1:]))


