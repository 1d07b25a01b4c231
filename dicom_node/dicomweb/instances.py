"""Finding the stored instances a WADO-RS URL names."""

from __future__ import annotations

from ..index.query import Level, build_query, matching_instances
from .context import DicomwebContext
from .errors import not_found


def stored_instances(
    context: DicomwebContext, study: str, series: str | None = None, instance: str | None = None
) -> list[dict]:
    """The index rows (instances table) under the URL's study, series or instance; 404 if none."""
    identifier = {"StudyInstanceUID": study}
    if series is not None:
        identifier["SeriesInstanceUID"] = series
    if instance is not None:
        identifier["SOPInstanceUID"] = instance
    for uid in identifier.values():
        if not uid or "\\" in uid or "*" in uid or "?" in uid:
            raise not_found(f"UID {uid!r}")
    rows = matching_instances(context.engine, build_query(Level.IMAGE, identifier))
    if not rows:
        what = "instance" if instance else "series" if series else "study"
        raise not_found(f"this {what}")
    return rows
