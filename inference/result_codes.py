"""The codes and colours a bundle's metadata gives its DICOM results, read and checked without
the network: ``check_result_codes`` runs when the node is configured (``check-config``, ``serve``,
each job worker), where importing PyTorch would only cost time and memory."""

from __future__ import annotations

import highdicom as hd
from pydicom.sr.coding import Code

from .bundle import Bundle, BundleError


def parse_code(text: str) -> Code:
    """``"SCT:39607008:Lung"`` (scheme, value, meaning) as a Code."""
    scheme, value, meaning = text.split(":", 2)
    return Code(value, scheme, meaning)


def metadata_code(bundle: Bundle, *keys: str) -> Code:
    """The code at ``keys`` of the bundle's metadata, written ``"SCHEME:VALUE:MEANING"``."""
    value: object = bundle.metadata
    try:
        for key in keys:
            value = value[key]  # type: ignore[index]
        return parse_code(str(value))
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(
            f"bundle {bundle.path}: metadata.json needs {'.'.join(keys)} as SCHEME:VALUE:MEANING "
            f"({error})"
        ) from None


def display_color(bundle: Bundle, entry: str) -> hd.color.CIELabColor | None:
    """The colour ``segment_codes.<entry>.color`` gives the segment in viewers, the same in
    every study; None where the bundle leaves the colour to the viewer."""
    value = bundle.metadata.get("segment_codes", {}).get(entry, {}).get("color")
    if value is None:
        return None
    try:
        return hd.color.CIELabColor.from_string(str(value))
    except ValueError as error:
        raise BundleError(
            f"bundle {bundle.path}: metadata.json segment_codes.{entry}.color is not a colour "
            f"name or #rrggbb ({error})"
        ) from None


def check_result_codes(bundle: Bundle) -> None:
    """Raise BundleError naming the first code the bundle's results need that its metadata
    lacks, so a new bundle fails when it is configured rather than in its first job."""
    needed = [("algorithm_family",), ("procedure_code",)]
    if bundle.task == "segmentation":
        names = [name for label, name in bundle.labels.items() if label != 0]
    else:
        needed.append(("finding_codes", bundle.labels[max(bundle.labels)]))
        names = ["explanation"]
    needed += [("segment_codes", name, part) for name in names for part in ("category", "type")]
    for keys in needed:
        metadata_code(bundle, *keys)
    for name in names:
        display_color(bundle, name)
