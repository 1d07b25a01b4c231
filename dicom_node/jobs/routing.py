"""Routing rules: which model bundles run on a series, decided from its DICOM attributes.

A series that no rule matches is not an error: the decision says so, with the attributes that were
looked at, so an integration engineer can see why nothing ran.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom import Dataset

from ..config import RouteConfig


@dataclass(frozen=True)
class SeriesFacts:
    """The attributes routing looks at, read from one instance's header and the instance count."""

    modality: str
    body_part: str
    sop_class: str
    image_type: tuple[str, ...]
    series_description: str
    study_description: str
    instances: int

    @classmethod
    def from_headers(cls, headers: Sequence[Dataset]) -> SeriesFacts:
        first = headers[0]
        return cls(
            modality=str(first.get("Modality", "")),
            body_part=str(first.get("BodyPartExamined", "")),
            sop_class=str(
                first.get("SOPClassUID", "")
                or getattr(first.get("file_meta"), "MediaStorageSOPClassUID", "")
            ),
            image_type=tuple(str(v).upper() for v in first.get("ImageType", [])),
            series_description=str(first.get("SeriesDescription", "")),
            study_description=str(first.get("StudyDescription", "")),
            instances=len(headers),
        )

    def describe(self) -> str:
        """The attributes a route looks at, for a job note. Descriptions are typed by people and
        may hold a patient's name, so only whether there is one is said, never its words."""
        description = "given" if self.series_description.strip() else "empty"
        return (
            f"Modality={self.modality or '-'} BodyPartExamined={self.body_part or '-'} "
            f"SOPClass={self.sop_class or '-'} "
            f"SeriesDescription {description} (not quoted) instances={self.instances}"
        )


def _any_of(value: str, allowed: list[str] | None) -> bool:
    return allowed is None or value.strip().upper() in {a.strip().upper() for a in allowed}


def matches(route: RouteConfig, facts: SeriesFacts) -> bool:
    """True when every condition the route sets holds for the series."""
    return (
        _any_of(facts.modality, route.modality)
        and _any_of(facts.body_part, route.body_part)
        and _any_of(facts.sop_class, route.sop_class)
        and (
            route.image_type is None
            or {v.upper() for v in route.image_type} <= set(facts.image_type)
        )
        and (
            route.description is None
            or any(
                re.search(route.description, text)
                for text in (facts.series_description, facts.study_description)
            )
        )
        and facts.instances >= route.min_instances
        and (route.max_instances is None or facts.instances <= route.max_instances)
    )


@dataclass(frozen=True)
class RoutingDecision:
    """The models to run (in rule order, each once) and the rules that chose them."""

    models: tuple[str, ...]
    routes: tuple[str, ...]
    facts: SeriesFacts

    @property
    def reason(self) -> str:
        if self.models:
            return f"matched {', '.join(self.routes)}"
        return f"no routing rule matches ({self.facts.describe()})"


def matching_routes(routes: Sequence[RouteConfig], facts: SeriesFacts) -> list[RouteConfig]:
    """The rules whose every condition holds for the series, in configuration order."""
    return [rule for rule in routes if matches(rule, facts)]


def route(routes: Sequence[RouteConfig], facts: SeriesFacts) -> RoutingDecision:
    models: list[str] = []
    names: list[str] = []
    for rule in matching_routes(routes, facts):
        names.append(rule.name)
        models.extend(m for m in rule.models if m not in models)
    return RoutingDecision(tuple(models), tuple(names), facts)
