"""Exact token prefixes for every sentence position of a trace.

The chat template is applied once, the CoT is tokenized once, and the prefix for position i is the template ids
followed by the CoT tokens that end at or before the start of sentence i (read from the tokenizer's offset
mapping). No text is re-joined, so every prefix is an exact token prefix of the next one and of the full trace:
the model sees what it would have seen had it written the trace itself, and a prefix cache hits every block.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from typing import Any

from cot import THINK_END, Sentence, Trace, split_sentences
from resampling._errors import EngineInputError
from resampling._plan import Plan, SamplingParams, SamplingRequest, request_seed

__all__ = ["DEFAULT_LEAD", "DEFAULT_MIN_CHARS", "SEED_STRIDE", "TracePrefixes", "answer_cue"]

DEFAULT_MIN_CHARS = 10
"""The plan merges sentences shorter than this into the next one, as the thought-anchors method does."""

DEFAULT_LEAD = "Therefore, the final answer is \\boxed{"
"""The forced-answer lead-in when the trace's own cannot be used (the reference code's wording)."""
SEED_STRIDE = 1 << 20
"""Most samples per request. Seeds of one request's samples are ``base + k`` with ``base`` =
:func:`resampling.request_seed` (seed, position, kind): a position's seeds do not depend on how many samples are
drawn, so more samples extend the same sequence."""


def answer_cue(trace: Trace) -> str:
    """Close the think block, then lead into the answer up to ``\\boxed{``.

    The lead-in is the trace's own (the line of its answer text that ends in ``\\boxed{``) when that line states
    no number and is short (at most 80 characters), e.g. "The answer is \\boxed{". Otherwise, e.g. when the answer
    text summarises the solution ("... = 6. **Final Answer** \\boxed{"), it is :data:`DEFAULT_LEAD`, so that no
    probe sees the original answer.
    """
    lead = DEFAULT_LEAD
    if trace.answer_text:
        m = re.search(r"\\boxed\s*\{", trace.answer_text)
        if m:
            line = trace.answer_text[: m.start()].rsplit("\n", 1)[-1].lstrip()
            if line.strip() and len(line) <= 80 and not re.search(r"\d", line):
                lead = line + trace.answer_text[m.start() : m.end()]
    return THINK_END + lead


def opened_think(tokenizer: Any, template_ids: list[int]) -> list[int]:
    """The generation prompt with the think block open: R1-distill templates end in ``<think>\\n`` already; others
    (Qwen3, many chat models) leave the model to write it, so the CoT must come after an explicit ``<think>\\n``."""
    if tokenizer.decode(template_ids).rstrip().endswith("<think>"):
        return template_ids
    return template_ids + token_ids(tokenizer("<think>\n", add_special_tokens=False))


def _check_n(n: int) -> None:
    if not 1 <= int(n) <= SEED_STRIDE:
        raise EngineInputError(f"n must be between 1 and {SEED_STRIDE} samples per position, got {n}")


def token_ids(encoded: Any) -> list[int]:
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    if encoded and isinstance(encoded[0], list):
        encoded = encoded[0]
    return [int(t) for t in encoded]


@dataclass
class TracePrefixes:
    """A trace, tokenized once, with the token cut of every sentence position."""

    trace: Trace
    tokenizer: Any
    sentences: list[Sentence]
    template_ids: list[int]
    cot_ids: list[int]
    cuts: list[int]
    """``cuts[i]`` = number of CoT tokens in the prefix of position i; ``cuts[K] == len(cot_ids)``."""
    cue_ids: list[int]
    min_chars: int
    edit: dict = field(default_factory=dict)
    offsets: list[tuple[int, int]] = field(default_factory=list)
    """Character span of every CoT token (the tokenizer's offset mapping)."""
    cue: str = ""
    """The answer cue text (:func:`answer_cue`)."""
    _forced_tail: dict[int, tuple[int, list[int]]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls, trace: Trace, tokenizer: Any, *, min_chars: int = DEFAULT_MIN_CHARS, edit: dict | None = None
    ):
        if not trace.cot.strip():
            raise EngineInputError(
                f"trace {trace.id} has no CoT to resample; give a trace whose 'cot' holds the reasoning text"
            )
        if not getattr(tokenizer, "chat_template", None):
            raise EngineInputError(
                "the tokenizer has no chat template; prefixes are built with the model's own template "
                "(set tokenizer.chat_template or use the model's tokenizer)"
            )
        template_ids = opened_think(
            tokenizer,
            token_ids(
                tokenizer.apply_chat_template(trace.messages, add_generation_prompt=True, tokenize=True)
            ),
        )
        enc = tokenizer(trace.cot, add_special_tokens=False, return_offsets_mapping=True)
        cot_ids = [int(t) for t in enc["input_ids"]]
        offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
        sentences = split_sentences(trace.cot, min_chars=min_chars)
        cuts = []
        for s in sentences:
            # Tokens that end at or before the sentence start; a token straddling the start (" The") is left to
            # the continuation, which regenerates it.
            cuts.append(sum(1 for _, end in offsets if end <= s.start))
        cuts.append(len(cot_ids))
        for a, b in itertools.pairwise(cuts):
            if b < a:
                raise EngineInputError(
                    "the tokenizer's offsets are not monotonic; it cannot cut exact prefixes"
                )
        cue = answer_cue(trace)
        cue_ids = token_ids(tokenizer(cue, add_special_tokens=False))
        return cls(
            trace,
            tokenizer,
            sentences,
            template_ids,
            cot_ids,
            cuts,
            cue_ids,
            min_chars,
            dict(edit or {}),
            offsets=offsets,
            cue=cue,
        )

    # -- views --------------------------------------------------------------------------------------------------

    @property
    def n_positions(self) -> int:
        """K + 1: positions 0 (empty CoT) to K (the full CoT)."""
        return len(self.sentences) + 1

    @property
    def full_ids(self) -> list[int]:
        return self.template_ids + self.cot_ids

    def _check(self, position: int) -> None:
        if not 0 <= position < self.n_positions:
            raise EngineInputError(
                f"position {position} is out of range for trace {self.trace.id}: it has {len(self.sentences)} "
                f"sentences, so positions run from 0 to {len(self.sentences)}"
            )

    def prefix_ids(self, position: int) -> list[int]:
        """Template ids + the CoT tokens before sentence ``position``."""
        self._check(position)
        return self.template_ids + self.cot_ids[: self.cuts[position]]

    def forced_answer_ids(self, position: int) -> list[int]:
        """The prefix of ``position`` followed by the answer cue (``</think>`` and the answer lead-in), tokenized as
        the model's tokenizer tokenizes the joined text: the CoT text of the prefix and the cue are tokenized
        together, so a boundary such as ``".\\n</think>"`` becomes the tokenizer's ``'.\\n' '</think>'`` and not
        ``'.' '\\n' '</think>'`` (which a byte-level BPE model never writes). The tokens before the boundary that
        the joined text keeps are the prefix's own, so the prefix cache still hits them. The cue's newline before
        ``</think>`` is left out when the prefix's CoT text already ends in one."""
        self._check(position)
        cut = self.cuts[position]
        if cut == 0:
            return self.template_ids + self.cue_ids
        found = self._forced_tail.get(position)
        if found is None:
            end = self.offsets[cut - 1][1]
            text = self.trace.cot[:end]
            cue = self.cue.removeprefix("\n") if text.endswith("\n") else self.cue
            joined = token_ids(self.tokenizer(text + cue, add_special_tokens=False))
            keep = 0
            limit = min(cut, len(joined))
            while keep < limit and joined[keep] == self.cot_ids[keep]:
                keep += 1
            found = self._forced_tail[position] = (keep, joined[keep:])
        keep, tail = found
        return self.template_ids + self.cot_ids[:keep] + tail

    # -- plans --------------------------------------------------------------------------------------------------

    def _positions(self, positions) -> list[int]:
        out = list(range(self.n_positions)) if positions is None else [int(p) for p in positions]
        for p in out:
            self._check(p)
        return out

    def plan(
        self,
        n: int,
        seed: int = 0,
        params: SamplingParams | None = None,
        *,
        positions=None,
        forced_answer: bool = False,
        forced_params: SamplingParams | None = None,
    ) -> Plan:
        """``n`` continuations from every position (or ``positions``), plus forced-answer probes if asked.

        Seeds: sample k of position i uses ``request_seed(seed, i, kind) + k`` (a hash, see
        :func:`resampling.request_seed`): no two rollouts of a trace share a seed, runs with different ``seed``
        share none, and a larger ``n`` later extends each position's samples (the cache computes only the new ones).
        """
        _check_n(n)
        params = params or SamplingParams()
        kind = self.edit.get("type", "resample") if self.edit else "resample"
        reqs = [
            SamplingRequest(
                prompt_ids=tuple(self.prefix_ids(p)),
                n=n,
                seed=request_seed(seed, p, kind),
                params=params,
                trace_id=self.trace.id,
                kind=kind,
                position=p,
                edit=self.edit,
            )
            for p in self._positions(positions)
        ]
        if forced_answer:
            reqs += self.forced_answer_plan(n, seed, forced_params, positions=positions).requests
        return Plan(reqs, self._plan_meta())

    def forced_answer_plan(
        self, n: int, seed: int = 0, params: SamplingParams | None = None, *, positions=None
    ) -> Plan:
        """Short continuations right after the answer cue at every position: the answer distribution so far."""
        _check_n(n)
        params = params or SamplingParams(max_new_tokens=24)
        reqs = [
            SamplingRequest(
                prompt_ids=tuple(self.forced_answer_ids(p)),
                n=n,
                seed=request_seed(seed, p, "forced_answer"),
                params=params,
                trace_id=self.trace.id,
                kind="forced_answer",
                position=p,
                edit=self.edit,
            )
            for p in self._positions(positions)
        ]
        return Plan(reqs, self._plan_meta())

    def _plan_meta(self) -> dict[str, Any]:
        """What a plan records of its trace: the split and the answer its rollouts are graded against by default
        (the trace's ``gt_answer``, else its own final answer)."""
        truth = self.trace.metadata.get("gt_answer")
        if truth is None:
            truth = self.trace.answer
        return {
            "min_chars": self.min_chars,
            "trace_id": self.trace.id,
            "truths": {self.trace.id: None if truth is None else str(truth)},
        }

    # -- interventions: each returns the prefixes of an edited trace ---------------------------------------------

    def _edited(self, cot: str | None = None, prompt=None, **edit: Any) -> TracePrefixes:
        new_trace = replace(
            self.trace,
            cot=self.trace.cot if cot is None else cot,
            prompt=self.trace.prompt if prompt is None else prompt,
            id="",
            metadata={**self.trace.metadata, "source_trace": self.trace.id},
        )
        new_trace.id = f"{self.trace.id}~{new_trace.id}"
        return TracePrefixes.build(
            new_trace, self.tokenizer, min_chars=self.min_chars, edit={**edit, "source_trace": self.trace.id}
        )

    def _sentence(self, index: int) -> Sentence:
        if not 0 <= index < len(self.sentences):
            raise EngineInputError(
                f"sentence {index} is out of range for trace {self.trace.id} (it has {len(self.sentences)} sentences)"
            )
        return self.sentences[index]

    def replace_sentence(self, index: int, text: str, *, kind: str = "replace_sentence") -> TracePrefixes:
        """Sentence ``index`` replaced by ``text`` (an inserted mistake, a paraphrase), at its exact offsets."""
        s = self._sentence(index)
        cot = self.trace.cot[: s.start] + text + self.trace.cot[s.end :]
        return self._edited(cot, type=kind, index=index, text=text, original=s.text)

    def remove_sentence(self, index: int) -> TracePrefixes:
        """Sentence ``index`` removed together with the whitespace that follows it."""
        s = self._sentence(index)
        nxt = self.sentences[index + 1].start if index + 1 < len(self.sentences) else len(self.trace.cot)
        cot = self.trace.cot[: s.start] + self.trace.cot[nxt:]
        return self._edited(
            cot.rstrip() if nxt == len(self.trace.cot) else cot, type="remove_sentence", index=index
        )

    def insert_sentence(self, index: int, text: str, *, kind: str = "insert_sentence") -> TracePrefixes:
        """``text`` inserted as a new sentence before sentence ``index`` (``index == K`` appends)."""
        if index == len(self.sentences):
            cot = self.trace.cot.rstrip() + " " + text
        else:
            s = self._sentence(index)
            cot = self.trace.cot[: s.start] + text + " " + self.trace.cot[s.start :]
        return self._edited(cot, type=kind, index=index, text=text)

    def with_cot(self, cot: str, *, kind: str = "filler") -> TracePrefixes:
        """The whole CoT replaced (filler tokens, a paraphrase of everything, a truncated CoT)."""
        return self._edited(cot, type=kind)

    def with_prompt(self, prompt: str | list[dict], *, kind: str = "hint") -> TracePrefixes:
        """The prompt replaced (a hint added), the CoT kept."""
        return self._edited(None, prompt=prompt, type=kind)
