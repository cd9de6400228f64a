"""One run directory, two writers: a stable rule for duplicate rows, and a claim so no row is computed twice."""

import subprocess
import sys
import textwrap

import polars as pl

from resampling._store import ROLLOUT_SCHEMA, RunStore, atomic_write_parquet

WRITER = textwrap.dedent(
    """
    import sys, time
    from resampling import Completion, Engine, SamplingParams
    from resampling._plan import Plan, SamplingRequest

    cache, log = sys.argv[1], sys.argv[2]

    class Slow:
        name = "slow"
        tokenizer = None

        def identity(self):
            return {"backend": "slow"}

        def generate(self, jobs):
            for job in jobs:
                time.sleep(0.1)
                with open(log, "a") as f:
                    f.write(f"{job.key} {len(job.samples)}\\n")
                yield job, [
                    Completion(sample=s, seed=seed, token_ids=[1, 2], text=f"x{seed}", finish_reason="length")
                    for s, seed in zip(job.samples, job.seeds)
                ]

    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=4)
    plan = Plan(
        [SamplingRequest((1, 2, 3 + i), 4, 100 * i, params, "t", position=i) for i in range(8)]
    )
    print("READY", flush=True)
    Engine(Slow(), cache, quiet=True).run(plan)
    """
)


def test_two_processes_on_one_run_directory_compute_each_row_once(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    log = tmp_path / "computed.log"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "cache"), str(log)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    computed = [line.split() for line in log.read_text().splitlines()]
    assert sum(int(n) for _, n in computed) == 8 * 4  # every rollout once, not once per process
    assert len({key for key, _ in computed}) == len(computed)
    (run_dir,) = [d for d in (tmp_path / "cache").iterdir() if d.is_dir()]
    assert RunStore(tmp_path / "cache", run_dir.name).load().height == 32


def _row(text: str, status: str = "ok") -> dict:
    row = {name: None for name in ROLLOUT_SCHEMA}
    row.update(request_id="r", sample=0, text=text if status == "ok" else None, status=status)
    if status != "ok":
        row["error"] = text
    return row


def test_duplicate_rows_resolve_by_a_stable_rule(tmp_path):
    for first, second in (("b", "a"), ("a", "b")):
        store = RunStore(tmp_path / first, "k")
        atomic_write_parquet(pl.DataFrame([_row(first)], schema=ROLLOUT_SCHEMA), store.dir / "part-0.parquet")
        atomic_write_parquet(
            pl.DataFrame([_row(second)], schema=ROLLOUT_SCHEMA), store.dir / "part-1.parquet"
        )
        atomic_write_parquet(
            pl.DataFrame([_row("boom", "error")], schema=ROLLOUT_SCHEMA), store.dir / "part-00.parquet"
        )
        kept = store.load()
        assert kept.height == 1
        assert kept["text"].to_list() == ["a"]  # the ok row with the smallest text, whatever the shard order
