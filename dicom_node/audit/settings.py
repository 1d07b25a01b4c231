"""The `audit` section: where the audit trail is written and the audit repository it goes to.

Declared here, below `config`, so that the audit package imports nothing of the node and every
stage may record events; `config` takes the section from here (as it does `deid`'s).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyslogSettings(_Section):
    """An audit record repository (IHE ATNA) reached with syslog over TLS (RFC 5425)."""

    host: str
    port: int = Field(default=6514, ge=1, le=65535)
    #: the CA certificates (PEM) the repository's certificate must chain to
    ca_file: Path
    #: the node's client certificate chain and key (PEM), for a repository that asks for one
    certificate_file: Path | None = None
    key_file: Path | None = None
    #: messages kept in memory while the repository is unreachable (the oldest go first; the
    #: audit file keeps them all)
    max_queued: int = Field(default=10000, ge=1)

    def model_post_init(self, __context: object) -> None:
        if (self.certificate_file is None) != (self.key_file is None):
            raise ValueError("audit.syslog: certificate_file and key_file go together")


class AuditSettings(_Section):
    #: the audit file (one XML message a line, mode 0600); default ``audit.log`` under
    #: ``storage.path``
    file: Path | None = None
    syslog: SyslogSettings | None = None
