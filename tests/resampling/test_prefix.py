import pytest

from cot import Trace
from resampling import SEED_STRIDE, EngineInputError, SamplingParams, TracePrefixes, answer_cue, request_seed


@pytest.fixture
def tp(tiny_trace, tiny_tokenizer):
    return TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)


def test_prefixes_nest_and_end_at_sentence_starts(tp, tiny_tokenizer):
    assert tp.n_positions == len(tp.sentences) + 1 == 6
    assert tp.prefix_ids(0) == tp.template_ids
    assert tp.prefix_ids(tp.n_positions - 1) == tp.full_ids
    for i in range(tp.n_positions - 1):
        shorter, longer = tp.prefix_ids(i), tp.prefix_ids(i + 1)
        assert longer[: len(shorter)] == shorter and len(longer) > len(shorter)
    cot = tp.trace.cot
    for i, s in enumerate(tp.sentences):
        text = tiny_tokenizer.decode(tp.prefix_ids(i)[len(tp.template_ids) :])
        # The prefix text is exactly the CoT up to sentence i (at most its separating whitespace differs).
        assert cot.startswith(text)
        assert cot[: s.start].rstrip() == text.rstrip()


def test_template_applied_once_with_generation_prompt(tp, tiny_tokenizer):
    text = tiny_tokenizer.decode(tp.template_ids)
    assert text.startswith("<s><|user|>Compute") and text.endswith("<|assistant|><think>\n")


def test_forced_answer_cue_is_the_models_own(tp, tiny_tokenizer):
    assert answer_cue(tp.trace) == "\n</think>\n\nThe answer is \\boxed{"
    ids = tp.forced_answer_ids(2)
    assert ids[: len(tp.prefix_ids(2))] == tp.prefix_ids(2)
    assert tiny_tokenizer.decode(ids[len(tp.prefix_ids(2)) :]) == "\n</think>\n\nThe answer is \\boxed{"
    assert answer_cue(Trace(prompt="p", cot="c")) == "\n</think>\n\nTherefore, the final answer is \\boxed{"


def test_forced_answer_probe_has_one_newline_before_think_close(tiny_tokenizer):
    lines = (
        "<think>\nFirst we add.\nThen we carry the one.\nSo it is 6.\n</think>\n\nThe answer is \\boxed{6}."
    )
    spaced = "<think>First we add. Then we carry the one. So it is 6.</think>The answer is \\boxed{6}."
    for completion in (lines, spaced):
        trace = Trace.from_completion(completion, prompt="Compute.")
        tp = TracePrefixes.build(trace, tiny_tokenizer, min_chars=0)
        for p in range(1, tp.n_positions):
            text = tiny_tokenizer.decode(tp.forced_answer_ids(p)[len(tp.template_ids) :])
            head = text[: text.index("</think>")]
            assert head.endswith("\n") and not head.endswith("\n\n"), (p, text)
            assert (
                head.rstrip()
                == trace.cot[: tp.sentences[p].start if p < len(tp.sentences) else None].rstrip()
            )


@pytest.mark.parametrize(
    "answer_text",
    [
        "We add 7 and 5, so 36 mod 10 = 6. **Final Answer** \\[\\boxed{6}\\]",  # a summary that states the answer
        "**Final Answer**\n\\[\n\\boxed{6}\n\\]",  # the boxed answer on a line of its own
        "x" * 81 + " \\boxed{6}",  # too long to be a lead-in
    ],
)
def test_forced_answer_cue_never_repeats_the_original_answer(answer_text):
    trace = Trace(prompt="p", cot="c", answer_text=answer_text)
    assert answer_cue(trace) == "\n</think>\n\nTherefore, the final answer is \\boxed{"


def test_plan_seeds_are_disjoint_and_identity_kept(tp):
    plan = tp.plan(n=3, seed=100, forced_answer=True)
    seeds = [s for r in plan for s in r.seeds()]
    assert len(seeds) == len(set(seeds)) == 2 * 6 * 3
    r = plan[4]
    assert (r.kind, r.position, r.trace_id) == ("resample", 4, tp.trace.id)
    assert r.seed == request_seed(100, 4, "resample") and plan[10].seed == request_seed(
        100, 4, "forced_answer"
    )
    # a larger n extends every position's seeds: the first 3 stay the same
    bigger = tp.plan(n=5, seed=100, forced_answer=True)
    assert [r.seeds()[:3] for r in bigger] == [r.seeds() for r in plan]
    assert [r.request_id for r in bigger] == [r.request_id for r in plan]
    with pytest.raises(EngineInputError, match="n must be between 1 and"):
        tp.plan(n=SEED_STRIDE + 1)
    assert plan[6].kind == "forced_answer" and plan[6].position == 0


