"""The synthetic lumbar phantom: known truth that the other tests rely on, so its own claims are checked."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from DiscAnalysisLib import image_io, levels
from DiscAnalysisLib.errors import InputError
from DiscAnalysisLib.phantom import (
    DIRECTION,
    HEALTHY_DISC_HEIGHT_MM,
    S0_REFERENCE,
    SYNTHETIC_KEY,
    TISSUE_CODE,
    TISSUE_PROPERTIES,
    PhantomSettings,
    make_phantom,
    write_phantom,
)

EXPECTED_LABELS = {0, levels.CSF_LABEL, *levels.VERTEBRA_LABELS.values(), *levels.DISC_LABELS.values()}
SLICE_2D = (160, 256, 1)


def arr(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def all_images(p) -> list[sitk.Image]:
    return [p.t2w, p.labels, p.tissues, p.nucleus_mask, p.s0, p.t2_ms, p.t1rho_ms, *p.t2_series, *p.t1rho_series]


def disc_column(p, disc: str) -> tuple[int, int, np.ndarray]:
    """(k, i) of the voxel at the disc's construction centre and the labels along j through it."""
    i, _, k = p.labels.TransformPhysicalPointToIndex(p.disc_centers_mm[disc])
    return k, i, arr(p.labels)[k, :, i]


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


@pytest.fixture(scope="module")
def clean():
    return make_phantom(PhantomSettings(snr=math.inf))


@pytest.fixture(scope="module")
def by_grade():
    """Single mid-sagittal slices, noise-free, all five discs at one grade: {grade: phantom}."""
    return {g: make_phantom(PhantomSettings(size=SLICE_2D, snr=math.inf, pfirrmann_grades=(g,) * 5))
            for g in range(1, 6)}


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_gives_bitwise_identical_images(phantom):
    again = make_phantom(PhantomSettings(seed=0))
    for a, b in zip(all_images(phantom), all_images(again), strict=True):
        assert np.array_equal(arr(a), arr(b))
    assert again.disc_height_mm == phantom.disc_height_mm


def test_other_seed_changes_the_noise_but_not_the_anatomy():
    one, other = (make_phantom(PhantomSettings(seed=seed, size=SLICE_2D)) for seed in (0, 1))
    for a, b in zip([one.labels, one.s0, one.t2_ms, one.t1rho_ms],
                    [other.labels, other.s0, other.t2_ms, other.t1rho_ms], strict=True):
        assert np.array_equal(arr(a), arr(b))
    for a, b in zip([one.t2w, *one.t2_series, *one.t1rho_series],
                    [other.t2w, *other.t2_series, *other.t1rho_series], strict=True):
        assert np.mean(arr(a) != arr(b)) > 0.99


# ---------------------------------------------------------------------------------------------- anatomy
def test_labels_are_exactly_the_lumbar_levels_and_csf(phantom):
    assert phantom.labels.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(arr(phantom.labels)).tolist()) == EXPECTED_LABELS


