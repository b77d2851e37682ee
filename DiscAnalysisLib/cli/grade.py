"""``discanalysis grade IMAGE --out grades.csv``: Pfirrmann grade (1-5) of each lumbar disc.

The discs are located by a labelmap in the DiscAnalysis convention (discs 120..124): the one given with
``--labels``, or else the project's segmentation when it is installed. Output: one CSV row per level
(L1-L2 .. L5-S1) with grade, probabilities, confidence, expected grade, mild/moderate/severe group and
QC; levels that could not be graded have ``status = not graded`` and a reason.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("grade", help="Pfirrmann grade of each lumbar disc (CNN on disc-centred crops)")
    p.add_argument("image", metavar="IMAGE", help="mid-sagittal slice or sagittal stack: NRRD/NIfTI/MHA/DICOM folder/PNG")
    p.add_argument("--out", required=True, help="CSV file to write (one row per disc level)")
    p.add_argument("--labels", metavar="LABELMAP", help="disc labelmap on the image grid (discs 120..124, or see --convention)")
    p.add_argument(
        "--convention", default="spineps", choices=("spineps", "from_l5s1", "from_l1l2"),
        help="label numbering of --labels (default: DiscAnalysis/SPINEPS, discs 120..124)",
    )
    p.add_argument("--pixel-spacing-mm", type=float, help="pixel spacing of a PNG/BMP input (not stored in such files)")
    p.add_argument("--no-tta", action="store_true", help="skip test-time augmentation (faster, slightly less accurate)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from ..errors import InputError
    from ..grading.api import GradingSettings, grade_discs, with_level_naming_notes
    from ..image_io import read_image, spacing_known, write_csv
    from ..levels import convert_labels
    from .main import progress_callback

    image = read_image(args.image, pixel_spacing_mm=args.pixel_spacing_mm)
    if args.labels:
        labels = read_image(args.labels)
        labels_have_geometry = spacing_known(labels)
        arr = convert_labels(sitk.GetArrayFromImage(labels).astype(int), args.convention)
        converted = sitk.GetImageFromArray(arr)
        converted.CopyInformation(labels)
        labels = converted
        if labels.GetSize() != image.GetSize():
            raise InputError(
                f"--labels {args.labels} has size {labels.GetSize()} but the image has {image.GetSize()}; "
                "pass the labelmap made for this image."
            )
        if labels_have_geometry and spacing_known(image) and not _same_geometry(labels, image):
            raise InputError(
                f"--labels {args.labels} has the image's size but not its geometry (spacing/origin/direction); "
                "pass the labelmap made for this image or resample it onto the image."
            )
        labels.CopyInformation(image)  # same grid; a PNG label image has no geometry of its own
        seg_flags: tuple[str, ...] = ()
    else:
        labels, seg_flags = _segment(image, args)
    with progress_callback(args, "grade") as cb:
        results = grade_discs(image, labels, GradingSettings(tta=not args.no_tta), progress=cb)
    results = with_level_naming_notes(results, seg_flags)
    rows = [r.to_row() for r in results]
    write_csv(rows, args.out)
    for r in results:
        if r.graded:
            print(f"{r.level}: grade {r.grade} ({r.group}), confidence {r.confidence:.2f}"
                  + (f" [{'; '.join(r.qc)}]" if r.qc else ""))
        else:
            print(f"{r.level}: not graded ({r.reason})")
    print(f"wrote {args.out}")
    return 0


def _same_geometry(a, b, tol: float = 1e-3) -> bool:
    import numpy as np

    return (
        np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * max(1.0, *map(abs, b.GetSpacing())))
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    )


def _segment(image, args):
    from ..errors import InputError

    try:
        from ..segmentation import segment_image
    except ImportError:
        raise InputError(
            "No --labels given and the DiscAnalysis segmentation is not available in this installation; "
            "pass a disc labelmap with --labels LABELMAP (discs 120..124, or use --convention)."
        ) from None
    from .main import progress_callback

    with progress_callback(args, "segment") as cb:
        seg = segment_image(image, progress=cb)
    return seg.labels, tuple(seg.flags)


