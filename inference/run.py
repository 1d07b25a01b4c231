"""Running a bundle on an input: 2D images through a classifier, CT volumes through a segmenter.

Both take arrays (or a :class:`CTVolume`) and return plain results; reading from a network or a
database is the caller's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.transforms import Resize
from monai.utils import convert_to_tensor
from monai.visualize import GradCAM
from pydicom import Dataset

from inference.bundle import Bundle, BundleError
from inference.ct_series import CTVolume
from inference.input_domain import feature_hook, mid_tone_share


@dataclass
class Classification:
    """Class probabilities of one image, the finding at the bundle's threshold, and optionally the
    Grad-CAM map of the positive class on the source image's grid (values 0..1). An image outside
    the model's domain has ``concerns`` (why) and no finding."""

    model: str
    version: str
    probabilities: dict[str, float]
    threshold: float
    heatmap: np.ndarray | None = field(default=None, repr=False)
    concerns: list[str] = field(default_factory=list)
    #: the feature check's distance from the training images (None: not checked)
    domain_distance: float | None = None

    @property
    def positive(self) -> str:
        """The class the threshold applies to (the last output channel, e.g. pneumonia)."""
        return list(self.probabilities)[-1]

    @property
    def assessed(self) -> bool:
        """Whether the image is within the model's domain, so that its finding stands."""
        return not self.concerns

    @property
    def finding(self) -> str | None:
        """The class at the threshold; None for an image outside the model's domain."""
        if not self.assessed:
            return None
        if self.probabilities[self.positive] >= self.threshold:
            return self.positive
        return next(iter(self.probabilities))

    def as_json(self) -> dict[str, object]:
        given: dict[str, object] = {
            "model": self.model,
            "version": self.version,
            "probabilities": self.probabilities,
            "threshold": self.threshold,
            "finding": self.finding,
        }
        if self.concerns:
            given["out_of_domain"] = self.concerns
        return given


@dataclass
class SegmentMeasurement:
    volume_ml: float
    mean_hu: float
    std_hu: float


@dataclass
class Segmentation:
    """A label volume on the source grid, its label names, and each segment's measurements."""

    model: str
    version: str
    labels: np.ndarray = field(repr=False)
    names: dict[int, str]
    segments: dict[str, SegmentMeasurement]

    def as_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "version": self.version,
            "segments": {
                name: {
                    "volume_ml": round(m.volume_ml, 1),
                    "mean_hu": round(m.mean_hu, 1),
                    "std_hu": round(m.std_hu, 1),
                }
                for name, m in self.segments.items()
            },
        }


def _require(bundle: Bundle, task: str) -> None:
    if bundle.task != task:
        raise BundleError(f"model {bundle.name} is a {bundle.task} model, not {task}")


