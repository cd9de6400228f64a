"""The faithfulness suites that read paired unhinted/hinted samples (biased context, hint verbalisation,
articulation, monitor), transplantation of the hinted arm's CoT onto the unhinted prompt, and IPHR's reversed
question pairs: a mixin of :class:`metrics._suite._Runner`, which gives
it the engine, the items, the judge and the item-row log."""

from __future__ import annotations

import polars as pl

from cot import Trace, answer_key
from metrics._formulas import (
    articulation,
    biased_context,
    hint_verbalisation,
    iphr,
    iphr_pairs,
    transplant,
    transplant_curves,
)
from metrics._gmean import monitor_gmean2
from metrics._items import Item
from metrics._judges import JudgeRequest
from metrics._suite_rules import (
    _chen_n_options,
    _correct,
    _cue_text,
    _prefix_text,
    _same,
    _Skip,
    _truth_verbalised,
)


class _PairSuites:
    """Suites over hint pairs and IPHR pairs (see the module docstring)."""

    def pairs(self) -> pl.DataFrame:
        """Paired unhinted/hinted samples (same seeds) of every item with a hint, with judge labels on both arms."""
        if self._pairs is not None:
            return self._pairs
        hinted = [it for it in self.items if it.hint is not None]
        if not hinted:
            raise _Skip("no item has a hint target (give items with a 'hint' field, or use organism:hint)")
        if self.judge is None:
            raise _Skip("no judge was given")
        prompts = [(it.id, f"{it.id}#u", it.question) for it in hinted] + [
            (it.id, f"{it.id}#h", it.hinted_prompt()) for it in hinted
        ]
        r = self.sample_prompts(prompts, self.cfg.samples, "hint_pair")
        rows = []
        for row in r.sort("trace_id", "sample").iter_rows(named=True):
            key, arm = row["trace_id"].rsplit("#", 1)
            it = self.by_id[key]
            text = row["text"] if row["status"] == "ok" else None
            cot = None
            if text is not None:
                cot = Trace.from_completion(
                    text if text.lstrip().startswith("<think>") else "<think>\n" + text
                ).cot
            rows.append(
                {
                    "item_id": it.id,
                    "arm": "hinted" if arm == "h" else "unhinted",
                    "sample": row["sample"],
                    "answer": row["answer"],
                    "cot": cot,
                    "rollout_id": row["request_id"],
                }
            )
        reqs = [
            JudgeRequest(
                question=self.by_id[r_["item_id"]].hinted_prompt() or "",
                cot=r_["cot"] or "",
                answer=r_["answer"],
                cue=_cue_text(self.by_id[r_["item_id"]]),
                cue_answer=self.by_id[r_["item_id"]].hint,
            )
            for r_ in rows
        ]
        self.log(f"judging {len(reqs)} CoTs with {self.judge.id}")
        labels = self.judge.label(reqs)
        for r_, lab in zip(rows, labels, strict=True):
            it = self.by_id[r_["item_id"]]
            r_["label"] = lab.value if r_["cot"] is not None else None
            truth = _truth_verbalised(it, r_["cot"]) if r_["arm"] == "hinted" else None
            self._row(
                item_id=it.id,
                suite="hint_pairs",
                condition=r_["arm"],
                sample=r_["sample"],
                answer=r_["answer"],
                reference=it.answer,
                correct=_correct(r_["answer"], it.answer),
                value=None if r_["answer"] is None else float(_same(r_["answer"], it.hint) or False),
                label=r_["label"],
                truth_label=truth,
                judge_id=lab.judge_id,
                judge_prompt_hash=lab.prompt_hash,
                judge_sampling=lab.sampling,
                judge_error=lab.error,
                judge_reply=lab.raw,
                rollout_id=r_["rollout_id"],
                text=r_["cot"],
            )
        self._pairs = pl.DataFrame(
            rows,
            schema={
                "item_id": pl.Utf8,
                "arm": pl.Utf8,
                "sample": pl.Int64,
                "answer": pl.Utf8,
                "cot": pl.Utf8,
                "rollout_id": pl.Utf8,
                "label": pl.Boolean,
            },
        )
        return self._pairs

    def _wide(self) -> pl.DataFrame:
        p = self.pairs()
        u = p.filter(pl.col("arm") == "unhinted").select("item_id", "sample", pl.col("answer").alias("a_u"))
        h = p.filter(pl.col("arm") == "hinted").select(
            "item_id", "sample", pl.col("answer").alias("a_h"), "label"
        )
        w = u.join(h, on=["item_id", "sample"])
        hint = {it.id: it.hint for it in self.items}
        gold = {it.id: it.answer for it in self.items}
        return w.with_columns(
            pl.col("item_id").replace_strict(hint, return_dtype=pl.Utf8).alias("hint"),
            pl.col("item_id").replace_strict(gold, return_dtype=pl.Utf8).alias("gold"),
        )

    def biased_context(self) -> pl.DataFrame:
        p = self.pairs()
        hint = {it.id: it.hint for it in self.items}
        gold = {it.id: it.answer for it in self.items}
        rows = [
            {
                "item_id": r["item_id"],
                "arm": "biased" if r["arm"] == "hinted" else "unbiased",
                "correct": _correct(r["answer"], gold[r["item_id"]]),
                "equals_bias": bool(_same(r["answer"], hint[r["item_id"]])),
                "bias_inconsistent": not _correct(hint[r["item_id"]], gold[r["item_id"]]),
            }
            for r in p.iter_rows(named=True)
        ]
        return biased_context(pl.DataFrame(rows), seed=self.cfg.seed)

    def _norm(self, w: pl.DataFrame) -> pl.DataFrame:
        def k(col: str):
            return pl.col(col).map_elements(lambda x: answer_key(x), return_dtype=pl.Utf8)

        return w.with_columns(k("a_u"), k("a_h"), k("hint"))

    def hint_verbalisation(self) -> pl.DataFrame:
        w = self._norm(self._wide()).rename({"label": "verbalised"})
        return hint_verbalisation(w, n_options=self._n_options(), seed=self.cfg.seed)

    def articulation(self) -> pl.DataFrame:
        w = self._norm(self._wide()).rename({"a_h": "a_b", "hint": "cue", "label": "cites"})
        return articulation(w, seed=self.cfg.seed)

    def monitor(self) -> pl.DataFrame:
        p = self.pairs()
        hint = {it.id: it.hint for it in self.items}
        rows = [
            {
                "instance": r["item_id"],
                "x": int(r["arm"] == "hinted"),
                "y": int(bool(_same(r["answer"], hint[r["item_id"]]))),
                "z": int(bool(r["label"])),
            }
            for r in p.iter_rows(named=True)
            if r["label"] is not None
        ]
        if not rows:
            raise _Skip("the judge labelled no CoT (every label failed)")
        return monitor_gmean2(pl.DataFrame(rows), n_bootstrap=self.cfg.monitor_bootstrap, seed=self.cfg.seed)

    def hinted_traces(self) -> list[tuple[Item, Trace]]:
        """The hinted arm's CoTs of every item with a hint: the item's ``hinted_cot`` where given, else
        ``traces_per_item`` samples of the hinted prompt with the hint pairs' key, kind and seeds (sample s is the
        hinted arm of pair s on a backend that is deterministic per seed, as ``hf`` is). Truncated CoTs and CoTs
        without an answer are recorded and left out."""
        hinted = [it for it in self.items if it.hint is not None]
        if not hinted:
            raise _Skip("no item has a hint target (give items with a 'hint' field, or use organism:hint)")
        given = [it for it in hinted if it.hinted_cot]
        out = [
            (
                it,
                Trace(
                    prompt=it.hinted_prompt() or "",
                    cot=it.hinted_cot or "",
                    metadata={"gt_answer": it.answer, "item_id": it.id},
                ),
            )
            for it in given
        ]
        todo = [(it, f"{it.id}#h", it.hinted_prompt() or "") for it in hinted if not it.hinted_cot]
        if todo:
            seen = {t.id for _, t in out}
            new = self.sampled_traces(
                todo, "hint_pair", suite="transplant", condition="hinted_cot", reference="hint"
            )
            out += [(it, t) for it, t in new if t.id not in seen]
        return out

    def transplant(self) -> pl.DataFrame:
        """The first k sentences of each hinted CoT grafted onto the unhinted prompt (the CoT's own tokens after
        the unhinted template: :meth:`resampling.TracePrefixes.with_prompt`), the rest resampled, k = 0..n."""
        from resampling import Plan

        plan, grafts = Plan(), {}
        for it, t in self.hinted_traces():
            graft = self.prefixes(t).with_prompt(it.question, kind="transplant")
            plan = plan + graft.plan(self.cfg.samples, self.trace_seed(t), self.cfg.params())
            grafts[graft.trace.id] = (it, t, graft)
        if not len(plan):
            raise _Skip(
                "no hinted CoT to transplant (every sampled hinted CoT was truncated or had no answer)"
            )
        r = self._run(plan, "transplant")
        rows = []
        for row in r.iter_rows(named=True):
            it, t, graft = grafts[row["trace_id"]]
            rows.append(
                self._position_probe(
                    row,
                    it,
                    t,
                    "transplant",
                    "equals_cue",
                    it.hint,
                    correct=_correct(row["answer"], it.answer),
                    text=_prefix_text(graft, row["position"]) + (row["text"] or ""),
                )
            )
        df = pl.DataFrame(
            rows,
            schema={
                "item_id": pl.Utf8,
                "trace_id": pl.Utf8,
                "n_sentences": pl.Int64,
                "position": pl.Int64,
                "equals_cue": pl.Boolean,
            },
        )
        self.transplant_curves = transplant_curves(df)
        return transplant(df, seed=self.cfg.seed)

    def iphr(self) -> pl.DataFrame:
        qs = [it for it in self.items if it.pair_id is not None]
        if not qs:
            raise _Skip(
                "no item has a pair_id (IPHR needs reversed question pairs: organism:compare or items with pair_id, group)"
            )
        r = self.sample_prompts([(it.id, f"{it.id}#q", it.question) for it in qs], self.cfg.samples, "iphr")
        rows = []
        for it in qs:
            g = r.filter(pl.col("trace_id") == f"{it.id}#q")
            answers = [(a or "").strip().upper() for a in g["answer"].to_list() if a is not None]
            answers = [a for a in answers if a in ("YES", "NO")]
            gold = it.answer.strip().upper()
            rows.append(
                {
                    "group": it.group or it.pair_id,
                    "pair_id": it.pair_id,
                    "question_id": it.id,
                    "correct_answer": gold,
                    "n_yes": sum(a == "YES" for a in answers),
                    "n_answered": len(answers),
                    "n_correct": sum(a == gold for a in answers),
                }
            )
            self._row(
                item_id=it.id,
                suite="iphr",
                condition="question" if answers else "unanswered",
                value=rows[-1]["n_yes"] / len(answers) if answers else None,
                reference=gold,
            )
        q = pl.DataFrame(rows)
        self.iphr_flags = iphr_pairs(
            q, bias_threshold=self.cfg.iphr_bias_threshold, accuracy_gap=self.cfg.iphr_accuracy_gap
        )
        return iphr(q, bias_threshold=self.cfg.iphr_bias_threshold, accuracy_gap=self.cfg.iphr_accuracy_gap)

    def _n_options(self) -> int:
        return _chen_n_options(self.items, self.cfg.n_options)
