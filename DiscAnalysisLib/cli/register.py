"""``discanalysis register LABELMAP --out DIR``: register every disc to the level-specific atlas."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "register",
        help="register each disc (labels 120..124) to the disc atlas; warp images, maps and labels",
        description="Disc-by-disc atlas registration (centroid, affine, B-spline with rigidity penalty, elastix). "
        "Writes per disc: atlas_to_patient.h5 / patient_to_atlas.h5 transforms, the registered labelmap, "
        "images, maps and Jacobian determinant on the atlas disc grid, and registration_report.csv.",
    )
    p.add_argument("labelmap", metavar="LABELMAP", help="disc labelmap (SPINEPS labels unless --labels says otherwise)")
    p.add_argument("--images", nargs="*", default=[], metavar="[NAME=]PATH",
                   help="images to warp with linear interpolation (e.g. echoes), in the labelmap's physical space")
    p.add_argument("--maps", nargs="*", default=[], metavar="[NAME=]PATH",
                   help="relaxation maps to warp (interpolation from --map-interpolator)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--dim", type=int, choices=(2, 3), default=None,
                   help="2: register each disc's mid-sagittal slice; 3: whole discs (default: the labelmap's dimension)")
    p.add_argument("--workers", type=int, default=1,
                   help="discs registered in parallel processes, forked from one server that loads elastix once "
                   "(default 1: in this process)")
    p.add_argument("--threads", type=int, default=1, help="ITK threads per worker (default 1)")
    p.add_argument("--labels", default="spineps", choices=("spineps", "from_l5s1", "from_l1l2"),
                   help="label convention of LABELMAP (from_l5s1: discs 1..5 counted upward from L5-S1)")
    p.add_argument("--map-interpolator", choices=("linear", "bspline"), default="linear")
    p.add_argument("--affine-only", action="store_true", help="skip the B-spline stage (for comparison)")
    p.set_defaults(handler=run)


def _named(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        name = name or Path(path).name.split(".")[0]
        out[name] = path
    return out


def run(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from .. import image_io, levels
    from ..errors import InputError
    from ..registration import RegistrationSettings, register_labelmap, summary, write_registration
    from .main import progress_callback

    lab = image_io.read_image(args.labelmap)
    arr = levels.convert_labels(sitk.GetArrayFromImage(lab), args.labels)
    labelmap = sitk.GetImageFromArray(arr)
    labelmap.CopyInformation(lab)
    images = {k: image_io.read_image(v) for k, v in _named(args.images).items()}
    maps = {k: image_io.read_image(v) for k, v in _named(args.maps).items()}
    clash = set(images) & set(maps) | ({"labels", "jacobian"} & (set(images) | set(maps)))
    if clash:
        raise InputError(f"Image/map names {sorted(clash)} are used twice or reserved; name them with NAME=PATH.")
    if args.workers < 1 or args.threads < 1:
        raise InputError("--workers and --threads must be at least 1.")
    settings = RegistrationSettings(threads=args.threads, affine_only=args.affine_only)
    with progress_callback(args, "register") as callback:
        results = register_labelmap(labelmap, images=images, maps=maps, settings=settings, dim=args.dim,
                                    workers=args.workers, map_interpolator=args.map_interpolator,
                                    progress=callback)
    written = write_registration(results, args.out)
    print(summary(results))
    print(f"Report: {written['report']}")
    return 0
