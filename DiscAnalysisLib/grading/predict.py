"""Loading the shipped grading network (SHA-256 checked, weights only) and predicting one disc.

The weights file is a ``torch.save`` of a plain dict (state dict tensors plus numbers: crop size, field
of view factor, temperature), loaded with ``torch.load(weights_only=True)`` so no code can be unpickled.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from .augment import TTA_VARIANTS
from .crop import extract_crop
from .model import _torch, build_model

MODEL_FILE = "Models/pfirrmann_grading.pt"
#: SHA-256 of the shipped weights (printed by scripts/train_grading.py); a mismatch refuses to load.
MODEL_SHA256 = "9bed2d032c9b0aef3f292e3cb9927d6fbe2ba9eea49bbb384ab4a7aac9bbb196"


@dataclass(frozen=True)
class GradingModel:
    """The network in eval mode and the preprocessing it was trained with."""

    net: object
    crop_size: int
    fov_factor: float
    temperature: float
    source: str

    def probabilities(
        self,
        slice2d: np.ndarray,
        center_rc: tuple[float, float],
        width: float,
        *,
        spacing_rc: tuple[float, float] = (1.0, 1.0),
        tta: bool = True,
    ) -> tuple[np.ndarray, float]:
        """Grade probabilities (5,) of one disc in one slice, and the fraction of the crop outside the slice.

        With ``tta`` the probabilities are averaged over :data:`.augment.TTA_VARIANTS`.
        """
        torch = _torch()
        variants = TTA_VARIANTS if tta else TTA_VARIANTS[:1]
        crops, outside = [], []
        for angle, scale, flip in variants:
            c, o = extract_crop(
                slice2d, center_rc, width, spacing_rc=spacing_rc, size=self.crop_size,
                fov_factor=self.fov_factor, angle_deg=angle, scale=scale, flip=flip,
            )
            crops.append(c)
            outside.append(o)
        x = torch.from_numpy(np.stack(crops)[:, None].astype(np.float32))
        with torch.no_grad():
            logits = self.net(x).double() / self.temperature
            p = torch.softmax(logits, dim=1).mean(0).numpy()
        return p / p.sum(), float(outside[0])


def load_model(path: str | os.PathLike | None = None) -> GradingModel:
    """The shipped model (verified by SHA-256), or the weights file at ``path`` (scripts evaluating a
    freshly trained candidate). Either way the file is read with ``weights_only=True``."""
    if path is None:
        return _shipped_model()
    return _load(str(path))


@functools.lru_cache(maxsize=1)
def _shipped_model() -> GradingModel:
    from ..resources import verified_path

    return _load(str(verified_path(MODEL_FILE, MODEL_SHA256)))


def _load(path: str) -> GradingModel:
    torch = _torch()
    payload = torch.load(path, map_location="cpu", weights_only=True)
    net = build_model(tuple(payload["channels"]))
    net.load_state_dict(payload["state_dict"])
    net.eval()
    return GradingModel(
        net=net,
        crop_size=int(payload["crop_size"]),
        fov_factor=float(payload["fov_factor"]),
        temperature=float(payload["temperature"]),
        source=path,
    )
