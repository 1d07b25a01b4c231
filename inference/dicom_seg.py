"""A segmentation result as a DICOM Segmentation (highdicom): what a radiologist's viewer overlays
on the CT it came from.

One segment per tissue the model found, and one per composite (body = every tissue), each BINARY
(bit-packed), coded with the SNOMED CT category and type the bundle's ``segment_codes`` give, and
naming the algorithm (bundle name, version, ``algorithm_family``). Frames exist only where a segment
is present; each frame references its source slice and carries that slice's position, so the
overlay lands where the tissue is.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.coding import Code

from .bundle import Bundle, BundleError
from .run import Segmentation

#: Said by the series description of every result object.
NOT_FOR_DIAGNOSIS = "AI output, not for primary diagnosis unless validated"


@dataclass(frozen=True)
class ResultIdentity:
    """The identity of one result object and of the node that made it."""

    series_instance_uid: str
    sop_instance_uid: str
    series_number: int
    manufacturer: str
    software_version: str
    device_serial_number: str


def parse_code(text: str) -> Code:
    """``"SCT:39607008:Lung"`` (scheme, value, meaning) as a Code."""
    scheme, value, meaning = text.split(":", 2)
    return Code(value, scheme, meaning)


def _masks(bundle: Bundle, result: Segmentation) -> list[tuple[str, np.ndarray]]:
    """Each tissue present, then each composite present, as a boolean volume."""
    masks = [
        (name, result.labels == label)
        for label, name in result.names.items()
        if label != 0 and name in result.segments
    ]
    for name, members in bundle.metadata.get("composite_segments", {}).items():
        if name in result.segments:
            masks.append((name, np.isin(result.labels, members)))
    return masks


def _description(bundle: Bundle, number: int, name: str) -> hd.seg.SegmentDescription:
    try:
        coded = bundle.metadata["segment_codes"][name]
        family = parse_code(bundle.metadata["algorithm_family"])
        category, kind = parse_code(coded["category"]), parse_code(coded["type"])
    except (KeyError, ValueError) as error:
        raise BundleError(
            f"bundle {bundle.path}: metadata.json needs segment_codes.{name} (category and type, "
            f"as SCHEME:VALUE:MEANING) and algorithm_family ({error})"
        ) from None
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name.replace("_", " "),
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=bundle.name, version=bundle.version, family=family
        ),
        tracking_uid=hd.UID(),
        tracking_id=name,
    )


def encode_segmentation(
    bundle: Bundle, result: Segmentation, sources: list[Dataset], identity: ResultIdentity
) -> hd.seg.Segmentation:
    """The SEG of ``result``, whose label volume lies on ``sources`` (the CT headers in volume
    order, as ``CTVolume.datasets``)."""
    masks = _masks(bundle, result)
    if not masks:
        raise ValueError(f"{bundle.name} found no segment: there is nothing to encode")
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=np.stack([mask for _, mask in masks], axis=-1),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            _description(bundle, number, name) for number, (name, _) in enumerate(masks, 1)
        ],
        series_instance_uid=identity.series_instance_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=1,
        manufacturer=identity.manufacturer,
        manufacturer_model_name=f"{bundle.name} {bundle.version}",
        software_versions=identity.software_version,
        device_serial_number=identity.device_serial_number,
        series_description=f"{bundle.name}: {NOT_FOR_DIAGNOSIS}"[:64],
        content_label=bundle.name.upper()[:16],
        content_description=f"{bundle.name} {bundle.version} segmentation"[:64],
        omit_empty_frames=True,
    )
