"""Regression test for ITKElastix issue 160: a multi-metric registration with an explicit thread count
segfaulted. We set threads globally (itk.MultiThreaderBase) instead; the registration runs in a
subprocess so that a crash fails this test instead of killing pytest."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import REPO_ROOT

SCRIPT = textwrap.dedent(
    """
    import numpy as np, SimpleITK as sitk
    from DiscAnalysisLib.registration import RegistrationSettings, register_disc
    def disc(cx, ax):
        jj, ii = np.mgrid[:60, :80]
        img = sitk.GetImageFromArray((((jj - 30) / 8.0) ** 2 + ((ii - cx) / ax) ** 2 <= 1).astype(np.uint8))
        img.SetSpacing((0.5, 0.5))
        return img
    for threads in (1, 2):  # B-spline stage = MultiMetricMultiResolutionRegistration + rigidity penalty
        r = register_disc(disc(40, 25.0), disc(36, 28.0), RegistrationSettings(threads=threads), "L4-L5")
        assert r.dice > 0.9, r.dice
    print("MULTIMETRIC-OK")
    """
)


def test_multimetric_registration_with_threads_exits_cleanly():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode} (negative = killed by a signal)\n{proc.stderr[-2000:]}"
    assert "MULTIMETRIC-OK" in proc.stdout
