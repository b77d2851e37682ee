"""The grading network and its losses (torch is imported lazily through :func:`_torch`).

A compact VGG-style CNN trained from scratch (no pretrained weights are available offline): one 3x3
convolution (16 channels) then three blocks of two 3x3 convolutions (32, 64, 128 channels), each with
batch norm + ReLU and 2x2 max pooling, on a 64 x 64 crop; global average pooling, dropout and a linear
layer to the five Pfirrmann grades. About
0.29 M parameters (1.2 MB as float32), small enough to train on two CPU cores in minutes and to ship.
"""

from __future__ import annotations

from ..errors import require

N_GRADES = 5
CHANNELS = (16, 32, 64, 128)


def _torch():
    return require("torch", "Pfirrmann grading", "pip install torch (or install the PyTorch Slicer extension)")


def build_model(channels: tuple[int, ...] = CHANNELS, dropout: float = 0.3):
    """A fresh (randomly initialised) grading network: input (N, 1, H, W), output logits (N, 5)."""
    torch = _torch()
    nn = torch.nn
    # One convolution at full resolution, then double-convolution blocks at 1/2, 1/4, 1/8: the costly
    # full-resolution layer is kept single, which halves training time on CPU for the same depth.
    layers = [nn.Conv2d(1, channels[0], 3, padding=1, bias=False), nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    c_in = channels[0]
    for c in channels[1:]:
        layers += [
            nn.Conv2d(c_in, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, N_GRADES)]
    return nn.Sequential(*layers)


def focal_loss(logits, target, alpha=None, gamma: float = 2.0):
    """Multi-class focal loss (Lin et al. 2017), mean over the batch.

    ``FL = -alpha[y] * (1 - p_y) ** gamma * log(p_y)``, with ``alpha`` per-class weights (e.g. inverse
    class frequency, as in the stronger-baseline Pfirrmann paper) or None for all ones. ``target`` holds
    class indices 0..4 (grade - 1).
    """
    torch = _torch()
    logp = torch.log_softmax(logits, dim=1)
    logp_y = logp.gather(1, target[:, None])[:, 0]
    p_y = logp_y.exp()
    loss = -((1.0 - p_y) ** gamma) * logp_y
    if alpha is not None:
        loss = loss * alpha[target]
    return loss.mean()


def ordinal_emd_loss(logits, target):
    """Squared earth mover's distance between the predicted and the one-hot grade distribution.

    For ordered classes this is the sum of squared differences of the cumulative distributions; it
    penalises a 2 -> 5 error more than a 2 -> 3 error, which plain cross-entropy does not.
    """
    torch = _torch()
    p = torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(target, N_GRADES).to(p.dtype)
    return ((p.cumsum(1) - onehot.cumsum(1)) ** 2).sum(1).mean()
