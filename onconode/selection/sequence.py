"""MR sequence and contrast of a series, from the acquisition parameters first and the words second.

Why parameters first: descriptions are written per site and vendor ("t1_mpr_tra_iso", "Ax T1
FLAIR", "AXIAL FLAIR", "anat-T1w", "tirm"), and some words mislead ("T1 FLAIR" on GE is a
T1-weighted inversion recovery, not a FLAIR). Repetition, echo and inversion times do not depend
on the site's vocabulary: a long inversion time (≥ 1400 ms) is a FLAIR, a medium one with a
short echo an inversion-prepared T1 (MPRAGE, BRAVO, T1 FLAIR), a short echo and repetition a T1,
long ones a T2. The words decide where the parameters are absent or only weakly say (echo and
repetition alone), and every reading says which it used.

Contrast: ContrastBolusAgent set means the series was acquired after an injection, unless the
description says "pre"/"native"; the description's "post", "+C", "gad", "KM"… count as well.
Absent both, contrast is unknown (None), never assumed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from onconode.selection.text import fold, has_phrase, has_prefix, has_word, words

SEQUENCES = ("t1", "t2", "flair", "pd", "dwi", "adc", "swi", "perfusion", "t2star", "stir", "other")

_WORDS: dict[str, frozenset[str]] = {
    "flair": frozenset({"flair", "tirm", "darkfluid", "spcir", "flairs"}),
    "t1": frozenset({"t1", "t1w", "t1wi", "mprage", "mpr", "mp2rage", "spgr", "fspgr", "bravo", "tfe", "vibe",
                     "lava", "thrive", "flash", "tfl", "tfl3d1", "t1se", "t1tse", "t1ce", "t1c", "t1gd", "t1km",
                     "t1post", "t1pre", "stealth", "3dt1", "irspgr", "irfspgr", "mpgr"}),
    "t2": frozenset({"t2", "t2w", "t2wi", "t2tse", "haste", "ssfse", "frfse", "t2fse"}),
    "pd": frozenset({"pd", "pdw", "proton"}),
    "dwi": frozenset({"dwi", "diff", "diffusion", "dti", "trace", "tracew", "b1000", "dwibs", "resolve"}),
    "adc": frozenset({"adc", "apparent"}),
    "swi": frozenset({"swi", "swan", "swip", "susceptibility", "venobold", "sweep"}),
    "perfusion": frozenset({"perf", "perfusion", "dsc", "dce", "pwi", "rcbv", "cbf", "cbv", "asl", "pcasl",
                            "pasl"}),
    "stir": frozenset({"stir"}),
}
_PREFIXES: dict[str, tuple[str, ...]] = {"t1": ("t1",), "t2": ("t2",), "flair": ("flair",),
                                         "dwi": ("ep2d_diff", "diff"), "perfusion": ("perf",)}
_T2STAR = re.compile(r"(?i)t2\s*\*|t2star|t2_star|hemo|\bmedic\b|\bmerge\b")
_POST = frozenset({"post", "postcontrast", "postgad", "gad", "gd", "gado", "gadolinium", "contrast", "enhanced",
                   "km", "kontrast", "ce", "t1ce", "t1c", "t1gd", "t1km", "t1post", "mdc"})
_POST_PHRASES = ("+ c", "c +", "with contrast", "w contrast", "mit km", "nach km", "post contrast")
_PRE = frozenset({"pre", "precontrast", "nativ", "native", "noncon", "unenhanced", "plain", "t1pre", "ohne", "sans",
                  "senza"})
_PRE_PHRASES = ("without contrast", "w o contrast", "w o", "non con", "non contrast", "no contrast", "sin contraste")
_NO_AGENT = frozenset({"", "none", "no", "0", "n a", "na", "nil", "nein", "non", "keine", "kein"})


@dataclass(frozen=True)
class MRFacts:
    """The header values that describe how an MR series was acquired (plain values, from the first
    instance of the series)."""

    descriptions: tuple[str, ...]         # SeriesDescription, ProtocolName, SequenceName
    scanning_sequence: tuple[str, ...] = ()
    sequence_variant: tuple[str, ...] = ()
    repetition_time: float | None = None  # ms
    echo_time: float | None = None        # ms
    inversion_time: float | None = None   # ms
    image_type: tuple[str, ...] = ()
    diffusion_b: float | None = None
    contrast_agent: str = ""


@dataclass(frozen=True)
class SequenceReading:
    sequence: str              # one of SEQUENCES, or "unknown"
    contrast: bool | None      # after an injection; None when nothing says
    evidence: tuple[str, ...]

    @property
    def kind(self) -> str:
        """What a manifest names: "t1post" for a T1 after contrast, else the sequence itself."""
        return "t1post" if self.sequence == "t1" and self.contrast else self.sequence


def from_physics(facts: MRFacts) -> tuple[str | None, bool, str]:
    """(sequence or None, strong, why). ``strong``: decided by inversion time, b-value or image
    type, which the words never overrule; echo and repetition times alone are weak."""
    image_type = {v.upper() for v in facts.image_type}
    if "ADC" in image_type:
        return "adc", True, "ImageType says ADC"
    if "DIFFUSION" in image_type or (facts.diffusion_b is not None and facts.diffusion_b >= 50):
        return "dwi", True, "diffusion-weighted (ImageType or b-value)"
    tr, te, ti = facts.repetition_time, facts.echo_time, facts.inversion_time
    params = ", ".join(f"{n} {v:g} ms" for n, v in (("TR", tr), ("TE", te), ("TI", ti)) if v is not None)
    if ti is not None and ti > 0:
        if ti >= 1400 and (tr is None or tr >= 3000):
            return "flair", True, f"inversion recovery with a long TI ({params})"
        if 50 <= ti <= 300:
            return "stir", True, f"inversion recovery with a short TI ({params})"
        if 300 < ti < 1400 and (te is None or te <= 30):
            return "t1", True, f"inversion-prepared T1 ({params})"
    if tr is None or te is None:
        return None, False, "no TR/TE"
    gradient = "GR" in facts.scanning_sequence
    echo_planar = "EP" in facts.scanning_sequence
    if echo_planar and te > 40:
        return None, False, f"echo-planar ({params})"
    if gradient and 12 <= te <= 45 and tr <= 1500:
        return "t2star", False, f"gradient echo with a medium TE ({params})"
    if te <= 30 and tr <= 1000:
        return "t1", False, f"short TR and TE ({params})"
    if te >= 60 and tr >= 1800:
        return "t2", False, f"long TR and TE ({params})"
    if te <= 40 and tr >= 1500:
        return "pd", False, f"long TR, short TE ({params})"
    return None, False, f"parameters fit no weighting ({params})"


def from_words(descriptions: Sequence[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Sequences the descriptions name, with the words that named them."""
    found: set[str] = set()
    evidence: list[str] = []
    for text in descriptions:
        if not text.strip():
            continue
        if _T2STAR.search(text):
            found.add("t2star")
            evidence.append(f"{text.strip()[:40]!r} names a T2* gradient echo")
            continue
        tokens = words(text)
        for sequence, vocabulary in _WORDS.items():
            word = has_word(tokens, vocabulary) or has_prefix(tokens, _PREFIXES.get(sequence, ()))
            if word:
                found.add(sequence)
                evidence.append(f"{text.strip()[:40]!r} says {word!r}")
    return frozenset(found), tuple(evidence)