def test_request_ids_follow_prefix_and_parameters_and_are_computed_once(tp):
    """The id is a hash of (trace, kind, position, edit, prefix hash, seed, parameters), the store's row key; the
    prefix hash is kept on the request, and a request with another prefix gets its own."""
    import dataclasses
    import hashlib
    import json

    r = tp.plan(n=2, seed=1)[3]
    prefix = hashlib.sha256(json.dumps(list(r.prompt_ids)).encode()).hexdigest()[:16]
    key = json.dumps([r.trace_id, r.kind, r.position, "", prefix, r.seed, r.params.to_dict()], sort_keys=True)
    assert r.request_id == hashlib.sha256(key.encode()).hexdigest()[:16] == r.request_id
    assert r.__dict__["prefix_hash"] == prefix  # kept, not recomputed at every request_id
    assert r.__dict__["request_id"] == r.request_id  # kept: a plan's ids are read at every store lookup
    shorter = dataclasses.replace(r, prompt_ids=r.prompt_ids[:-1])
    assert shorter.prefix_hash != prefix and shorter.request_id != r.request_id
    # the request keeps its own copy of the edit, so a kept id cannot go stale when the caller's dict changes
    edit = {"type": "replace_sentence", "index": 2, "text": {"new": "x"}}
    edited = dataclasses.replace(r, edit=edit)
    before = edited.request_id
    edit["index"], edit["text"]["new"] = 3, "y"
    fresh = dataclasses.replace(r, edit=edit)
    assert edited.edit == {"type": "replace_sentence", "index": 2, "text": {"new": "x"}}
    assert (
        edited.request_id == before == dataclasses.replace(r, edit=edited.edit).request_id != fresh.request_id
    )


def test_runs_with_different_seeds_share_no_rollout_seed(tp):
    """A replicate with another --seed is new data: no seed of one run appears in the other (nearby seeds too)."""
    runs = {s: {x for r in tp.plan(n=50, seed=s, forced_answer=True) for x in r.seeds()} for s in range(4)}
    for a in runs:
        for b in runs:
            if a < b:
                assert not runs[a] & runs[b], (a, b)
    assert all(0 <= x < 2**63 for x in runs[0])


def test_traces_of_one_dataset_share_no_rollout_seed(tp):
    """A dataset run gives each trace its own seed (``trace_seed``): no rollout seed of one trace's plan is in
    another's (the dataset seed itself would give every trace the same ones)."""
    from resampling import trace_seed

    ids = [f"t{k:012x}" for k in range(5)]
    assert trace_seed(0, ids[0]) == trace_seed(0, ids[0]) != trace_seed(1, ids[0])
    seeds = [trace_seed(0, i) for i in ids]
    assert len(set(seeds)) == len(ids) and all(0 <= x < 2**62 for x in seeds)
    runs = [{x for r in tp.plan(n=50, seed=s, forced_answer=True) for x in r.seeds()} for s in seeds]
    for a in range(len(runs)):
        for b in range(a + 1, len(runs)):
            assert not runs[a] & runs[b], (a, b)


def test_min_chars_is_recorded_in_the_plan(tiny_trace, tiny_tokenizer):
    tp = TracePrefixes.build(tiny_trace, tiny_tokenizer)
    assert tp.plan(n=1).meta["min_chars"] == 10


def test_interventions_are_one_line_each_and_keep_identity(tp):
    mistake = tp.replace_sentence(1, "First, 7 + 5 is 13.")
    assert mistake.trace.cot == tp.trace.cot.replace("7 + 5 is 12.", "7 + 5 is 13.")
    plan = mistake.plan(n=2, positions=[2])
    assert plan[0].kind == "replace_sentence"
    assert plan[0].edit == {
        "type": "replace_sentence",
        "index": 1,
        "text": "First, 7 + 5 is 13.",
        "original": "First, 7 + 5 is 12.",
        "source_trace": tp.trace.id,
    }
    assert plan[0].trace_id.startswith(tp.trace.id + "~")
    assert tp.with_cot("... ... ...").plan(n=1, positions=[0])[0].kind == "filler"
    hinted = tp.with_prompt("A professor says the answer is 4. Compute (7 + 5) * 3 mod 10.")
    assert hinted.plan(n=1)[0].kind == "hint" and hinted.trace.cot == tp.trace.cot
    assert tp.remove_sentence(3).trace.cot == tp.trace.cot.replace("Wait, let me check that. ", "")
    assert tp.insert_sentence(2, "Hmm.").sentences[2].text == "Hmm."


