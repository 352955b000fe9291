"""Body region of a series from every header that names one, and from the pixels when they must.

Real headers rarely agree on one tag: BodyPartExamined is often absent or left at a scanner
default, and the region is written instead in the study or series description, the protocol or
the requested procedure, in the site's language ("Thorax 2.0 B31f", "CT CHEST WITHOUT CONTRAST",
"SCHÄDEL nativ"). So every field is read, each with the same keyword table, and each finding
keeps its source. Series-level fields (series description, protocol) speak for this series; the
study-level ones (study description, requested procedure) for the whole study, so they are
trusted last. When the fields are silent, or name regions that cannot both be true (a "HEAD"
body part on a "Thorax" series), the caller asks the pixels (``pixel_regions``): lung-density
tissue inside the body outline on CT, the outline and size of a head on MR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onconode.selection.text import has_phrase, has_prefix, has_word, words

Region = str  # chest | brain | neck | abdomen | pelvis | spine | heart | breast | extremity
REGIONS = ("chest", "brain", "neck", "abdomen", "pelvis", "spine", "heart", "breast", "extremity")
WHOLE_BODY = frozenset({"chest", "abdomen", "pelvis", "neck"})

# Spine phrases are taken out first: "thoracic spine" is the spine, not the chest.
_SPINE_PHRASES = ("cervical spine", "thoracic spine", "lumbar spine", "c spine", "t spine", "l spine",
                  "thoracolumbar spine", "whole spine", "colonne vertebrale", "columna vertebral",
                  "colonna vertebrale", "thorakale wirbelsaule")
_WHOLE_BODY_PHRASES = ("whole body", "chest abdomen pelvis", "thorax abdomen pelvis", "chest abd pelvis",
                       "neck chest abdomen", "torax abdomen pelvis", "chest to pelvis", "thorax to pelvis",
                       "chest abd pel", "chest abd pelvis")
_WORDS: dict[Region, frozenset[str]] = {
    "chest": frozenset({"chest", "thorax", "thoracic", "thorakal", "thx", "lung", "lungs", "lunge", "lungen",
                        "pulmonary", "pulmonar", "pulmon", "pulmones", "poumon", "poumons", "polmone", "polmoni",
                        "torax", "torace", "brust", "borst", "hrct", "ctpa", "ldct", "mediastinum", "pleura",
                        "thoraxs", "thoracique"}),
    "brain": frozenset({"brain", "head", "cerebrum", "cerebral", "cerebro", "cranial", "cranium", "skull",
                        "neuro", "kopf", "schadel", "schaedel", "cerveau", "crane", "cervello", "cabeza",
                        "craneo", "cranio", "hersenen", "hoofd", "schedel", "encephalon", "sella", "pituitary",
                        "hypophyse", "gehirn", "hirn", "neurocranium", "cerebellum", "stroke", "glioma"}),
    "neck": frozenset({"neck", "hals", "cou", "cuello", "collo", "thyroid", "larynx", "pharynx", "parotid"}),
    "abdomen": frozenset({"abdomen", "abd", "abdominal", "abdo", "bauch", "addome", "abdome", "liver", "leber",
                          "hepatic", "pancreas", "kidney", "kidneys", "renal", "niere", "nieren", "adrenal",
                          "urogram", "enterography", "abdomen+pelvis"}),
    "pelvis": frozenset({"pelvis", "pelvic", "becken", "bassin", "pelvi", "prostate", "prostata", "bladder",
                         "rectum", "rectal", "uterus"}),
    "spine": frozenset({"spine", "spinal", "cspine", "tspine", "lspine", "lws", "bws", "hws", "wirbelsaule",
                        "rachis", "columna", "lumbar", "lumbal", "sacrum", "myelo"}),
    "heart": frozenset({"heart", "cardiac", "cardio", "coronary", "coronaries", "herz", "coeur", "calcium",
                        "calscore", "ccta"}),
    "breast": frozenset({"breast", "breasts", "mamma", "mammae", "mammo", "sein", "seno", "mama"}),
    "extremity": frozenset({"knee", "knees", "knie", "genou", "shoulder", "schulter", "ankle", "wrist", "hand",
                            "foot", "elbow", "hip", "femur", "tibia", "humerus", "forearm", "leg", "arm"}),
}
_PREFIXES: dict[Region, tuple[str, ...]] = {
    "chest": ("thorac", "pulmo", "torac", "poumon", "polmon"),
    "brain": ("cerebr", "enceph", "neurocran"),
    "abdomen": ("abdom", "hepat", "pancrea"),
    "heart": ("cardi", "coronar"),
}
# BodyPartExamined defined terms that join several regions (PS3.16 Annex L).
_COMPOUND: dict[str, frozenset[Region]] = {
    "chestabdomen": frozenset({"chest", "abdomen"}),
    "chestabdpelvis": frozenset({"chest", "abdomen", "pelvis"}),
    "abdomenpelvis": frozenset({"abdomen", "pelvis"}),
    "abdpelvis": frozenset({"abdomen", "pelvis"}),
    "headneck": frozenset({"brain", "neck"}),
    "wholebody": WHOLE_BODY,
    "wb": WHOLE_BODY,
    "ganzkorper": WHOLE_BODY,
    "polytrauma": WHOLE_BODY,
    "tap": frozenset({"chest", "abdomen", "pelvis"}),
    "cap": frozenset({"chest", "abdomen", "pelvis"}),
    "ctap": frozenset({"chest", "abdomen", "pelvis"}),
}

# Field name → how far it speaks for this one series (lower is closer).
SERIES_FIELDS = ("SeriesDescription", "ProtocolName")
PART_FIELDS = ("BodyPartExamined", "AnatomicRegionSequence")
STUDY_FIELDS = ("StudyDescription", "RequestedProcedureDescription")
FIELDS = SERIES_FIELDS + PART_FIELDS + STUDY_FIELDS


def regions_in(text: str) -> tuple[frozenset[Region], str | None]:
    """The regions one free-text value names, and the word that named the first one."""
    if not text.strip():
        return frozenset(), None
    found: set[Region] = set()
    hit: str | None = None
    spine = has_phrase(text, _SPINE_PHRASES)
    rest = text
    if spine:
        found.add("spine")
        hit = spine
        rest = " ".join(w for w in words(text) if w not in spine.split())
    whole = has_phrase(rest, _WHOLE_BODY_PHRASES)
    if whole:
        found |= WHOLE_BODY if whole == "whole body" else frozenset({"chest", "abdomen", "pelvis"})
        hit = hit or whole
    tokens = words(rest)
    for token in tokens:
        compound = _COMPOUND.get(token)
        if compound:
            found |= compound
            hit = hit or token
    for region in REGIONS:
        word = has_word(tokens, _WORDS[region]) or has_prefix(tokens, _PREFIXES.get(region, ()))
        if word:
            found.add(region)
            hit = hit or word
    return frozenset(found), hit


@dataclass(frozen=True)
class RegionReading:
    """The regions a series shows, how sure the header is, and the evidence a person can check."""

    regions: frozenset[Region]
    evidence: tuple[str, ...]
    conflict: bool          # fields name regions that cannot all be true
    silent: bool            # no field names a region
    named: frozenset[Region] = frozenset()  # every region any field names, trusted or not

    @property
    def needs_pixels(self) -> bool:
        return self.silent or self.conflict


def _compatible(a: frozenset[Region], b: frozenset[Region]) -> bool:
    """Two fields agree when one names a part of what the other names (a study of chest and
    abdomen holds a chest series)."""
    return a <= b or b <= a


def from_header(fields: Sequence[tuple[str, str]]) -> RegionReading:
    """Read every (field name, value) pair; see the module docstring for the order of trust.

    The answer is the union of what the closest level that names anything says (series fields,
    else body part fields, else study fields); a conflict is any two naming fields that do not
    fit inside one another.
    """
    named: list[tuple[str, frozenset[Region], str]] = []
    absent: list[str] = []
    for field, value in fields:
        regions, _ = regions_in(value)
        if regions:
            named.append((field, regions, value.strip()[:40]))
        elif value.strip():
            absent.append(f"{field} {value.strip()[:40]!r} names no region")
        else:
            absent.append(f"{field} absent")
    evidence = [f"{field} {value!r} → {'/'.join(sorted(regions))}" for field, regions, value in named] + absent
    if not named:
        return RegionReading(frozenset(), tuple(absent), conflict=False, silent=True)
    conflict = any(not _compatible(a[1], b[1]) for i, a in enumerate(named) for b in named[i + 1:])
    for level in (SERIES_FIELDS, PART_FIELDS, STUDY_FIELDS):
        closest = [regions for field, regions, _ in named if field in level]
        if closest:
            chosen = frozenset().union(*closest)
            break
    if conflict:
        evidence.append("header fields disagree")
    named_all = frozenset().union(*(regions for _, regions, _ in named))
    return RegionReading(chosen, tuple(evidence), conflict=conflict, silent=False, named=named_all)


# --- pixels ---------------------------------------------------------------------------------------

# Aerated lung is about -950…-500 HU; the body is everything denser than -500 HU, holes filled.
LUNG_HU = (-950.0, -500.0)
BODY_HU = -500.0
# A sampled CT slice "shows lung" when lung fills this share of the body's cross-section.
LUNG_SLICE_SHARE = 0.10
# The series shows the chest when that many of its sampled slices show lung (an abdominal CT's
# top slices cut the lung bases; a chest CT shows lung on most of its length).
CHEST_SLICE_FRACTION = 0.30
# An adult head's axial outline: width (left-right) and depth (front-back) in mm.
HEAD_WIDTH_MM = (110.0, 210.0)
HEAD_DEPTH_MM = (130.0, 260.0)


def largest_filled(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``mask`` with its holes filled (a body outline)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros(mask.shape, np.uint8)
    if contours:
        largest = max(contours, key=cv2.contourArea)
        cv2.drawContours(out, [largest], -1, 1, thickness=-1)
    return out.astype(bool)


def lung_share(hu: np.ndarray) -> float:
    """Share of the body's cross-section (outline filled) that is lung-density tissue."""
    body = largest_filled(hu > BODY_HU)
    area = int(np.count_nonzero(body))
    if area == 0:
        return 0.0
    lung = body & (hu > LUNG_HU[0]) & (hu < LUNG_HU[1])
    return float(np.count_nonzero(lung)) / float(area)


