"""What each shipped model is: the finding it looks for, what it accepts, how pixels are prepared,
how it is trained, and the external studies its card reports on.

These specs become the manifests in ``models/``; training prepares every slice with the node's own
``prepare_slice`` from the same ``Preprocess`` object, so there is one definition of how pixels
reach the model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from onconode.models import (
    Accepts,
    BlobRanking,
    Crop,
    DisplaySpec,
    FindingSpec,
    Normalize,
    Percentiles,
    Preprocess,
    Resize,
    SliceSpec,
    Window,
)

# EfficientNet-Lite0's ImageNet weights come from TF checkpoints trained on (x - 127) / 128 of 0-255
# RGB; in the [0, 1] scale that is mean 127/255, std 128/255 per channel.
_LITE_NORMALIZE = Normalize(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
LUNG = Window(center=-600, width=1500)
MEDIASTINUM = Window(center=40, width=400)
WIDE = Window(center=0, width=2000)


@dataclass(frozen=True)
class ExternalCase:
    """A study of ``$ONCONODE_DATA/dicom`` the card reports on (never trained, tuned or thresholded on).

    ``lesion_slices`` are the files (stems) that show the lesion; ``boxes`` optional lesion boxes
    (x0, y0, x1, y1 in pixels) per file, from the collection's annotation.
    """

    folder: str
    description: str
    lesion_slices: tuple[str, ...]
    boxes: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    modality: str
    data: str                         # training/sources/<data>.yaml and data/prepared/<data>/
    finding: FindingSpec
    preprocess: Preprocess
    size: tuple[int, int]
    accepts: Accepts
    slices: SliceSpec
    display: DisplaySpec
    intended_use: str
    external: tuple[ExternalCase, ...]
    skull_stripped: bool | None = None   # brain: train on series with (False) or without the skull, or both (None)
    # training/sources/<checks>.yaml: studies from sources never trained on, without the finding or with it
    # (and its mask), that the card shows the node's analysis of (``release.check_studies``); never trained,
    # tuned or thresholded on
    checks: str | None = None
    epochs: int = 10
    # Choose each fold's epoch on a patient-held-out fifth of its training patients (the shipped
    # model then trains for the folds' median); False: every fold and the shipped model train for
    # ``epochs``, and the validation patients train too. With one or two validation series a fold's
    # choice can be noise.
    select_epoch: bool = True
    samples_per_epoch: int = 1024     # per epoch, half lesion slices, half lesion-free ones
    batch_size: int = 32
    lr: float = 3e-4
    frozen_blocks: int = 3
    folds: int = 3
    seed: int = 20261203
    labels: tuple[str, str] = ("none", "lesion")  # logits order; "lesion" is the positive label
    feature_stride: int = 32          # 16: a finer heat-map grid for small lesions (``training.network``)
    feature_fusion: bool = False      # stride 16 by fusing the stride-16 stage, not by a dilated last stage
    heat_weight: float = 0.5          # weight of the heat-placement loss on lesion slices (``training.fit``)
    # From the second epoch, this share of each epoch's lesion-free half is the slices the model
    # currently scores highest (of a random pool four times as large): hard negatives (``training.fit``).
    hard_negatives: float = 0.0
    # This share of each epoch's lesion-free half follows the lesion slices' levels in their series
    # (``fit.level_matched``), the rest uniform: level alone then tells the classes apart less.
    level_matched: float = 0.0


CHEST_CT = ModelSpec(
    name="chest-ct-nodule",
    version="2.5.1",
    modality="CT",
    data="chest-ct",
    finding=FindingSpec(code="786838002", scheme="SCT", meaning="Pulmonary nodule",
                        display="suspicious lung nodule or mass"),
    # Three windows as three channels: lung parenchyma, soft tissue (mediastinum, solid nodules),
    # and a wide one that keeps bone and air apart.
    preprocess=Preprocess(kind="ct_windows", windows=(LUNG, MEDIASTINUM, WIDE),
                          crop=Crop(region="lungs", margin=0.08), resize=Resize(keep_aspect=True, pad_value=0.0),
                          normalize=_LITE_NORMALIZE),
    size=(224, 224),
    # A stride-16 grid (fused, ``training.network``) and the heat-placement loss: a nodule is smaller
    # than a stride-32 cell. A fixed schedule: a fold has one or two validation series.
    feature_stride=16,
    feature_fusion=True,
    select_epoch=False,
    # Both lungs: every training series reaches 255 mm or more along the normal, adult lungs about
    # 200-300 mm; a shorter series (the lung bases of an abdominal CT) is not a chest CT it has seen. Its
    # slices contiguous or nearly: a series sampled with gaps (1 mm every 10 mm) hides most nodules.
    accepts=Accepts(regions=("chest",), planes=("axial",), thickness_mm=(0.5, 10.0), min_slices=10,
                    min_coverage_mm=180.0, min_imaged_fraction=0.5, prefer=("original", "thinnest", "most_slices")),
    # Every slice that shows lung: a 5 mm nodule spans two or three 2.5 mm slices, so spreading a
    # cap over the series would miss it.
    # Key slices ranked by the model and a fixed nodule filter together: out of fold on the 12 series
    # with slice labels, the first key slice is a lesion slice in 6 (the model alone: 3), and among
    # slices at the same level the ranking reaches AUC 0.658 (the model alone 0.568). The rule was
    # written before the filter's first score (models/RELEASE-NOTES.md); its scales are Li et al.'s
    # nodule sizes, never tuned.
    slices=SliceSpec(target="lung", max_analysed=400, key=3,
                     ranking=BlobRanking(sigmas_mm=(1.5, 2.5, 4.0, 6.0), hu=(-1000.0, 200.0), shrink=2)),
    display=DisplaySpec(window=LUNG),
    intended_use="Flag axial chest CT series, and the slices in them, that show a lung nodule or mass "
                 "of the kind LIDC-IDRI readers outlined (3 mm or more) and rated at least "
                 "'indeterminate' for malignancy, so that a reader looks at them first. Research use only; "
                 "not for diagnosis, not a detector of every nodule, and no statement on malignancy.",
    external=(
        ExternalCase("lidc-idri-0001", "LIDC-IDRI-0001 (GE LightSpeed Plus, 2.5 mm): one nodule marked by "
                     "all four readers (malignancy 5, 5, 5, 4)", tuple(f"IM-{i:04d}" for i in range(39, 48)),
                     # The readers' outlines span about x 297-340, y 340-391 px (shared/data/README.md).
                     boxes=tuple((f"IM-{i:04d}", (297, 340, 340, 391)) for i in range(39, 48))),
        ExternalCase("lung-pet-ct-dx-a0002-ct", "Lung-PET-CT-Dx A0002 (Siemens Sensation 10, 8 mm): "
                     "biopsy-proven adenocarcinoma, boxes from the collection", tuple(f"IM-{i:04d}" for i in range(9, 19)),
                     boxes=(("IM-0014", (139, 253, 234, 322)), ("IM-0017", (134, 274, 216, 338)))),
    ),
    checks="chest-ct-check",
)

BRAIN_MR = ModelSpec(
    name="brain-mr-tumour",
    version="2.1.3",
    modality="MR",
    data="brain-mr",
    finding=FindingSpec(code="126952004", scheme="SCT", meaning="Neoplasm of brain",
                        display="brain tumour"),
    # The series' own percentiles, so that a slice keeps its brightness relative to the volume.
    preprocess=Preprocess(kind="mr_volume", percentiles=Percentiles(low=0.5, high=99.5),
                          crop=Crop(region="body", margin=0.05), resize=Resize(keep_aspect=True, pad_value=0.0),
                          normalize=_LITE_NORMALIZE),
    size=(224, 224),
    # 3 mm and thicker: every lesion series it learned from has 18-28 slices over the brain (5-6.5 mm
    # where the spacing is known), and on the thin volumes of healthy volunteers it has never seen
    # (0.9 and 2 mm, with the skull) its study value is over the threshold (``training.thin_series``).
    # The whole brain: its series decision is a statement on the brain, and every whole-brain training
    # series reaches 127 mm or more along the normal. A slab planned on the internal auditory canals
    # (56 mm, two training series) would otherwise be preferred as the thinnest. Slices at least half as
    # thick as their spacing: the training series are contiguous or have 1.5 mm gaps (5 mm every 6.5 mm).
    accepts=Accepts(regions=("brain",), planes=("axial",), sequences=("t1post", "flair"), thickness_mm=(3.0, 7.0),
                    min_slices=10, min_coverage_mm=100.0, min_imaged_fraction=0.5,
                    prefer=("sequence", "original", "thinnest", "most_slices")),
    slices=SliceSpec(target="brain", max_analysed=200, key=3),
    display=DisplaySpec(percentiles=Percentiles(low=0.5, high=99.5)),
    intended_use="Flag axial brain MR series, T1 after gadolinium or FLAIR, and the slices in them, that show "
                 "a brain tumour (an enhancing lesion on T1 post-contrast, a hyperintense one on FLAIR), so "
                 "that a reader looks at them first. Research use only; not for diagnosis, no tumour type, "
                 "and not trained for other lesions (stroke, demyelination, metastases beyond the data).",
    external=(
        ExternalCase("brain-tumor-progression-pgbm-001-t1post", "Brain-Tumor-Progression PGBM-001 (Siemens Verio "
                     "3 T, T1 post-contrast, 5 mm, ORIGINAL): glioblastoma, enhancing lesion in the left parietal "
                     "lobe", tuple(f"IM-{i:04d}" for i in range(15, 21))),
        ExternalCase("upenn-gbm-00001-t1post", "UPENN-GBM-00001 (Siemens TrioTim 3 T, 3D T1 post-contrast, 1 mm, "
                     "DERIVED): glioblastoma, enhancing lesion in the right anterior temporal lobe",
                     tuple(f"IM-{i:04d}" for i in range(52, 71))),
    ),
    skull_stripped=False,
    checks="brain-mr-check",
)

# The candidates below were run and judged with key slices ranked by the model alone.
_RANKED_BY_MODEL = CHEST_CT.slices.model_copy(update={"ranking": None})

# A candidate: the lung window of the slice and of the slices 5 mm before and after it as the three
# channels (2.5-D), in place of three windows of the slice alone. Kept so that its figures can be
# rebuilt: it failed its rule and did not ship (models/RELEASE-NOTES.md).
CHEST_CT_CONTEXT = replace(
    CHEST_CT, version="2.2.0", slices=_RANKED_BY_MODEL,
    preprocess=Preprocess(kind="ct_window", window=LUNG, context_mm=5.0, crop=Crop(region="lungs", margin=0.08),
                          resize=Resize(keep_aspect=True, pad_value=0.0), normalize=_LITE_NORMALIZE))

# A candidate: the slices 5 mm before and after as the two channels that repeat the slice today (the
# same intensity scaling). Kept so that its figures can be rebuilt: it missed its rule by a hair and
# did not ship (models/RELEASE-NOTES.md).
BRAIN_MR_CONTEXT = replace(BRAIN_MR, version="2.2.0",
                           preprocess=BRAIN_MR.preprocess.model_copy(update={"context_mm": 5.0}))

# A candidate: half of each epoch's lesion-free slices are the ones the model scores highest at the
# epoch's start. Out of fold, 2.1.0's most suspicious slice is usually a lesion-free slice (mid-lung,
# a few slices from the nodule; see models/RELEASE-NOTES.md, 2.1.1), and uniform sampling shows the
# model its hardest ones rarely. Version 2.3.0 because the context candidate was 2.2.0.
CHEST_CT_HARD = replace(CHEST_CT, version="2.3.0", hard_negatives=0.5, slices=_RANKED_BY_MODEL)

# A candidate: three quarters of each epoch's lesion-free slices drawn at the levels where the lesions
# lie. Out of fold, 2.1.x ranks lesion slices above lesion-free slices of the same series at the same
# level with AUC 0.57, while the level alone reaches 0.79 (``evaluate.same_level_auc``): it learned
# where nodules lie in these series. Rule, written before the run: ship it as 2.4.0 only if, out of
# fold, the same-level AUC is at least 0.65, the slice AUC at least 0.72, the heat peak in the
# lesion at least 0.34, the first key slice a lesion slice in at least 3 of the 12 located series, and
# ONNX at most 10 ms per slice. The external studies are not used to choose.
CHEST_CT_LEVEL = replace(CHEST_CT, version="2.4.0", level_matched=0.75, slices=_RANKED_BY_MODEL)

# A candidate: a stride-8 grid (``training.network``, nodes about 10.5 mm apart): out of fold the heat
# peak is on the lesion on 37% of lesion slices, and on 0-39% per LIDC series, whose 3-10 mm nodules are
# smaller than a stride-16 cell. Kept so that its figures can be rebuilt: it failed its rule (peak 0.43,
# 10.7 ms per slice) and did not ship (models/RELEASE-NOTES.md).
CHEST_CT_FINE = replace(CHEST_CT, version="2.6.0", feature_stride=8)

SPECS: dict[str, ModelSpec] = {"chest-ct": CHEST_CT, "brain-mr": BRAIN_MR, "chest-ct-context": CHEST_CT_CONTEXT,
                               "brain-mr-context": BRAIN_MR_CONTEXT, "chest-ct-hard": CHEST_CT_HARD,
                               "chest-ct-level": CHEST_CT_LEVEL,
                               "chest-ct-fine": CHEST_CT_FINE}
