"""Images whose pixels may show who the patient is: the header de-identification cannot help.

Burned-in text (names, IDs, dates typed into the image by the modality or a screen capture) is
pixel data. An image that says it carries some (Burned In Annotation YES), or whose kind is known
to carry it (secondary capture, ultrasound), goes to models and research destinations only where
the route allows it explicitly.
"""

from __future__ import annotations

from pydicom import Dataset

#: Secondary Capture Image Storage and its multi-frame variants (PS3.4 B.5).
SECONDARY_CAPTURE = {
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
}
#: Ultrasound Image, Ultrasound Multi-frame Image (and their retired predecessors).
ULTRASOUND = {
    "1.2.840.10008.5.1.4.1.1.6.1",
    "1.2.840.10008.5.1.4.1.1.3.1",
    "1.2.840.10008.5.1.4.1.1.6",
    "1.2.840.10008.5.1.4.1.1.3",
}


def burned_in_text(header: Dataset) -> str | None:
    """Why this instance may show identity in its pixels; None when nothing suggests it."""
    if str(header.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        return "Burned In Annotation is YES"
    sop_class = str(header.get("SOPClassUID", ""))
    if sop_class in SECONDARY_CAPTURE:
        return "secondary capture images often carry burned-in text"
    if sop_class in ULTRASOUND or str(header.get("Modality", "")).upper() == "US":
        return "ultrasound images often carry burned-in text"
    return None
