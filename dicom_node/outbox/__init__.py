"""Outbound work that must survive restarts: the durable queue (`queue.py`), the sender thread
(`sender.py`) and one module per destination kind (`destinations/`: DICOM peer, DICOMweb
STOW-RS, FHIR server).

May import `dimse` (the SCU), `store`, `index`, `config` and `fhir_bridge`; never `jobs`,
`dicomweb`, `serve` or `cli`.
"""