def test_levels_are_ordered_superior_to_inferior(phantom):
    mid = arr(phantom.labels)[phantom.settings.size[2] // 2]
    order = [levels.VERTEBRAE[0]]
    for disc, lower in zip(levels.DISCS, levels.VERTEBRAE[1:], strict=True):
        order += [disc, lower]
    centroids = [np.nonzero(mid == levels.label_of(name))[0].mean() for name in order]
    assert np.all(np.diff(centroids) > 0), dict(zip(order, centroids, strict=True))
    # Through each disc's centre: upper vertebra, then the disc, then the lower vertebra, touching.
    for disc in levels.DISCS:
        upper, lower = levels.disc_neighbours(disc)
        _, _, col = disc_column(phantom, disc)
        rows = {name: np.nonzero(col == levels.label_of(name))[0] for name in (upper, disc, lower)}
        assert all(r.size for r in rows.values()), disc
        assert rows[upper].max() < rows[disc].min() and rows[disc].max() < rows[lower].min(), disc
        assert rows[disc].max() - rows[disc].min() + 1 == rows[disc].size  # one run, no holes


@pytest.mark.parametrize("lordosis_deg", [0.0, 24.0])
def test_measured_disc_height_matches_construction(lordosis_deg):
    p = make_phantom(PhantomSettings(size=SLICE_2D, snr=math.inf, lordosis_deg=lordosis_deg,
                                     pfirrmann_grades=(5, 1, 4, 2, 3)))
    sj = p.settings.spacing_mm[1]
    for disc in levels.DISCS:
        _, _, col = disc_column(p, disc)
        measured = np.count_nonzero(col == levels.label_of(disc)) * sj
        # A vertical line through a disc tilted by a crosses it over h / cos(a).
        expected = p.disc_height_mm[disc] / math.cos(math.radians(p.disc_tilt_deg[disc]))
        assert abs(measured - expected) <= sj, (disc, measured, expected)


def test_disc_height_and_nucleus_t2_fall_with_grade(by_grade):
    sj = by_grade[1].settings.spacing_mm[1]
    for disc in levels.DISCS:
        built = [by_grade[g].disc_height_mm[disc] for g in range(1, 6)]
        assert built[0] == pytest.approx(HEALTHY_DISC_HEIGHT_MM[disc])
        assert all(a >= b for a, b in zip(built, built[1:], strict=False)), (disc, built)
        assert built[3] <= 0.8 * built[0] and built[4] <= 0.5 * built[0]  # IV loses >= 20 %, V collapses
        measured = [np.count_nonzero(disc_column(by_grade[g], disc)[2] == levels.label_of(disc)) * sj
                    for g in range(1, 6)]
        assert measured[4] < measured[3] < measured[0], (disc, measured)
        t2_nucleus = []
        for g in range(1, 6):
            p = by_grade[g]
            nucleus = (arr(p.labels) == levels.label_of(disc)) & (arr(p.nucleus_mask) == 1)
            assert nucleus.any()
            t2_nucleus.append(float(arr(p.t2_ms)[nucleus].mean()))
        assert all(a > b + 1.0 for a, b in zip(t2_nucleus, t2_nucleus[1:], strict=False)), (disc, t2_nucleus)
        assert t2_nucleus[0] > 100.0 and t2_nucleus[4] < 70.0


def test_nucleus_boundary_blurs_with_grade(by_grade):
    """Pfirrmann: clear nucleus/annulus distinction in I-II, lost in IV-V."""
    annulus_t2 = TISSUE_PROPERTIES["annulus"].t2_ms
    fractions = []
    for g in (1, 3, 5):
        p = by_grade[g]
        disc = arr(p.labels) >= min(levels.DISC_LABELS.values())
        t2 = arr(p.t2_ms)[disc]
        top = t2.max()
        between = (t2 > annulus_t2 + 0.1 * (top - annulus_t2)) & (t2 < top - 0.1 * (top - annulus_t2))
        fractions.append(between.mean())
    assert fractions[0] < 0.1 and fractions[0] < fractions[1] < fractions[2], fractions


def test_default_grades_order_the_nucleus_signal(phantom):
    assert phantom.grades == dict(zip(levels.DISCS, (1, 2, 2, 3, 4), strict=True))
    t2w, lab, nuc = arr(phantom.t2w), arr(phantom.labels), arr(phantom.nucleus_mask) == 1
    by_grade: dict[int, list[float]] = {}
    for disc, grade in phantom.grades.items():
        by_grade.setdefault(grade, []).append(float(t2w[(lab == levels.label_of(disc)) & nuc].mean()))
    means = [np.mean(by_grade[g]) for g in sorted(by_grade)]
    assert all(a > b for a, b in zip(means, means[1:], strict=False)), means


def test_discs_and_bodies_span_the_central_slices(phantom):
    lab = arr(phantom.labels)
    nk = lab.shape[0]
    for name in ("L3", "L3-L4"):
        area = (lab == levels.label_of(name)).sum(axis=(1, 2))
        present = np.nonzero(area)[0]
        assert 7 <= present.size <= 9, (name, area)
        assert area[nk // 2] == area.max()  # the middle slice is the mid-sagittal one
        assert np.array_equal(area[nk // 2 - 4:nk // 2], area[nk // 2 + 4:nk // 2:-1])  # symmetric about it
        assert area[nk // 2 - 4] < area[nk // 2 - 2] < area[nk // 2]  # ellipsoidal: shrinks laterally
    csf = (lab == levels.CSF_LABEL).sum(axis=(1, 2))
    assert csf[nk // 2] == csf.max() and csf[0] == 0


def test_lordosis_tilts_the_discs_as_reported(phantom):
    tilts = [phantom.disc_tilt_deg[d] for d in levels.DISCS]
    assert all(a < b for a, b in zip(tilts, tilts[1:], strict=False)) and tilts[-1] > 5.0
    si, sj, _ = phantom.settings.spacing_mm
    mid = arr(phantom.labels)[phantom.settings.size[2] // 2]
    for disc, tilt in zip(levels.DISCS, tilts, strict=True):
        j, i = np.nonzero(mid == levels.label_of(disc))
        pts = np.stack([i * si, j * sj])
        evals, evecs = np.linalg.eigh(np.cov(pts))
        dx, dy = evecs[:, np.argmax(evals)]
        if dx < 0:
            dx, dy = -dx, -dy
        measured = math.degrees(math.atan2(-dy, dx))  # positive: the posterior edge is higher
        assert measured == pytest.approx(tilt, abs=2.0), disc
    straight = make_phantom(PhantomSettings(size=SLICE_2D, snr=math.inf, lordosis_deg=0.0))
    assert set(straight.disc_tilt_deg.values()) == {0.0}


def test_single_slice_is_the_mid_sagittal_slice(clean):
    flat = make_phantom(PhantomSettings(size=SLICE_2D, snr=math.inf))
    assert flat.t2w.GetSize() == SLICE_2D
    mid = clean.settings.size[2] // 2
    for a, b in [(flat.labels, clean.labels), (flat.t2_ms, clean.t2_ms), (flat.t2w, clean.t2w)]:
        assert np.array_equal(arr(a)[0], arr(b)[mid])
    for disc in levels.DISCS:
        assert flat.disc_centers_mm[disc] == pytest.approx(clean.disc_centers_mm[disc])


# ---------------------------------------------------------------------------------------------- signals
def test_noise_free_series_follow_the_truth_maps_exactly(clean):
    s0, t2, t1rho = (arr(m) for m in (clean.s0, clean.t2_ms, clean.t1rho_ms))
    assert np.array_equal(t2 > 0, s0 > 0) and np.array_equal(t1rho > 0, s0 > 0)
    tissue = s0 > 0
    s0, t2, t1rho = (m[tissue].astype(np.float64) for m in (s0, t2, t1rho))
    assert len(clean.t2_series) == 6 and len(clean.t1rho_series) == 4
    checks = [(clean.t2w, clean.settings.t2w_echo_time_ms, t2)]
    checks += [(image, te, t2) for image, te in zip(clean.t2_series, clean.t2_echo_times_ms, strict=True)]
    checks += [(image, tsl, t1rho) for image, tsl in zip(clean.t1rho_series, clean.t1rho_spin_lock_ms, strict=True)]
    for image, time_ms, constant in checks:
        values = arr(image)
        assert np.all(values[~tissue] == 0)
        expected = s0 * np.exp(-time_ms / constant)
        assert np.max(np.abs(values[tissue] - expected) / expected) < 2e-6, time_ms
    for image, time_ms, _ in checks[1:]:
        assert image_io.times_ms(image) == (time_ms,)
    assert clean.noise_sigma == 0.0


def test_truth_maps_hold_the_tissue_table(clean):
    tissues, t2, s0 = arr(clean.tissues), arr(clean.t2_ms), arr(clean.s0)
    for name in ("csf", "marrow", "fat", "muscle"):
        region = tissues == TISSUE_CODE[name]
        assert region.any(), name
        assert np.all(t2[region] == np.float32(TISSUE_PROPERTIES[name].t2_ms)), name
        assert np.all(s0[region] == np.float32(TISSUE_PROPERTIES[name].s0)), name
    assert np.all(s0[tissues == TISSUE_CODE["air"]] == 0)
    assert s0.max() <= S0_REFERENCE


def test_rician_noise_matches_the_requested_snr(phantom, clean):
    sigma = S0_REFERENCE / phantom.settings.snr
    assert phantom.noise_sigma == pytest.approx(sigma)
    tissues = arr(phantom.tissues)
    # A uniform tissue with signal >> sigma: the noise is nearly Gaussian with standard deviation sigma.
    fat = tissues == TISSUE_CODE["fat"]
    noisy, truth = arr(phantom.t2_series[0])[fat], arr(clean.t2_series[0])[fat]
    assert np.ptp(truth) == 0 and truth[0] > 20 * sigma
    measured_snr = S0_REFERENCE / noisy.std()
    assert measured_snr == pytest.approx(phantom.settings.snr, rel=0.1)
    assert noisy.mean() == pytest.approx(truth[0], rel=0.01)
    # Air: the magnitude of pure noise is Rayleigh distributed, mean sigma * sqrt(pi / 2).
    air = arr(phantom.t2w)[tissues == TISSUE_CODE["air"]]
    assert air.size > 10_000
    assert air.mean() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.1)
    assert air.min() >= 0
    # Each image has its own noise.
    r0 = arr(phantom.t2_series[0]) - arr(clean.t2_series[0])
    r1 = arr(phantom.t2_series[1]) - arr(clean.t2_series[1])
    assert abs(np.corrcoef(r0[fat], r1[fat])[0, 1]) < 0.05


# ------------------------------------------------------------------------------------- geometry and I/O
def test_all_outputs_share_one_geometry_in_the_data_set_orientation(phantom):
    ref = phantom.t2w
    for image in all_images(phantom):
        assert image.GetSize() == ref.GetSize() == phantom.settings.size
        assert image.GetSpacing() == ref.GetSpacing() == phantom.settings.spacing_mm
        assert image.GetOrigin() == ref.GetOrigin()
        assert image.GetDirection() == ref.GetDirection() == DIRECTION
    for image in [phantom.t2w, phantom.s0, phantom.t2_ms, phantom.t1rho_ms, *phantom.t2_series]:
        assert image.GetPixelID() == sitk.sitkFloat32
    assert image_io.orientation_code(ref) == "PIR"  # i posterior, j inferior, k toward the right
    ni, nj, nk = phantom.settings.size
    centre = ref.TransformContinuousIndexToPhysicalPoint(((ni - 1) / 2, (nj - 1) / 2, nk // 2))
    assert centre == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
    for disc, point in phantom.disc_centers_mm.items():
        assert point[0] == pytest.approx(0.0, abs=1e-9)  # on the mid-sagittal plane
        index = ref.TransformPhysicalPointToIndex(point)
        assert arr(phantom.labels)[index[2], index[1], index[0]] == levels.label_of(disc)


@pytest.mark.realdata
def test_orientation_matches_the_real_data_set(phantom, data_dir):
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(data_dir("lumbar_t2_3d", "11_T2w.nrrd")))
    reader.ReadImageInformation()
    assert reader.GetDirection() == phantom.t2w.GetDirection()


def test_write_phantom_round_trip(tmp_path, phantom):
    paths = write_phantom(phantom, tmp_path)
    expected = {"t2w.nrrd", "labels.nrrd", "truth_s0.nrrd", "truth_t2_ms.nrrd", "truth_t1rho_ms.nrrd",
                "t2_series/echo_01_TE10ms.nrrd", "t2_series/echo_06_TE85ms.nrrd",
                "t1rho_series/tsl_01_TSL1ms.nrrd", "t1rho_series/tsl_04_TSL60ms.nrrd", "phantom.json"}
    written = {p.relative_to(tmp_path).as_posix() for p in paths.values()}
    assert expected <= written
    assert all(p.is_file() for p in paths.values())
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left behind
    pairs = [("t2w", phantom.t2w), ("labels", phantom.labels), ("truth_s0", phantom.s0),
             ("truth_t2_ms", phantom.t2_ms), ("truth_t1rho_ms", phantom.t1rho_ms),
             ("t2_series/echo_03_TE40ms", phantom.t2_series[2]), ("t1rho_series/tsl_02_TSL10ms", phantom.t1rho_series[1])]
    for key, original in pairs:
        back = image_io.read_image(paths[key])
        assert back.GetSize() == original.GetSize()
        assert back.GetPixelID() == original.GetPixelID()
        assert np.allclose(back.GetSpacing(), original.GetSpacing())
        assert np.allclose(back.GetOrigin(), original.GetOrigin())
        assert np.allclose(back.GetDirection(), original.GetDirection())
        assert np.array_equal(arr(back), arr(original)), key
    echo = image_io.read_image(paths["t2_series/echo_03_TE40ms"])
    assert image_io.times_ms(echo) == (40.0,)
    assert echo.GetMetaData(SYNTHETIC_KEY).startswith("synthetic")  # the file itself says it is not a scan
    info = json.loads(paths["phantom"].read_text())
    assert info["synthetic"] is True and "not" in info["statement"].lower()
    assert info["pfirrmann_grades"] == phantom.grades
    assert info["disc_height_mm"] == pytest.approx(phantom.disc_height_mm)
    assert info["t2_echo_times_ms"] == list(phantom.t2_echo_times_ms)
    assert info["settings"]["seed"] == 0


def test_noise_free_settings_write_valid_json(tmp_path):
    p = make_phantom(PhantomSettings(size=(40, 64, 1), spacing_mm=(3.6, 3.6, 4.0), snr=math.inf))
    paths = write_phantom(p, tmp_path)
    text = paths["phantom"].read_text()
    assert "Infinity" not in text and json.loads(text)["settings"]["snr"] is None


@pytest.mark.parametrize("bad", [
    {"pfirrmann_grades": (1, 2, 3)},
    {"pfirrmann_grades": (1, 2, 3, 4, 6)},
    {"size": (160, 256)},
    {"size": (160, 0, 12)},
    {"spacing_mm": (0.9, -1.0, 4.0)},
    {"snr": 0.0},
    {"seed": -1},
    {"t2_echo_times_ms": ()},
    {"lordosis_deg": 90.0},
])
def test_invalid_settings_are_refused_with_a_message(bad):
    with pytest.raises(InputError):
        PhantomSettings(**bad)
