"""From a complete study to its results: study stability, the job runner and its worker
processes, the per-study run (routing, held-back series, research copies), bundle loading, the
models' results (de-identify, infer, encode, re-identify, store) and FHIR report queuing. The
shared job context lives in `context.py`.

May import `outbox`, `dimse`, `store`, `index`, `deid`, `config`, `inference` and
`fhir_bridge`; never `dicomweb`, `serve` or `cli`.
"""
