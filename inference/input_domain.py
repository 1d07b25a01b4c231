"""Is an input inside a classifier's domain? Checked before its answer is trusted.

Two kinds of check, both declared in the bundle's ``metadata.json`` under ``input_domain``:

- the header, where it says something the training data rules out: a patient age outside
  ``patient_age_years`` (from Patient's Age, else birth and study dates), a View Position outside
  ``view_positions`` (a lateral chest film), a Modality outside ``modalities``;
- the tones of the network's input: a radiograph or an ultrasound frame, stretched to 0..1, has
  most of its pixels in mid-greys; one shown through a narrow window is nearly all black and
  white. ``min_mid_tone_share`` is a low percentile of the validation images' share of pixels
  strictly inside :data:`MID_TONES`; it does not depend on the network, which (trained on strong
  contrast changes) can see a windowed-out radiograph as an ordinary one;
- the network's own view of the pixels: the features at ``feature_layer`` (the pooled features the
  classifier head reads) of an image the network was trained on lie close to a low-dimensional
  subspace of the training images' features; the distance from it (the norm of what the
  ``models/feature_statistics.pt`` principal components do not explain) grows for inverted or
  windowed-out images, other body parts and other modalities. Its threshold,
  ``feature_threshold``, is a high percentile of the validation images' distances, so few in-domain
  images are flagged; :mod:`inference.evaluate` fits both and measures the synthetic transforms.

A flagged input still gets its probability, but no finding: the result says *not assessed* and
why, so nobody reads a confident answer into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from pydicom import Dataset
    from torch.utils.hooks import RemovableHandle

FEATURE_STATISTICS = Path("models") / "feature_statistics.pt"
#: principal components of the training features kept as "the domain"
FEATURE_COMPONENTS = 32
#: percentile of the validation images' feature distances used as the threshold
FEATURE_PERCENTILE = 99.5
#: grey levels of the 0..1 network input between which a pixel counts as a mid-tone
MID_TONES = (0.02, 0.98)
#: percentile of the validation images' mid-tone shares used as the lowest in-domain share
TONE_PERCENTILE = 0.5
AGE_UNITS = {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}


@dataclass(frozen=True)
class FeatureStatistics:
    """Mean and principal components (D, K) of the training images' features."""

    mean: np.ndarray
    components: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, components: int = FEATURE_COMPONENTS) -> FeatureStatistics:
        mean = features.mean(axis=0)
        _, _, rows = np.linalg.svd(features - mean, full_matrices=False)
        return cls(mean.astype(np.float32), rows[:components].T.astype(np.float32))

    @classmethod
    def load(cls, path: Path) -> FeatureStatistics:
        import torch

        stored = torch.load(path, map_location="cpu", weights_only=True)
        return cls(stored["mean"].float().numpy(), stored["components"].float().numpy())

    def save(self, path: Path) -> None:
        import torch

        torch.save(
            {
                "mean": torch.from_numpy(self.mean).half(),
                "components": torch.from_numpy(self.components).half(),
            },
            path,
        )

    def distance(self, features: np.ndarray) -> np.ndarray:
        """How far each row of (N, D) ``features`` lies from the training subspace."""
        centred = features - self.mean
        residual = centred - (centred @ self.components) @ self.components.T
        return np.linalg.norm(residual, axis=1)


def mid_tone_share(images: torch.Tensor) -> np.ndarray:
    """Share of each (N, 1, S, S) pre-processed image's pixels that are mid-tones."""
    low, high = MID_TONES
    return ((images > low) & (images < high)).flatten(1).float().mean(1).cpu().numpy()


def patient_age_years(ds: Dataset) -> float | None:
    """Patient's Age (``081Y``, ``006M``; a bare number taken as years), else Study Date minus
    Patient's Birth Date; None when the header says neither."""
    age = str(ds.get("PatientAge", "") or "").strip().upper()
    if age:
        unit = age[-1] if age[-1] in AGE_UNITS else "Y"
        number = age[:-1] if age[-1] in AGE_UNITS else age
        if number.isdigit():
            return int(number) / AGE_UNITS[unit]
    born, seen = str(ds.get("PatientBirthDate", "") or ""), str(ds.get("StudyDate", "") or "")
    try:
        return (_date(seen) - _date(born)).days / 365.25
    except ValueError:
        return None


def _date(value: str) -> date:
    return date(int(value[:4]), int(value[4:6]), int(value[6:8]))


@dataclass(frozen=True)
class InputDomain:
    """A bundle's ``input_domain``: what it was trained on, and the thresholds that say an input
    is not that."""

    description: str
    feature_layer: str | None = None
    feature_threshold: float | None = None
    min_mid_tone_share: float | None = None
    age_years: tuple[float, float] | None = None
    view_positions: frozenset[str] | None = None
    modalities: frozenset[str] | None = None

    @classmethod
    def from_metadata(cls, metadata: dict) -> InputDomain | None:
        given = metadata.get("input_domain")
        if not given:
            return None
        ages = given.get("patient_age_years")
        views = given.get("view_positions")
        modalities = given.get("modalities")
        threshold = given.get("feature_threshold")
        tones = given.get("min_mid_tone_share")
        return cls(
            description=str(given.get("description", "")),
            feature_layer=given.get("feature_layer"),
            feature_threshold=None if threshold is None else float(threshold),
            min_mid_tone_share=None if tones is None else float(tones),
            age_years=None if ages is None else (float(ages[0]), float(ages[1])),
            view_positions=None if views is None else frozenset(v.upper() for v in views),
            modalities=None if modalities is None else frozenset(m.upper() for m in modalities),
        )

    def header_concerns(self, ds: Dataset) -> list[str]:
        """What the header says against the input (no identifying values: an age is not
        repeated, only its range)."""
        concerns = []
        if self.age_years is not None:
            age = patient_age_years(ds)
            low, high = self.age_years
            if age is not None and not low <= age < high + 1:
                concerns.append(f"patient age outside the trained {low:g}-{high:g} years")
        for keyword, allowed, what in (
            ("ViewPosition", self.view_positions, "view position"),
            ("Modality", self.modalities, "modality"),
        ):
            value = str(ds.get(keyword, "") or "").strip().upper()
            if allowed is not None and value and value not in allowed:
                concerns.append(f"{what} {value}, not {'/'.join(sorted(allowed))}")
        return concerns

    def feature_concern(self, distance: float) -> str | None:
        if self.feature_threshold is None or distance <= self.feature_threshold:
            return None
        return (
            f"image unlike the training images (feature distance {distance:.3g} > "
            f"{self.feature_threshold:g})"
        )

    def tone_concern(self, share: float) -> str | None:
        if self.min_mid_tone_share is None or share >= self.min_mid_tone_share:
            return None
        return (
            f"image nearly all black and white (mid-tones {share:.0%} of the pixels < "
            f"{self.min_mid_tone_share:.0%}): windowed out or saturated"
        )


def feature_hook(network: torch.nn.Module, layer: str, into: list) -> RemovableHandle:
    """Collect the flattened output of ``network``'s module ``layer`` into ``into`` on every
    forward pass (remove the returned handle when done)."""
    module = dict(network.named_modules())[layer]
    return module.register_forward_hook(lambda _m, _i, output: into.append(output.flatten(1)))
