"""Image input/output that always keeps geometry.

Images travel through DiscAnalysis as :class:`SimpleITK.Image` objects: voxel values plus spacing (mm),
origin (mm) and direction cosines in ITK's LPS patient coordinates. Readers:

* NRRD, NIfTI, MHA/MHD and anything else SimpleITK reads, from a file;
* a DICOM series from a folder (or from one of its files), grouped by SeriesInstanceUID; a multi-echo
  series (several EchoTime values in one series) is refused by :func:`read_image` with a pointer to
  :func:`read_dicom_echoes`;
* 2D PNG/BMP/JPEG slices (grey, RGB or RGBA converted to grey), whose pixel spacing is not stored in the
  file: pass ``pixel_spacing_mm`` if you know it, otherwise the image is marked *spacing unknown*
  (:func:`spacing_known` returns False) and later steps report ratios only.

Writers are atomic: data go to a temporary name in the target folder and are renamed into place, so a
crash never leaves a half-written output file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

#: Metadata key marking an image whose pixel spacing is not known (2D bitmaps without spacing).
SPACING_KEY = "DiscAnalysis_spacing"
#: Metadata key holding echo / spin-lock times (ms) as a space-separated list, when a reader found them.
TIMES_KEY = "DiscAnalysis_times_ms"

BITMAP_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".ima", "")

_TAG_ECHO_TIME = "0018|0081"
_TAG_ECHO_NUMBER = "0018|0086"
_TAG_SERIES_DESCRIPTION = "0008|103e"
_TAG_MODALITY = "0008|0060"


# --------------------------------------------------------------------------------------------- reading
def read_image(path: str | os.PathLike, *, pixel_spacing_mm: float | Sequence[float] | None = None) -> sitk.Image:
    """Read a scalar image from a file or a DICOM folder, keeping its geometry.

    ``pixel_spacing_mm`` applies to 2D bitmaps (PNG/BMP/...), which store no spacing; for other formats
    the file's own spacing is used and passing a different one is an error.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"File or folder not found: {p}. Check the path.")
    if p.is_dir():
        return _read_dicom_folder(p)
    if p.stat().st_size == 0:
        raise InputError(f"{p} is empty (0 bytes); it is not an image.")
    if p.suffix.lower() in BITMAP_SUFFIXES:
        return _read_bitmap(p, pixel_spacing_mm)
    if _looks_like_dicom(p):
        return _read_dicom_folder(p.parent, only_series_of=p)
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise InputError(
            f"Cannot read {p} as an image ({_first_line(exc)}). Supported: NRRD, NIfTI, MHA/MHD, a DICOM "
            "folder, PNG/BMP."
        ) from None
    if pixel_spacing_mm is not None:
        _check_spacing_agrees(image, pixel_spacing_mm, p)
    return image


def spacing_known(image: sitk.Image) -> bool:
    """False for images whose pixel spacing was not stored in the file (2D bitmaps read without spacing)."""
    return not (image.HasMetaDataKey(SPACING_KEY) and image.GetMetaData(SPACING_KEY) == "unknown")


def mark_spacing_unknown(image: sitk.Image) -> sitk.Image:
    image.SetMetaData(SPACING_KEY, "unknown")
    return image


