"""Validation of the segmentation's CSF reference region (``DiscAnalysisLib.segmentation.csf``).

    python scripts/validate_csf_reference.py [--data ../shared/data]

ΔSI (the markers' signal intensity difference) is scaled by the CSF signal, so the CSF the segmentation
adds decides whether and how well ΔSI is measured. Three checks, each isolating the CSF:

* **phantom** (synthetic, dural sac known): fraction of the found CSF inside the sac; ΔSI with the true
  discs and (a) the true CSF, (b) the found CSF.
* **radiospineomics** (real, 4 slices, expert L1-L2 disc mask and a small expert CSF ROI; never used for
  training): ΔSI of the expert disc with the expert CSF ROI against the same disc with the CSF the product
  finds (whole pipeline segmentation run on the slice); whether the expert ROI lies inside the found CSF.
* **lumbar_t2_3d** (real 3D stacks, 4 healthy subjects, no CSF reference): on how many of the 20 discs the
  product's own segmentation now yields a ΔSI and a signal grade (before this rule: none), and the values.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from DiscAnalysisLib import levels  # noqa: E402
from DiscAnalysisLib.markers import compute_markers  # noqa: E402
from DiscAnalysisLib.segmentation.api import segment_image  # noqa: E402

CSF = levels.CSF_LABEL


def _with_csf(reference: sitk.Image, csf: np.ndarray) -> sitk.Image:
    """``reference`` with its own CSF replaced by ``csf``."""
    lab = sitk.GetArrayFromImage(reference).copy()
    lab[lab == CSF] = 0
    lab[csf & (lab == 0)] = CSF
    out = sitk.GetImageFromArray(lab)
    out.CopyInformation(reference)
    return out


def phantom() -> None:
    from DiscAnalysisLib.phantom import make_phantom

    ph = make_phantom()
    seg = segment_image(ph.t2w)
    ours = sitk.GetArrayFromImage(seg.labels) == CSF
    truth = sitk.GetArrayFromImage(ph.labels) == CSF
    print(f"## Phantom\nfound CSF {int(ours.sum())} voxels, {100 * (ours & truth).sum() / max(ours.sum(), 1):.1f} % "
          f"inside the dural sac (sac {int(truth.sum())} voxels)")
    m_true = compute_markers(ph.t2w, ph.labels)
    m_found = compute_markers(ph.t2w, _with_csf(ph.labels, ours))
    print("| level | ΔSI, true CSF | ΔSI, found CSF | difference (%) |\n|---|---|---|---|")
    for level in levels.DISCS:
        a, b = m_true[level].delta_si, m_found[level].delta_si
        print(f"| {level} | {a:.1f} | {b:.1f} | {100 * (b - a) / a:+.1f} |")


def radiospineomics(data: Path) -> None:
    from compare_radiospineomics import SLICES, _read2d, labelmap

    print("\n## radiospineomics (expert L1-L2 disc; expert CSF ROI vs the CSF the product finds)")
    print("| slice | found CSF (px) | expert ROI (px) | ROI inside found CSF (%) | ΔSI, expert ROI | ΔSI, found CSF | "
          "difference (%) | CSF median, expert / found |\n|---|---|---|---|---|---|---|---|")
    for sid in SLICES:
        image = _read2d(data / "sample_data" / "images" / f"P0741_756_{sid}.nrrd")
        reference = labelmap(data, sid, image)
        ref_csf = sitk.GetArrayFromImage(reference) == CSF
        found = sitk.GetArrayFromImage(segment_image(image).labels) == CSF
        arr = sitk.GetArrayFromImage(image)
        a = compute_markers(image, reference)["L1-L2"].delta_si
        b = compute_markers(image, _with_csf(reference, found))["L1-L2"].delta_si
        inside = 100 * (found & ref_csf).sum() / ref_csf.sum()
        med = f"{np.median(arr[ref_csf]):.0f} / {np.median(arr[found]):.0f}" if found.any() else "-"
        print(f"| {sid} | {int(found.sum())} | {int(ref_csf.sum())} | {inside:.0f} | {a:.1f} | {b:.1f} | "
              f"{100 * (b - a) / a:+.1f} | {med} |")


def lumbar_t2_3d(data: Path) -> None:
    print("\n## lumbar_t2_3d (own segmentation end to end; healthy subjects 20-40 y)")
    print("| case | CSF voxels | " + " | ".join(levels.DISCS) + " |\n|---|---|" + "---|" * len(levels.DISCS))
    n_dsi = n_all = 0
    for path in sorted(data.glob("*_T2w.nrrd")):
        image = sitk.ReadImage(str(path))
        seg = segment_image(image)
        m = compute_markers(image, seg.labels)
        cells = []
        for level in levels.DISCS:
            r = m[level]
            n_all += 1
            if r.delta_si is not None:
                n_dsi += 1
                cells.append(f"{r.delta_si:.0f} (grade {r.signal_grade})")
            else:
                cells.append("-")
        n_csf = int((sitk.GetArrayFromImage(seg.labels) == CSF).sum())
        print(f"| {path.name.split('_')[0]} | {n_csf} | " + " | ".join(cells) + " |")
    print(f"ΔSI measured on {n_dsi} of {n_all} discs")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("DISCANALYSIS_DATA", REPO.parent / "shared" / "data")))
    args = ap.parse_args(argv)
    phantom()
    if (args.data / "radiospineomics").is_dir():
        radiospineomics(args.data / "radiospineomics")
    if (args.data / "lumbar_t2_3d").is_dir():
        lumbar_t2_3d(args.data / "lumbar_t2_3d")
    return 0


if __name__ == "__main__":
    sys.exit(main())
