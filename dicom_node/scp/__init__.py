"""The node's DIMSE service handlers (SCP side)."""
