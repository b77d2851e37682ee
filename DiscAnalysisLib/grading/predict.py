"""Loading the shipped grading network (SHA-256 checked, weights only) and predicting one disc.

The weights file is a ``torch.save`` of a plain dict (state dict tensors plus numbers: crop size, field
of view factor, temperature), loaded with ``torch.load(weights_only=True)`` so no code can be unpickled.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass

import numpy as np

from .augment import TTA_VARIANTS
from .crop import extract_crop
from .model import _torch, build_model

#: The shipped member networks (resource path, SHA-256 printed by scripts/train_grading.py); a mismatch refuses
#: to load. With more than one, a disc's probabilities are the mean over the members (and the TTA variants).
#: Shipped since session 6: ten networks, the five cross-fitted networks of the 90-epoch recipe on 64 px crops
#: (session 4) and the five of the 45-epoch recipe on 96 px crops, each trained on four of five folds of the 405
#: non-test patients, last epoch kept (scripts/train_grading.py --cv-folds 5; chosen on out-of-fold predictions
#: of the per-fold pairs by scripts/pair_crossfit_grading.py; docs/validation.md, "Session 6: crop resolution").
MODEL_FILES: tuple[tuple[str, str], ...] = (
    ("Models/pfirrmann_grading_cv0.pt", "3f7a87d02fad3a627af481a22a265945534335c564b44ac44d980cfb478aa02f"),
    ("Models/pfirrmann_grading_cv1.pt", "cb0a263950228b5f1d83676fa6ab02a2dd432bdd2c63b94fe327cdea4c5029e8"),
    ("Models/pfirrmann_grading_cv2.pt", "068a2d037d424eff2164290b6081f659b530f21b4bc559a2791b92beb019113e"),
    ("Models/pfirrmann_grading_cv3.pt", "9893baa0efe904baa02572b9548a2cac07dea0c09dfba617a7c7f84775271a22"),
    ("Models/pfirrmann_grading_cv4.pt", "8fc23fa75145d2fea3767c850c6eee2a144d3b2d42b1c7a92e6850618fe0040b"),
    ("Models/pfirrmann_grading_r96_cv0.pt", "81fe515af123f26dc8c01b56ad6edcb6c4518745217a1a1a791482a355d87834"),
    ("Models/pfirrmann_grading_r96_cv1.pt", "0c4708603407b9b392cf3a7de7edfac17ca9ab7949aed3f121c3b3fbadbae2dd"),
    ("Models/pfirrmann_grading_r96_cv2.pt", "62e7e79ae4d27ded111d8e89ea99d265346806d86cfcda25d191713cd6d436dd"),
    ("Models/pfirrmann_grading_r96_cv3.pt", "48213c90c99f70faa8bd81ac095cef12574f7a9b2c9b73ae4154fae9adf3211a"),
    ("Models/pfirrmann_grading_r96_cv4.pt", "0fc8d2b5598698b827935ccd9c9003df9024b25de4c6a7638cb3bed45a955605"),
)
#: Temperature applied to every member's logits when there are several members: fitted on the pooled
#: out-of-fold logits (scripts/crossfit_grading.py; for the two-recipe ensemble scripts/pair_crossfit_grading.py,
#: both networks' logits of each out-of-fold image together); a single member uses the temperature in its file.
ENSEMBLE_TEMPERATURE: float | None = 0.6702254229864318
#: Calibration of the reported confidence of the shipped ensemble: P(grade right) = sigmoid(a * logit(q) + b), q the
#: largest grade probability. Fitted by scripts/pair_crossfit_grading.py on the out-of-fold pairs (the largest
#: probability alone under-states the accuracy by about 0.06; docs/validation.md, "Session 6: a calibrated
#: confidence"). The probabilities themselves are not changed.
CONFIDENCE_CALIBRATION: tuple[float, float] | None = (0.8544, 0.3238)
#: The first member (kept for callers that name one file).
MODEL_FILE, MODEL_SHA256 = MODEL_FILES[0]


@dataclass(frozen=True)
class GradingModel:
    """The network(s) in eval mode and the preprocessing they were trained with.

    ``nets`` holds one network or the members of an ensemble; ``geometries`` gives each member's crop
    (size in pixels, field of view as a multiple of the disc width): members trained on different crop
    sizes each see their own crop. Their logits are divided by ``temperature``, turned into probabilities
    and averaged over members and test-time variants.
    """

    nets: tuple
    geometries: tuple[tuple[int, float], ...]
    temperature: float
    source: str
    confidence_calibration: tuple[float, float] | None = None

    def confidence(self, probabilities: np.ndarray) -> float:
        """The reported confidence of a grade: the largest probability, mapped through ``confidence_calibration``
        (a, b: sigmoid(a * logit(q) + b)) when the model has one (the shipped ensemble)."""
        q = float(np.clip(np.max(probabilities), 1e-6, 1 - 1e-6))
        if self.confidence_calibration is None:
            return q
        a, b = self.confidence_calibration
        return float(1.0 / (1.0 + np.exp(-(a * np.log(q / (1 - q)) + b))))

    @property
    def crop_size(self) -> int:
        """Crop size of the first member (members may differ: see ``geometries``)."""
        return self.geometries[0][0]

    @staticmethod
    def crops(
        slice2d: np.ndarray, center_rc: tuple[float, float], width: float, geometry: tuple[int, float], *,
        spacing_rc: tuple[float, float] = (1.0, 1.0), tta: bool = True,
    ) -> tuple[np.ndarray, float]:
        """The (variants, 1, size, size) input of one disc for one crop geometry (size, field-of-view factor),
        and the fraction of the crop outside the slice."""
        size, fov = geometry
        variants = TTA_VARIANTS if tta else TTA_VARIANTS[:1]
        crops, outside = [], []
        for angle, scale, flip in variants:
            c, o = extract_crop(
                slice2d, center_rc, width, spacing_rc=spacing_rc, size=size,
                fov_factor=fov, angle_deg=angle, scale=scale, flip=flip,
            )
            crops.append(c)
            outside.append(o)
        return np.stack(crops)[:, None].astype(np.float32), float(outside[0])

    def member_logits(
        self, slice2d: np.ndarray, center_rc: tuple[float, float], width: float, *,
        spacing_rc: tuple[float, float] = (1.0, 1.0), tta: bool = True,
    ) -> tuple[np.ndarray, float]:
        """Raw logits (members, variants, 5) of one disc, each member on its own crop (no temperature), and the
        largest fraction of a crop outside the slice."""
        torch = _torch()
        out, outside = [None] * len(self.nets), 0.0
        for geometry in dict.fromkeys(self.geometries):
            x, o = self.crops(slice2d, center_rc, width, geometry, spacing_rc=spacing_rc, tta=tta)
            outside = max(outside, o)
            xt = torch.from_numpy(np.ascontiguousarray(x))
            with torch.no_grad():
                for i, (net, g) in enumerate(zip(self.nets, self.geometries, strict=True)):
                    if g == geometry:
                        out[i] = net(xt).double().numpy()
        return np.stack(out), outside

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

        With ``tta`` the probabilities are averaged over :data:`.augment.TTA_VARIANTS` (and over the members).
        """
        logits, outside = self.member_logits(slice2d, center_rc, width, spacing_rc=spacing_rc, tta=tta)
        return probabilities_from_logits(logits, self.temperature), outside