def test_duplicate_sentences_are_edited_at_their_own_offsets(tiny_tokenizer):
    t = Trace(prompt="p", cot="Add one. Add one. Done.")
    tp = TracePrefixes.build(t, tiny_tokenizer, min_chars=0)
    assert tp.replace_sentence(1, "Add two.").trace.cot == "Add one. Add two. Done."


def test_bad_input_is_refused_before_any_work(tp, tiny_tokenizer):
    with pytest.raises(EngineInputError, match="positions run from 0 to 5"):
        tp.plan(n=1, positions=[9])
    with pytest.raises(EngineInputError, match="no CoT"):
        TracePrefixes.build(Trace(prompt="p", cot="  "), tiny_tokenizer)
    with pytest.raises(EngineInputError, match="n must be between 1 and"):
        tp.plan(n=0)
    with pytest.raises(EngineInputError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(EngineInputError, match="sentence 7 is out of range"):
        tp.replace_sentence(7, "x")


def test_templates_that_leave_the_think_tag_to_the_model(tiny_trace, tiny_tokenizer):
    """Qwen3-style templates end the generation prompt without <think>: prefixes open the block themselves."""
    import copy

    from resampling import sample_traces
    from resampling._backend import Completion

    plain = copy.deepcopy(tiny_tokenizer)
    plain.chat_template = tiny_tokenizer.chat_template.replace(
        "<|assistant|><think>\n{% endif %}", "<|assistant|>{% endif %}"
    )
    assert not plain.apply_chat_template(
        [{"role": "user", "content": "q"}], add_generation_prompt=True, tokenize=False
    ).endswith("<think>\n")
    ours = TracePrefixes.build(tiny_trace, plain, min_chars=0)
    reference = TracePrefixes.build(tiny_trace, tiny_tokenizer, min_chars=0)
    assert [ours.prefix_ids(p) for p in range(ours.n_positions)] == [
        reference.prefix_ids(p) for p in range(reference.n_positions)
    ]

    class Writes:
        name = "fake"

        def __init__(self, text):
            self.text = text

        def generate(self, jobs):
            for job in jobs:
                yield job, [Completion(sample=0, seed=job.seeds[0], text=self.text, finish_reason="stop")]

    for text in (
        "<think>\nFirst step. Second step.\n</think>\n\\boxed{4}",
        "First step. Second step.\n</think>\n\\boxed{4}",
    ):
        (trace,) = sample_traces(Writes(text), plain, ["q"], [0])
        assert trace.cot == "First step. Second step." and trace.answer == "4"


def test_weight_hashes_are_remembered_across_processes_by_path_size_and_mtime(tmp_path, monkeypatch):
    import os

    from resampling._model import _file_sha256

    monkeypatch.setenv("COTSCOPE_HASH_CACHE", str(tmp_path / "hashes.json"))
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"a" * 1000)
    st = os.stat(f)
    first = _file_sha256.__wrapped__(str(f), st.st_size, st.st_mtime)  # a fresh process: no in-memory cache
    assert (tmp_path / "hashes.json").exists()
    f.write_bytes(b"b" * 1000)  # same size, mtime put back: the remembered hash is used, the file is not read
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _file_sha256.__wrapped__(str(f), st.st_size, st.st_mtime) == first
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a changed file is hashed again
    st2 = os.stat(f)
    assert _file_sha256.__wrapped__(str(f), st2.st_size, st2.st_mtime) != first


def test_hf_identity_names_versions_and_attention(tiny_model, tiny_tokenizer):
    import torch
    import transformers

    from resampling._hf import HFBackend

    ident = HFBackend(tiny_model, tiny_tokenizer).identity()
    assert ident["torch"] == torch.__version__ and ident["transformers"] == transformers.__version__
    assert ident["attn_implementation"] == str(tiny_model.config._attn_implementation)
