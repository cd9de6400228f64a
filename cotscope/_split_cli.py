"""``cotscope split``: numbered sentences with roles."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cotscope import _options as flags


@click.command("split")
@click.argument("file", type=click.Path(dir_okay=True, allow_dash=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object per sentence.")
@flags.int_option(
    "--min-chars",
    0,
    "Merge sentences shorter than this into a neighbour (the thought-anchors method uses 10).",
    minimum=0,
)
def split(file: str, as_json: bool, min_chars: int) -> None:
    """Split the CoT of FILE into numbered sentences with roles.

    FILE is a trace JSON, a thought-anchors problem folder or base_solution.json, or a text file with a raw
    completion ('<think> ... </think> answer'); '-' reads a completion from standard input.
    """
    from cot import Trace, label_sentences, load_trace, split_sentences
    from cotscope.cli import echo_json

    if file == "-":
        trace = Trace.from_completion(sys.stdin.read())
    else:
        if not Path(file).exists():
            raise click.BadParameter(
                f"no such file: {file}; give a trace JSON, a text completion or '-'", param_hint="FILE"
            )
        trace = load_trace(file)
    sentences = split_sentences(trace.cot, min_chars=min_chars)
    roles = label_sentences(sentences)
    if as_json:
        echo_json(
            {
                "trace_id": trace.id,
                "truncated": trace.truncated,
                "answer": trace.answer,
                "sentences": [
                    {"index": s.index, "start": s.start, "end": s.end, "role": r, "text": s.text}
                    for s, r in zip(sentences, roles, strict=True)
                ],
            }
        )
        return
    width = len(str(max(len(sentences) - 1, 0)))
    for s, r in zip(sentences, roles, strict=True):
        click.echo(f"{s.index:>{width}}  [{r}]  {' '.join(s.text.split())}")
    note = " (truncated: no </think>)" if trace.truncated else ""
    click.echo(f"-- {len(sentences)} sentences; answer: {trace.answer}{note}", err=True)
