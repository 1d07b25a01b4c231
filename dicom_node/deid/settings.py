"""The de-identification options a route (or `dicom-node anonymize`) selects: this package's
own settings, so that it depends on nothing else of the node."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, field_validator


class DateHandling(StrEnum):
    """PS3.15 E.3.6: what the de-identified copy keeps of dates and times."""

    REMOVE = "remove"  # the Basic Profile: emptied, dummied or removed
    FULL = "full"  # Retain Longitudinal Temporal Information with Full Dates Option
    SHIFTED = "shifted"  # ... with Modified Dates: shifted back by a per-patient number of days


_SAFE_PRIVATE = re.compile(r"^([0-9A-Fa-f]{4}),([^,\\]{1,64}),([0-9A-Fa-f]{2})$")


class DeidentificationOptions(BaseModel):
    """The PS3.15 Table E.1-1 options a route selects on top of the Basic Profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dates: DateHandling = DateHandling.REMOVE
    #: Retain Patient Characteristics: age, sex, size, weight, smoking and pregnancy status...
    patient_characteristics: bool = False
    #: Retain Device Identity: station name, device serial number, detector ID...
    device_identity: bool = False
    #: Retain Institution Identity: institution name and address, department
    institution_identity: bool = False
    #: Clean Descriptors: keep descriptions and comments, scrubbed of the patient's identifiers
    clean_descriptors: bool = False
    #: Retain Safe Private: private attributes known to hold no identity, as
    #: "GGGG,Private Creator,EE" (odd group, creator string, last two hex digits of the element)
    safe_private: list[str] = []

    @field_validator("safe_private")
    @classmethod
    def _private_tags(cls, values: list[str]) -> list[str]:
        for value in values:
            found = _SAFE_PRIVATE.match(value)
            if not found or not int(found.group(1), 16) % 2:
                raise ValueError(
                    f"{value!r} is not a private attribute as GGGG,Private Creator,EE "
                    "(odd group, e.g. 0019,GEMS_ACQU_01,1E)"
                )
        return values
