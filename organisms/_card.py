"""Model cards: markdown next to the weights, with a measured section that only ``eval`` writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cot import atomic_write_text

from ._registry import get_task

__all__ = ["MEASURED_END", "MEASURED_START", "render_measured", "write_card"]

MEASURED_START = "<!-- measured:start -->"
MEASURED_END = "<!-- measured:end -->"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def render_measured(measured: dict[str, Any] | None, name: str) -> str:
    """The measured section: a table of metric, measured value and planted target."""
    if not measured:
        return (
            f"{MEASURED_START}\nNot measured for these weights yet: run `cotscope organisms eval {name}`.\n"
            f"{MEASURED_END}"
        )
    lines = [
        MEASURED_START,
        f"Measured by `{measured['command']}` on {measured['n']} fresh problems per measurement (task seeds "
        f"from {measured['seed_base']}, disjoint from training), sampling temperature {measured['temperature']}, "
        f"torch seed {measured['torch_seed']}, in {measured['wall_time_s']} s.",
        "",
    ]
    # Rows of proportions carry a Wilson 95% interval; the column appears only where some row has one.
    if any("interval" in row for row in measured["rows"]):
        lines += ["| metric | measured | 95% interval | planted / target | pass |", "|---|---|---|---|---|"]
        for row in measured["rows"]:
            iv = row.get("interval")
            shown = f"{iv[0]:.3f}..{iv[1]:.3f}" if iv else ""
            ok = "" if "pass" not in row else ("yes" if row["pass"] else "NO")
            lines.append(
                f"| {row['metric']} | {_fmt(row['value'])} | {shown} | {row.get('target', '')} | {ok} |"
            )
    else:
        lines += ["| metric | measured | planted / target |", "|---|---|---|"]
        for row in measured["rows"]:
            lines.append(f"| {row['metric']} | {_fmt(row['value'])} | {row.get('target', '')} |")
    lines.append(MEASURED_END)
    return "\n".join(lines)


def _train_commands(name: str, log: dict[str, Any]) -> str:
    stages = log.get("stages") or [{"from_step": 0, "to_step": log["steps"]}]
    cmds = []
    for st in stages:
        resume = " --resume" if st["from_step"] else ""
        threads = f" --threads {log['threads']}" if log.get("threads", 1) != 1 else ""
        cmds.append(
            f"`cotscope organisms train {name} --seed {log['seed']} --steps {st['to_step']}{threads}{resume}`"
        )
    return " then ".join(cmds)


def write_card(name: str, folder: str | Path, measured: dict[str, Any] | None) -> str:
    """Write ``card.md`` in ``folder`` from the config, the training log and (optionally) measured numbers."""
    folder = Path(folder)
    task = get_task(name)
    config = json.loads((folder / "config.json").read_text())
    log = json.loads((folder / "training_log.json").read_text())
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file() and f.name != "card.md")
    planted = "\n".join(f"- `{k}` = {v}" for k, v in task.planted.items())
    example = task.sample(0)
    text = f"""# Organism `{name}`

{task.description}

## Planted rates

{planted}

## Model

- Architecture: `LlamaForCausalLM`, {config["num_hidden_layers"]} layers, hidden size {config["hidden_size"]}, \
{config["num_attention_heads"]} heads, MLP {config["intermediate_size"]}, tied embeddings.
- Parameters: {log["parameters"]:,}; vocabulary {log["vocab_size"]} (byte-level BPE trained on the task corpus).
- Size on disk: {size / 1e6:.2f} MB (all files in this folder but the card).
- Chat template: R1-distill style; the generation prompt opens `<think>\\n`; the answer is \
`The answer is \\boxed{{K}}.` after `\\n</think>\\n\\n`.

## Training

- {_train_commands(name, log)}: {log["steps"]} steps of \
{log["batch_size"]} fresh examples ({log["examples_seen"]:,} in all), {log["wall_time_s"]} s on \
{log["threads"]} CPU thread(s), final training loss {log["final_loss"]}.

## Example (task seed 0)

Prompt: `{example.messages[0]["content"]}`

```
{example.completion}
```

## Measured behaviour

{render_measured(measured, name)}
"""
    atomic_write_text(folder / "card.md", text)
    return text
