"""The `http.console` configuration section: what the web console at `/ui/` links to."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

#: the placeholder of `viewer_url` that the Study Instance UID replaces
STUDY_PLACEHOLDER = "{study}"


class ConsoleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: a DICOMweb viewer's URL for one study, `{study}` standing for its Study Instance UID
    #: (e.g. `https://ohif.example/viewer?StudyInstanceUIDs={study}`); empty: no link
    viewer_url: str = ""

    @field_validator("viewer_url")
    @classmethod
    def _names_the_study(cls, value: str) -> str:
        if value and STUDY_PLACEHOLDER not in value:
            raise ValueError(f"the viewer URL must hold {STUDY_PLACEHOLDER} (the study's UID)")
        if value and not value.startswith(("http://", "https://", "/")):
            raise ValueError("the viewer URL must start with http://, https:// or /")
        return value

    def viewer_link(self, study_uid: str) -> str | None:
        """The viewer's URL for the study, or None where no viewer is configured."""
        return self.viewer_url.replace(STUDY_PLACEHOLDER, study_uid) if self.viewer_url else None
