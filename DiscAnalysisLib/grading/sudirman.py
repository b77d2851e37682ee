"""Reader for the Sudirman / LSMA-PQR Pfirrmann data set (``shared/data/pfirrmann_sudirman``).

Used by the training and evaluation scripts and by the real-data test; not needed at inference.

Layout: ``PfirrmannGrade.csv`` (``Patient_ID,D5,D4,D3`` = grades of L5-S1, L4-L5, L3-L4),
``images/<idx>_T2_TSE_SAG_<matrix>_<series>_<patient>_<slice>_R.png`` (mid-sagittal T2w, 8 bit) and
``boxes/<same stem>.txt`` (YOLO boxes ``class cx cy w h``, normalised).

How discs and levels are found (checked on the data, see docs/validation.md):

* Disc boxes are classes 0 (degenerative disc), 1 (normal disc), 4 (lumbar disc bulge) and
  5 (thoracic disc bulge); classes 2 (stenosis) and 3 (spondylolisthesis) mark other findings.
  Drawn boxes confirm that class-4 boxes enclose a disc (with its bulge).
* One disc can carry two boxes (e.g. class 0 and class 4 on the same disc): boxes whose centres are
  closer vertically than half the smaller box height are merged into one disc; its box is the class
  0/1 box when there is one, because bulge boxes are larger (mean width 0.165 vs 0.139 of the image)
  and shifted towards the bulge.
* The three lowest discs are L3-L4, L4-L5 and L5-S1. Check: with this assignment 78 % of grade-5 discs
  and 0 % of grade-1 discs carry a "degenerative disc" box; shifting the assignment one level up or
  down lowers that to 32-43 % and raises it for grade 2 (to 4-6 %).
* The patient number is the 7th ``_``-separated field of the file name (the 6th is the series number).
  Nine patients have two images (two series or slices); both are used, always in the same split.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DISC_CLASSES = (0, 1, 4, 5)
PREFERRED_CLASSES = (0, 1)
LEVELS_BOTTOM_UP = ("L5-S1", "L4-L5", "L3-L4")
CSV_COLUMNS = {"L5-S1": "D5", "L4-L5": "D4", "L3-L4": "D3"}


@dataclass(frozen=True)
class DiscSample:
    """One graded disc: where it is in which image (pixel units of that image) and its grade."""

    image_path: str
    patient: int
    level: str
    grade: int
    center_rc: tuple[float, float]
    width_px: float
    height_px: float
    box_class: int


def patient_of(path: str | Path) -> int:
    return int(Path(path).stem.split("_")[6])


def read_grades(root: Path) -> dict[int, dict[str, int]]:
    out = {}
    with open(root / "PfirrmannGrade.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            out[int(row["Patient_ID"])] = {lvl: int(row[col]) for lvl, col in CSV_COLUMNS.items()}
    return out


def disc_boxes(box_file: Path, shape_rc: tuple[int, int]) -> list[tuple[int, float, float, float, float]]:
    """Merged disc boxes of one image, top to bottom: (class, row, col, width_px, height_px)."""
    h, w = shape_rc
    boxes = []
    for line in Path(box_file).read_text().splitlines():
        parts = line.split()
        if len(parts) != 5:
            continue
        c = int(parts[0])
        if c not in DISC_CLASSES:
            continue
        cx, cy, bw, bh = (float(x) for x in parts[1:])
        # YOLO coordinates are continuous (pixel i spans [i, i+1)); pixel-centre index = x * size - 0.5.
        boxes.append((c, cy * h - 0.5, cx * w - 0.5, bw * w, bh * h))
    boxes.sort(key=lambda b: b[1])
    groups: list[list[tuple]] = []
    for b in boxes:
        if groups and abs(b[1] - groups[-1][-1][1]) < 0.5 * min(b[4], groups[-1][-1][4]):
            groups[-1].append(b)
        else:
            groups.append([b])
    merged = []
    for g in groups:
        preferred = [b for b in g if b[0] in PREFERRED_CLASSES]
        merged.append((preferred or g)[0])
    return merged


def load_samples(root: str | Path) -> tuple[list[DiscSample], dict[str, np.ndarray]]:
    """All graded discs and the images they are in (path -> float32 array), in a fixed order."""
    from PIL import Image

    root = Path(root)
    grades = read_grades(root)
    samples: list[DiscSample] = []
    images: dict[str, np.ndarray] = {}
    for img_path in sorted((root / "images").glob("*.png")):
        pid = patient_of(img_path)
        if pid not in grades:
            continue
        box_file = root / "boxes" / (img_path.stem + ".txt")
        if not box_file.is_file():
            continue
        with Image.open(img_path) as im:
            arr = np.asarray(im.convert("L"), dtype=np.float32)
        discs = disc_boxes(box_file, arr.shape)
        if len(discs) < 3:
            continue
        images[str(img_path)] = arr
        for level, (c, r, col, bw, bh) in zip(LEVELS_BOTTOM_UP, reversed(discs[-3:]), strict=True):
            samples.append(DiscSample(str(img_path), pid, level, grades[pid][level], (r, col), bw, bh, c))
    return samples, images


#: Bulge boxes (class 4/5) are wider than the disc itself; their widths are scaled by the ratio of the
#: mean class-0/1 width to the mean class-4/5 width measured on this data set before cropping.
BULGE_WIDTH_FACTOR = 0.139 / 0.165


def crop_width(sample: DiscSample) -> float:
    return sample.width_px * (BULGE_WIDTH_FACTOR if sample.box_class not in PREFERRED_CLASSES else 1.0)


#: Order of rarity of the grades in this data set: a patient is stratified by its rarest grade.
_RARITY = {1: 0, 5: 1, 4: 2, 3: 3, 2: 4}


def _rarest_grade_strata(samples: list[DiscSample], patients: set[int] | None = None) -> dict[int, list[int]]:
    """Patient IDs (ascending) grouped by each patient's rarest grade; only ``patients`` when given."""
    by_patient: dict[int, set[int]] = {}
    for s in samples:
        if patients is None or s.patient in patients:
            by_patient.setdefault(s.patient, set()).add(s.grade)
    strata: dict[int, list[int]] = {}
    for pid, gs in sorted(by_patient.items()):
        strata.setdefault(min(gs, key=lambda g: _RARITY[g]), []).append(pid)
    return strata


