"""Training/validation data for the disc/vertebra segmentation network (used by train_ and evaluate_segmentation).

Everything is brought to canonical sagittal slices (rows superior -> inferior, columns anterior -> posterior)
at the training pixel size, with per-pixel targets:

* 0 background, 1 disc, 2 vertebral body: fully labelled pixels;
* 3 "not disc" (background or vertebra, unknown which): the lumbar_t2_3d volumes label discs only;
* 255 ignored: rows above the top labelled disc of lumbar_t2_3d (T12-L1 is visible there but unlabelled,
  while lumbar_t2_slices labels every visible disc).

Sources (see ../shared/data/README.md): lumbar_t2_3d (4 subjects, 1 mm, discs 1..5 from L5-S1),
lumbar_t2_slices (PNG, 1 disc 2 vertebra, unknown spacing: estimated here from disc depth), and, for
testing only, radiospineomics (no licence file: never used to train shipped weights).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from DiscAnalysisLib.segmentation.preprocess import TRAIN_SPACING_MM, resample_inplane, to_canonical

DATA = Path(os.environ.get("DISCANALYSIS_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
if not DATA.exists():
    DATA = Path("/work/shared/data")
SUBJECTS_3D = ("11", "20", "25", "42")
NOT_DISC, IGNORE = 3, 255
#: Rows kept (ignored in the loss) above the top labelled disc of lumbar_t2_3d: L1 lies there (not a disc),
#: T12-L1 about one vertebral body (25-30 mm) higher is unlabelled.
TOP_MARGIN_MM = 12.0


@dataclass
class Sample:
    image: np.ndarray  # float32 (rows, cols), raw intensities at TRAIN_SPACING_MM
    target: np.ndarray  # uint8 (rows, cols): 0/1/2/3/255 (see module docstring)
    source: str
    subject: str
    weight: float = 1.0


def disc_depth_px(mask: np.ndarray) -> float:
    """Length of a 2D component along its principal (long) axis, in pixels."""
    yx = np.argwhere(mask).astype(float)
    yx -= yx.mean(0)
    _, v = np.linalg.eigh(np.cov(yx.T))
    p = yx @ v[:, -1]
    return float(p.max() - p.min() + 1)


def load_3d_subject(subject: str) -> tuple[sitk.Image, sitk.Image]:
    img = sitk.ReadImage(str(DATA / "lumbar_t2_3d" / f"{subject}_T2w.nrrd"))
    lab = sitk.ReadImage(str(DATA / "lumbar_t2_3d" / f"{subject}_discs.nrrd"))
    return img, lab


def samples_3d(subject: str, lateral_margin: int = 4) -> list[Sample]:
    img, lab = load_3d_subject(subject)
    st = to_canonical(img)
    lt = to_canonical(lab)
    assert abs(st.spacing_mm[1] - TRAIN_SPACING_MM) < 1e-3 and abs(st.spacing_mm[2] - TRAIN_SPACING_MM) < 1e-3
    labels = np.rint(lt.slices).astype(np.uint8)
    present = np.where(labels.reshape(len(labels), -1).max(1) > 0)[0]
    k0, k1 = max(0, present.min() - lateral_margin), min(len(labels) - 1, present.max() + lateral_margin)
    top_rows = np.where((labels == 5).any(axis=(0, 2)))[0]
    top = int(top_rows.min() - TOP_MARGIN_MM / TRAIN_SPACING_MM) if top_rows.size else 0
    out = []
    for k in range(k0, k1 + 1):
        t = np.where(labels[k] > 0, 1, NOT_DISC).astype(np.uint8)
        t[: max(top, 0)] = IGNORE
        has_disc = bool((labels[k] > 0).any())
        out.append(Sample(st.slices[k], t, "lumbar_t2_3d", subject, 1.0 if has_disc else 0.3))
    return out


def png_slices_raw() -> list[tuple[str, np.ndarray, np.ndarray]]:
    from PIL import Image

    out = []
    for f in sorted(glob.glob(str(DATA / "lumbar_t2_slices" / "*_mask.npy"))):
        n = Path(f).name.split("_")[0]
        m = np.load(f)
        if not (m == 1).any():
            continue  # empty masks are excluded (README: some masks are empty)
        im = np.asarray(Image.open(DATA / "lumbar_t2_slices" / f"{n}_T2w.png").convert("L"), dtype=np.float32)
        out.append((n, im, m))
    return out


def reference_disc_depth_mm() -> float:
    """Median mid-sagittal disc depth (anterior-posterior length) of the lumbar_t2_3d discs, in mm."""
    depths = []
    for s in SUBJECTS_3D:
        _, lab = load_3d_subject(s)
        lt = to_canonical(lab)
        labels = np.rint(lt.slices).astype(np.uint8)
        k = int(np.argmax((labels > 0).reshape(len(labels), -1).sum(1)))
        depths += [disc_depth_px(labels[k] == v) * lt.spacing_mm[2] for v in range(1, 6) if (labels[k] == v).any()]
    return float(np.median(depths))


def estimate_png_spacing_mm() -> float:
    """Pixel size of lumbar_t2_slices that makes their lumbar discs as deep as those of lumbar_t2_3d.

    Only the lowest five discs of each slice (L1-L2..L5-S1) are used, since thoracic discs are shallower.
    """
    depths = []
    for _, _, m in png_slices_raw():
        lab, n = ndi.label(m == 1)
        comps = [(ndi.center_of_mass(lab == i)[0], i) for i in range(1, n + 1) if (lab == i).sum() >= 30]
        comps.sort()
        depths += [disc_depth_px(lab == i) for _, i in comps[-5:]]
    return reference_disc_depth_mm() / float(np.median(depths))


def samples_png(spacing_mm: float, boundary_ignore_px: int = 0) -> list[Sample]:
    out = []
    for n, im, m in png_slices_raw():
        full = (m == 2).any()  # slices with no vertebra label have discs only: vertebra unknown there
        if full:
            t = m.astype(np.uint8)
        else:
            t = np.where(m == 1, 1, NOT_DISC).astype(np.uint8)
        im_r = resample_inplane(im[None], (spacing_mm, spacing_mm))[0]
        # nearest-neighbour for labels via one-hot bilinear + argmax keeps thin discs intact
        vals = np.unique(t)
        onehot = np.stack([(t == v).astype(np.float32) for v in vals])
        oh = resample_inplane(onehot, (spacing_mm, spacing_mm))
        t_r = vals[np.argmax(oh, axis=0)].astype(np.uint8)
        if boundary_ignore_px:
            # These slices outline discs more generously than lumbar_t2_3d (thicker discs): they teach where
            # discs and bodies are, while the exact disc boundary is left to the 3D annotations.
            d = t_r == 1
            band = ndi.binary_dilation(d, iterations=boundary_ignore_px) & ~ndi.binary_erosion(d, iterations=boundary_ignore_px)
            t_r[band] = IGNORE
        out.append(Sample(im_r, t_r, "lumbar_t2_slices", f"png{n}", 1.0))
    return out


def radiospineomics_cases() -> list[tuple[str, sitk.Image, dict[str, np.ndarray]]]:
    """(name, image, {level: mask}) for the radiospineomics slices: L1-L2 disc, L1 and L2 bodies (testing only)."""
    base = DATA / "radiospineomics" / "sample_data"
    out = []
    for f in sorted((base / "masks").glob("L1_L2_IVD-*.nrrd")):
        name = f.name.split("IVD-")[1]
        img = sitk.ReadImage(str(base / "images" / name))
        m = np.squeeze(sitk.GetArrayFromImage(sitk.ReadImage(str(f))))
        ref = {"L1-L2": m > 0}
        for v in ("L1", "L2"):
            vf = base / "masks" / f"{v}_VB-{name}"
            if vf.exists():
                ref[v] = np.squeeze(sitk.GetArrayFromImage(sitk.ReadImage(str(vf)))) > 0
        out.append((name, img, ref))
    return out


# ------------------------------------------------------------------------------- pfirrmann_sudirman
SUDIRMAN_DISC_CLASSES = (0, 1, 4, 5)  # degenerative disc, normal disc, lumbar / thoracic disc bulge
#: Patients used as weak labels for training; the others are held out for the localisation check. Split by
#: patient number, deterministic: number modulo 5 in {0, 1, 2} (60 %) for training. The number is the 7th
#: "_"-separated field of the file name (0001..0515, nearly one image per patient; the 6th field, which
#: the data README names, is a series number shared by 441 images).
SUDIRMAN_TRAIN_MOD = (0, 1, 2)


def sudirman_patient(path: Path) -> int:
    return int(Path(path).name.split("_")[6])


def sudirman_images(split: str) -> list[Path]:
    """'train' (weak labels) or 'test' (localisation check) images, split by patient."""
    ims = sorted((DATA / "pfirrmann_sudirman" / "images").glob("*.png"))
    train = [p for p in ims if sudirman_patient(p) % 5 in SUDIRMAN_TRAIN_MOD]
    return train if split == "train" else [p for p in ims if p not in set(train)]


def sudirman_disc_boxes(image_path: Path, shape) -> list[tuple[float, float, float, float]]:
    """Disc boxes (row0, row1, col0, col1) in pixels, top to bottom, near-duplicates merged."""
    b = np.loadtxt(DATA / "pfirrmann_sudirman" / "boxes" / (Path(image_path).stem + ".txt"), ndmin=2)
    if b.size == 0:
        return []
    b = b[np.isin(b[:, 0].astype(int), SUDIRMAN_DISC_CLASSES)]
    b = b[np.argsort(b[:, 2])]
    h, w = shape
    boxes: list[list[float]] = []
    for _, cx, cy, bw, bh in b:
        r0, r1, c0, c1 = (cy - bh / 2) * h, (cy + bh / 2) * h, (cx - bw / 2) * w, (cx + bw / 2) * w
        if boxes and abs((r0 + r1) / 2 - (boxes[-1][0] + boxes[-1][1]) / 2) < 0.03 * h:
            last = boxes[-1]
            boxes[-1] = [min(last[0], r0), max(last[1], r1), min(last[2], c0), max(last[3], c1)]
        else:
            boxes.append([r0, r1, c0, c1])
    return [tuple(x) for x in boxes]


def samples_sudirman(fov_mm: float = 280.0) -> list[Sample]:
    """Weak labels from the disc boxes of the training patients.

    Inside each box a small central ellipse (a quarter of the box width, 15 % of its height on each side
    of the centre) is disc; the rest of the (slightly enlarged) box is ignored; above the top box nothing
    is known (unboxed thoracic discs) and is ignored; everything else is "not disc" - which teaches the
    network that bowel, bladder, posterior elements and the sacrum are not discs, and the box cores that
    degenerated (dark, thin) discs are. Pixel size is unknown: the 280 mm field-of-view assumption used for
    bitmaps at inference is used here too.
    """
    from PIL import Image

    out = []
    for p in sudirman_images("train"):
        im = np.asarray(Image.open(p).convert("L"), dtype=np.float32)
        h, w = im.shape
        boxes = sudirman_disc_boxes(p, (h, w))
        if len(boxes) < 5:
            continue
        t = np.full((h, w), NOT_DISC, np.uint8)
        yy, xx = np.mgrid[0:h, 0:w]
        for r0, r1, c0, c1 in boxes:
            pad = 3
            t[max(int(r0) - pad, 0) : int(np.ceil(r1)) + pad, max(int(c0) - pad, 0) : int(np.ceil(c1)) + pad] = IGNORE
        for r0, r1, c0, c1 in boxes:
            cy, cx, ry, rx = (r0 + r1) / 2, (c0 + c1) / 2, 0.15 * (r1 - r0), 0.25 * (c1 - c0)
            t[((yy - cy) / max(ry, 1)) ** 2 + ((xx - cx) / max(rx, 1)) ** 2 <= 1] = 1
        t[: max(int(boxes[0][0]) - 3, 0)] = IGNORE
        sp = fov_mm / max(h, w)
        im_r = resample_inplane(im[None], (sp, sp))[0]
        vals = np.unique(t)
        oh = resample_inplane(np.stack([(t == v).astype(np.float32) for v in vals]), (sp, sp))
        out.append(Sample(im_r, vals[np.argmax(oh, axis=0)].astype(np.uint8), "pfirrmann_sudirman", f"sud{sudirman_patient(p)}"))
    return out
