#!/usr/bin/env python
"""Leave-one-subject-out disc Dice on the annotators' own grid (4.4 mm native slices) instead of the 1 mm resampling.

    DISCANALYSIS_DATA=../shared/data python scripts/native_resolution_dice.py runs/cont

The lumbar_t2_3d references are the native 0.43 x 0.43 x 4.4 mm annotations resampled to 1 mm; the same
subjects' native labels are in lumbar_disc_labels_native, cropped, without origin. For each held-out subject
the native crop is located in the 1 mm volume (translation, and a possible left-right flip, that best
reproduces the native labels from the 1 mm reference: centroid start, then a coordinate search down to
0.25 mm), the fold's segmentation (weights ``FOLDS/fold<s>/weights.pt``, never trained on that subject) is
sampled at the native voxel centres (and, second number, by majority over the 1 mm slices within +-2 mm of
each native slice) and compared with the native labels per level. Also printed: the 1 mm reference sampled
back the same way, i.e. how well the evaluation's own reference agrees with what was drawn.
"""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'scripts'))
import numpy as np  # noqa: E402
import segmentation_data as sd  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from DiscAnalysisLib import levels as lv  # noqa: E402
from DiscAnalysisLib.resources import sha256_of  # noqa: E402
from DiscAnalysisLib.segmentation.api import SegmentationSettings, segment_image  # noqa: E402

NAT = sd.DATA / 'lumbar_disc_labels_native'
SP = np.array([4.4, 0.4296875, 0.4296875])  # native (k, j, i) spacing


def native_points(shape, off, flip):
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing='ij')
    kk = (k * SP[0]) * (-1 if flip else 1) + off[0]
    return np.stack([kk, j * SP[1] + off[1], i * SP[2] + off[2]], -1)  # (k, j, i) in 1 mm index units


def sample(vol, pts):
    idx = np.rint(pts).astype(int)
    ok = np.all((idx >= 0) & (idx < np.array(vol.shape)), axis=-1)
    out = np.zeros(pts.shape[:-1], vol.dtype)
    out[ok] = vol[tuple(idx[ok].T)]
    return out


def agreement(ref1, nat, off, flip):
    s = sample(ref1, native_points(nat.shape, off, flip))
    both = (s > 0) | (nat > 0)
    return float((s[both] == nat[both]).mean())


def align(ref1, nat):
    best = None
    for flip in (False, True):
        c_nat = np.array([np.array(ndi.center_of_mass(nat == v)) * SP * (np.array([-1, 1, 1]) if flip else 1) for v in range(1, 6)])
        c_ref = np.array([ndi.center_of_mass(ref1 == v) for v in range(1, 6)])
        off = (c_ref - c_nat).mean(0)
        for step in (1.0, 0.5, 0.25):
            for _ in range(6):
                cands = [off + (np.array(d) - 1) * step for d in np.ndindex(3, 3, 3)]
                scores = [agreement(ref1, nat, c, flip) for c in cands]
                new = cands[int(np.argmax(scores))]
                if np.allclose(new, off):
                    break
                off = new
        sc = agreement(ref1, nat, off, flip)
        if best is None or sc > best[0]:
            best = (sc, off, flip)
    return best


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def main() -> None:
    folds = sys.argv[1] if len(sys.argv) > 1 else str(REPO / 'runs' / 'cont')
    allrows = []
    for s in sd.SUBJECTS_3D:
        img, lab = sd.load_3d_subject(s)
        ref1 = sitk.GetArrayFromImage(lab).astype(np.uint8)  # 1..5 from L5-S1
        nat = sitk.GetArrayFromImage(sitk.ReadImage(str(NAT / f'{s}_discs.nrrd'))).astype(np.uint8)
        sc, off, flip = align(ref1, nat)
        w = f'{folds}/fold{s}/weights.pt'
        res = segment_image(img, SegmentationSettings(weights_path=w, weights_sha256=sha256_of(w)))
        pred = sitk.GetArrayFromImage(res.labels)
        pts = native_points(nat.shape, off, flip)
        # the prediction at the native slice centres, and at the 1 mm slices within +-2 mm of them (slab vote)
        shifted = []
        for dk in (-2, -1, 0, 1, 2):
            p2 = pts.copy()
            p2[..., 0] += dk
            shifted.append(sample(pred, p2))
        centre = shifted[2]
        nat_l = lv.convert_labels(nat.astype(int), 'from_l5s1')
        ref_l = lv.convert_labels(sample(ref1, pts).astype(int), 'from_l5s1')
        row = []
        for name in lv.DISCS:
            code = lv.DISC_LABELS[name]
            truth = nat_l == code
            votes = np.mean([x == code for x in shifted], axis=0)
            row.append((name, dice(centre == code, truth), dice(votes >= 0.5, truth), dice(ref_l == code, truth)))
        allrows += [(s,) + r for r in row]
        print(s, f'align agreement {sc:.3f} offset {np.round(off, 2)} flip {flip}',
              ' '.join(f'{r[0]} {r[1]:.3f}/{r[2]:.3f} (ref {r[3]:.3f})' for r in row), flush=True)
    m = np.array([r[2:] for r in allrows], float).mean(0)
    print(f'mean over {len(allrows)} discs: prediction at native slice centres {m[0]:.3f}, slab majority {m[1]:.3f}, '
          f'1 mm reference resampled back {m[2]:.3f}')


if __name__ == '__main__':
    main()
