"""Training augmentation and test-time variants for disc crops.

Geometric augmentation is done by re-sampling the crop from the whole slice (:func:`.crop.extract_crop`
with a random rotation, scale, shift and anterior-posterior mirror), so no padding artefacts enter the
crop. Intensity augmentation acts on the normalised crop: gamma, a smooth multiplicative shading
(coil sensitivity), Gaussian noise and occasional down-and-up sampling (coarser in-plane resolution of
other scanners).

The anterior-posterior mirror is used because a 2D bitmap carries no orientation (a PNG may show the
patient facing either way) and the features of the Pfirrmann grade (nucleus signal and homogeneity,
nucleus/annulus distinction, disc height) do not depend on the side; a superior-inferior flip is not
used (endplate shapes and the L5-S1 wedge are not symmetric top to bottom).
"""

from __future__ import annotations

import numpy as np

from .crop import CROP_SIZE, FOV_FACTOR, extract_crop

#: Test-time variants: (angle_deg, scale, flip). Probabilities are averaged over them.
TTA_VARIANTS: tuple[tuple[float, float, bool], ...] = (
    (0.0, 1.0, False),
    (0.0, 1.0, True),
    (-7.0, 1.0, False),
    (7.0, 1.0, True),
    (0.0, 0.9, False),
    (0.0, 1.1, True),
)


def random_crop(
    rng: np.random.Generator,
    slice2d: np.ndarray,
    center_rc: tuple[float, float],
    width: float,
    *,
    spacing_rc=(1.0, 1.0),
    size: int = CROP_SIZE,
    fov_factor: float = FOV_FACTOR,
) -> np.ndarray:
    """One randomly augmented crop (float32, size x size)."""
    crop, _ = extract_crop(
        slice2d,
        center_rc,
        width,
        spacing_rc=spacing_rc,
        size=size,
        fov_factor=fov_factor,
        angle_deg=float(rng.uniform(-15, 15)),
        scale=float(np.exp(rng.uniform(np.log(0.85), np.log(1.18)))),
        shift=(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05))),
        flip=bool(rng.random() < 0.5),
    )
    return intensity_augment(rng, crop)


def intensity_augment(rng: np.random.Generator, crop: np.ndarray) -> np.ndarray:
    x = np.clip(crop, 0.0, None)
    x = x ** float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
    n = crop.shape[0]
    v, u = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    x = x * (1.0 + rng.uniform(-0.15, 0.15) * u + rng.uniform(-0.15, 0.15) * v)
    if rng.random() < 0.25:
        from scipy.ndimage import zoom

        f = rng.uniform(0.5, 0.8)
        small = zoom(x, f, order=1)
        x = zoom(small, n / small.shape[0], order=1)[:n, :n]
        if x.shape != crop.shape:  # rounding in zoom
            x = np.pad(x, ((0, n - x.shape[0]), (0, n - x.shape[1])), mode="edge")
    x = x + rng.normal(0.0, rng.uniform(0.0, 0.05), x.shape)
    return x.astype(np.float32)
