"""Build the real-header series corpus (tests/corpus/series/*.json) from public git repositories.

This is a maintenance script, not part of the test-suite: tests must read the JSON files it
writes and must never import this module.

Two ways to run it (from the repository root, with the project venv):

  # one series, straight from a bare git dir (e.g. a `git clone --mirror` of the source repo)
  python -m tests.corpus.build <git-dir> <commit> <folder-in-repo> --key <key> \
      --repo owner/name --licence "..." --collection "..." \
      [--files a.dcm b.dcm | --glob 'IM*'] [--series-uid 1.2.3] [--truth '{"modality": "CT", ...}']

  # everything listed in tests/corpus/sources.yaml (git dirs looked up as <mirror-root>/<owner>+<name>/repo,
  # or <mirror-root>/<owner>+<name>, or <mirror-root>/<name>.git)
  python -m tests.corpus.build --sources tests/corpus/sources.yaml --mirror-root /path/to/mirrors [--only key ...]

For every series it reads the DICOM files of <folder-in-repo> at <commit> (non-recursive; only files
that parse as DICOM; optionally filtered by name and by SeriesInstanceUID), and writes
tests/corpus/series/<key>.json with:

  key, source{repo, commit, path, files?, licence, collection}, truth{...},
  first      -- DICOM JSON model (PS3.18 F.2) of the first instance, with pixel data and every
                binary element (OB/OW/OD/OF/OL/OV/UN) removed at any depth and the identity
                attributes in IDENTITY_KEYWORDS blanked (present, but with no value);
  instances  -- one small record per instance, in file order.

No pixel data is ever written. Truth values are not computed here: they come from the caller
(sources.yaml), where they were set by a person looking at rendered pixels and at the header.
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import json
import subprocess
import sys
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "series"

# Blanked (kept as empty elements) wherever they occur, including inside sequences.
IDENTITY_KEYWORDS = (
    # required by the corpus brief
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "OperatorsName",
    "PerformingPhysicianName",
    "AccessionNumber",
    # further direct identifiers, blanked as well
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "ScheduledPerformingPhysicianName",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "InstitutionalDepartmentName",
    "PersonName",
    "VerifyingObserverName",
    "ContentCreatorName",
    "IssuerOfPatientID",
    "MilitaryRank",
    "EthnicGroup",
    "PatientReligiousPreference",
    "MedicalRecordLocator",
    "PatientInsurancePlanCodeSequence",
)
IDENTITY_TAGS = {Tag(pydicom.datadict.tag_for_keyword(k)) for k in IDENTITY_KEYWORDS}
BINARY_VRS = {"OB", "OW", "OD", "OF", "OL", "OV", "UN", "OB or OW", "US or OW", "OB/OW"}
# Large per-frame sequences of enhanced multi-frame objects are cut to this many items
# (the cut is recorded in the series JSON under "truncated").
MAX_PER_FRAME_ITEMS = 3


# ----------------------------------------------------------------------------------------- git
def _git(git_dir: str, *args: str, binary: bool = False):
    out = subprocess.run(["git", "--git-dir", git_dir, *args], capture_output=True, check=True)
    return out.stdout if binary else out.stdout.decode()


def list_folder(git_dir: str, commit: str, folder: str) -> list[tuple[str, str]]:
    """(path, blob-sha) of the regular files directly inside folder at commit, in git order."""
    folder = folder.strip("/")
    spec = f"{commit}:{folder}" if folder and folder != "." else f"{commit}^{{tree}}"
    rows = []
    for line in _git(git_dir, "ls-tree", spec).splitlines():
        meta, name = line.split("\t", 1)
        mode, typ, sha = meta.split()
        if typ == "blob" and mode != "120000":
            rows.append((f"{folder}/{name}" if folder and folder != "." else name, sha))
    return rows


def read_blob(git_dir: str, sha: str) -> bytes:
    return _git(git_dir, "cat-file", "blob", sha, binary=True)


def load_series(git_dir: str, commit: str, folder: str, files=None, glob=None, series_uid=None):
    """[(path, Dataset)] of the series' instances in file order (pixel data not read)."""
    picked = []
    for path, sha in list_folder(git_dir, commit, folder):
        name = path.rsplit("/", 1)[-1]
        if files is not None and name not in files:
            continue
        if glob is not None and not fnmatch.fnmatch(name, glob):
            continue
        try:
            ds = pydicom.dcmread(io.BytesIO(read_blob(git_dir, sha)), stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001, S112 - any file that does not parse is simply not DICOM
            continue
        if "SOPClassUID" not in ds and "Modality" not in ds:
            continue
        picked.append((path, ds))
    if files is not None:
        missing = set(files) - {p.rsplit("/", 1)[-1] for p, _ in picked}
        if missing:
            raise SystemExit(f"not DICOM or not found in {folder}@{commit}: {sorted(missing)}")
    uids = {str(ds.get("SeriesInstanceUID", "")) for _, ds in picked}
    if series_uid:
        picked = [(p, ds) for p, ds in picked if str(ds.get("SeriesInstanceUID", "")) == series_uid]
    elif len(uids) > 1:
        raise SystemExit(f"{folder} holds {len(uids)} series; pass series_uid / files: {sorted(uids)}")
    if not picked:
        raise SystemExit(f"no DICOM instance selected in {folder}@{commit}")
    return picked


# ----------------------------------------------------------------------------------- header
def _scrub(ds: Dataset, notes: dict, depth: int = 0) -> Dataset:
    """Copy of ds without binary elements, with identity attributes blanked (recursive)."""
    out = Dataset()
    for elem in ds:
        if elem.tag == Tag(0x7FE0, 0x0010) or elem.VR in BINARY_VRS:
            continue
        if elem.tag in IDENTITY_TAGS:
            out.add_new(elem.tag, elem.VR, [] if elem.VR == "SQ" else None)
            continue
        if elem.VR == "SQ":
            items = list(elem.value)
            if elem.keyword == "PerFrameFunctionalGroupsSequence" and len(items) > MAX_PER_FRAME_ITEMS:
                notes["PerFrameFunctionalGroupsSequence"] = {"items": len(items), "kept": MAX_PER_FRAME_ITEMS}
                items = items[:MAX_PER_FRAME_ITEMS]
            out.add_new(elem.tag, "SQ", [_scrub(item, notes, depth + 1) for item in items])
        else:
            out.add(elem)
    return out


def header_json(ds: Dataset) -> tuple[dict, dict]:
    notes: dict = {}
    clean = _scrub(ds, notes)
    doc = clean.to_json_dict(
        bulk_data_threshold=10**9, bulk_data_element_handler=lambda e: "", suppress_invalid_tags=True
    )
    dropped = sorted(
        f"{e.tag.group:04X}{e.tag.element:04X}"
        for e in clean
        if f"{e.tag.group:04X}{e.tag.element:04X}" not in doc
    )
    if dropped:  # values pydicom cannot express in the JSON model (e.g. malformed IS/DS strings)
        notes["dropped_invalid"] = dropped
    return doc, notes


def _num_list(v):
    if v is None:
        return None
    try:
        return [float(x) for x in v]
    except TypeError:
        return [float(v)]


def _frame_geometry(ds: Dataset):
    """IPP/IOP of the first frame of an enhanced multi-frame object (functional groups)."""
    ipp = iop = None
    for seq_kw in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        seq = ds.get(seq_kw)
        if not seq:
            continue
        item = seq[0]
        if ipp is None and item.get("PlanePositionSequence"):
            ipp = _num_list(item.PlanePositionSequence[0].get("ImagePositionPatient"))
        if iop is None and item.get("PlaneOrientationSequence"):
            iop = _num_list(item.PlaneOrientationSequence[0].get("ImageOrientationPatient"))
    return ipp, iop


def instance_record(ds: Dataset) -> dict:
    def num(v):
        try:
            return float(v) if v not in (None, "") else None
        except (TypeError, ValueError):
            return str(v)

    rec = {
        "SOPInstanceUID": str(ds.get("SOPInstanceUID", "")) or None,
        "InstanceNumber": int(ds.InstanceNumber) if ds.get("InstanceNumber") not in (None, "") else None,
        "ImagePositionPatient": _num_list(ds.get("ImagePositionPatient")),
        "ImageOrientationPatient": _num_list(ds.get("ImageOrientationPatient")),
        "SliceThickness": num(ds.get("SliceThickness")),
        "ImageType": list(ds.ImageType) if "ImageType" in ds else None,
        "AcquisitionNumber": int(ds.AcquisitionNumber)
        if ds.get("AcquisitionNumber") not in (None, "")
        else None,
    }
    if "NumberOfFrames" in ds:
        rec["NumberOfFrames"] = int(ds.NumberOfFrames)
        if rec["ImagePositionPatient"] is None or rec["ImageOrientationPatient"] is None:
            ipp, iop = _frame_geometry(ds)
            rec["ImagePositionPatient"] = rec["ImagePositionPatient"] or ipp
            rec["ImageOrientationPatient"] = rec["ImageOrientationPatient"] or iop
            rec["geometry_from_first_frame"] = True
    return rec


TRUTH_KEYS = (
    "modality",
    "region",
    "orientation",
    "localizer",
    "derived",
    "mr_sequence",
    "contrast",
    "how_known",
)
# None = could not be established (recorded honestly rather than guessed)
REGIONS = {
    "chest",
    "brain",
    "head-neck",
    "abdomen",
    "pelvis",
    "spine",
    "extremity",
    "whole-body",
    "other",
    None,
}
ORIENTATIONS = {"axial", "sagittal", "coronal", "oblique", "projection", None}
MR_SEQUENCES = {"t1", "t2", "flair", "dwi", "adc", "swi", "perfusion", "pd", "other", None}


def check_truth(key: str, truth: dict) -> dict:
    missing = [k for k in TRUTH_KEYS if k not in truth]
    if missing:
        raise SystemExit(f"{key}: truth lacks {missing}")
    if truth["region"] not in REGIONS or truth["orientation"] not in ORIENTATIONS:
        raise SystemExit(f"{key}: bad region/orientation {truth['region']!r}/{truth['orientation']!r}")
    if truth["mr_sequence"] not in MR_SEQUENCES:
        raise SystemExit(f"{key}: bad mr_sequence {truth['mr_sequence']!r}")
    if not all(isinstance(truth[k], bool) for k in ("localizer", "derived")):
        raise SystemExit(f"{key}: localizer/derived must be true/false")
    if truth["contrast"] not in (True, False, None) or not truth["how_known"]:
        raise SystemExit(f"{key}: bad contrast or empty how_known")
    if truth["modality"] != "MR" and truth["mr_sequence"] is not None:
        raise SystemExit(f"{key}: mr_sequence must be null for {truth['modality']}")
    return {k: truth[k] for k in TRUTH_KEYS}


def build_one(git_dir: str, entry: dict, out_dir: Path = OUT_DIR) -> Path:
    key, commit, folder = entry["key"], entry["commit"], entry["path"]
    picked = load_series(
        git_dir, commit, folder, entry.get("files"), entry.get("glob"), entry.get("series_uid")
    )
    first, notes = header_json(picked[0][1])
    doc = {
        "key": key,
        "source": {
            "repo": entry["repo"],
            "commit": commit,
            "path": folder,
            **(
                {"files": [p.rsplit("/", 1)[-1] for p, _ in picked]}
                if entry.get("files") or entry.get("glob") or entry.get("series_uid")
                else {}
            ),
            "licence": entry["licence"],
            "collection": entry["collection"],
        },
        "truth": check_truth(key, entry["truth"]) if entry.get("truth") else None,
        "first": first,
        "instances": [instance_record(ds) for _, ds in picked],
    }
    if notes:
        doc["truncated"] = notes
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{key}.json"
    out.write_text(dump(doc), encoding="utf-8")
    return out


def dump(doc: dict) -> str:
    """Stable, diff-friendly and compact JSON: one DICOM element per line in "first", one instance per line."""
    c = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    lines = ["{"]
    keys = list(doc)
    for i, k in enumerate(keys):
        comma = "," if i < len(keys) - 1 else ""
        v = doc[k]
        if k == "first":
            tags = list(v)
            lines.append(' "first": {')
            lines += [f"  {c(t)}: {c(v[t])}" + ("," if j < len(tags) - 1 else "") for j, t in enumerate(tags)]
            lines.append(" }" + comma)
        elif k == "instances":
            lines.append(' "instances": [')
            lines += ["  " + c(r) + ("," if j < len(v) - 1 else "") for j, r in enumerate(v)]
            lines.append(" ]" + comma)
        elif k in ("source", "truth") and isinstance(v, dict):
            items = list(v.items())
            lines.append(f" {c(k)}: {{")
            lines += [
                f"  {c(a)}: {c(b)}" + ("," if j < len(items) - 1 else "") for j, (a, b) in enumerate(items)
            ]
            lines.append(" }" + comma)
        else:
            lines.append(f" {c(k)}: {c(v)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def find_git_dir(root: Path, repo: str) -> str:
    owner, name = repo.split("/", 1)
    for cand in (
        root / f"{owner}+{name}" / "repo",
        root / f"{owner}+{name}",
        root / f"{name}.git",
        root / name,
    ):
        if (cand / "HEAD").exists() or (cand / ".git" / "HEAD").exists():
            return str(cand if (cand / "HEAD").exists() else cand / ".git")
    raise SystemExit(f"no git dir for {repo} under {root}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("git_dir", nargs="?")
    ap.add_argument("commit", nargs="?")
    ap.add_argument("folder", nargs="?")
    ap.add_argument("--key")
    ap.add_argument("--repo", help="owner/name of the source repository")
    ap.add_argument("--licence", default="unknown")
    ap.add_argument("--collection", default="")
    ap.add_argument("--files", nargs="*")
    ap.add_argument("--glob")
    ap.add_argument("--series-uid")
    ap.add_argument("--truth", help="truth object as JSON")
    ap.add_argument("--sources", help="YAML list of series (see sources.yaml)")
    ap.add_argument("--mirror-root", default=".")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--out-dir", default=str(OUT_DIR))
    a = ap.parse_args(argv)
    out_dir = Path(a.out_dir)
    if a.sources:
        import yaml

        entries = yaml.safe_load(Path(a.sources).read_text(encoding="utf-8"))["series"]
        keys = [e["key"] for e in entries]
        if len(keys) != len(set(keys)):
            raise SystemExit("duplicate keys in sources")
        for e in entries:
            if a.only and e["key"] not in a.only:
                continue
            path = build_one(find_git_dir(Path(a.mirror_root), e["repo"]), e, out_dir)
            print(f"wrote {path} ({path.stat().st_size} bytes)")
        return 0
    if not (a.git_dir and a.commit and a.folder and a.key and a.repo):
        ap.error("give <git-dir> <commit> <folder> --key --repo, or --sources")
    entry = {
        "key": a.key,
        "repo": a.repo,
        "commit": a.commit,
        "path": a.folder,
        "files": a.files,
        "glob": a.glob,
        "series_uid": a.series_uid,
        "licence": a.licence,
        "collection": a.collection,
        "truth": json.loads(a.truth) if a.truth else None,
    }
    path = build_one(a.git_dir, entry, out_dir)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
