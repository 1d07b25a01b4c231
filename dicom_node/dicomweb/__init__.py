"""DICOMweb under `/dicomweb`: QIDO-RS, WADO-RS (instances, metadata, frames, bulk data,
rendered), STOW-RS through the shared ingest path, and access control.

May import `store`, `index`, `config` and the shared modules below them; never `jobs`,
`outbox`, `dimse`, `serve` or `cli`.
"""
