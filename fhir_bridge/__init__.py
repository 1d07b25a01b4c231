"""The FHIR bridge: AI results as FHIR resources (DiagnosticReport, ImagingStudy, Observation,
Device) delivered to the EHR's FHIR server. It reads DICOM SR content but knows nothing of DIMSE,
the index or the outbox: the node hands it a report and a study summary, and sends what it builds.
"""
