"""The engine's sampling progress off a terminal (a log, a pipe, CI): plain lines as rollouts finish."""

from __future__ import annotations

import cotscope._progress
from resampling import Engine, SamplingParams, TracePrefixes
from resampling._hf import HFBackend


def test_sampling_progress_is_plain_lines_while_it_runs(
    tiny_model, tiny_tokenizer, tiny_trace, tmp_path, capsys, monkeypatch
):
    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    plan = tp.plan(n=2, seed=1, params=SamplingParams(max_new_tokens=4))
    lines_at_advance = []

    class Watched(HFBackend):
        def generate(self, jobs):
            for item in super().generate(jobs):
                # what a log holds before this batch is counted
                lines_at_advance.append(capsys.readouterr().err)
                yield item

    monkeypatch.setattr(cotscope._progress, "PLAIN_EVERY_S", 0.0)
    Engine(Watched(tiny_model, tiny_tokenizer, batch_size=2), tmp_path, quiet=False).run(plan)
    err = "".join(lines_at_advance) + capsys.readouterr().err
    assert "\r" not in err and err.endswith("\n"), repr(err)
    counts = [line for line in err.splitlines() if line.startswith("resampling: ")]
    total = plan.n_rollouts
    assert counts[0] == f"resampling: 0/{total}" and counts[-1] == f"resampling: {total}/{total}"
    assert len(counts) >= 3
    # lines arrive while the run goes on, not all at its end
    assert sum("resampling: " in chunk for chunk in lines_at_advance[1:]) >= 1