def copy_geometry_and_flags(target: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Copy spacing/origin/direction and the DiscAnalysis metadata flags from ``reference``."""
    target.CopyInformation(reference)
    if not spacing_known(reference):
        mark_spacing_unknown(target)
    return target


def times_ms(image: sitk.Image) -> tuple[float, ...] | None:
    """Echo or spin-lock times (ms) a reader found for this image, if any."""
    if image.HasMetaDataKey(TIMES_KEY):
        return tuple(float(t) for t in image.GetMetaData(TIMES_KEY).split())
    return None


def _read_bitmap(p: Path, pixel_spacing_mm) -> sitk.Image:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            im.load()
            mode = im.mode
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                # Composite on black: transparent pixels carry no MR signal.
                rgba = im.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                im = Image.alpha_composite(background, rgba)
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(im).astype(np.float32)
            else:
                # ITU-R 601-2 luma (PIL's "L"), the usual grey conversion of an RGB screenshot.
                arr = np.asarray(im.convert("L")).astype(np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"Cannot read {p} as a {p.suffix.upper()[1:]} image ({exc}).") from None
    if arr.ndim != 2:
        raise InputError(f"{p} is not a 2D image (shape {arr.shape}).")
    image = sitk.GetImageFromArray(arr)
    if pixel_spacing_mm is None:
        mark_spacing_unknown(image)
    else:
        sp = _as_spacing(pixel_spacing_mm, 2)
        image.SetSpacing(sp)
        image.SetMetaData(SPACING_KEY, "known")
    return image


def _as_spacing(value, dim: int) -> tuple[float, ...]:
    vals = np.atleast_1d(np.asarray(value, dtype=float))
    if vals.size == 1:
        vals = np.repeat(vals, dim)
    if vals.size != dim or not np.all(np.isfinite(vals)) or np.any(vals <= 0):
        raise InputError(f"Pixel spacing must be {dim} positive numbers in mm (or one for all axes); got {value}.")
    return tuple(float(v) for v in vals)


def _check_spacing_agrees(image: sitk.Image, pixel_spacing_mm, p: Path) -> None:
    given = _as_spacing(pixel_spacing_mm, image.GetDimension())
    stored = image.GetSpacing()
    if not np.allclose(given, stored, rtol=1e-3):
        raise InputError(
            f"The pixel spacing given ({', '.join(f'{v:g}' for v in given)} mm) disagrees with the spacing "
            f"stored in {p.name} ({', '.join(f'{v:g}' for v in stored)} mm). Drop the option to use the file's."
        )


def _looks_like_dicom(p: Path) -> bool:
    if p.suffix.lower() in (".dcm", ".ima"):
        return True
    if p.suffix:
        return False
    try:
        with open(p, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------- DICOM
@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series found in a folder; ``echo_times_ms`` lists its distinct EchoTime values."""

    series_uid: str
    files: tuple[str, ...]
    description: str = ""
    echo_times_ms: tuple[float, ...] = field(default_factory=tuple)

    @property
    def is_multi_echo(self) -> bool:
        return len(self.echo_times_ms) > 1


def find_dicom_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """List the DICOM series in ``folder`` (not recursive), largest first."""
    folder = Path(folder)
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()
    series = []
    for uid in uids:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        if not files:
            continue
        description, echoes = "", set()
        reader = sitk.ImageFileReader()
        for i, f in enumerate(files):
            reader.SetFileName(f)
            try:
                reader.ReadImageInformation()
            except RuntimeError:
                continue
            if i == 0 and reader.HasMetaDataKey(_TAG_SERIES_DESCRIPTION):
                description = reader.GetMetaData(_TAG_SERIES_DESCRIPTION).strip()
            if reader.HasMetaDataKey(_TAG_ECHO_TIME):
                with contextlib.suppress(ValueError):
                    echoes.add(round(float(reader.GetMetaData(_TAG_ECHO_TIME).strip()), 4))
        series.append(DicomSeries(uid, tuple(files), description, tuple(sorted(echoes))))
    series.sort(key=lambda s: len(s.files), reverse=True)
    return series


def _read_dicom_folder(folder: Path, only_series_of: Path | None = None) -> sitk.Image:
    series = find_dicom_series(folder)
    if not series:
        if not any(folder.iterdir()):
            raise InputError(f"Folder {folder} is empty; expected a DICOM series or an image file.")
        raise InputError(
            f"No readable DICOM series in {folder}. Point to an image file (NRRD, NIfTI, MHA, PNG) or a folder "
            "of DICOM files of one series."
        )
    if only_series_of is not None:
        chosen = [s for s in series if str(only_series_of.resolve()) in {str(Path(f).resolve()) for f in s.files}]
        if not chosen:
            raise InputError(f"{only_series_of} is not a readable DICOM file (corrupt or not DICOM).")
        s = chosen[0]
    else:
        if len(series) > 1:
            listing = "; ".join(f"{x.series_uid} ({len(x.files)} files, '{x.description}')" for x in series)
            raise InputError(
                f"{folder} holds {len(series)} DICOM series: {listing}. Put one series per folder, or pass one of "
                "its files to read the series that file belongs to."
            )
        s = series[0]
    if s.is_multi_echo:
        raise InputError(
            f"The DICOM series in {folder} has {len(s.echo_times_ms)} echo times "
            f"({', '.join(f'{t:g}' for t in s.echo_times_ms)} ms): it is a multi-echo series, not one volume. "
            "Use it as a relaxometry series (discanalysis fit) instead."
        )
    image = _read_series_files(s.files, folder)
    if s.echo_times_ms:
        image.SetMetaData(TIMES_KEY, " ".join(f"{t:g}" for t in s.echo_times_ms))
    return image


def _read_series_files(files: Sequence[str], folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"Cannot read the DICOM series in {folder}: {_first_line(exc)} (corrupt or incomplete files?).") from None
    return image


def read_dicom_echoes(folder: str | os.PathLike) -> tuple[list[sitk.Image], tuple[float, ...]]:
    """Split the (largest) multi-echo DICOM series in ``folder`` into one volume per EchoTime.

    Returns the volumes sorted by time and their echo times in ms. Raises InputError when the echoes do
    not form volumes with the same number of slices.
    """
    folder = Path(folder)
    series = find_dicom_series(folder)
    if not series:
        raise InputError(f"No readable DICOM series in {folder}.")
    return read_dicom_echoes_files(series[0], folder)


# ------------------------------------------------------------------------------------------------ grids
def grid_differences(image: sitk.Image, reference: sitk.Image) -> list[str]:
    """How ``image``'s voxel grid differs from ``reference``'s (dimension, size, spacing, origin, direction);
    empty when they share one grid. Tolerances: spacing 1e-4 relative, origin 1e-3 mm, direction 1e-4."""
    if image.GetDimension() != reference.GetDimension():
        return [f"dimension {image.GetDimension()}D vs {reference.GetDimension()}D"]
    problems = []
    if tuple(image.GetSize()) != tuple(reference.GetSize()):
        problems.append(f"size {image.GetSize()} vs {reference.GetSize()}")
    if not np.allclose(image.GetSpacing(), reference.GetSpacing(), rtol=1e-4, atol=1e-6):
        problems.append(f"spacing {image.GetSpacing()} vs {reference.GetSpacing()}")
    if not np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3):
        problems.append(f"origin {image.GetOrigin()} vs {reference.GetOrigin()}")
    if not np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-4):
        problems.append("direction differs")
    return problems


