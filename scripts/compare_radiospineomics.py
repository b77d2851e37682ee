#!/usr/bin/env python
"""Compare DiscAnalysis markers with radiospineomics' own results on its 4 sample slices.

Data: ``$DISCANALYSIS_DATA/radiospineomics`` (github.com/TerMcs/radiospineomics sample data: 4 sagittal
T2w slices of one subject, 512 x 512, 0.5469 mm, with L1, L2 vertebral body and L1-L2 disc masks, a CSF
mask, and ``sample_results/conventional_features.csv``, that tool's output).

How radiospineomics defines its numbers (``functions.py``: ``calculate_indices``), all in *pixels*:

* ``disc_diameter``: length of the disc contour's intersection with the line through the midpoints of the
  anterior and posterior vertebral-corner pairs (corners from ``cv2.goodFeaturesToTrack``).
* ``central_ivd_area``: area of the disc polygon between the two perpendiculars at 10 % and 90 % of that
  diameter; ``ivd_height = central_ivd_area / disc_diameter`` (= 0.8 x the mean height over the central
  80 %, the same convention as BianqueNet).
* ``cranial_vb_height`` / ``caudal_vb_height``: body polygon area / body diameter along the line through
  the body's anterior and posterior wall midpoints; ``ivd_height_index = ivd_height / mean(vb heights)``.
* areas are ``cv2.contourArea`` of the outer contour through boundary pixel *centres* (smaller than a
  pixel count by about half a pixel along the perimeter).
* ``img_normalised_delta_si``: |difference between the modes of a 2-component Gaussian mixture| of the disc's
  pixel values / mean image intensity (after removing pixels beyond 3 SD); ``csf_normalised_delta_si``: the
  same difference / mean CSF intensity.

Ours (``DiscAnalysisLib.markers``): disc AP axis = principal axis of the disc mask; ``dh_mm`` = mean height
over the central 80 % of the disc's own AP diameter (so we compare 0.8 x dh_mm / spacing with
``ivd_height``); VB height = body pixel area / body width along the disc's AP axis through the body
centroid; ``dhi`` = dh / mean VB height (we compare 0.8 x dhi with ``ivd_height_index``); ΔSI is BianqueNet's
histogram-peak difference x 255 / CSF mode, a different quantity from either of theirs, so we also
recompute their GMM definition here (scikit-learn, same settings) to show that the ΔSI difference is one of
definition. Their CSF mask is a single 3D slice without slice id; we apply it to each of the 4 images, as
their per-slice ``csf_normalised_delta_si`` values imply.

Usage: ``python scripts/compare_radiospineomics.py [--data DIR] [--markdown FILE]``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from DiscAnalysisLib.markers import compute_markers  # noqa: E402
from DiscAnalysisLib.markers import geometry as geo  # noqa: E402
from DiscAnalysisLib.markers.normal_ranges import BIANQUENET_HEIGHT_FACTOR  # noqa: E402

SHARED = Path(os.environ.get("DISCANALYSIS_DATA", ROOT.parent / "shared" / "data"))
SLICES = ("IMG00004", "IMG00005", "IMG00006", "IMG00007")


def _read2d(path: Path) -> sitk.Image:
    im = sitk.ReadImage(str(path))
    if im.GetDimension() == 3:
        im = im[:, :, 0]
    return im


def labelmap(data: Path, slice_id: str, image: sitk.Image) -> sitk.Image:
    masks = data / "sample_data" / "masks"
    lab = np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8)
    for name, value in (("L1_VB", 20), ("L2_VB", 21), ("L1_L2_IVD", 120)):
        m = sitk.GetArrayFromImage(_read2d(masks / f"{name}-P0741_756_{slice_id}.nrrd")) > 0
        lab[m & (lab == 0)] = value
    csf = sitk.GetArrayFromImage(_read2d(masks / "L1_L2_CSF-P0741_756.nrrd")) > 0
    lab[csf & (lab == 0)] = 61
    out = sitk.GetImageFromArray(lab)
    out.CopyInformation(image)
    return out


def peer_delta_si(image: np.ndarray, disc: np.ndarray, csf: np.ndarray) -> tuple[float, float]:
    """radiospineomics' get_delta_si (image-mean normalised) and the CSF-mean variant."""
    from scipy import stats
    from sklearn import mixture

    mean, std = image.mean(), image.std()
    kept = image[(image < mean + 3 * std) & (image > mean - 3 * std)]
    f = image[disc].astype(float).reshape(-1, 1)
    g = mixture.GaussianMixture(n_components=2, max_iter=1000, random_state=10, covariance_type="full").fit(f)
    x = np.sort(f.ravel())
    y0 = stats.norm.pdf(x, g.means_[0][0], np.sqrt(g.covariances_[0][0][0])) * g.weights_[0]
    y1 = stats.norm.pdf(x, g.means_[1][0], np.sqrt(g.covariances_[1][0][0])) * g.weights_[1]
    delta = abs(x[np.argmax(y0)] - x[np.argmax(y1)])
    return float(delta / kept.mean()), float(delta / image[csf].mean())


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it (the centres an 8-connected contour runs through)."""
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, structure=np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool))


def contour_definition(labels: sitk.Image) -> dict[str, float]:
    """Our disc and body measurements re-expressed with radiospineomics' *contour* areas and lengths (px).

    A contour through boundary pixel centres encloses, by Pick's theorem, ``count - B/2 - 1`` pixels
    (``B`` boundary pixels) and a chord between boundary pixel centres is one pixel shorter than the run of
    pixels it crosses. Same axes, band and body widths as ``compute_markers``; only the area and length
    conventions change, so this isolates the effect of that definition.
    """
    lab = sitk.GetArrayFromImage(labels)
    frame = geo.sagittal_frame(labels)
    sp = (1.0, 1.0)  # pixels
    disc = geo.largest_component(lab == 120)
    axes = geo.principal_axes(geo.slice_points(disc, sp), frame, geo.slice_points(lab == 61, sp).mean(axis=0))
    c0, c1 = geo.chord(disc, sp, axes.centroid, axes.ap)
    diameter = c1 - c0 - 1.0
    t_mid = 0.5 * (c0 + c1)
    pts = geo.slice_points(disc, sp)
    t = (pts - axes.centroid) @ axes.ap
    in_band = np.abs(t - t_mid) <= 0.4 * diameter
    b = _boundary(disc)[disc]  # boundary flags in the order of slice_points
    central_area = float(in_band.sum() - 0.5 * (b & in_band).sum())
    out = {"disc_diameter": diameter, "ivd_height": central_area / diameter,
           "ivd_area": float(disc.sum() - 0.5 * _boundary(disc).sum() - 1)}
    for name, value in (("cranial", 20), ("caudal", 21)):
        vb = geo.largest_component(lab == value)
        vp = geo.slice_points(vb, sp)
        w0, w1 = geo.chord(vb, sp, vp.mean(axis=0), axes.ap)
        out[f"{name}_vb_height"] = float(vb.sum() - 0.5 * _boundary(vb).sum() - 1) / (w1 - w0 - 1.0)
    out["ivd_height_index"] = out["ivd_height"] / (0.5 * (out["cranial_vb_height"] + out["caudal_vb_height"]))
    return out


def compare(data: Path) -> list[dict]:
    peer = {r["id"].split("-")[1].split("_")[-1].removesuffix(".nrrd"): r
            for r in csv.DictReader(open(data / "sample_results" / "conventional_features.csv"))}
    out = []
    f = BIANQUENET_HEIGHT_FACTOR
    for sid in SLICES:
        image = _read2d(data / "sample_data" / "images" / f"P0741_756_{sid}.nrrd")
        labels = labelmap(data, sid, image)
        sp = image.GetSpacing()[0]
        m = compute_markers(image, labels)["L1-L2"]
        arr = sitk.GetArrayFromImage(image).astype(float)
        lab = sitk.GetArrayFromImage(labels)
        p = {k: float(v) for k, v in peer[sid].items() if k != "id"}
        img_dsi, csf_dsi = peer_delta_si(arr, lab == 120, lab == 61)
        cd = contour_definition(labels)
        rows = [
            ("disc diameter (px)", m.ap_diameter_mm / sp, p["disc_diameter"]),
            ("DH: 0.8 x dh (px) vs ivd_height", f * m.dh_mm / sp, p["ivd_height"]),
            ("upper VB height (px)", m.upper_vb_height_mm / sp, p["cranial_vb_height"]),
            ("lower VB height (px)", m.lower_vb_height_mm / sp, p["caudal_vb_height"]),
            ("DHI: 0.8 x dhi vs ivd_height_index", f * m.dhi, p["ivd_height_index"]),
            ("disc area (px^2)", m.area_mm2 / sp**2, p["ivd_area"]),
            ("matched (contour) disc diameter (px)", cd["disc_diameter"], p["disc_diameter"]),
            ("matched (contour) DH = ivd_height (px)", cd["ivd_height"], p["ivd_height"]),
            ("matched (contour) upper VB height (px)", cd["cranial_vb_height"], p["cranial_vb_height"]),
            ("matched (contour) lower VB height (px)", cd["caudal_vb_height"], p["caudal_vb_height"]),
            ("matched (contour) DHI = ivd_height_index", cd["ivd_height_index"], p["ivd_height_index"]),
            ("matched (contour) disc area (px^2)", cd["ivd_area"], p["ivd_area"]),
            ("disc tilt (deg)", abs(m.ap_tilt_deg), 90.0 - p["ivd_inclination"]),
            ("ΔSI / image mean (their GMM definition, recomputed)", img_dsi, p["img_normalised_delta_si"]),
            ("ΔSI / CSF mean (their GMM definition, recomputed)", csf_dsi, p["csf_normalised_delta_si"]),
            ("ΔSI ours (BianqueNet, CSF = 255) vs theirs / CSF mean x 255", m.delta_si, 255 * p["csf_normalised_delta_si"]),
        ]
        for name, ours, theirs in rows:
            out.append({"slice": sid, "marker": name, "ours": ours, "peer": theirs,
                        "diff_pct": 100.0 * (ours - theirs) / theirs if theirs else float("nan")})
    return out


def to_markdown(rows: list[dict]) -> str:
    lines = ["| slice | marker | ours | radiospineomics | difference (%) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['slice']} | {r['marker']} | {r['ours']:.4g} | {r['peer']:.4g} | {r['diff_pct']:+.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "radiospineomics")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown")
    args = ap.parse_args(argv)
    if not (args.data / "sample_results" / "conventional_features.csv").is_file():
        print(f"radiospineomics data not found under {args.data}", file=sys.stderr)
        return 2
    rows = compare(args.data)
    text = to_markdown(rows)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
