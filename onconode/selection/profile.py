"""One series, classified: modality, body region, MR sequence and contrast, geometry, origin.

Input: a ``SeriesInfo`` (headers of every instance) and, only when the headers cannot say the
region, what a few decoded slices show (``PixelLook``). Output: a ``SeriesProfile`` whose every
value carries the evidence it came from, so the API, the status page and ``analyze --json`` can
show why a series was or was not analysed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from onconode.selection import region as regions
from onconode.selection.geometry import Geometry, read_geometry
from onconode.selection.sequence import MRFacts, SequenceReading, read_sequence
from onconode.selection.series import SeriesInfo


@dataclass(frozen=True)
class PixelLook:
    """What sampled slices of a series show (``onconode/selection/region.py``)."""

    lung_shares: tuple[float, ...] = ()            # CT
    outlines_mm: tuple[tuple[float, float], ...] = ()  # MR


Probe = Callable[[SeriesInfo], PixelLook]


@dataclass(frozen=True)
class SeriesProfile:
    series_uid: str
    modality: str
    description: str
    region: regions.RegionReading
    sequence: SequenceReading | None   # MR only
    geometry: Geometry
    original: bool                     # ImageType ORIGINAL (not DERIVED/SECONDARY)
    consistent: bool                   # one matrix size and one orientation throughout
    series_number: int | None
    series_time: str
    pixels_read: bool = False
    matrix: tuple[int, int] | None = None   # (rows, columns) of the first instance

    @property
    def kind(self) -> str | None:
        """The MR sequence as a manifest names it (t1post, flair…), None for CT."""
        return self.sequence.kind if self.sequence else None

    def evidence(self) -> tuple[str, ...]:
        """Every reason behind the profile, in the order a person checks them."""
        region = "/".join(sorted(self.region.regions)) or "unknown"
        lines = [f"region {region}: " + "; ".join(self.region.evidence)]
        if self.sequence is not None:
            contrast = {True: "with contrast", False: "without contrast", None: "contrast unknown"}
            lines.append(f"sequence {self.sequence.sequence} ({contrast[self.sequence.contrast]}): "
                         + "; ".join(self.sequence.evidence))
        lines.append("geometry: " + ", ".join(self.geometry.evidence))
        lines.append("ORIGINAL" if self.original else "DERIVED/SECONDARY")
        return tuple(lines)


def header_fields(info: SeriesInfo) -> list[tuple[str, str]]:
    head = info.first
    return [("SeriesDescription", head.series_description), ("ProtocolName", head.protocol_name),
            ("BodyPartExamined", head.body_part), ("AnatomicRegionSequence", head.anatomic_region),
            ("StudyDescription", head.study_description),
            ("RequestedProcedureDescription", head.requested_procedure)]


def mr_facts(info: SeriesInfo) -> MRFacts:
    head = info.first
    return MRFacts(descriptions=(head.series_description, head.protocol_name, head.sequence_name),
                   scanning_sequence=head.scanning_sequence, sequence_variant=head.sequence_variant,
                   repetition_time=head.repetition_time, echo_time=head.echo_time,
                   inversion_time=head.inversion_time, image_type=head.image_type,
                   diffusion_b=head.diffusion_b, contrast_agent=head.contrast_agent)


def _consistent(info: SeriesInfo) -> bool:
    shapes = {(i.rows, i.columns) for i in info.instances}
    orientations = {tuple(round(v, 3) for v in i.orientation or ()) for i in info.instances}
    return len(shapes) == 1 and len(orientations) == 1


def classify(info: SeriesInfo) -> SeriesProfile:
    """The profile from headers alone; ``with_pixels`` completes the region when it must."""
    head = info.first
    positions = [p for inst in info.instances for p in inst.positions]
    return SeriesProfile(
        series_uid=info.series_uid, modality=head.modality, description=head.series_description,
        region=regions.from_header(header_fields(info)),
        sequence=read_sequence(mr_facts(info)) if head.modality == "MR" else None,
        geometry=read_geometry(head.orientation, positions, head.slice_thickness),
        original="DERIVED" not in head.image_type and "SECONDARY" not in head.image_type,
        consistent=_consistent(info), series_number=head.series_number, series_time=head.series_time,
        matrix=(head.rows, head.columns) if head.rows and head.columns else None)


def with_pixels(profile: SeriesProfile, look: PixelLook) -> SeriesProfile:
    """The region decided by the pixels where the header was silent or contradicted itself.

    A header that names a region the pixels also show keeps its reading; pixels that show
    nothing recognisable leave the header's reading, marked as not confirmed.
    """
    said = regions.pixel_regions(profile.modality, look.lung_shares, look.outlines_mm)
    if said is None:
        return replace(profile, pixels_read=True)
    found, text = said
    old = profile.region
    checked = PIXELS_CHECK.get(profile.modality, frozenset())
    if found:
        merged = found if old.silent else (found | (old.regions - checked))
        reading = regions.RegionReading(merged, (*old.evidence, f"pixels: {text}"), conflict=False, silent=False)
    elif old.silent:
        reading = regions.RegionReading(frozenset(), (*old.evidence, f"pixels: {text}"), conflict=False,
                                        silent=True)
    else:
        # The pixels rule out what they can see (lungs on CT, a head on MR); what the other
        # header fields named stands.
        kept = (old.regions - checked) or (old.named - checked)
        reading = regions.RegionReading(kept, (*old.evidence, f"pixels: {text}"), conflict=False,
                                        silent=not kept)
    return replace(profile, region=reading, pixels_read=True)


# What each modality's pixel check can confirm or rule out; other regions stay as the header says.
PIXELS_CHECK: dict[str, frozenset[str]] = {"CT": frozenset({"chest"}), "MR": frozenset({"brain"})}
