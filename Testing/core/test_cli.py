import json
import subprocess
import sys

import pytest

from DiscAnalysisLib import __version__
from DiscAnalysisLib.cli.main import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def _corrupt_dicom_folder(d):
    folder = d / "dicom"
    folder.mkdir()
    (folder / "IM0001.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI" + b"broken" * 10)
    return folder


def _empty_folder(d):
    (d / "nothing").mkdir()
    return d / "nothing"


def _text_file(d):
    (d / "notes.txt").write_text("not an image")
    return d / "notes.txt"


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: d / "missing.nrrd", "not found"),
        (_text_file, "Cannot read"),
        (_corrupt_dicom_folder, "DICOM"),
        (_empty_folder, "empty"),
    ],
)
def test_info_bad_input_is_one_line_exit_2(tmp_path, capsys, make, words):
    code = main(["info", str(make(tmp_path))])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert words in err and "Traceback" not in err


def test_console_script_runs_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "DiscAnalysisLib.cli.main", "info", str(tmp_path / "nope.nii.gz")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "not found" in proc.stderr


def test_demo_writes_phantom_and_info_reads_it_back(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--progress", "none", "demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed
    t2w = out / "phantom" / "t2w.nrrd"
    labels = out / "phantom" / "labels.nrrd"
    assert t2w.is_file() and labels.is_file()
    assert main(["info", "--json", str(t2w)]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    import SimpleITK as sitk

    from DiscAnalysisLib.phantom import PhantomSettings, make_phantom

    expected = make_phantom(PhantomSettings(seed=0)).t2w
    assert info["size"] == "x".join(map(str, expected.GetSize()))
    assert info["spacing_mm"] == " ".join(f"{s:g}" for s in expected.GetSpacing())
    assert info["orientation"] == "PIR"
    back = sitk.ReadImage(str(labels))
    assert back.GetDirection() == pytest.approx(expected.GetDirection())
    # each series time point carries its echo time
    series = sorted((out / "phantom" / "t2_series").iterdir())
    assert len(series) >= 2
    assert main(["info", "--json", str(series[0])]) == 0
    assert json.loads(capsys.readouterr().out)[0]["times_ms"] != ""
