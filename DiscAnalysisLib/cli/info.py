"""``discanalysis info FILE``: size, spacing, orientation and echo/spin-lock times of an image."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="describe an image file or DICOM folder (size, spacing, orientation, times)")
    p.add_argument("path", metavar="FILE", help="NRRD/NIfTI/MHA/PNG/BMP file or a DICOM folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..image_io import describe

    infos = describe(args.path)
    if args.json:
        print(json.dumps([{**i.to_row(), "notes": list(i.notes)} for i in infos], indent=2))
        return 0
    for info in infos:
        row = info.to_row()
        print(f"{row['path']}")
        print(f"  size (i x j x k): {row['size']}")
        print(f"  spacing (mm):     {row['spacing_mm']}")
        print(f"  origin (mm, LPS): {row['origin_mm']}")
        print(f"  orientation:      {row['orientation']} (direction each index axis points to)")
        print(f"  pixel type:       {row['pixel_type']}")
        if row["times_ms"]:
            print(f"  times (ms):       {row['times_ms']}")
        for note in info.notes:
            print(f"  note: {note}")
    return 0
