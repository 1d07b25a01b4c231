"""Model outputs as DICOM Segmentations (highdicom): what a radiologist's viewer overlays on the
images they came from.

One segment per tissue the model found, each BINARY (bit-packed), coded with the SNOMED CT
category and type the bundle's ``segment_codes`` give, and naming the algorithm (bundle name,
version, ``algorithm_family``) and shown in the colour the bundle's ``segment_codes`` give
(``color``, a CSS colour name or ``#rrggbb``). Frames exist only where a segment is present; each
frame references its source slice and carries that slice's position, so the overlay lands where
the tissue is. The tissues never overlap, so a viewer draws them as one label map (OHIF 3.13: a
composite such as body = every tissue overlapped them all and cost a second layer, a 40-160 s
load; composites stay in ``dicom-node infer``'s output only).

A classifier's explanation (its Grad-CAM map) is a BINARY segmentation of the image it explains,
on the image's own pixel grid: one segment per band of the map (``EXPLANATION_BANDS``), the bands
not overlapping. OHIF 3.13 shows no FRACTIONAL segmentation, and needs Pixel Measures, which a
projection image without a frame of reference gets from its Imager Pixel Spacing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from itertools import pairwise

import highdicom as hd
import numpy as np
from monai.transforms import Resize
from pydicom import DataElement, Dataset, config
from pydicom.sr.coding import Code
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import validate_value

from .bundle import Bundle
from .errors import UnsuitableInput
from .result_codes import display_color, metadata_code
from .run import Classification, Segmentation

#: Said whole by the series description of every result object and the content of every report.
NOT_FOR_DIAGNOSIS = "AI result, not for primary diagnosis"
#: The Type 2 attributes highdicom reads from a source image as ``source.Keyword`` (highdicom
#: 0.28: ``seg/sop.py`` and ``sr/sop.py``, Patient and General Study modules).
HIGHDICOM_TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
#: Patient and Patient Study module attributes, which highdicom copies into every result
PATIENT_GROUP = 0x0010
#: The explanation's segments: the part of the Grad-CAM map (peak 1) from each lower bound up to
#: the next, and its display colour, warmer where the evidence is stronger.
EXPLANATION_BANDS = ((0.5, "#ffd700"), (0.75, "#ff2020"))


@dataclass(frozen=True)
class ResultIdentity:
    """The identity of one result object and of the node that made it (``device_uid`` names
    the node running this model, the observer device of reports)."""

    series_instance_uid: str
    sop_instance_uid: str
    series_number: int
    manufacturer: str
    software_version: str
    device_serial_number: str
    device_uid: str
    instance_number: int = 1


def derived_uid(*parts: str) -> str:
    """A UID that is a function of ``parts`` (a name-based UUID under the 2.25 root, PS3.5
    B.2): the same result of the same source always gets the same UID, so making it twice
    makes no second object."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '/'.join(parts)).int}"


def series_description(bundle: Bundle, kind: str) -> str:
    """``"<model> <kind>: <disclaimer>"`` within LO's 64 characters: the model's name is
    shortened to fit, never the disclaimer, which a viewer's series list must show whole."""
    tail = f" {kind}: {NOT_FOR_DIAGNOSIS}"
    return bundle.name[: 64 - len(tail)] + tail


def _valid(element: DataElement) -> bool:
    try:
        validate_value(element.VR, element.value, config.RAISE)
    except ValueError:
        return False
    return True


def _unusable(source: Dataset) -> list[BaseTag]:
    """What highdicom would copy from ``source`` into a result that dciodvfy rejects: a Patient
    attribute with a value invalid for its VR (the NIH DX's Patient's Age "81"), a zero Pixel
    Spacing (seen in CR exports)."""
    tags = [
        tag
        for tag in source.keys()
        if tag.group == PATIENT_GROUP and source[tag].VR != "SQ" and not _valid(source[tag])
    ]
    spacing = source.get("PixelSpacing")
    if spacing is not None and not all(float(v) > 0 for v in spacing):
        tags.append(Tag("PixelSpacing"))
    return tags


