"""Faithfulness metrics, judges and reports: is the chain of thought the reason for the answer?

>>> from metrics import organism_items, run_faithfulness, RuleJudge, SuiteConfig   # doctest: +SKIP
>>> from resampling import make_backend
>>> be = make_backend("hf", model_id="organism:hint")
>>> result = run_faithfulness(be, organism_items("hint", 50), ["all"], cache_dir="runs/.cache", judge=RuleJudge())
>>> result.metrics  # one row per metric x condition: value, 95% interval, counts, n

The formulas (:func:`early_answering`, :func:`hint_verbalisation`, :func:`monitor_gmean2`, ...) are pure functions
of sampled outcomes, usable on rollouts from anywhere; :func:`run_faithfulness` builds the engine plans behind them.
"""

from metrics._agreement import agreement_table, cohen_kappa, gwet_ac1, gwet_ac2, krippendorff_alpha
from metrics._classifiers import (
    CLASSIFIER_SCHEMA,
    CLASSIFIERS,
    ClassifyConfig,
    TraceCase,
    classify,
    monitor_agreement,
)
from metrics._formulas import (
    ROW_SCHEMA,
    adding_mistakes,
    adding_mistakes_curves,
    articulation,
    biased_context,
    early_answering,
    early_answering_curves,
    filler_tokens,
    hint_verbalisation,
    iphr,
    iphr_pairs,
    metric_row,
    paraphrasing,
    rows_frame,
)
from metrics._gmean import gmean2_instance, monitor_gmean2
from metrics._items import SUGGESTED_ANSWER, Item, ItemFileError, load_items, organism_items
from metrics._judges import (
    BackendParaphraser,
    FewShotMistakes,
    Judge,
    JudgeLabel,
    JudgeRequest,
    LLMJudge,
    MistakeGenerator,
    OrganismMistakes,
    OrganismParaphraser,
    Paraphraser,
    RuleJudge,
    parse_judge_reply,
)
from metrics._report import render_report, write_eval_log, write_faithfulness
from metrics._stats import aoc, bootstrap_ci, bootstrap_rows, paired_one_sided_test, wilson
from metrics._suite import ITEM_SCHEMA, SUITES, FaithfulnessResult, SuiteConfig, run_faithfulness

__all__ = [
    "CLASSIFIERS",
    "CLASSIFIER_SCHEMA",
    "ITEM_SCHEMA",
    "ROW_SCHEMA",
    "SUGGESTED_ANSWER",
    "SUITES",
    "BackendParaphraser",
    "ClassifyConfig",
    "FaithfulnessResult",
    "FewShotMistakes",
    "Item",
    "ItemFileError",
    "Judge",
    "JudgeLabel",
    "JudgeRequest",
    "LLMJudge",
    "MistakeGenerator",
    "OrganismMistakes",
    "OrganismParaphraser",
    "Paraphraser",
    "RuleJudge",
    "SuiteConfig",
    "TraceCase",
    "adding_mistakes",
    "adding_mistakes_curves",
    "agreement_table",
    "aoc",
    "articulation",
    "biased_context",
    "bootstrap_ci",
    "bootstrap_rows",
    "classify",
    "cohen_kappa",
    "early_answering",
    "early_answering_curves",
    "filler_tokens",
    "gmean2_instance",
    "gwet_ac1",
    "gwet_ac2",
    "hint_verbalisation",
    "iphr",
    "iphr_pairs",
    "krippendorff_alpha",
    "load_items",
    "metric_row",
    "monitor_agreement",
    "monitor_gmean2",
    "organism_items",
    "paired_one_sided_test",
    "paraphrasing",
    "parse_judge_reply",
    "render_report",
    "rows_frame",
    "run_faithfulness",
    "wilson",
    "write_eval_log",
    "write_faithfulness",
]
