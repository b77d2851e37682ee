"""Loading a relaxometry series (one volume per echo or spin-lock time) with its times.

Accepted layouts (:func:`load_series`):

* one multi-echo DICOM series in a folder (volumes split by EchoTime, times from the headers);
* one folder or file per time point (DICOM folders, NRRD, NIfTI, MHA...), times from each volume's
  header when stored (DICOM EchoTime, or the ``image_io.TIMES_KEY`` metadata that DiscAnalysis writes);
* a folder of image files that is not DICOM (each file one time point, in name order);
* one 4D NRRD/NIfTI/MHA file (or a vector-valued image) whose last axis is time, with the times from
  the user (or from ``TIMES_KEY`` when it lists one time per volume).

Times given by the user must agree with the headers when the headers store distinct times; when every
volume has the same header time (typical of T1rho series, whose spin-lock time is often not stored,
the EchoTime being the readout's TE), the user's times are used. All volumes must share one grid.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import image_io
from ..errors import InputError
from .fitting import _check_same_grid, validate_times

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


@dataclass(frozen=True, eq=False)
class RelaxationSeries:
    """Volumes sorted by time, their times (ms), where the times came from and what was read."""

    images: tuple[sitk.Image, ...]
    times_ms: tuple[float, ...]
    times_source: str  # "header", "user" or "header and user (agree)"
    sources: tuple[str, ...]

    @property
    def reference(self) -> sitk.Image:
        return self.images[0]


def load_series(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    times_ms: Sequence[float] | None = None,
    *,
    kind: str = "t2",
) -> RelaxationSeries:
    """Read a relaxometry series from ``paths`` (see the module docstring for the layouts)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("No series given: pass a multi-echo DICOM folder, one file/folder per time point, or a 4D image.")
    for p in paths:
        if not p.exists():
            raise InputError(f"File or folder not found: {p}. Check the path.")

    if len(paths) == 1:
        images, header, sources = _read_single(paths[0])
    else:
        images, header, sources = _read_many(paths)
    if len(images) < 2:
        raise InputError(
            f"{sources[0]} holds a single volume; a relaxation fit needs at least 2 time points. Give one file or "
            "folder per echo / spin-lock time, a multi-echo DICOM series, or a 4D image."
        )
    _check_same_grid(images)
    times, source = resolve_times(header, times_ms, sources, kind=kind)
    t_sorted, order = validate_times(times, len(images))
    return RelaxationSeries(
        images=tuple(images[i] for i in order),
        times_ms=tuple(float(t) for t in t_sorted),
        times_source=source,
        sources=tuple(sources[i] for i in order) if len(sources) == len(images) else tuple(sources),
    )


def resolve_times(
    header: Sequence[float] | None,
    user: Sequence[float] | None,
    sources: Sequence[str],
    *,
    kind: str = "t2",
) -> tuple[list[float], str]:
    """Choose the times from the header and/or the user; disagreement is an InputError naming both."""
    what = "spin-lock" if str(kind).lower() == "t1rho" else "echo"
    n = len(header) if header is not None else None
    if user is not None:
        user = [float(u) for u in user]
    header_distinct = header is not None and len({round(h, 4) for h in header}) == len(header)
    if user is not None:
        if header is not None and len(user) != n:
            raise InputError(f"{len(user)} times given (--times-ms) for {n} volumes: give exactly one per volume.")
        if header is not None and header_distinct:
            bad = [
                (s, h, u)
                for s, h, u in zip(_expand(sources, n), header, user, strict=True)
                if abs(h - u) > max(0.01, 1e-3 * abs(h))
            ]
            if bad:
                s, h, u = bad[0]
                raise InputError(
                    f"The {what} time in the header of {s} is {h:g} ms but --times-ms gives {u:g} ms "
                    f"(header times: {', '.join(f'{x:g}' for x in header)}; given: {', '.join(f'{x:g}' for x in user)}). "
                    "Fix --times-ms, or drop it to use the header times."
                )
            return user, "header and user (agree)"
        if header is not None:
            log.info("header times are not distinct (%s ms); using the given %s times", header[0], what)
        return user, "user"
    if header is None:
        raise InputError(
            f"No {what} times are stored in the headers of {', '.join(sources[:3])}{' ...' if len(sources) > 3 else ''}; "
            "give them with --times-ms (one per volume, in ms)."
        )
    if not header_distinct:
        raise InputError(
            f"The headers give the same or repeated time(s) ({', '.join(f'{h:g}' for h in header)} ms) for the "
            f"volumes: they do not hold the {what} times (a T1rho series often stores the readout TE, not the "
            "spin-lock time). Give the times with --times-ms."
        )
    return list(header), "header"


def _expand(sources: Sequence[str], n: int) -> list[str]:
    if len(sources) == n:
        return list(sources)
    return [f"{sources[0]} (volume {i + 1})" for i in range(n)]