def highdicom_source(source: Dataset) -> Dataset:
    """``source`` as highdicom can take it. Where it lacks a Type 2 attribute highdicom reads
    (absent means empty, PS3.5 7.4, but highdicom raises AttributeError) or holds what would make
    the result invalid, a shallow copy with those attributes empty or left out; ``source`` itself,
    often the stored original, is never changed."""
    unusable = _unusable(source)
    if not unusable and all(keyword in source for keyword in HIGHDICOM_TYPE_2):
        return source
    usable = Dataset()
    usable.update(source)
    for tag in unusable:
        del usable[tag]
    for keyword in HIGHDICOM_TYPE_2:
        if keyword not in usable:
            setattr(usable, keyword, None)
    return usable


def segments_present(result: Segmentation) -> list[tuple[int, str]]:
    """The label and name of each tissue present, in label order: the SEG's segments."""
    return [
        (label, name)
        for label, name in result.names.items()
        if label != 0 and name in result.segments
    ]


def segment_masks(result: Segmentation) -> list[tuple[str, np.ndarray]]:
    """Each tissue present as a boolean volume, in label order: the SEG's segments."""
    return [(name, result.labels == label) for label, name in segments_present(result)]


def segment_number_map(result: Segmentation) -> np.ndarray:
    """The label volume with each tissue's segment number (1, 2, ... in label order) and 0
    elsewhere (a label no segment describes, too): the labels themselves where they are
    numbered so already."""
    present = segments_present(result)
    highest = int(result.labels.max(initial=0))
    if highest <= len(present) and all(
        label == number for number, (label, _) in enumerate(present, 1)
    ):
        return result.labels
    numbers = np.zeros(max(highest, *result.names) + 1, np.uint8)
    for number, (label, _) in enumerate(present, 1):
        numbers[label] = number
    return numbers[result.labels]


def _codes(bundle: Bundle, entry: str) -> tuple[Code, Code, Code]:
    """Category, type and algorithm family of ``entry`` of the bundle's ``segment_codes``."""
    return (
        metadata_code(bundle, "segment_codes", entry, "category"),
        metadata_code(bundle, "segment_codes", entry, "type"),
        metadata_code(bundle, "algorithm_family"),
    )


def _description(
    bundle: Bundle,
    identity: ResultIdentity,
    number: int,
    entry: str,
    label: str,
    tracking_id: str | None = None,
    color: hd.color.CIELabColor | None = None,
) -> hd.seg.SegmentDescription:
    """Segment ``number`` coded as ``segment_codes.<entry>`` and tracked as ``entry`` unless
    ``tracking_id`` is given; its colour the bundle's unless ``color`` is given."""
    tracking_id = tracking_id or entry
    category, kind, family = _codes(bundle, entry)
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=category,
        segmented_property_type=kind,
        display_color=color or display_color(bundle, entry),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=bundle.name, version=bundle.version, family=family
        ),
        tracking_uid=derived_uid(identity.sop_instance_uid, tracking_id),
        tracking_id=tracking_id,
    )


def _common(bundle: Bundle, identity: ResultIdentity, kind: str) -> dict[str, object]:
    """The Segmentation arguments every result of ``bundle`` shares."""
    return {
        "series_instance_uid": identity.series_instance_uid,
        "series_number": identity.series_number,
        "sop_instance_uid": identity.sop_instance_uid,
        "instance_number": identity.instance_number,
        "manufacturer": identity.manufacturer,
        "manufacturer_model_name": f"{bundle.name} {bundle.version}",
        "software_versions": identity.software_version,
        "device_serial_number": identity.device_serial_number,
        "series_description": series_description(bundle, kind),
        "content_label": f"{bundle.name}_{kind}".upper()[:16],
        "content_description": f"{bundle.name} {bundle.version} {kind}"[:64],
    }


