"""Synthetic lumbar spine phantom with known truth, for the demo and the unit tests.

**Synthetic data, not clinically calibrated.** The phantom is a cartoon of a sagittal lumbar MRI: the
proportions and the relaxation times are plausible, but nothing about it may be used to claim clinical
accuracy of any method. It exists so that every step (segmentation post-processing, markers, T2/T1rho
fitting, registration) can be checked against an answer known exactly.

What it contains
----------------
A sagittal multi-slice volume with the vertebral bodies L1..L5 and S1 (S1 is cut by the lower edge of the
default field of view), the five discs L1-L2..L5-S1 each with a nucleus pulposus and an annulus fibrosus,
the CSF-filled dural sac posterior to the bodies, pedicles, spinous processes, ligaments, paraspinal and
prevertebral muscle, epidural and subcutaneous fat, skin and air behind the back. There is no T12 above
L1 (the column above L1 is soft tissue), so the level names are never ambiguous.

Geometry (same orientation as the ``lumbar_t2_3d`` data set): index ``i`` runs anterior -> posterior, ``j``
superior -> inferior and ``k`` from the patient's left to right (direction matrix
``(0, 0, -1, 1, 0, 0, 0, -1, 0)`` in ITK's LPS). Arrays from :func:`SimpleITK.GetArrayFromImage` are
``[k, j, i]``. The origin puts the centre of the ``i``/``j`` extent at 0 mm and the mid-sagittal slice
``k = size[2] // 2`` at LPS x = 0, so that slice is the anatomical midline. ``size[2] == 1`` gives a
single mid-sagittal slice (a 3D image one slice thick).

Shapes are defined in millimetres along a *column coordinate*: ``s`` runs along the spine (inferior
positive, 0 at the centre of the S1 superior endplate's posterior edge) and ``u`` across it (posterior
positive, 0 at the posterior wall of the vertebral bodies). With ``lordosis_deg > 0`` the column is a
circular arc (concave posteriorly, apex at mid-column) whose L1 superior and S1 superior endplates differ
by ``lordosis_deg``, so each disc is tilted a few degrees more than the one above it and is slightly
wedge-shaped (taller anteriorly), as in a real lordotic spine; every height quoted here and in
:attr:`Phantom.disc_height_mm` is the true height at the structure's AP centre. Bodies and discs are superellipsoids
(flat endplates, rounded rims, oval axial section ~38-40 mm wide), so they span the central 9 slices of
the default 4 mm stack and shrink toward the lateral edges. Discs are biconvex, bulge 0.7 mm beyond the
bodies, and the vertebral endplates follow them (concave endplates, lined by ~1 mm of cortical bone).

=============  =========  ===========  =============================================
structure      AP (mm)    height (mm)  notes
=============  =========  ===========  =============================================
L1..L5, S1     33..38     25..27, 30   body only; posterior elements are not labelled
discs (I)      35..39     8.5..12      ``HEALTHY_DISC_HEIGHT_MM``, lower discs taller
nucleus        45 % of    72 % of      ellipsoid centred slightly posterior
               disc AP    disc height
dural sac      13         whole FOV    ends ~20 mm below the S1 endplate
=============  =========  ===========  =============================================

Tissue properties
-----------------
Each voxel has an apparent proton density ``S0`` (arbitrary units, including the T1 saturation of a
T2-weighted TR, which is why CSF's S0 is below the healthy nucleus's), a T2 and a T1rho. Every image is
mono-exponential in these maps: ``S0 * exp(-TE / T2)`` for the multi-echo T2 series and the T2-weighted
image, ``S0 * exp(-TSL / T1rho)`` for the spin-lock series. Values are of the order reported in the
literature (e.g. disc T2 ~ 60-130 ms falling with Pfirrmann grade: Marinelli et al. 2009, Stelzeneder
et al. 2012; nucleus T1rho of a similar order and likewise falling: Blumenkrantz et al. 2010;
Menezes-Reis et al., Quant Imaging Med Surg 2016, the source of ``lumbar_t2_3d``),
rounded and chosen so that contrasts look right on a T2-weighted image. They are **not** calibrated to
any scanner or field strength.

=============  ======  ========  ===========
tissue         S0      T2 (ms)   T1rho (ms)
=============  ======  ========  ===========
CSF            600     1000      1000
annulus        600     55        65
marrow         900     50        55
cortical bone  100     10        12
ligament       150     15        20
muscle         550     35        40
fat            900     100       110
skin           500     30        35
air            0       0 (none)  0 (none)
=============  ======  ========  ===========

Disc degeneration follows the Pfirrmann et al. criteria (Spine 2001;26:1873-8): with increasing grade the
nucleus loses signal (S0, T2 and T1rho fall), the nucleus/annulus boundary blurs, horizontal bands appear
(an intranuclear cleft, grades II-IV) and the disc height falls (normal for I-II, slightly lower for III,
moderately for IV, collapsed for V):

=====  ======  ========  ===========  ==============  =============  ===========
grade  S0      T2 (ms)   T1rho (ms)   boundary width  height factor  cleft depth
=====  ======  ========  ===========  ==============  =============  ===========
I      1000    120       130          0.04            1.00           0
II     950     105       115          0.08            1.00           0.25
III    850     85        95           0.20            0.90           0.30
IV     750     70        80           0.35            0.75           0.30
V      650     58        68           0.55            0.50           0
=====  ======  ========  ===========  ==============  =============  ===========

The nucleus and annulus *parameters* (not signals) are blended with a weight
``w = (1 - tanh((r - 1) / width)) / 2``, ``r`` being the normalised ellipsoidal radius of the nucleus, so each
voxel stays mono-exponential and the truth maps are exact. The cleft multiplies the nucleus parameters
by ``1 - depth * exp(-(t / (0.1 h))**2)`` (``t``: distance from the disc mid-plane, ``h``: disc height).

Noise
-----
``snr`` is ``S0_REFERENCE / sigma`` where ``S0_REFERENCE`` = 1000 is the S0 of the brightest tissue in the
tables (the grade I nucleus, whether or not a disc of that grade is present) and ``sigma`` is the
standard deviation of the Gaussian noise added to each of the real and imaginary channels before taking
the magnitude (Rician noise). The same ``sigma`` applies to every image; each image gets independent noise
from a generator seeded by ``(seed, series, index)``, so the noise of one image does not depend on how
many other time points were asked for. ``snr = math.inf`` gives noise-free images. The anatomy depends
only on the settings, never on the seed.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import image_io, levels
from .errors import InputError

#: Direction cosines (row-major, ITK LPS) of the ``lumbar_t2_3d`` scans: i -> posterior, j -> inferior,
#: k -> patient's right.
DIRECTION: tuple[float, ...] = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)

#: Metadata key set on every phantom image (and kept in NRRD headers), so a written file says what it is.
SYNTHETIC_KEY = "DiscAnalysis_synthetic"
SYNTHETIC_NOTE = "synthetic phantom (DiscAnalysisLib.phantom), not patient data, not clinically calibrated"

#: Tissue classes of :attr:`Phantom.tissues`; the value of a voxel is the index in this tuple.
TISSUES: tuple[str, ...] = (
    "air", "csf", "nucleus", "annulus", "marrow", "cortical_bone", "ligament", "muscle", "fat", "skin",
)
TISSUE_CODE: dict[str, int] = {name: code for code, name in enumerate(TISSUES)}


@dataclass(frozen=True)
class TissueProperties:
    """Apparent proton density (a.u.), T2 and T1rho (ms) of one tissue; 0 ms marks 'no signal'."""

    s0: float
    t2_ms: float
    t1rho_ms: float


TISSUE_PROPERTIES: dict[str, TissueProperties] = {
    "air": TissueProperties(0.0, 0.0, 0.0),
    "csf": TissueProperties(600.0, 1000.0, 1000.0),
    "annulus": TissueProperties(600.0, 55.0, 65.0),
    "marrow": TissueProperties(900.0, 50.0, 55.0),
    "cortical_bone": TissueProperties(100.0, 10.0, 12.0),
    "ligament": TissueProperties(150.0, 15.0, 20.0),
    "muscle": TissueProperties(550.0, 35.0, 40.0),
    "fat": TissueProperties(900.0, 100.0, 110.0),
    "skin": TissueProperties(500.0, 30.0, 35.0),
}


@dataclass(frozen=True)
class DiscDegeneration:
    """Nucleus properties and disc shape for one Pfirrmann grade (see the module docstring)."""

    nucleus: TissueProperties
    #: Width of the nucleus/annulus transition, as a fraction of the nucleus semi-axes.
    boundary_width: float
    #: Disc height relative to the healthy height of its level.
    height_factor: float
    #: Relative signal loss at the centre of the horizontal intranuclear cleft (0 = none).
    cleft_depth: float


PFIRRMANN: dict[int, DiscDegeneration] = {
    1: DiscDegeneration(TissueProperties(1000.0, 120.0, 130.0), 0.04, 1.00, 0.0),
    2: DiscDegeneration(TissueProperties(950.0, 105.0, 115.0), 0.08, 1.00, 0.25),
    3: DiscDegeneration(TissueProperties(850.0, 85.0, 95.0), 0.20, 0.90, 0.30),
    4: DiscDegeneration(TissueProperties(750.0, 70.0, 80.0), 0.35, 0.75, 0.30),
    5: DiscDegeneration(TissueProperties(650.0, 58.0, 68.0), 0.55, 0.50, 0.0),
}

#: S0 of the brightest tissue in the tables (grade I nucleus); ``sigma = S0_REFERENCE / snr``.
S0_REFERENCE: float = max([p.s0 for p in TISSUE_PROPERTIES.values()] + [g.nucleus.s0 for g in PFIRRMANN.values()])

#: Disc height at the disc centre for a Pfirrmann grade I disc (mm).
HEALTHY_DISC_HEIGHT_MM: dict[str, float] = {
    "L1-L2": 8.5, "L2-L3": 9.5, "L3-L4": 10.5, "L4-L5": 11.5, "L5-S1": 12.0,
}
#: Vertebral body height (mm, at the body's AP centre) and antero-posterior depth (mm).
VERTEBRA_HEIGHT_MM: dict[str, float] = {"L1": 25.0, "L2": 26.0, "L3": 27.0, "L4": 27.0, "L5": 27.0, "S1": 30.0}
VERTEBRA_DEPTH_MM: dict[str, float] = {"L1": 33.0, "L2": 34.0, "L3": 35.0, "L4": 36.0, "L5": 37.0, "S1": 38.0}

_BODY_HALF_WIDTH_MM = 20.0  # lateral half-width of bodies and discs
_DISC_BULGE_MM = 0.7  # discs reach this far beyond the bodies' anterior and posterior walls
_CORTEX_MM = 1.0
_NUCLEUS_AP_FRACTION = 0.45  # nucleus AP length / disc AP length
_NUCLEUS_HEIGHT_FRACTION = 0.72  # nucleus height / disc height at the centre
_AXIAL_EXPONENT = 2.5  # superellipse exponent of the axial (u, z) section: an oval
_SAGITTAL_EXPONENT = 8.0  # exponent along the column: flat endplates with rounded rims
# Column layout in the image frame (mm from the volume centre; x posterior, y inferior).
_X_POSTERIOR_WALL_MM = -12.0  # posterior wall of the bodies at the apex of the lordosis
_Y_S1_ENDPLATE_MM = 88.0  # centre of the S1 superior endplate
_X_SKIN_MM = 56.0  # skin surface (straight; the back does not follow the column's curve)
_SKIN_MM = 2.0
# Bands posterior to the bodies (u, mm).
_PLL_END = 1.5  # posterior longitudinal ligament
_CANAL_CENTRE, _CANAL_HALF_AP, _CANAL_HALF_WIDTH = 8.5, 6.5, 9.0
_FLAVUM = (15.0, 17.0)  # ligamentum flavum
_MUSCLE_END = 45.0  # paraspinal muscle / spinous processes end here; subcutaneous fat follows
_LATERAL_FAT_MM = 18.0  # epidural/foraminal fat and pedicles reach this far from the midline
_SAC_END_BELOW_S1_MM = 20.0
_S1_LABEL_HEIGHT_MM = 30.0


@dataclass(frozen=True)
class PhantomSettings:
    """How to build a phantom.

    ``size`` is (i, j, k) = (anterior->posterior, superior->inferior, left->right slice index) voxels;
    ``spacing_mm`` the voxel size along the same axes. ``pfirrmann_grades`` gives one grade (1-5) per disc,
    L1-L2 first. ``snr`` is S0 of the brightest tissue / Rician sigma (``math.inf``: no noise).
    ``lordosis_deg`` is the angle between the L1 and S1 superior endplates (0: a straight column).
    ``t2w_echo_time_ms`` is the echo time of the T2-weighted image. ``size[2] == 1`` gives a single
    mid-sagittal slice. The anatomy is in millimetres, centred in the field of view, and depends on the
    grades and ``lordosis_deg`` only; ``seed`` drives the noise alone. Invalid values raise InputError.
    """

    seed: int = 0
    size: tuple[int, int, int] = (160, 256, 12)
    spacing_mm: tuple[float, float, float] = (0.9, 0.9, 4.0)
    pfirrmann_grades: tuple[int, int, int, int, int] = (1, 2, 2, 3, 4)
    snr: float = 50.0
    t2_echo_times_ms: tuple[float, ...] = (10.0, 25.0, 40.0, 55.0, 70.0, 85.0)
    t1rho_spin_lock_ms: tuple[float, ...] = (1.0, 10.0, 30.0, 60.0)
    t2w_echo_time_ms: float = 90.0
    lordosis_deg: float = 24.0

    def __post_init__(self) -> None:
        def fix(name: str, convert, valid, expected: str) -> None:
            value = getattr(self, name)
            try:
                converted = convert(value)
                ok = valid(converted)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise InputError(f"Phantom setting {name} must be {expected}; got {value!r}.")
            object.__setattr__(self, name, converted)

        def numbers(kind):
            return lambda v: tuple(kind(x) for x in v)

        fix("seed", lambda v: int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else None,
            lambda v: v is not None and v >= 0, "a non-negative integer")
        fix("size", numbers(int), lambda v: len(v) == 3 and min(v) >= 1 and v == tuple(self.size),
            "three positive integers (i, j, k)")
        fix("spacing_mm", numbers(float), lambda v: len(v) == 3 and all(math.isfinite(x) and x > 0 for x in v),
            "three positive numbers (mm)")
        fix("pfirrmann_grades", numbers(int),
            lambda v: len(v) == len(levels.DISCS) and all(g in PFIRRMANN for g in v) and v == tuple(self.pfirrmann_grades),
            f"one Pfirrmann grade (1-5) per disc, {', '.join(levels.DISCS)}")
        fix("snr", float, lambda v: v > 0, "a positive number (math.inf for no noise)")
        for name in ("t2_echo_times_ms", "t1rho_spin_lock_ms"):
            fix(name, numbers(float), lambda v: len(v) > 0 and all(math.isfinite(x) and x >= 0 for x in v),
                "a non-empty list of non-negative times in ms")
        fix("t2w_echo_time_ms", float, lambda v: math.isfinite(v) and v >= 0, "a non-negative time in ms")
        fix("lordosis_deg", float, lambda v: 0.0 <= v <= 60.0, "an angle between 0 and 60 degrees")

    @property
    def noise_sigma(self) -> float:
        """Standard deviation of the noise in each of the real and imaginary channels (0 when noise-free)."""
        return 0.0 if math.isinf(self.snr) else S0_REFERENCE / self.snr


@dataclass(frozen=True)
class Phantom:
    """A generated phantom. All images share one geometry (size, spacing, origin, direction).

    ``t2w``: T2-weighted image at ``settings.t2w_echo_time_ms`` (float32, Rician noise).
    ``labels``: uint8 in the :mod:`~DiscAnalysisLib.levels` convention (bodies 20-24, 26; discs 120-124;
    CSF ``levels.CSF_LABEL``). ``tissues``: uint8 index into :data:`TISSUES`. ``nucleus_mask``: uint8, 1
    inside the nucleus (blend weight >= 0.5). ``s0``, ``t2_ms``, ``t1rho_ms``: float32 truth maps (0 in air).
    ``t2_series`` / ``t1rho_series``: one float32 image per echo / spin-lock time, each carrying its single
    time in the ``image_io.TIMES_KEY`` metadata. ``disc_height_mm``: construction height at each disc's
    centre; ``disc_centers_mm``: that centre as an LPS point on the mid-sagittal plane; ``disc_tilt_deg``:
    angle of the disc mid-plane to the i axis in the sagittal plane, positive when its posterior edge is
    higher. ``noise_sigma``: the Rician sigma used (0 for noise-free).
    """

    settings: PhantomSettings
    t2w: sitk.Image
    labels: sitk.Image
    tissues: sitk.Image
    nucleus_mask: sitk.Image
    s0: sitk.Image
    t2_ms: sitk.Image
    t1rho_ms: sitk.Image
    t2_series: tuple[sitk.Image, ...]
    t1rho_series: tuple[sitk.Image, ...]
    t2_echo_times_ms: tuple[float, ...]
    t1rho_spin_lock_ms: tuple[float, ...]
    grades: dict[str, int]
    disc_height_mm: dict[str, float]
    disc_centers_mm: dict[str, tuple[float, float, float]]
    disc_tilt_deg: dict[str, float]
    noise_sigma: float
    synthetic: bool = True  # always: a marker for code that receives a Phantom


# ------------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class _Segment:
    name: str
    s_top: float  # along the column at the posterior wall (mm, inferior positive)
    s_bottom: float
    depth: float  # antero-posterior extent (mm)
    height: float  # true height at the segment's AP centre (mm)

    @property
    def u_centre(self) -> float:
        return -0.5 * self.depth

    @property
    def s_centre(self) -> float:
        return 0.5 * (self.s_top + self.s_bottom)

    @property
    def stretch(self) -> float:
        """Millimetres of ``s`` per true millimetre along the column at the segment's AP centre."""
        return (self.s_bottom - self.s_top) / self.height


