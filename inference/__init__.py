"""Models and what they compute; knows nothing of networks or databases (see DESIGN.md)."""
