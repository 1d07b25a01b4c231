"""PS3.15 de-identification: the Basic Profile and its options, keyed pseudonyms, burned-in text
detection, re-identification of results, and its own settings (`settings.py`). The pseudonym
store is a protocol (`mapping.py`) the index implements.

Imports nothing else of the node, so it can be used (and tested) on its own.
"""
