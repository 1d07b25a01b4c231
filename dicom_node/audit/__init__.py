"""The audit trail (IHE ATNA, DICOM PS3.15 Annex A.5): `messages` builds the audit messages of
the node's events, `trail` writes them to the audit file and hands them to `syslog`, which
sends them to an audit repository. A low layer that imports nothing else of the node, so that
every stage records its own events."""

from .settings import AuditSettings, SyslogSettings
from .trail import close_trail, open_trail, record, record_soon, record_unhurried

__all__ = [
    "AuditSettings",
    "SyslogSettings",
    "close_trail",
    "open_trail",
    "record",
    "record_soon",
    "record_unhurried",
]
