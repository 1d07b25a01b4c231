"""The storage area (the bytes as received, durable before a C-STORE or STOW-RS success), the
checks on a received dataset, the one ingest path both protocols share, the node's own results
stored like received instances, crash recovery and file meta.

May import `index`, `config` and the shared modules below them; never a protocol package.
"""