class _Column:
    """The spine's axis: image-plane points (x posterior, y inferior; mm) <-> column coordinates (s, u).

    ``s`` is arc length along the posterior wall of the bodies (radius ``radius``), ``u`` the distance
    posterior of it. Off that wall, 1 mm of ``s`` is ``(radius - u) / radius`` true mm: the column fans out
    anteriorly, which is what makes lordotic discs wedge-shaped.
    """

    def __init__(self, length_mm: float, radius: float) -> None:
        self.s_apex = -0.5 * length_mm
        self.x0, self.y0 = _X_POSTERIOR_WALL_MM, _Y_S1_ENDPLATE_MM + self.s_apex
        self.radius = radius

    def to_column(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if math.isinf(self.radius):
            s, u = np.broadcast_arrays(self.s_apex + (y - self.y0), x - self.x0)
            return s.copy(), u.copy()
        r = self.radius
        cx = self.x0 + r
        theta = np.arctan2(y - self.y0, cx - x)
        return self.s_apex + r * theta, r - np.hypot(cx - x, y - self.y0)

    def to_image(self, s: float, u: float) -> tuple[float, float]:
        if math.isinf(self.radius):
            return self.x0 + u, self.y0 + (s - self.s_apex)
        r = self.radius
        theta = (s - self.s_apex) / r
        return self.x0 + r - (r - u) * math.cos(theta), self.y0 + (r - u) * math.sin(theta)

    def tilt_deg(self, s: float) -> float:
        return 0.0 if math.isinf(self.radius) else math.degrees((s - self.s_apex) / self.radius)


def _layout(grades: tuple[int, ...], lordosis_deg: float) -> tuple[list[_Segment], list[_Segment], _Column]:
    """Stack S1, L5-S1, L5, ..., L1 upward from the S1 endplate (s = 0) on an arc of ``lordosis_deg``.

    Each segment is given its nominal height at its own AP centre; on the arc that takes
    ``height * R / (R - u_centre)`` of ``s``. R is chosen so that the L1 and S1 superior endplates (at the
    posterior wall) differ by ``lordosis_deg``: a fixed point, reached in a few iterations since R >> u.
    """
    parts: list[tuple[str, float, float]] = []  # (name, true height, depth), L1 first
    for idx, disc in enumerate(levels.DISCS):
        upper, lower = levels.VERTEBRAE[idx], levels.VERTEBRAE[idx + 1]
        parts.append((upper, VERTEBRA_HEIGHT_MM[upper], VERTEBRA_DEPTH_MM[upper]))
        height = HEALTHY_DISC_HEIGHT_MM[disc] * PFIRRMANN[grades[idx]].height_factor
        parts.append((disc, height, 0.5 * (VERTEBRA_DEPTH_MM[upper] + VERTEBRA_DEPTH_MM[lower])))
    angle = math.radians(lordosis_deg)
    radius = math.inf
    if angle > 0:
        radius = sum(h for _, h, _ in parts) / angle
        for _ in range(50):
            new = sum(h * radius / (radius + 0.5 * d) for _, h, d in parts) / angle
            converged = abs(new - radius) < 1e-9 * radius
            radius = new
            if converged:
                break

    def s_length(height: float, depth: float) -> float:
        return height if math.isinf(radius) else height * radius / (radius + 0.5 * depth)

    segments, s = [], 0.0
    for name, height, depth in reversed(parts):
        length = s_length(height, depth)
        segments.append(_Segment(name, s - length, s, depth, height))
        s -= length
    segments.reverse()
    s1 = _Segment("S1", 0.0, s_length(_S1_LABEL_HEIGHT_MM, VERTEBRA_DEPTH_MM["S1"]), VERTEBRA_DEPTH_MM["S1"],
                  _S1_LABEL_HEIGHT_MM)
    bodies = [x for x in segments if x.name in levels.VERTEBRA_LABELS] + [s1]
    discs = [x for x in segments if x.name in levels.DISC_LABELS]
    return bodies, discs, _Column(-s, radius)


def _index_centre(size: tuple[int, int, int]) -> np.ndarray:
    return np.array([(size[0] - 1) / 2.0, (size[1] - 1) / 2.0, float(size[2] // 2)])


def _origin(size: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    d = np.asarray(DIRECTION).reshape(3, 3)
    return tuple(float(v) + 0.0 for v in -d @ (_index_centre(size) * np.asarray(spacing)))


def _superellipse(terms: list[np.ndarray], exponent: float) -> np.ndarray:
    total = terms[0] ** exponent
    for t in terms[1:]:
        total = total + t ** exponent
    return total


@dataclass
class _Truth:
    tissue: np.ndarray  # uint8 [k, j, i], index into TISSUES
    labels: np.ndarray  # uint8 [k, j, i], levels convention
    s0: np.ndarray  # float32 [k, j, i]
    t2_ms: np.ndarray
    t1rho_ms: np.ndarray
    disc_height_mm: dict[str, float]
    disc_centre_index: dict[str, tuple[float, float, float]]  # continuous (i, j, k)
    disc_tilt_deg: dict[str, float]


def _anatomy(settings: PhantomSettings) -> _Truth:
    """Rasterise the anatomy on the voxel centres (no partial-volume averaging)."""
    ni, nj, nk = settings.size
    si, sj, sk = settings.spacing_mm
    c = _index_centre(settings.size)
    x = ((np.arange(ni) - c[0]) * si)[None, :]  # (1, ni): mm, posterior positive
    y = ((np.arange(nj) - c[1]) * sj)[:, None]  # (nj, 1): mm, inferior positive
    z = ((np.arange(nk) - c[2]) * sk).astype(np.float32)[:, None, None]  # (nk, 1, 1): mm, lateral
    az = np.abs(z)
    bodies, discs, column = _layout(settings.pfirrmann_grades, settings.lordosis_deg)
    s64, u64 = column.to_column(x, y)
    s, u = s64.astype(np.float32), u64.astype(np.float32)  # (nj, ni)
    shape = (nk, nj, ni)
    code = TISSUE_CODE

    # Soft-tissue bands across the column; the structures below overwrite them.
    xb = np.broadcast_to(x, (nj, ni))
    outside = xb >= _X_SKIN_MM  # skin and air: nothing anatomical reaches there
    plane = np.full((nj, ni), code["muscle"], dtype=np.uint8)
    plane[u >= _MUSCLE_END] = code["fat"]
    plane[outside] = code["skin"]
    plane[xb >= _X_SKIN_MM + _SKIN_MM] = code["air"]
    tissue = np.broadcast_to(plane, shape).copy()
    near_midline = az < _LATERAL_FAT_MM
    foramen = (u >= 0) & (u < _FLAVUM[1]) & ~outside
    tissue[foramen[None] & near_midline] = code["fat"]  # epidural / foraminal fat
    inner = az < _CANAL_HALF_WIDTH
    tissue[(((u >= 0) & (u < _PLL_END)) | ((u >= _FLAVUM[0]) & (u < _FLAVUM[1])))[None] & inner] = code["ligament"]
    interspinous = (u >= _FLAVUM[1]) & (u < _MUSCLE_END)
    tissue[interspinous[None] & (az <= 3.0)] = code["ligament"]

    # Posterior elements of each vertebra: pedicles (lateral to the sac) and the spinous process.
    for b in bodies:
        h = min(b.height, VERTEBRA_HEIGHT_MM["L5"])
        t = (s - b.s_top) / b.stretch
        pedicle = foramen & (t >= 0.1 * h) & (t < 0.55 * h)
        tissue[pedicle[None] & (az >= _CANAL_HALF_WIDTH) & near_midline] = code["marrow"]
        slant = t - 0.35 * (u - _FLAVUM[1])  # spinous processes point posterior-inferiorly
        lo, hi, end = 0.15 * h, 0.7 * h, _MUSCLE_END - 3.0
        spine = (u >= _FLAVUM[1]) & (u < end) & (slant >= lo) & (slant < hi)
        core = (u >= _FLAVUM[1] + _CORTEX_MM) & (u < end - _CORTEX_MM)
        core &= (slant >= lo + _CORTEX_MM) & (slant < hi - _CORTEX_MM)
        tissue[spine[None] & (az <= 5.0)] = code["cortical_bone"]
        tissue[core[None] & (az <= 5.0 - _CORTEX_MM)] = code["marrow"]

    # Dural sac (CSF): an elliptic tube along the column with a rounded lower end below S1.
    labels = np.zeros(shape, dtype=np.uint8)
    closing = np.clip((s - (_SAC_END_BELOW_S1_MM - 8.0)) / 8.0, 0.0, None) ** 2
    sac = (((u - _CANAL_CENTRE) / _CANAL_HALF_AP) ** 2 + closing)[None] + (z / _CANAL_HALF_WIDTH) ** 2 <= 1.0
    sac &= ~outside[None]
    tissue[sac] = code["csf"]
    labels[sac] = levels.CSF_LABEL

    # Disc shapes: biconvex superellipsoids, exactly h / 2 thick at the centre, thinning to the rim.
    disc_regions = []
    endplate_zone = np.zeros(shape, dtype=bool)  # disc surface + cortex thickness: endplates of the bodies
    for d in discs:
        h, sc, uc = d.height, d.s_centre, d.u_centre
        a = 0.5 * d.depth + _DISC_BULGE_MM
        rows = _rows_within(s, sc, (0.5 * h + _CORTEX_MM + 1.0) * d.stretch)
        r = _superellipse([np.abs(u[rows] - uc)[None] / a, az / (_BODY_HALF_WIDTH_MM - 1.0)], _AXIAL_EXPONENT)
        r = r ** (1.0 / _AXIAL_EXPONENT)
        half = (0.5 * h / 1.1) * (1.0 + 0.1 * (1.0 - r * r)) * np.sqrt(np.clip(1.0 - r**10, 0.0, None))
        t = ((s[rows] - sc) / d.stretch)[None]  # true mm from the mid-plane at the disc's AP centre
        inside = (r < 1.0) & (np.abs(t) <= half)
        endplate_zone[:, rows] |= (r < 1.0) & (np.abs(t) <= half + _CORTEX_MM)
        disc_regions.append((rows, inside))

    # Bodies reach the mid-planes of their discs; the discs, drawn afterwards, carve the endplates.
    for b in bodies:
        above = next((x for x in discs if x.s_bottom == b.s_top), None)
        below = next((x for x in discs if x.s_top == b.s_bottom), None)
        top = 0.5 * (above.s_top + above.s_bottom) if above else b.s_top
        bottom = 0.5 * (below.s_top + below.s_bottom) if below else b.s_bottom
        hh, sc = 0.5 * (bottom - top), 0.5 * (top + bottom)
        a, uc = 0.5 * b.depth, b.u_centre
        rows = _rows_within(s, sc, hh)
        sr, ur = s[rows], u[rows]
        waist = 1.0 - 0.06 * np.clip(1.0 - ((sr - sc) / hh) ** 2, 0.0, None)  # concave anterior wall
        half_ap = a * np.where(ur < uc, waist, 1.0)
        power = _SAGITTAL_EXPONENT / _AXIAL_EXPONENT
        axial = _superellipse([(np.abs(ur - uc) / half_ap)[None], az / _BODY_HALF_WIDTH_MM], _AXIAL_EXPONENT)
        body = axial**power + ((np.abs(sr - sc) / hh) ** _SAGITTAL_EXPONENT)[None] <= 1.0
        axial_in = _superellipse([(np.abs(ur - uc) / (half_ap - _CORTEX_MM))[None],
                                  az / (_BODY_HALF_WIDTH_MM - _CORTEX_MM)], _AXIAL_EXPONENT)
        # Free ends (top of L1, bottom of S1) get their own cortex; the others are the disc endplates.
        top_in = hh - (_CORTEX_MM if above is None else 0.0)
        bottom_in = hh - (_CORTEX_MM if below is None else 0.0)
        along_in = np.where(sr < sc, (sc - sr) / top_in, (sr - sc) / bottom_in) ** _SAGITTAL_EXPONENT
        marrow = body & (axial_in**power + along_in[None] <= 1.0) & ~endplate_zone[:, rows]
        tissue[:, rows] = np.where(body, np.where(marrow, code["marrow"], code["cortical_bone"]), tissue[:, rows])
        labels[:, rows] = np.where(body, levels.VERTEBRA_LABELS[b.name], labels[:, rows])

    props = [TISSUE_PROPERTIES.get(name, TissueProperties(0.0, 0.0, 0.0)) for name in TISSUES]
    maps = [np.array([getattr(p, key) for p in props], dtype=np.float32)[tissue] for key in ("s0", "t2_ms", "t1rho_ms")]

    # Nucleus and annulus: the nucleus parameters fade into the annulus over a grade-dependent width.
    annulus = TISSUE_PROPERTIES["annulus"]
    heights, centres, tilts = {}, {}, {}
    for d, grade, (rows, inside) in zip(discs, settings.pfirrmann_grades, disc_regions, strict=True):
        deg = PFIRRMANN[grade]
        h, sc, uc = d.height, d.s_centre, d.u_centre
        a = 0.5 * d.depth + _DISC_BULGE_MM
        un = uc + 0.08 * a  # the nucleus sits slightly posterior of the disc centre
        an, bn, cn = _NUCLEUS_AP_FRACTION * a, _NUCLEUS_HEIGHT_FRACTION * 0.5 * h, 0.55 * _BODY_HALF_WIDTH_MM
        t = np.broadcast_to(((s[rows] - sc) / d.stretch)[None], inside.shape)[inside]
        du = np.broadcast_to((u[rows] - un)[None], inside.shape)[inside]
        dz = np.broadcast_to(z, inside.shape)[inside]
        rn = np.sqrt((du / an) ** 2 + (t / bn) ** 2 + (dz / cn) ** 2)
        w = 0.5 * (1.0 - np.tanh((rn - 1.0) / deg.boundary_width))
        cleft = 1.0 - deg.cleft_depth * np.exp(-((t / (0.1 * h)) ** 2))
        for arr, key in zip(maps, ("s0", "t2_ms", "t1rho_ms"), strict=True):
            value = w * cleft * getattr(deg.nucleus, key) + (1.0 - w) * getattr(annulus, key)
            arr[:, rows][inside] = value  # a slice is a view: this writes into arr
        tissue[:, rows][inside] = np.where(rn <= 1.0, code["nucleus"], code["annulus"])
        labels[:, rows][inside] = levels.DISC_LABELS[d.name]
        heights[d.name] = float(h)
        xc, yc = column.to_image(sc, uc)
        centres[d.name] = (xc / si + c[0], yc / sj + c[1], c[2])
        tilts[d.name] = column.tilt_deg(sc)
    return _Truth(tissue, labels, *maps, heights, centres, tilts)


def _rows_within(s: np.ndarray, centre: float, half: float) -> slice:
    """The j rows (a slice) in which some voxel lies within ``half`` mm of ``centre`` along the column."""
    hit = np.flatnonzero(np.any(np.abs(s - centre) <= half, axis=1))
    return slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(0, 0)


# ---------------------------------------------------------------------------------------------- signal
def _decay(s0: np.ndarray, rate_per_ms: np.ndarray, time_ms: float) -> np.ndarray:
    """``S0 * exp(-time * rate)`` (rate = 1 / T, 0 in air), float32."""
    return s0 * np.exp(np.float32(-time_ms) * rate_per_ms)


def _rate(time_constant_ms: np.ndarray) -> np.ndarray:
    out = np.zeros(time_constant_ms.shape, dtype=np.float32)
    np.divide(np.float32(1.0), time_constant_ms, out=out, where=time_constant_ms > 0)
    return out


def _rician(clean: np.ndarray, sigma: float, seed: int, stream: int, index: int) -> np.ndarray:
    """Magnitude of (clean + N(0, sigma)) + i N(0, sigma); the generator is seeded by (seed, stream, index)."""
    if sigma == 0.0:
        return clean
    noise = np.random.default_rng([seed, stream, index]).standard_normal((2, *clean.shape), dtype=np.float32)
    noise *= np.float32(sigma)
    noise[0] += clean
    noise *= noise
    return np.sqrt(noise[0] + noise[1])  # np.hypot is ~10x slower and overflow is impossible here


def _image(array: np.ndarray, settings: PhantomSettings, time_ms: float | None = None) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(settings.spacing_mm)
    image.SetOrigin(_origin(settings.size, settings.spacing_mm))
    image.SetDirection(DIRECTION)
    image.SetMetaData(SYNTHETIC_KEY, SYNTHETIC_NOTE)
    if time_ms is not None:
        image.SetMetaData(image_io.TIMES_KEY, f"{time_ms:g}")
    return image


def make_phantom(settings: PhantomSettings = PhantomSettings()) -> Phantom:
    """Build the phantom described by ``settings`` (see the module docstring).

    Deterministic: the same settings give bitwise identical images; the seed changes only the noise.
    """
    truth = _anatomy(settings)
    sigma, seed = settings.noise_sigma, settings.seed

    def series(time_constant_ms: np.ndarray, times: tuple[float, ...], stream: int) -> tuple[sitk.Image, ...]:
        rate = _rate(time_constant_ms)
        return tuple(_image(_rician(_decay(truth.s0, rate, t), sigma, seed, stream, n), settings, t)
                     for n, t in enumerate(times))

    t2w = _rician(_decay(truth.s0, _rate(truth.t2_ms), settings.t2w_echo_time_ms), sigma, seed, 0, 0)
    labels = _image(truth.labels, settings)
    centres = {name: tuple(float(v) for v in labels.TransformContinuousIndexToPhysicalPoint(index))
               for name, index in truth.disc_centre_index.items()}
    return Phantom(
        settings=settings,
        t2w=_image(t2w, settings),
        labels=labels,
        tissues=_image(truth.tissue, settings),
        nucleus_mask=_image((truth.tissue == TISSUE_CODE["nucleus"]).astype(np.uint8), settings),
        s0=_image(truth.s0, settings),
        t2_ms=_image(truth.t2_ms, settings),
        t1rho_ms=_image(truth.t1rho_ms, settings),
        t2_series=series(truth.t2_ms, settings.t2_echo_times_ms, 1),
        t1rho_series=series(truth.t1rho_ms, settings.t1rho_spin_lock_ms, 2),
        t2_echo_times_ms=settings.t2_echo_times_ms,
        t1rho_spin_lock_ms=settings.t1rho_spin_lock_ms,
        grades=dict(zip(levels.DISCS, settings.pfirrmann_grades, strict=True)),
        disc_height_mm=truth.disc_height_mm,
        disc_centers_mm=centres,
        disc_tilt_deg=truth.disc_tilt_deg,
        noise_sigma=sigma,
    )


# ------------------------------------------------------------------------------------------------ files
def _time_name(prefix: str, number: int, tag: str, time_ms: float) -> str:
    return f"{prefix}_{number:02d}_{tag}{time_ms:g}ms"


def write_phantom(phantom: Phantom, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write every image (NRRD) and ``phantom.json`` under ``out_dir``, each file atomically.

    Returns the written paths keyed by their path relative to ``out_dir`` without the extension
    (``"t2w"``, ``"labels"``, ``"truth_t2_ms"``, ``"t2_series/echo_01_TE10ms"``, ``"phantom"`` ...). Files of
    the same name are replaced; other files in ``out_dir`` are left alone.
    """
    out = Path(out_dir)
    images: dict[str, tuple[sitk.Image, bool]] = {
        # Noisy float images barely compress; writing them raw keeps the demo fast.
        "t2w": (phantom.t2w, False),
        "labels": (phantom.labels, True),
        "truth_tissues": (phantom.tissues, True),
        "truth_nucleus_mask": (phantom.nucleus_mask, True),
        "truth_s0": (phantom.s0, True),
        "truth_t2_ms": (phantom.t2_ms, True),
        "truth_t1rho_ms": (phantom.t1rho_ms, True),
    }
    for n, (image, t) in enumerate(zip(phantom.t2_series, phantom.t2_echo_times_ms, strict=True), start=1):
        images["t2_series/" + _time_name("echo", n, "TE", t)] = (image, False)
    for n, (image, t) in enumerate(zip(phantom.t1rho_series, phantom.t1rho_spin_lock_ms, strict=True), start=1):
        images["t1rho_series/" + _time_name("tsl", n, "TSL", t)] = (image, False)
    paths = {key: image_io.write_image(image, out / f"{key}.nrrd", compress=compress)
             for key, (image, compress) in images.items()}
    settings = asdict(phantom.settings)
    if math.isinf(phantom.settings.snr):
        settings["snr"] = None  # JSON has no infinity; null means noise-free
    description = {
        "synthetic": True,
        "statement": "Synthetic lumbar phantom generated by DiscAnalysisLib.phantom. Not patient data and not "
                     "clinically calibrated: use it to test software, never to claim clinical accuracy.",
        "note": SYNTHETIC_NOTE,
        "settings": settings,
        "noise_sigma": phantom.noise_sigma,
        "s0_reference": S0_REFERENCE,
        "pfirrmann_grades": phantom.grades,
        "t2_echo_times_ms": list(phantom.t2_echo_times_ms),
        "t1rho_spin_lock_ms": list(phantom.t1rho_spin_lock_ms),
        "t2w_echo_time_ms": phantom.settings.t2w_echo_time_ms,
        "disc_height_mm": phantom.disc_height_mm,
        "disc_centers_mm_lps": {k: list(v) for k, v in phantom.disc_centers_mm.items()},
        "disc_tilt_deg": phantom.disc_tilt_deg,
        "labels": {name: levels.label_of(name) for name in (*levels.VERTEBRAE, *levels.DISCS, "CSF")},
        "tissues": {name: code for code, name in enumerate(TISSUES)},
        "files": {key: path.relative_to(out).as_posix() for key, path in paths.items()},
    }
    paths["phantom"] = image_io.write_text(json.dumps(description, indent=2) + "\n", out / "phantom.json")
    return paths
