"""DICOM AI node: receives studies over DICOM, stores and indexes them, serves them back."""