def encode_segmentation(
    bundle: Bundle, result: Segmentation, sources: list[Dataset], identity: ResultIdentity
) -> hd.seg.Segmentation:
    """The SEG of ``result``, whose label volume lies on ``sources`` (the CT headers in volume
    order, as ``CTVolume.datasets``)."""
    present = segments_present(result)
    if not present:
        raise UnsuitableInput(f"{bundle.name} found no segment: there is nothing to encode")
    # The segments as one map of segment numbers, which highdicom checks with one maximum; a
    # stack of masks costs a sum over the segments for its overlap check and five times the
    # memory (the 248-slice chest CT: 1.5-2 s and 325 MB), for the same frames.
    return hd.seg.Segmentation(
        source_images=[highdicom_source(source) for source in sources],
        pixel_array=segment_number_map(result),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            _description(bundle, identity, number, name, name.replace("_", " "))
            for number, (_, name) in enumerate(present, 1)
        ],
        omit_empty_frames=True,
        **_common(bundle, identity, "segmentation"),
    )


def explanation_map(result: Classification, source: Dataset) -> np.ndarray:
    """The Grad-CAM map of ``result`` on the pixel grid of ``source`` (the image's header),
    values 0..1."""
    if result.heatmap is None:
        raise ValueError(f"{result.model}: the classification was run without an explanation")
    grid = (int(source.Rows), int(source.Columns))
    return np.clip(np.asarray(Resize(grid, mode="bilinear")(result.heatmap[None]))[0], 0.0, 1.0)


def _band_label(result: Classification, low: float) -> str:
    return f"{result.positive} evidence >= {low:.0%} (Grad-CAM)"


#: What a viewer takes a pixel to measure where an image says nothing (cornerstone: 1 mm)
UNCALIBRATED_SPACING = 1.0


#: The plane a viewer puts an image without Image Orientation (Patient) in (cornerstone: rows
#: along x, columns along y); a projection image's SEG states it so that OHIF 3.13 lays the
#: frames on the image (it reads no orientation from Patient Orientation).
IMAGE_PLANE_AXES = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _pixel_measures(source: Dataset) -> hd.PixelMeasuresSequence | None:
    """Pixel Measures for the SEG of a projection image without a frame of reference, which
    highdicom leaves out but OHIF 3.13 reads: its Pixel Spacing, else its Imager Pixel Spacing
    (at the detector), else ``UNCALIBRATED_SPACING``, the pixel a viewer assumes; the slice
    thickness, which highdicom requires, nominal. None where the source has a frame of
    reference (highdicom takes its plane geometry). ``source`` is as ``highdicom_source`` gives
    it (a zero Pixel Spacing left out)."""
    if "FrameOfReferenceUID" in source:
        return None
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing")
    return hd.PixelMeasuresSequence(
        pixel_spacing=[float(v) for v in spacing or (UNCALIBRATED_SPACING,) * 2],
        slice_thickness=UNCALIBRATED_SPACING,
    )


def encode_explanation(
    bundle: Bundle, result: Classification, source: Dataset, identity: ResultIdentity
) -> hd.seg.Segmentation:
    """The Grad-CAM map of ``result`` on the grid of ``source`` (the image's header) as a BINARY
    SEG, one segment per ``EXPLANATION_BANDS`` band, coded as ``segment_codes.explanation``."""
    heatmap = explanation_map(result, source)
    usable = highdicom_source(source)
    bounds = [low for low, _ in EXPLANATION_BANDS] + [np.inf]
    bands = [(heatmap >= low) & (heatmap < high) for low, high in pairwise(bounds)]
    segmentation = hd.seg.Segmentation(
        source_images=[usable],
        pixel_array=np.stack(bands, axis=-1)[None],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            _description(
                bundle,
                identity,
                number,
                "explanation",
                _band_label(result, low),
                f"explanation_{low:.2f}",
                hd.color.CIELabColor.from_string(color),
            )
            for number, (low, color) in enumerate(EXPLANATION_BANDS, 1)
        ],
        pixel_measures=_pixel_measures(usable),
        **_common(bundle, identity, "explanation"),
    )
    if "FrameOfReferenceUID" not in segmentation:
        # A projection image without a frame of reference: its orientation is given this way
        # (General Image module, Type 2C).
        segmentation.PatientOrientation = source.get("PatientOrientation", "")
        segmentation.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence = [
            hd.PlaneOrientationSequence("PATIENT", IMAGE_PLANE_AXES)[0]
        ]
    return segmentation
