"""The index: every SQL statement of the node (schema, the writer of received instances, the
queries of C-FIND/C-MOVE/C-GET and QIDO-RS, job rows, the outbox table, pseudonyms), on SQLite or
PostgreSQL. Typed rows (`rows.py`) cross its border, never SQLAlchemy rows.

May import `config` only (and the shared modules below it).
"""
