"""The damped normal-equation solves of the LM step and the equal-spacing test, shared by both fit engines.

The solves are plain arithmetic that works on numpy arrays (numpy engine: every voxel of a chunk at once) and on floats
(compiled engine: numba compiles these same functions). No ``np.errstate`` here (numba cannot compile it):
the numpy callers wrap the calls; a singular system gives inf/NaN steps, which the LM rejects.
"""

from __future__ import annotations

import numpy as np


def equally_spaced(times) -> bool:
    """Whether the (sorted) times are equally spaced: both engines then compute exp(-t r) for all time points
    from 2 exp calls by repeated multiplication (exact to rounding) instead of N."""
    steps = np.diff(np.ravel(times))
    return steps.size > 1 and bool(np.allclose(steps, steps[0], rtol=1e-9, atol=0))


def solve2(h11, h12, h22, g1, g2):
    """Symmetric 2 x 2 system by Cramer's rule."""
    det = h11 * h22 - h12 * h12
    return (h22 * g1 - h12 * g2) / det, (h11 * g2 - h12 * g1) / det


def solve3(h11, h12, h13, h22, h23, h33, g1, g2, g3):
    """Symmetric 3 x 3 system by the adjugate (cofactor) formula."""
    c11 = h22 * h33 - h23 * h23
    c12 = h13 * h23 - h12 * h33
    c13 = h12 * h23 - h13 * h22
    c22 = h11 * h33 - h13 * h13
    c23 = h12 * h13 - h11 * h23
    c33 = h11 * h22 - h12 * h12
    det = h11 * c11 + h12 * c12 + h13 * c13
    x1 = (c11 * g1 + c12 * g2 + c13 * g3) / det
    x2 = (c12 * g1 + c22 * g2 + c23 * g3) / det
    x3 = (c13 * g1 + c23 * g2 + c33 * g3) / det
    return x1, x2, x3