def outline_mm(values: np.ndarray, pixel_spacing: tuple[float, float] | None) -> tuple[float, float] | None:
    """Width (columns) and depth (rows) of the largest bright outline of an MR slice, in mm.

    "Bright" is above a tenth of the slice's 99th percentile: air is near zero on every MR
    sequence, tissue well above it. None without a pixel spacing (no physical size).
    """
    if pixel_spacing is None:
        return None
    level = float(np.percentile(values, 99)) * 0.1
    if level <= 0:
        return None
    body = largest_filled(values > level)
    rows = np.flatnonzero(body.any(axis=1))
    cols = np.flatnonzero(body.any(axis=0))
    if rows.size == 0:
        return None
    return ((cols[-1] - cols[0] + 1) * pixel_spacing[1], (rows[-1] - rows[0] + 1) * pixel_spacing[0])


def pixel_regions(modality: str, shares: Sequence[float] = (),
                  outlines: Sequence[tuple[float, float]] = ()) -> tuple[frozenset[Region], str] | None:
    """What sampled slices say: CT ``shares`` (``lung_share`` per slice) or MR ``outlines``
    (``outline_mm`` per slice). None when the pixels cannot tell (nothing sampled)."""
    if modality == "CT" and shares:
        showing = sum(s >= LUNG_SLICE_SHARE for s in shares)
        fraction = showing / len(shares)
        text = (f"lung-density tissue on {showing} of {len(shares)} sampled slices "
                f"(up to {100 * max(shares):.0f}% of the body)")
        return (frozenset({"chest"}) if fraction >= CHEST_SLICE_FRACTION else frozenset()), text
    if modality == "MR" and outlines:
        width, depth = max(outlines, key=lambda o: o[0] * o[1])
        head = HEAD_WIDTH_MM[0] <= width <= HEAD_WIDTH_MM[1] and HEAD_DEPTH_MM[0] <= depth <= HEAD_DEPTH_MM[1] \
            and depth >= width * 0.95
        return (frozenset({"brain"}) if head else frozenset()), \
            f"largest outline {width:.0f} x {depth:.0f} mm ({'a head' if head else 'not a head'})"
    return None


def body_outline(values: np.ndarray, modality: str) -> np.ndarray:
    """The patient's cross-section on one slice (bool, holes filled): denser than air on CT, brighter
    than a tenth of the slice's 99th percentile on MR. Overlays tint only inside it."""
    if modality == "CT":
        return largest_filled(values > BODY_HU)
    level = float(np.percentile(values, 99)) * 0.1
    return largest_filled(values > level) if level > 0 else np.zeros(values.shape, bool)
