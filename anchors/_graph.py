"""The dependency graph of a trace: sentences as nodes, the sentence matrix as weighted edges."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import polars as pl

__all__ = ["build_graph", "graph_json", "write_graph"]


def _legal(value: Any) -> Any:
    """A GraphML-legal scalar, or None when the value must be left out (None, NaN, lists)."""
    if value is None or isinstance(value, list | tuple | dict):
        return None
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return str(value)


def build_graph(
    table: pl.DataFrame,
    matrix: np.ndarray | None = None,
    *,
    top_k: int | None = None,
    min_abs_weight: float = 0.0,
) -> nx.DiGraph:
    """A ``DiGraph`` with one node per sentence (id = position) and an edge i -> j (j > i) per defined ``M[i, j]``.

    Node attributes are the table's columns (text, role, every importance value, sample sizes). Undefined values
    (NaN or null) are left out rather than stored, so a missing attribute means "undefined" and the graph can be
    written as GraphML. Edges carry ``weight = M[i, j]`` (sign as in :func:`anchors.sentence_matrix`) and
    ``abs_weight``; ``top_k`` keeps each source's ``k`` edges of largest ``|weight|``, ``min_abs_weight`` drops
    smaller ones.
    """
    graph = nx.DiGraph()
    if table.height and "trace_id" in table.columns:
        graph.graph["trace_id"] = str(table["trace_id"][0])
    if table.height and "convention" in table.columns:
        graph.graph["convention"] = str(table["convention"][0])
    positions = table["position"].to_list()
    for row in table.iter_rows(named=True):
        attrs = {
            k: v for k, v in ((k, _legal(v)) for k, v in row.items()) if v is not None and k != "position"
        }
        graph.add_node(int(row["position"]), **attrs)
    if matrix is None:
        return graph
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (len(positions), len(positions)):
        raise ValueError(
            f"matrix has shape {matrix.shape}, expected {(len(positions),) * 2} (one row per sentence)"
        )
    for i, source in enumerate(positions):
        row = matrix[i]
        cand = [
            j
            for j in range(len(positions))
            if j != i and math.isfinite(row[j]) and abs(row[j]) >= min_abs_weight
        ]
        cand.sort(key=lambda j: -abs(row[j]))
        if top_k is not None:
            cand = cand[:top_k]
        for j in cand:
            graph.add_edge(
                int(source), int(positions[j]), weight=float(row[j]), abs_weight=float(abs(row[j]))
            )
    return graph


def graph_json(graph: nx.DiGraph) -> str:
    """Node-link JSON (``nodes``, ``edges``), strict JSON (no NaN)."""
    data = nx.node_link_data(graph, edges="edges")
    from cot import json_dumps

    return json_dumps(data, indent=1, ensure_ascii=False) + "\n"


def write_graph(graph: nx.DiGraph, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``graph.graphml`` and ``graph.json`` into ``out_dir``, atomically."""
    from cot import atomic_write_text

    out = Path(out_dir)
    graphml = "\n".join(nx.generate_graphml(graph)) + "\n"
    return atomic_write_text(out / "graph.graphml", graphml), atomic_write_text(
        out / "graph.json", graph_json(graph)
    )
