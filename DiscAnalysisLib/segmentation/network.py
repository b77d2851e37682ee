"""The 2D segmentation network, its shipped weights and slice-by-slice inference.

A MONAI residual U-Net (5 resolution levels, 16..256 channels, ~0.84 M parameters) chosen for speed on a
CPU: strided convolutions keep the full-resolution work small, so a 256 x 256 slice runs in a few tens
of milliseconds on 2 cores. Weights are stored as a float16 state dict (half the size, no measurable
change in the argmax) and loaded with ``torch.load(weights_only=True)`` after their SHA-256 is checked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from ..errors import InputError, require

log = logging.getLogger(__name__)

#: Output classes of the network, in channel order.
CLASSES: tuple[str, ...] = ("background", "disc", "vertebra")
BACKGROUND, DISC, VERTEBRA = 0, 1, 2
#: Shipped weights (relative to Resources/) and their SHA-256; written by scripts/train_segmentation.py.
WEIGHTS_FILE = "Models/disc_vertebra_unet2d.pt"
WEIGHTS_SHA256 = "b75f02ca0993285f3df54ab8ba7bddf7c2e8ce5307b73ef508f81060a03555bb"
#: Architecture hyper-parameters (must match the weights).
NETWORK_KWARGS: dict = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": len(CLASSES),
    "channels": (16, 32, 64, 128, 256),
    "strides": (2, 2, 2, 2),
    "num_res_units": 1,
    "dropout": 0.1,
}
#: Input sizes are padded to a multiple of this (2 ** number of strides).
SIZE_MULTIPLE = 16
def build_network():
    """A freshly initialised network with the shipped architecture."""
    require("torch", "Segmentation", "pip install torch")
    nets = require("monai.networks.nets", "Segmentation", "pip install monai")
    return nets.UNet(**NETWORK_KWARGS)


_CACHE: dict[str, object] = {}


def load_model(weights_path: str | None = None, expected_sha256: str | None = None):
    """The network with shipped (or given) weights, in eval mode; cached per path.

    With ``weights_path`` None the shipped file is used and checked against :data:`WEIGHTS_SHA256`.
    A given path is checked against ``expected_sha256`` when that is provided.
    """
    torch = require("torch", "Segmentation", "pip install torch")
    from ..resources import sha256_of, verified_path

    if weights_path is None:
        path = str(verified_path(WEIGHTS_FILE, WEIGHTS_SHA256))
    else:
        path = str(weights_path)
        if expected_sha256 is not None and sha256_of(path) != expected_sha256:
            raise InputError(f"Weights file {path} failed its SHA-256 check; it is corrupted or was replaced.")
    key = path
    if key in _CACHE:
        return _CACHE[key]
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = build_network()
    try:
        net.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        raise InputError(f"Weights file {path} does not match the segmentation network ({str(exc)[:200]}).") from None
    net.eval()
    _CACHE[key] = net
    return net


def predict_probabilities(
    net,
    slices: np.ndarray,
    *,
    batch_size: int = 8,
    tta: bool = False,
    on_batch: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Softmax probabilities (n, classes, rows, cols) for normalised canonical slices (n, rows, cols).

    Slices are padded (edge value) to a multiple of :data:`SIZE_MULTIPLE` and cropped back. With ``tta``
    the mean over the identity and two intensity variants (gamma 0.8 and 1.25 applied before the z-score
    is re-established) is returned; no geometric flips, because the anatomy is not symmetric
    anterior-posterior or superior-inferior.
    """
    require("torch", "Segmentation", "pip install torch")
    n, h, w = slices.shape
    ph = (-h) % SIZE_MULTIPLE
    pw = (-w) % SIZE_MULTIPLE
    x = np.pad(slices, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="edge")
    out = np.empty((n, len(CLASSES), h, w), dtype=np.float32)
    variants = [None, 0.8, 1.25] if tta else [None]
    # torch's own thread count is used: on a quiet 2-core machine 2 threads run one 256 x 256 slice in 20 ms
    # against 35 ms for 1; on a saturated machine set OMP_NUM_THREADS=1 (docs/validation.md, issue 4 speed).
    _run_batches(net, x, out, variants, batch_size, (ph, pw), on_batch)
    return out


def _run_batches(net, x: np.ndarray, out: np.ndarray, variants, batch_size: int, pad: tuple[int, int], on_batch) -> None:
    torch = require("torch", "Segmentation", "pip install torch")
    n, h, w = out.shape[0], out.shape[2], out.shape[3]
    ph, pw = pad
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            xb = x[start : start + batch_size]
            acc = None
            for g in variants:
                xv = xb if g is None else _gamma_z(xb, g)
                p = torch.softmax(net(torch.from_numpy(np.ascontiguousarray(xv))[:, None]), dim=1).numpy()
                acc = p if acc is None else acc + p
            acc /= len(variants)
            out[start : start + batch_size] = acc[:, :, ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
            if on_batch is not None:
                on_batch(min(1.0, (start + batch_size) / n))


def _gamma_z(x: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma on a z-scored batch (per slice): map to [0, 1], apply gamma, z-score again."""
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    u = (x - lo) / np.maximum(hi - lo, 1e-6)
    u = u**gamma
    return ((u - u.mean(axis=(1, 2), keepdims=True)) / np.maximum(u.std(axis=(1, 2), keepdims=True), 1e-6)).astype(
        np.float32
    )
