"""DIMSE, the DICOM network side: the listener and its association limits, the SCP handlers
(C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET), the SCU that sends to peers, and the transfer syntaxes
proposed outbound. Handlers are small and hand the work to `store` and `index`.

May import `store`, `index`, `config` and the shared modules below them; never `jobs`,
`outbox`, `dicomweb`, `serve` or `cli`.
"""
