"""The `dicom-node` commands: argument parsing and one function per command, nothing else.

May import every other package of the node; nothing imports it. `dicom_node.cli:main` is the
console entry point.
"""

from .main import main

__all__ = ["main"]