# --------------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error delete it.

    The temporary name keeps the final suffix (e.g. ``.nrrd``, ``.nii.gz``) so writers that choose a
    format from the extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates the file 0600; give the output the permissions a plain open() would (0666 & ~umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_image(image: sitk.Image, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write ``image`` atomically; the format follows the extension (.nrrd, .nii.gz, .mha, ...)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
        except RuntimeError as exc:
            raise InputError(f"Cannot write {path}: {_first_line(exc)}") from None
    return path


def rows_to_csv(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """CSV text of ``rows`` (one dict per row). Columns: ``columns`` if given (other keys are dropped), else
    every key in first-seen order. None and NaN become empty cells, never the text "None" or "nan"."""
    import csv
    import io
    import math

    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", restval="", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()})
    return buf.getvalue()


def write_csv(rows: Sequence[dict], path: str | os.PathLike, columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as a CSV file atomically (see :func:`rows_to_csv`)."""
    return write_text(rows_to_csv(rows, columns), path)


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a text file (CSV, JSON, HTML) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ description
@dataclass(frozen=True)
class ImageInfo:
    """What ``discanalysis info`` prints: size (i, j, k), spacing (mm), origin (mm, LPS), orientation."""

    path: str
    size: tuple[int, ...]
    spacing_mm: tuple[float, ...] | None
    origin_mm: tuple[float, ...]
    direction: tuple[float, ...]
    orientation: str
    pixel_type: str
    components: int
    times_ms: tuple[float, ...] | None = None
    notes: tuple[str, ...] = ()

    def to_row(self) -> dict:
        return {
            "path": self.path,
            "size": "x".join(str(s) for s in self.size),
            "spacing_mm": "unknown" if self.spacing_mm is None else " ".join(f"{s:g}" for s in self.spacing_mm),
            "origin_mm": " ".join(f"{o:g}" for o in self.origin_mm),
            "orientation": self.orientation,
            "pixel_type": self.pixel_type,
            "times_ms": "" if not self.times_ms else " ".join(f"{t:g}" for t in self.times_ms),
        }


def orientation_code(image: sitk.Image) -> str:
    """Three-letter orientation of the i, j, k axes in the direction each index *increases* (ITK's
    'RAI'-style convention uses the opposite letters; we state where each axis points, e.g. 'PIR' for a
    sagittal stack whose i runs anterior->posterior and j superior->inferior)."""
    dim = image.GetDimension()
    d = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)
    if dim == 2:
        d3 = np.eye(3)
        d3[:2, :2] = d
        d = d3
    letters_pos = ("L", "P", "S")  # LPS: +x points left, +y posterior, +z superior
    letters_neg = ("R", "A", "I")
    code = ""
    for axis in range(min(dim, 3) if dim > 2 else 2):
        col = d[:, axis]
        k = int(np.argmax(np.abs(col)))
        code += letters_pos[k] if col[k] > 0 else letters_neg[k]
    return code


def describe(path: str | os.PathLike) -> list[ImageInfo]:
    """Describe a file or folder: one :class:`ImageInfo` per image (one per series for DICOM folders)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"File or folder not found: {p}. Check the path.")
    if p.is_dir():
        series = find_dicom_series(p)
        if not series:
            if not any(p.iterdir()):
                raise InputError(f"Folder {p} is empty; expected a DICOM series or an image file.")
            raise InputError(f"No readable DICOM series in {p}.")
        infos = []
        for s in series:
            if s.is_multi_echo:
                vols, times = read_dicom_echoes_files(s, p)
                infos.append(describe_image(vols[0], str(p), times, (f"multi-echo series: {len(times)} echoes x {len(s.files) // len(times)} slices",)))
            else:
                infos.append(describe_image(_read_series_files(s.files, p), str(p), s.echo_times_ms or None, ()))
        return infos
    image = read_image(p)
    return [describe_image(image, str(p), times_ms(image), ())]


def read_dicom_echoes_files(series: DicomSeries, folder: Path) -> tuple[list[sitk.Image], tuple[float, ...]]:
    """Like :func:`read_dicom_echoes` for an already listed series."""
    by_time: dict[float, list[str]] = {}
    reader = sitk.ImageFileReader()
    for f in series.files:
        reader.SetFileName(f)
        reader.ReadImageInformation()
        t = round(float(reader.GetMetaData(_TAG_ECHO_TIME).strip()), 4) if reader.HasMetaDataKey(_TAG_ECHO_TIME) else float("nan")
        by_time.setdefault(t, []).append(f)  # keeps GDCM's spatial order within each echo
    times = tuple(sorted(by_time))
    if len({len(v) for v in by_time.values()}) != 1:
        raise InputError(
            f"The echoes in {folder} have different numbers of slices "
            f"({', '.join(f'{t:g} ms: {len(by_time[t])}' for t in times)}); the series is incomplete."
        )
    return [_read_series_files(by_time[t], folder) for t in times], times


def describe_image(image: sitk.Image, path: str = "", times=None, notes=()) -> ImageInfo:
    """Describe an already loaded image (the Slicer module's Inspect step uses this on a volume node's image)."""
    known = spacing_known(image)
    return ImageInfo(
        path=path,
        size=tuple(int(s) for s in image.GetSize()),
        spacing_mm=tuple(float(s) for s in image.GetSpacing()) if known else None,
        origin_mm=tuple(float(o) for o in image.GetOrigin()),
        direction=tuple(float(d) for d in image.GetDirection()),
        orientation=orientation_code(image),
        pixel_type=image.GetPixelIDTypeAsString(),
        components=image.GetNumberOfComponentsPerPixel(),
        times_ms=tuple(times) if times else None,
        notes=tuple(notes) + (() if known else ("pixel spacing unknown (2D bitmap): lengths cannot be given in mm",)),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # ITK messages start with a file/line banner; the useful part is usually the last non-empty line.
    useful = [t.strip() for t in text if t.strip() and not t.strip().startswith("/")]
    return (useful[-1] if useful else (text[0] if text else type(exc).__name__))[:200]