def stratified_patient_split(
    samples: list[DiscSample], fractions=(0.7, 0.1, 0.2), seed: int = 0
) -> dict[str, list[int]]:
    """Split patients into train/val/test, stratified by each patient's rarest grade (1 and 5 first)."""
    rng = np.random.default_rng(seed)
    strata = _rarest_grade_strata(samples)
    split = {"train": [], "val": [], "test": []}
    for key in sorted(strata):
        pids = np.array(strata[key])
        rng.shuffle(pids)
        n = len(pids)
        n_test = int(round(fractions[2] * n))
        n_val = int(round(fractions[1] * n))
        split["test"] += pids[:n_test].tolist()
        split["val"] += pids[n_test : n_test + n_val].tolist()
        split["train"] += pids[n_test + n_val :].tolist()
    return {k: sorted(int(p) for p in v) for k, v in split.items()}


def patient_folds(samples: list[DiscSample], patients, k: int = 5, seed: int = 0) -> list[list[int]]:
    """Split ``patients`` into ``k`` folds, stratified by each patient's rarest grade (as the split above).

    Used for cross-fitting on the non-test patients: every patient's discs are predicted by the one fold
    model that did not train on them. Within each stratum the patients are shuffled and dealt round-robin,
    starting where the previous stratum stopped, so fold sizes differ by at most one patient.
    """
    if k < 2:
        raise ValueError("cross-fitting needs at least 2 folds")
    rng = np.random.default_rng(seed)
    strata = _rarest_grade_strata(samples, set(int(p) for p in patients))
    folds: list[list[int]] = [[] for _ in range(k)]
    pos = 0
    for key in sorted(strata):
        pids = np.array(strata[key])
        rng.shuffle(pids)
        for pid in pids:
            folds[pos % k].append(int(pid))
            pos += 1
    return [sorted(f) for f in folds]
