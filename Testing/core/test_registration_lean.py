"""The lean itk-elastix binding (registration/elastix.py) gives the same registration as the full itk package,
without loading the ITK modules that made a fresh process pay ~17 s before its first disc.

Each binding runs in its own fresh process: once itk's lazy loader has pulled in the full module set, a
process cannot show what the lean path loads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO_ROOT
from DiscAnalysisLib.registration import elastix

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, SimpleITK as sitk
    from DiscAnalysisLib.registration import RegistrationSettings, register_disc, elastix
    def disc(cx, ax):
        jj, ii = np.mgrid[:60, :80]
        img = sitk.GetImageFromArray((((jj - 30) / 8.0) ** 2 + ((ii - cx) / ax) ** 2 <= 1).astype(np.uint8))
        img.SetSpacing((0.5, 0.6))
        img.SetOrigin((3.0, -2.0))
        img.SetDirection((0, 1, 1, 0))  # not the identity: the direction must reach elastix intact
        return img
    r = register_disc(disc(40, 25.0), disc(35, 28.0), RegistrationSettings(), "L4-L5")
    np.save(sys.argv[1], sitk.GetArrayFromImage(r.forward.GetDisplacementField()))
    heavy = sorted(m for m in ("itk._ITKImageIntensityPython", "itk._ITKThresholdingPython", "torch")
                   if m in sys.modules)
    print("BINDING", elastix.binding_name(), "DICE", r.dice, "HEAVY", ",".join(heavy) or "-")
    """
)


def _run(tmp_path, full: bool):
    out = tmp_path / ("full.npy" if full else "lean.npy")
    env = dict(os.environ)
    env.pop(elastix.FULL_ENV, None)
    if full:
        env[elastix.FULL_ENV] = "1"
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    words = proc.stdout.split()[-6:]  # the BINDING ... HEAVY ... line
    info = dict(zip(words[::2], words[1::2], strict=True))
    return info, np.load(out)


def test_lean_and_full_bindings_give_the_same_field_and_lean_loads_less(tmp_path):
    lean, lean_field = _run(tmp_path, full=False)
    full, full_field = _run(tmp_path, full=True)
    assert lean["BINDING"] == "lean" and full["BINDING"] == "full"
    assert float(lean["DICE"]) > 0.95
    np.testing.assert_allclose(lean_field, full_field, rtol=0, atol=1e-6)
    # the lean process never touched the modules that made the full load slow, nor torch
    assert lean["HEAVY"] == "-", lean["HEAVY"]
    assert "itk._ITKImageIntensityPython" in full["HEAVY"]


def test_falls_back_to_the_full_package_when_the_lean_imports_fail(monkeypatch):
    class Broken:
        def __init__(self):
            raise ImportError("no module itk.itkElastixRegistrationMethodPython in this build")

    class FakeFull:
        name = "full"

    monkeypatch.setattr(elastix, "_API", None)
    monkeypatch.setattr(elastix, "_Lean", Broken)
    monkeypatch.setattr(elastix, "_Full", FakeFull)
    monkeypatch.delenv(elastix.FULL_ENV, raising=False)
    assert elastix.binding_name() == "full"
    monkeypatch.setattr(elastix, "_API", None)
    monkeypatch.setattr(elastix, "_Lean", lambda: pytest.fail("DISCANALYSIS_ITK_FULL=1 must skip the lean binding"))
    monkeypatch.setenv(elastix.FULL_ENV, "1")
    assert elastix.binding_name() == "full"
