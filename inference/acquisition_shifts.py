"""Validation images as another hospital might have produced them: the same patients through
other tone curves, sharpness and framing. The validation patients share the training patients'
site and preparation, so their figures flatter a model; how far sensitivity and specificity move
under these changes, at the fixed threshold, is the card's warning of how it may fare elsewhere
(the specificity most of all: a shifted normal image that looks abnormal is a false alarm)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Shift = Callable[[torch.Tensor], torch.Tensor]


def gamma(exponent: float) -> Shift:
    """Another tone curve: above 1 darkens the mid-greys, below 1 lightens them."""
    return lambda images: images.clamp(0.0, 1.0) ** exponent


def blurred(sigma_fraction: float) -> Shift:
    """A softer detector or a stronger smoothing filter: Gaussian blur, sigma a fraction of the
    image's side. Edges are repeated beyond the border (MONAI's GaussianSmooth pads with zeros,
    which would darken a flat image's margins into a change of its own)."""

    def shift(images: torch.Tensor) -> torch.Tensor:
        sigma = max(sigma_fraction * images.shape[-1], 0.5)
        radius = int(3 * sigma)
        offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
        kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
        rows = F.conv2d(padded, kernel.view(1, 1, 1, -1))
        return F.conv2d(rows, kernel.view(1, 1, -1, 1))

    return shift


def zoomed(fraction: float) -> Shift:
    """Other framing. Below 1, tighter collimation: the central ``fraction`` of the image,
    enlarged to the full size. Above 1, wider: the image shrunk by ``1 / fraction`` in the
    middle of the frame, its edges repeated around it."""

    def shift(images: torch.Tensor) -> torch.Tensor:
        side = images.shape[-1]
        if fraction <= 1:
            keep = round(side * fraction)
            start = (side - keep) // 2
            crop = images[..., start : start + keep, start : start + keep]
            return F.interpolate(crop, size=(side, side), mode="bilinear", align_corners=False)
        small = round(side / fraction)
        before = (side - small) // 2
        after = side - small - before
        shrunk = F.interpolate(images, size=(small, small), mode="area")
        return F.pad(shrunk, (before, after, before, after), mode="replicate")

    return shift


#: The changes the card reports, by the name it gives them.
SHIFTS: dict[str, Shift] = {
    "darker mid-greys (gamma 1.5)": gamma(1.5),
    "lighter mid-greys (gamma 0.67)": gamma(1 / 1.5),
    "blurred (sigma 2 % of the side)": blurred(0.02),
    "zoomed in (central 75 %)": zoomed(0.75),
    "zoomed out (85 % of the frame)": zoomed(1 / 0.85),
}
