"""De-identification (DICOM PS3.15 Annex E): what models see instead of the patient's data."""
