"""Thought-anchor sentence importance, dependency graphs, plots and the thought-anchors format."""
