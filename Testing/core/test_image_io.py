import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from DiscAnalysisLib import image_io
from DiscAnalysisLib.errors import InputError


def _oblique_image(dtype=np.int16):
    arr = (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 3).astype(dtype)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.7, 4.0))
    img.SetOrigin((10.0, -20.0, 5.5))
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection((c, -s, 0, s, c, 0, 0, 0, 1))
    return img


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
def test_volume_round_trip_keeps_geometry(tmp_path, suffix):
    img = _oblique_image()
    path = image_io.write_image(img, tmp_path / f"x{suffix}")
    back = image_io.read_image(path)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    np.testing.assert_allclose(back.GetSpacing(), img.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), img.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), img.GetDirection(), atol=1e-6)
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError), image_io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_bitmaps_become_grey_with_unknown_spacing(tmp_path, mode):
    grey = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (7, 1))
    if mode == "L":
        im = Image.fromarray(grey)
    elif mode == "RGB":
        im = Image.fromarray(np.stack([grey] * 3, -1))
    else:
        im = Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)]))
    path = tmp_path / "slice.png"
    im.save(path)
    img = image_io.read_image(path)
    assert img.GetDimension() == 2 and img.GetNumberOfComponentsPerPixel() == 1
    np.testing.assert_allclose(sitk.GetArrayFromImage(img), grey, atol=1)
    assert not image_io.spacing_known(img)
    img2 = image_io.read_image(path, pixel_spacing_mm=0.6)
    assert image_io.spacing_known(img2) and img2.GetSpacing() == (0.6, 0.6)


def test_transparent_pixels_are_black(tmp_path):
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[0, 0, 3] = 0
    rgba[1:, :, 3] = 255
    rgba[0, 1:, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "a.png")
    arr = sitk.GetArrayFromImage(image_io.read_image(tmp_path / "a.png"))
    assert arr[0, 0] == 0 and arr[1, 1] == pytest.approx(200, abs=1)


def test_spacing_disagreeing_with_file_is_an_error(tmp_path):
    path = image_io.write_image(_oblique_image(), tmp_path / "x.nrrd")
    with pytest.raises(InputError, match="disagrees"):
        image_io.read_image(path, pixel_spacing_mm=(1, 1, 1))


def _file(name, content: bytes | None):
    def make(d):
        path = d / name
        if content is not None:
            path.write_bytes(content)
        return path

    return make


def _empty_dir(d):
    (d / "empty").mkdir()
    return d / "empty"


@pytest.mark.parametrize(
    "make, match",
    [
        (_file("missing.nrrd", None), "not found"),
        (_empty_dir, "empty"),
        (_file("notes.txt", b"hello"), "Cannot read"),
        (_file("zero.nrrd", b""), "0 bytes"),
        (_file("bad.dcm", b"\0" * 128 + b"DICM" + b"garbage" * 20), "DICOM"),
        (_file("bad.png", b"not a png"), "Cannot read"),
        (_file("bad.nrrd", b"NRRD0004\ntype: float\ndimension: 3\nsizes: 10 10 10\nencoding: raw\n\n123"), "Cannot read"),
    ],
)
def test_bad_input_gives_input_error(tmp_path, make, match):
    with pytest.raises(InputError, match=match):
        image_io.read_image(make(tmp_path))


def test_orientation_code_of_sagittal_stack():
    img = sitk.Image(4, 4, 4, sitk.sitkUInt8)
    # i -> posterior (+y in LPS), j -> inferior (-z), k -> left or right (-x here)
    img.SetDirection((0, 0, -1, 1, 0, 0, 0, -1, 0))
    assert image_io.orientation_code(img) == "PIR"


def test_multi_echo_dicom_is_split_by_echo_time(data_dir):
    folder = data_dir("relaxometry", "knee_t2_8echo_dicom")
    with pytest.raises(InputError, match="multi-echo"):
        image_io.read_image(folder)
    volumes, times = image_io.read_dicom_echoes(folder)
    assert len(volumes) == 8
    np.testing.assert_allclose(times, 6.104 * np.arange(1, 9), atol=1e-3)
    assert all(v.GetSize() == (256, 256, 25) for v in volumes)
    # echoes share one grid
    assert len({v.GetOrigin() for v in volumes}) == 1


def test_real_nrrd_keeps_its_direction(data_dir):
    img = image_io.read_image(data_dir("lumbar_t2_3d", "11_T2w.nrrd"))
    assert img.GetSize() == (221, 221, 67)
    assert image_io.orientation_code(img) == "PIR"
