"""The one error a caller of `inference` may take as "this model cannot take this input" (a
volume with gaps, pixels that cannot be decoded, nothing found to encode): a job notes it and
goes on. Every other exception out of this package is a fault (in the node, a library or the
machine) and must fail the job, so that it is seen and can be retried."""

from __future__ import annotations


class UnsuitableInput(ValueError):
    """The input is not what the model takes; the message says why, without patient data."""