def contrast_of(facts: MRFacts) -> tuple[bool | None, str]:
    """After an injection or not (see the module docstring), and why."""
    texts = [t for t in facts.descriptions if t.strip()]
    for text in texts:
        pre = has_word(words(text), _PRE) or has_phrase(text, _PRE_PHRASES)
        if pre:
            return False, f"contrast: {text.strip()[:40]!r} says {pre!r} (before contrast)"
    for text in texts:
        post = has_word(words(text), _POST) or has_phrase(text, _POST_PHRASES) or \
            ("+" in words(text) and "t1" in fold(text))
        if post:
            return True, f"contrast: {text.strip()[:40]!r} says {post if isinstance(post, str) else '+'!r}"
    agent = " ".join(words(facts.contrast_agent))
    if agent not in _NO_AGENT:
        return True, "contrast: ContrastBolusAgent is set"
    return None, "contrast: no agent and no word for it"


# Which named sequences a weak (echo and repetition time) reading allows: the words may make it
# more specific (a long-TR, long-TE series named FLAIR is a FLAIR whose TI the header omits), never
# contradict it (a series with TR 600 ms is no FLAIR, whatever its name).
_REFINES: dict[str, frozenset[str]] = {
    "t1": frozenset({"t1", "perfusion"}),
    "t2": frozenset({"t2", "flair"}),
    "pd": frozenset({"pd"}),
    "t2star": frozenset({"t2star", "swi", "perfusion"}),
}


def read_sequence(facts: MRFacts) -> SequenceReading:
    """The sequence and contrast of one MR series; see the module docstring."""
    physics, strong, why = from_physics(facts)
    named, word_evidence = from_words(facts.descriptions)
    if named == {"t2", "flair"}:
        named = frozenset({"flair"})  # "T2 FLAIR", "t2_tirm": a FLAIR is T2-weighted
    evidence = [why, *word_evidence] if physics else [*word_evidence, why]
    if physics and strong:
        sequence = physics
        if named and physics not in named:
            evidence.append(f"the description says {'/'.join(sorted(named))}; the inversion time decides")
    elif physics:
        fitting = named & _REFINES.get(physics, frozenset({physics}))
        sequence = next(iter(fitting)) if len(fitting) == 1 else physics
        if named - fitting:
            evidence.append(f"the description says {'/'.join(sorted(named - fitting))}, which TR and TE rule out")
    elif len(named) == 1:
        sequence = next(iter(named))
    elif named:
        sequence = "unknown"
        evidence.append(f"the description names {'/'.join(sorted(named))} and no parameter settles it")
    else:
        sequence = "unknown"
    contrast, contrast_why = contrast_of(facts)
    evidence.append(contrast_why)
    return SequenceReading(sequence, contrast, tuple(e for e in evidence if e))
