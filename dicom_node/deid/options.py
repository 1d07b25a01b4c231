"""The option columns of PS3.15 Table E.1-1: which attributes a selected option keeps or cleans.

dicom-anonymizer carries the Basic Profile column only, so the option columns come from
``table_e1_1_options.json``: Innolitics' extraction of the same table from the standard's DocBook
(see its ``source``). That extraction is of an older edition than the Basic column (2026c): rows
added since then get no option, except that every date or time attribute of the table (VR DA,
DT or TM) follows the longitudinal temporal options, as each such row of the table does, birth
date and time excepted.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydicom.datadict import dictionary_VR
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .basic_profile import EXACT, Action
from .settings import DateHandling, DeidentificationOptions

TABLE_FILE = Path(__file__).with_name("table_e1_1_options.json")
DATE_VRS = {"DA", "DT", "TM"}


def _tag(text: str) -> int | None:
    """``(0010,2110)`` as an int; None for the table's pattern rows such as ``(50XX,XXXX)``."""
    try:
        return int(text.strip("()").replace(",", ""), 16)
    except ValueError:
        return None


def _load() -> tuple[set[int], dict[str, dict[int, Action]]]:
    table = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    rows = {tag for tag in map(_tag, table["rows"]) if tag is not None}
    columns = {
        name: {tag: Action(code) for text, code in cells.items() if (tag := _tag(text)) is not None}
        for name, cells in table["options"].items()
    }
    for name in ("retain_full_dates", "retain_modified_dates"):
        code = Action.KEEP if name == "retain_full_dates" else Action.CLEAN
        for tag in EXACT:
            if tag not in rows and _vr(tag) in DATE_VRS:
                columns[name].setdefault(tag, code)
    return rows, columns


def _vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return ""


ROWS, COLUMNS = _load()


def option_actions(options: DeidentificationOptions) -> dict[int, Action]:
    """The actions the selected options put in place of the Basic Profile's.

    Where two options disagree, keeping wins over cleaning (each option's column is what that
    option allows; a combination allows what either does)."""
    selected = [
        name
        for name, chosen in (
            ("retain_full_dates", options.dates is DateHandling.FULL),
            ("retain_modified_dates", options.dates is DateHandling.SHIFTED),
            ("retain_patient_characteristics", options.patient_characteristics),
            ("retain_device_identity", options.device_identity),
            ("retain_institution_identity", options.institution_identity),
            ("clean_descriptors", options.clean_descriptors),
        )
        if chosen
    ]
    actions: dict[int, Action] = {}
    for name in selected:
        for tag, action in COLUMNS[name].items():
            if actions.get(tag) is not Action.KEEP:
                actions[tag] = action
    return actions


def option_codes(options: DeidentificationOptions) -> list[Code]:
    """CID 7050 codes of the profile and each selected option, for the method code sequence."""
    chosen = [codes.DCM.BasicApplicationConfidentialityProfile]
    if options.safe_private:
        chosen.append(codes.DCM.RetainSafePrivateOption)
    if options.device_identity:
        chosen.append(codes.DCM.RetainDeviceIdentityOption)
    if options.institution_identity:
        chosen.append(codes.DCM.RetainInstitutionIdentityOption)
    if options.patient_characteristics:
        chosen.append(codes.DCM.RetainPatientCharacteristicsOption)
    if options.dates is DateHandling.FULL:
        chosen.append(codes.DCM.RetainLongitudinalTemporalInformationFullDatesOption)
    if options.dates is DateHandling.SHIFTED:
        chosen.append(codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption)
    if options.clean_descriptors:
        chosen.append(codes.DCM.CleanDescriptorsOption)
    return chosen
