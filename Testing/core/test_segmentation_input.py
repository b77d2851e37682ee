"""Input handling of the segmentation: orientation, bad input, weight integrity (no trained model needed)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from DiscAnalysisLib.errors import InputError
from DiscAnalysisLib.segmentation import network
from DiscAnalysisLib.segmentation.api import SegmentationSettings, segment_image
from DiscAnalysisLib.segmentation.preprocess import from_canonical, normalise_slice, to_canonical

# The real lumbar_t2_3d layout: i anterior->posterior, j superior->inferior, k right (sagittal slices).
SAGITTAL_DIRECTION = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


def sagittal_volume(shape_kji=(6, 70, 50), spacing=(1.0, 1.0, 1.0)):
    rng = np.random.default_rng(0)
    arr = rng.random(shape_kji).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetDirection(SAGITTAL_DIRECTION)
    img.SetSpacing(spacing)
    return img, arr


def test_sagittal_volume_is_already_canonical_and_maps_back():
    img, arr = sagittal_volume()
    st = to_canonical(img)
    assert st.slices.shape == (6, 70, 50)
    np.testing.assert_array_equal(st.slices, arr)
    np.testing.assert_array_equal(from_canonical(st, st.slices), arr)


def test_axial_isotropic_volume_is_resliced_to_the_same_sagittal_slices():
    img, arr = sagittal_volume()
    # The same voxels in an LPS-identity (axial) layout: index x = left, y = posterior, z = superior.
    # canonical (lr=k toward right, si=j down, ap=i posterior) -> axial numpy (z up, y posterior, x left)
    ax = np.ascontiguousarray(arr.transpose(1, 2, 0)[::-1, :, ::-1])
    axial = sitk.GetImageFromArray(ax)
    st = to_canonical(axial)
    np.testing.assert_array_equal(st.slices[::-1], arr)  # left-right sense differs, slices are the same
    np.testing.assert_array_equal(from_canonical(st, st.slices), ax)


def test_thick_axial_stack_is_refused_with_a_clear_message():
    img = sitk.Image([64, 64, 20], sitk.sitkFloat32)
    img.SetSpacing((0.7, 0.7, 5.0))
    with pytest.raises(InputError, match="axial"):
        to_canonical(img)


def test_single_axial_slice_is_refused():
    img = sitk.Image([64, 64, 1], sitk.sitkFloat32)
    with pytest.raises(InputError, match="single axial or coronal"):
        to_canonical(img)


def test_strongly_oblique_volume_is_refused():
    img = sitk.Image([40, 40, 40], sitk.sitkFloat32)
    t = np.radians(50)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    rot2 = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    img.SetDirection(tuple((rot @ rot2).ravel()))
    with pytest.raises(InputError, match="oblique"):
        to_canonical(img)


def test_4d_and_tiny_and_vector_images_are_refused():
    with pytest.raises(InputError, match="4D"):
        to_canonical(sitk.Image([40, 40, 40, 3], sitk.sitkFloat32))
    with pytest.raises(InputError, match="too small"):
        to_canonical(sitk.Image([20, 20], sitk.sitkFloat32))
    with pytest.raises(InputError, match="components"):
        to_canonical(sitk.Image([64, 64], sitk.sitkVectorFloat32, 3))


def test_bitmap_without_spacing_gets_assumed_fov_and_given_spacing_wins():
    from DiscAnalysisLib.image_io import mark_spacing_unknown

    img = mark_spacing_unknown(sitk.Image([280, 140], sitk.sitkFloat32))
    st = to_canonical(img)
    assert not st.spacing_known and st.spacing_mm[1] == pytest.approx(1.0)
    st = to_canonical(img, pixel_spacing_mm=0.5)
    assert st.spacing_known and st.spacing_mm[1:] == (0.5, 0.5)


def test_normalisation_is_robust_to_scale_and_outliers():
    rng = np.random.default_rng(1)
    x = rng.random((64, 64)).astype(np.float32)
    y = x * 1000 + 50
    y[0, 0] = 1e7  # one hot pixel must not set the scale
    a, b = normalise_slice(x), normalise_slice(y)
    assert abs(a.mean()) < 1e-4 and a.std() == pytest.approx(1, abs=1e-3)
    assert np.corrcoef(a.ravel()[1:], b.ravel()[1:])[0, 1] > 0.99
    assert np.all(normalise_slice(np.zeros((40, 40))) == 0)


class _AllBackground:
    """A stand-in network predicting background everywhere."""

    def __call__(self, x):
        import torch

        out = torch.zeros((x.shape[0], 3, *x.shape[2:]))
        out[:, 0] = 10
        return out


def test_no_disc_found_raises_instead_of_returning_an_empty_labelmap():
    img, _ = sagittal_volume((3, 64, 64))
    with pytest.raises(InputError, match="No intervertebral disc"):
        segment_image(img, SegmentationSettings(), net=_AllBackground())


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    import torch

    w = tmp_path / "w.pt"
    torch.save({k: v.half() for k, v in network.build_network().state_dict().items()}, w)
    from DiscAnalysisLib.resources import sha256_of

    good = sha256_of(w)
    assert network.load_model(str(w), good) is not None
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    network._CACHE.clear()
    with pytest.raises(InputError, match="SHA-256"):
        network.load_model(str(w), good)
    # the shipped file is checked against the constant in the code
    monkeypatch.setattr(network, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(InputError, match="integrity|missing"):
        network.load_model()


def test_cli_segment_refuses_bad_input_with_one_line(tmp_path, capsys):
    from DiscAnalysisLib.cli.main import main
    from DiscAnalysisLib.image_io import write_image

    tiny = tmp_path / "tiny.nrrd"
    write_image(sitk.Image([20, 20], sitk.sitkFloat32), tiny)
    rc = main(["--progress", "none", "segment", str(tiny), "--out", str(tmp_path / "lab.nrrd")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "too small" in err[0]
    assert not (tmp_path / "lab.nrrd").exists()


