"""Finding the stored instances a WADO-RS URL names, and reading them."""

from __future__ import annotations

import logging

from pydicom import dcmread
from pydicom.dataset import Dataset

from ..index.query import instances_under
from ..store.received import is_uid
from .context import DicomwebContext
from .errors import DicomwebError, not_acceptable, not_found

log = logging.getLogger(__name__)


def stored_instances(
    context: DicomwebContext, study: str, series: str | None = None, instance: str | None = None
) -> list[dict]:
    """The index rows (instances table) under the URL's study, series or instance; 404 if none."""
    for uid in (study, series, instance):
        if uid is not None and not is_uid(uid):
            raise not_found(f"UID {uid!r}")
    rows = instances_under(context.engine, study, series, instance)
    if not rows:
        what = "instance" if instance else "series" if series else "study"
        raise not_found(f"this {what}")
    return rows


def undecodable(row: dict, what: str, error: Exception) -> DicomwebError:
    """406 for a stored instance that cannot be decoded into `what` (a crafted or damaged file:
    sequences nested deeper than pydicom's reader follows, pixel data no decoder takes). The
    client's request is fine and the instance is still served as stored, so this is neither a
    500 nor a 404: the answer names the representation that can be had."""
    log.warning("cannot decode %s into %s: %s: %s", row["path"], what, type(error).__name__, error)
    return not_acceptable(
        f'multipart/related; type="application/dicom"; transfer-syntax=* (as stored): '
        f"instance {row['sop_instance_uid']} cannot be decoded into {what}"
    )


def read_stored(context: DicomwebContext, row: dict, what: str, **options) -> Dataset:
    """The stored instance of index row `row`, read by pydicom (`options` go to dcmread) to
    serve `what`; 406 if pydicom cannot read it, 500 if the file cannot be read at all."""
    try:
        return dcmread(context.storage.path(row["path"]), **options)
    except OSError as error:
        log.error("stored instance %s unreadable: %s", row["path"], error.strerror)
        raise DicomwebError(500, "a stored instance could not be read") from None
    except Exception as error:  # pydicom raises many types (and RecursionError) on odd files
        raise undecodable(row, what, error) from None
