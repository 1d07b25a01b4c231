"""`dicom-node anonymize IN OUT`: de-identified copies of DICOM files and folders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from .deidentify import Deidentifier
from .mapping import MappingStore


@dataclass
class AnonymizeReport:
    written: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def anonymize_paths(
    deidentifier: Deidentifier, store: MappingStore, source: Path, target: Path
) -> AnonymizeReport:
    """A file goes to ``target``; a folder's files go under ``target`` at the same relative paths.
    Files that are not DICOM are reported and skipped; what was written stays written, and the
    pseudonyms it uses are in the mapping store before the next file starts."""
    report = AnonymizeReport()
    if source.is_file():
        pairs = [(source, target)]
    else:
        files = sorted(p for p in source.rglob("*") if p.is_file())
        pairs = [(file, target / file.relative_to(source)) for file in files]
    for file, destination in pairs:
        try:
            dataset = pydicom.dcmread(file)
        except (InvalidDicomError, OSError, ValueError) as error:
            report.skipped.append((file, f"not a readable DICOM file ({error})"))
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            deidentifier(dataset).save_as(destination, enforce_file_format=True)
        except (ValueError, TypeError, OSError) as error:
            destination.unlink(missing_ok=True)
            report.skipped.append((file, f"cannot be de-identified and written ({error})"))
            continue
        store.save(deidentifier.pseudonyms.take_issued())
        report.written += 1
    return report
