"""MR sequence and contrast from parameters and words, on the header values real scanners write."""

from __future__ import annotations

import pytest

from onconode.selection.sequence import MRFacts, read_sequence


def facts(*descriptions: str, ss: tuple[str, ...] = (), tr: float | None = None, te: float | None = None,
          ti: float | None = None, agent: str = "", image_type: tuple[str, ...] = (), b: float | None = None
          ) -> MRFacts:
    return MRFacts(descriptions=descriptions, scanning_sequence=ss, repetition_time=tr, echo_time=te,
                   inversion_time=ti, contrast_agent=agent, image_type=image_type, diffusion_b=b)


@pytest.mark.parametrize(("given", "kind"), [
    # Siemens MPRAGE after gadolinium, named only "t1_mpr_tra_iso": the agent tag says post.
    (facts("t1_mpr_tra_iso", "*tfl3d1_16ns", ss=("GR", "IR"), tr=2300, te=2.3, ti=900, agent="Gadovist"), "t1post"),
    # UPENN-GBM's processed release.
    (facts("t1 axial stealth-post : Processed_CaPTk", ss=("GR", "IR"), tr=1760, te=3.1, ti=950), "t1post"),
    # Brain-Tumor-Progression: 2D SE T1, "+" in the protocol.
    (facts("T1post", "B T1 AXIAL SE +", ss=("SE",), tr=600, te=8.9, agent="10cc Multihance"), "t1post"),
    (facts("AX T1 PRE", ss=("SE",), tr=500, te=10, agent="Magnevist"), "t1"),     # "pre" beats the agent tag
    (facts("anat-T1w", tr=2300, te=2.98, ti=900), "t1"),                         # BIDS name, no contrast
    (facts("AXIAL FLAIR", ss=("SE", "IR"), tr=9000, te=120, ti=2500), "flair"),
    (facts("AXIAL FLAIR", ss=("SE",), tr=9000, te=120), "flair"),                # TI omitted: words refine T2
    (facts("AXIAL FLAIR", ss=("SE",), tr=600, te=10), "t1"),                     # TR 600 ms is no FLAIR
    (facts("t2_tirm_tra_dark-fluid", ss=("SE", "IR"), tr=8000, te=81, ti=2370), "flair"),
    (facts("SPACE FLAIR 3D", ss=("SE", "IR"), tr=5000, te=387, ti=1800), "flair"),
    (facts("Ax T1 FLAIR", ss=("SE", "IR"), tr=2200, te=24, ti=860), "t1"),       # GE's T1 FLAIR is a T1
    (facts("Ax T1 FLAIR"), "unknown"),                                           # words alone cannot tell
    (facts("AX T2 FSE", ss=("SE",), tr=4000, te=100), "t2"),
    (facts("PD TSE", ss=("SE",), tr=3000, te=30), "pd"),
    (facts("ep2d_diff_3scan_trace", ss=("EP",), tr=5000, te=90, b=1000), "dwi"),
    (facts("ADC", image_type=("DERIVED", "PRIMARY", "DIFFUSION", "ADC")), "adc"),
    (facts("swi_tra", ss=("GR",), tr=28, te=20), "swi"),
    (facts("AX T2* GRE", ss=("GR",), tr=650, te=20), "t2star"),
    (facts("STIR cor", ss=("SE", "IR"), tr=4000, te=40, ti=150), "stir"),
    (facts("Ax T1 +C", ss=("SE",), tr=550, te=12), "t1post"),
    (facts("SAG 3D T1 BRAVO POST", ss=("GR",), tr=8.2, te=3.2, ti=450), "t1post"),
    (facts("T1 MPRAGE", tr=2300, te=2.9, ti=900, agent="none"), "t1"),          # "none" is no agent
])
def test_reads_sequence_and_contrast(given: MRFacts, kind: str) -> None:
    assert read_sequence(given).kind == kind


def test_contrast_unknown_when_nothing_says() -> None:
    reading = read_sequence(facts("t1_se_tra", ss=("SE",), tr=500, te=10))
    assert reading.sequence == "t1" and reading.contrast is None and reading.kind == "t1"
    assert "contrast: no agent and no word for it" in reading.evidence


def test_evidence_says_what_decided() -> None:
    reading = read_sequence(facts("AXIAL FLAIR", ss=("SE",), tr=600, te=10))
    assert any("TR and TE rule out" in e for e in reading.evidence)
