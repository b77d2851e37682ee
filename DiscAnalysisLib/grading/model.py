"""The grading network and its losses (torch is imported lazily through :func:`_torch`).

A compact VGG-style CNN trained from scratch (no pretrained weights are available offline): one 3x3
convolution (16 channels) then three blocks of two 3x3 convolutions (32, 64, 128 channels), each with
batch norm + ReLU and 2x2 max pooling, on a 64 x 64 (or 96 x 96) crop; global average pooling, dropout and a linear
layer to the five Pfirrmann grades. About
0.29 M parameters (1.2 MB as float32), small enough to train on two CPU cores in minutes and to ship.

``backbone="segenc"`` (an experiment of session 6, not shipped) puts the segmentation U-Net's encoder, which can
start from the shipped segmentation weights, in place of the convolutions; out of fold it grades far worse
(docs/validation.md, "Session 6: the segmentation network's encoder as a pretrained backbone").
"""

from __future__ import annotations

from ..errors import require

N_GRADES = 5
CHANNELS = (16, 32, 64, 128)


def _torch():
    return require("torch", "Pfirrmann grading", "pip install torch (or install the PyTorch Slicer extension)")


#: Backbones: "vgg" (the network above, trained from scratch) or "segenc" (the encoder of the segmentation
#: U-Net, see :func:`segmentation_encoder_of`).
BACKBONES = ("vgg", "segenc")


def build_model(channels: tuple[int, ...] = CHANNELS, dropout: float = 0.3, backbone: str = "vgg"):
    """A fresh (randomly initialised) grading network: input (N, 1, H, W), output logits (N, 5)."""
    torch = _torch()
    nn = torch.nn
    if backbone == "segenc":
        from ..segmentation.network import build_network

        encoder = segmentation_encoder_of(build_network())
        return nn.Sequential(_standardise(), *encoder, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                             nn.Linear(encoder[-1].residual.out_channels, N_GRADES))
    if backbone != "vgg":
        raise ValueError(f"unknown grading backbone {backbone!r}; expected one of {BACKBONES}")
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


def init_from_segmentation(model, weights_path: str | None = None) -> int:
    """Copy the segmentation network's weights (shipped, SHA-256 checked, unless a path is given) into the
    encoder of a ``backbone="segenc"`` grading model; returns the number of tensors copied."""
    from ..segmentation.network import load_model

    seg = load_model(weights_path)
    src = [layer.state_dict() for layer in segmentation_encoder_of(seg)]
    dst = [m for m in model if hasattr(m, "residual")]
    if len(src) != len(dst):
        raise ValueError("grading model is not a segmentation-encoder model")
    n = 0
    for d, sd in zip(dst, src, strict=True):
        d.load_state_dict(sd)
        n += len(sd)
    return n


def segmentation_encoder_of(seg):
    """The down-sampling path of a built segmentation U-Net: its 4 strided residual units and the bottom unit,
    the same module objects (and parameter names) as in the U-Net, so segmentation weights fit them directly."""
    layers, m = [], seg.model
    while True:
        layers.append(m[0])
        inner = m[1].submodule
        if not hasattr(inner, "__getitem__"):
            layers.append(inner)
            return layers
        m = inner


def _standardise():
    """Zero-mean unit-variance per crop: the segmentation network was trained on standardised slices."""
    torch = _torch()

    class Standardise(torch.nn.Module):
        def forward(self, x):
            mu = x.mean(dim=(1, 2, 3), keepdim=True)
            sd = x.std(dim=(1, 2, 3), keepdim=True)
            return (x - mu) / (sd + 1e-6)

    return Standardise()


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