def classify(
    bundle: Bundle,
    images: list[np.ndarray],
    explain: bool = False,
    headers: Sequence[Dataset] | None = None,
) -> list[Classification]:
    """Calibrated probabilities for each (1, H, W) display-space image, batched; each image
    checked against the bundle's input domain (with its DICOM header where given); Grad-CAM maps
    on request."""
    _require(bundle, "classification")
    # Plain tensors: MONAI's MetaTensor bookkeeping costs more than the network on a CPU.
    inputs = [convert_to_tensor(bundle.preprocessing(image), track_meta=False) for image in images]
    network = bundle.network  # loaded first: it settles bundle.device
    batch = torch.stack(inputs).float().to(bundle.device)
    batch = batch.contiguous(memory_format=torch.channels_last)  # as the weights are laid out
    domain, statistics = bundle.input_domain, bundle.feature_statistics
    features: list[torch.Tensor] = []
    hook = (
        feature_hook(network, domain.feature_layer, features)
        if domain is not None and domain.feature_layer and statistics is not None
        else None
    )
    try:
        with torch.no_grad():
            outputs = network(batch).cpu()
    finally:
        if hook is not None:
            hook.remove()
    if bundle.calibration is not None:
        outputs = bundle.calibration.logits(outputs)
    distances = (
        statistics.distance(torch.cat(features).cpu().numpy()).tolist()
        if statistics is not None and features
        else [None] * len(images)
    )
    tones = mid_tone_share(batch).tolist()
    names = [bundle.labels[i] for i in sorted(bundle.labels)]
    results = []
    for index, (output, distance) in enumerate(zip(outputs, distances, strict=True)):
        probabilities = torch.as_tensor(bundle.postprocessing(output)).float().tolist()
        concerns: list[str] = []
        if domain is not None:
            if headers is not None:
                concerns += domain.header_concerns(headers[index])
            if concern := domain.tone_concern(tones[index]):
                concerns.append(concern)
            if distance is not None and (concern := domain.feature_concern(distance)):
                concerns.append(concern)
        results.append(
            Classification(
                bundle.name,
                bundle.version,
                dict(zip(names, probabilities, strict=True)),
                bundle.threshold,
                concerns=concerns,
                domain_distance=distance,
            )
        )
    if explain:
        maps = gradcam(bundle, batch, class_index=len(names) - 1)
        for result, image, heatmap in zip(results, images, maps, strict=True):
            result.heatmap = np.asarray(Resize(image.shape[1:], mode="bilinear")(heatmap[None]))[0]
    return results


def gradcam(bundle: Bundle, batch: torch.Tensor, class_index: int) -> np.ndarray:
    """Grad-CAM of ``class_index`` at the bundle's ``gradcam_layer``: (N, S, S) in 0..1."""
    layer = bundle.get("gradcam_layer")
    if layer is None:
        raise BundleError(f"model {bundle.name} names no gradcam_layer in its inference.json")
    cam = GradCAM(nn_module=bundle.network, target_layers=layer)
    with torch.enable_grad():
        maps = cam(x=batch.clone().requires_grad_(True), class_idx=class_index)
    return maps[:, 0].detach().cpu().numpy()


def measure(
    labels: np.ndarray,
    hu: np.ndarray,
    voxel_ml: float,
    names: dict[int, str],
    composites: dict[str, list[int]],
) -> dict[str, SegmentMeasurement]:
    """Volume (mL) and HU mean/std of each label present, and of each composite (e.g. body = all
    tissues), from per-label count, sum and sum of squares (float64)."""
    moments: dict[int, tuple[int, float, float]] = {}
    for label in names:
        if label == 0:
            continue
        values = hu[labels == label].astype(np.float64)
        moments[label] = (values.size, float(values.sum()), float(values @ values))
    groups = {name: [label] for label, name in names.items() if label != 0} | composites
    segments = {}
    for name, members in groups.items():
        n = sum(moments[m][0] for m in members if m in moments)
        if n == 0:
            continue
        mean = sum(moments[m][1] for m in members if m in moments) / n
        squares = sum(moments[m][2] for m in members if m in moments) / n
        std = float(np.sqrt(max(squares - mean * mean, 0.0)))
        segments[name] = SegmentMeasurement(n * voxel_ml, mean, std)
    return segments


def segment(bundle: Bundle, volume: CTVolume) -> Segmentation:
    """Label volume and measurements of a CT volume (the network takes (1, 1, slices, rows, columns)
    HU)."""
    _require(bundle, "segmentation")
    image = torch.as_tensor(bundle.preprocessing(torch.from_numpy(volume.hu)[None]))
    network = bundle.network  # loaded first: it settles bundle.device
    with torch.no_grad():
        output = bundle.postprocessing(network(image[None].to(bundle.device))[0].cpu())
    labels = np.asarray(output)[0].astype(np.uint8)
    composites = {
        name: list(members)
        for name, members in bundle.metadata.get("composite_segments", {}).items()
    }
    segments = measure(labels, volume.hu, volume.voxel_ml, bundle.labels, composites)
    return Segmentation(bundle.name, bundle.version, labels, bundle.labels, segments)
