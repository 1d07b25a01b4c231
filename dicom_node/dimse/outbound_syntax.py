"""Which transfer syntaxes to propose when sending stored instances, and when to decompress.

Each instance is offered in its stored syntax first, so a peer that takes it gets the bytes as
stored. For compressed instances the uncompressed syntaxes are offered as well; only when the peer
accepts nothing else is the instance decompressed, for that transfer only.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.presentation import PresentationContext, build_context

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
MAX_CONTEXTS = 128  # PS3.8 7.1.1.13


def proposed_contexts(pairs: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """Contexts for (SOP class, stored syntax) pairs: each stored syntax, plus an uncompressed
    fallback per SOP class that has a compressed one. Order follows `pairs`."""
    syntaxes: dict[str, list[str]] = {}
    for sop_class, syntax in pairs:
        offered = syntaxes.setdefault(sop_class, [])
        if syntax not in offered:
            offered.append(syntax)
    contexts: list[PresentationContext] = []
    for sop_class, stored in syntaxes.items():
        contexts.extend(build_context(sop_class, [syntax]) for syntax in stored)
        if any(UID(syntax) not in UNCOMPRESSED for syntax in stored):
            contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
    return contexts


def accepted_syntaxes(accepted_contexts: Iterable[PresentationContext], sop_class: str) -> set[str]:
    return {
        str(context.transfer_syntax[0])
        for context in accepted_contexts
        if context.abstract_syntax == sop_class
    }


def needs_decompression(stored_syntax: str, accepted: set[str]) -> bool:
    """True when the peer did not accept the stored syntax but takes an uncompressed one."""
    if not accepted or stored_syntax in accepted:
        return False
    return UID(stored_syntax).is_compressed and bool(accepted & {str(s) for s in UNCOMPRESSED})


def as_accepted(dataset: Dataset, stored_syntax: str, accepted: set[str]) -> Dataset:
    """`dataset`, decompressed in memory if the peer needs it (the stored file is unchanged)."""
    if needs_decompression(stored_syntax, accepted):
        # Same instance, other encoding: pydicom would otherwise give it a new SOP Instance UID.
        dataset.decompress(generate_instance_uid=False)
    return dataset