def probabilities_from_logits(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Mean over all leading axes (members, variants) of softmax(logits / temperature); last axis = grades."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    p = p.reshape(-1, p.shape[-1]).mean(0)
    return p / p.sum()


def fit_temperature(logits_tta: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising the NLL of the TTA-averaged probabilities (grid search, robust).

    ``logits_tta`` (variants, discs, 5), ``y`` grade indices 0..4. Used by the training, ensemble and
    cross-fitting scripts.
    """
    best_t, best_nll = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.3), np.log(5.0), 120)):
        z = logits_tta / t
        p = np.exp(z - z.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        pm = p.mean(0)
        nll = -np.mean(np.log(pm[np.arange(len(y)), y] + 1e-12))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def load_model(path=None, *, temperature: float | None = None) -> GradingModel:
    """The shipped model (every member verified by SHA-256), or the weights file(s) at ``path`` (one path or a
    sequence of paths: scripts evaluating freshly trained candidates). Files are read with ``weights_only=True``.

    ``temperature``: for several files, the common temperature (default: the mean of the files' own ones,
    which is not calibrated: fit one with scripts/build_grading_ensemble.py); one file uses its own.
    """
    if path is None:
        return _shipped_model()
    paths = [str(path)] if isinstance(path, (str, os.PathLike)) else [str(p) for p in path]
    return _load(paths, temperature)


@functools.lru_cache(maxsize=1)
def _shipped_model() -> GradingModel:
    from ..resources import verified_path

    paths = [str(verified_path(f, sha)) for f, sha in MODEL_FILES]
    model = _load(paths, ENSEMBLE_TEMPERATURE if len(paths) > 1 else None)
    return dataclasses.replace(model, confidence_calibration=CONFIDENCE_CALIBRATION)


def _load(paths: list[str], temperature: float | None) -> GradingModel:
    torch = _torch()
    if not paths:
        raise ValueError("no weights file given")
    nets, meta = [], []
    for path in paths:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        net = build_model(tuple(payload["channels"]), backbone=str(payload.get("backbone", "vgg")))
        net.load_state_dict(payload["state_dict"])
        net.eval()
        nets.append(net)
        meta.append((int(payload["crop_size"]), float(payload["fov_factor"]), float(payload["temperature"])))
    if temperature is None:
        temperature = meta[0][2] if len(meta) == 1 else float(np.mean([m[2] for m in meta]))
    return GradingModel(
        nets=tuple(nets),
        geometries=tuple(m[:2] for m in meta),
        temperature=float(temperature),
        source=" + ".join(paths),
    )