def _read_single(p: Path) -> tuple[list[sitk.Image], list[float] | None, list[str]]:
    if p.is_file() and image_io._looks_like_dicom(p):
        p = p.parent
    if p.is_dir():
        series = image_io.find_dicom_series(p)
        if series:
            if series[0].is_multi_echo:
                images, times = image_io.read_dicom_echoes_files(series[0], p)
                return list(images), [float(t) for t in times], [f"{p} (EchoTime {t:g} ms)" for t in times]
            by_number = _group_by_echo_number(series[0].files)
            if by_number is not None:
                images = [image_io._read_series_files(files, p) for files in by_number.values()]
                echo_times = [image_io.times_ms(im) for im in images]
                header = [float(t[0]) for t in echo_times] if all(t and len(t) == 1 for t in echo_times) else None
                return images, header, [f"{p} (EchoNumbers {n})" for n in by_number]
            return [image_io.read_image(p)], None, [str(p)]
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise InputError(
                f"{p} holds neither a DICOM series nor image files ({', '.join(IMAGE_SUFFIXES)}); point to the series."
            )
        return _read_many(files)
    image = image_io.read_image(p)
    volumes = split_4d(image)
    if len(volumes) == 1:
        return volumes, _header_times([image]), [str(p)]
    stored = image_io.times_ms(image)
    header = list(stored) if stored is not None and len(stored) == len(volumes) else None
    return volumes, header, [f"{p} (volume {i + 1})" for i in range(len(volumes))]


_TAG_ECHO_NUMBERS = "0018|0086"


def _group_by_echo_number(files: Sequence[str]) -> dict[int, list[str]] | None:
    """Files of one DICOM series grouped by EchoNumbers, for series whose echoes share (or lack) an
    EchoTime; None when there is a single EchoNumbers value. Unequal group sizes are an InputError."""
    reader = sitk.ImageFileReader()
    groups: dict[int, list[str]] = {}
    for f in files:
        reader.SetFileName(f)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue
        if not reader.HasMetaDataKey(_TAG_ECHO_NUMBERS):
            return None
        try:
            number = int(float(reader.GetMetaData(_TAG_ECHO_NUMBERS).strip().split("\\")[0]))
        except ValueError:
            return None
        groups.setdefault(number, []).append(f)  # keeps GDCM's spatial order within each echo
    if len(groups) < 2:
        return None
    if len({len(v) for v in groups.values()}) != 1:
        raise InputError(
            "The echoes of the DICOM series have different numbers of slices "
            f"({', '.join(f'echo {k}: {len(v)}' for k, v in sorted(groups.items()))}); the series is incomplete."
        )
    return dict(sorted(groups.items()))


def _read_many(paths: Sequence[Path]) -> tuple[list[sitk.Image], list[float] | None, list[str]]:
    images = []
    for p in paths:
        image = image_io.read_image(p)
        if image.GetDimension() > 3 or image.GetNumberOfComponentsPerPixel() > 1:
            raise InputError(f"{p} is a multi-volume image; give either one 4D image or one file per time point.")
        images.append(image)
    return images, _header_times(images), [str(p) for p in paths]


def _header_times(images: Sequence[sitk.Image]) -> list[float] | None:
    times = []
    for image in images:
        t = image_io.times_ms(image)
        if t is None or len(t) != 1:
            return None
        times.append(float(t[0]))
    return times


def split_4d(image: sitk.Image) -> list[sitk.Image]:
    """Split a 4D image (last axis = time) or a vector-valued image into 3D (or 2D) volumes."""
    if image.GetNumberOfComponentsPerPixel() > 1:
        return [
            sitk.VectorIndexSelectionCast(image, i, sitk.sitkFloat32)
            for i in range(image.GetNumberOfComponentsPerPixel())
        ]
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        n = size[3]
        size[3] = 0
        return [sitk.Extract(image, size, [0, 0, 0, i]) for i in range(n)]
    return [image]


def resample_labels_to(labels: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Labelmap on the grid of ``reference`` (nearest neighbour). Identity when the grids already match.

    Raises InputError when no labelled voxel falls inside the reference volume (the two images do not
    overlap in space: wrong file, or missing geometry).
    """
    try:
        _check_same_grid([reference, labels])
        return labels
    except InputError:
        pass
    if labels.GetDimension() != reference.GetDimension():
        raise InputError(
            f"The labelmap is {labels.GetDimension()}D but the series is {reference.GetDimension()}D; give a labelmap "
            "of the series' dimension."
        )
    out = sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())
    had = bool(np.any(sitk.GetArrayViewFromImage(labels)))
    if had and not np.any(sitk.GetArrayViewFromImage(out)):
        raise InputError(
            "The labelmap does not overlap the series in space (after resampling onto the series grid no labelled "
            "voxel remains). Check that both come from the same exam and keep their geometry."
        )
    log.info("labelmap resampled (nearest neighbour) onto the series grid")
    return out
