"""The public names of `metrics`, each listed once: type checkers read them here, and `cotscope._exports` makes
them the run-time imports, `__all__` and `dir()`."""

from ._agreement import (
    agreement_table as agreement_table,
    cohen_kappa as cohen_kappa,
    gwet_ac1 as gwet_ac1,
    gwet_ac2 as gwet_ac2,
    krippendorff_alpha as krippendorff_alpha,
)
from ._classifiers import (
    CLASSIFIERS as CLASSIFIERS,
    CLASSIFIER_SCHEMA as CLASSIFIER_SCHEMA,
    ClassifyConfig as ClassifyConfig,
    TraceCase as TraceCase,
    classify as classify,
    monitor_agreement as monitor_agreement,
)
from ._formulas import (
    ROW_SCHEMA as ROW_SCHEMA,
    adding_mistakes as adding_mistakes,
    adding_mistakes_curves as adding_mistakes_curves,
    articulation as articulation,
    biased_context as biased_context,
    early_answering as early_answering,
    early_answering_curves as early_answering_curves,
    filler_tokens as filler_tokens,
    hint_verbalisation as hint_verbalisation,
    iphr as iphr,
    iphr_pairs as iphr_pairs,
    metric_row as metric_row,
    paraphrasing as paraphrasing,
    rows_frame as rows_frame,
    transplant as transplant,
    transplant_curves as transplant_curves,
)
from ._gmean import gmean2_instance as gmean2_instance, monitor_gmean2 as monitor_gmean2
from ._items import (
    SUGGESTED_ANSWER as SUGGESTED_ANSWER,
    Item as Item,
    ItemFileError as ItemFileError,
    load_items as load_items,
    organism_items as organism_items,
)
from ._judges import (
    BackendParaphraser as BackendParaphraser,
    FewShotMistakes as FewShotMistakes,
    Judge as Judge,
    JudgeLabel as JudgeLabel,
    JudgeRequest as JudgeRequest,
    LLMJudge as LLMJudge,
    MistakeGenerator as MistakeGenerator,
    OrganismMistakes as OrganismMistakes,
    OrganismParaphraser as OrganismParaphraser,
    Paraphraser as Paraphraser,
    RuleJudge as RuleJudge,
    parse_judge_reply as parse_judge_reply,
)
from ._probes_validate import validate_probes as validate_probes
from ._report import (
    render_report as render_report,
    write_eval_log as write_eval_log,
    write_faithfulness as write_faithfulness,
)
from ._stats import (
    aoc as aoc,
    bootstrap_ci as bootstrap_ci,
    bootstrap_rows as bootstrap_rows,
    paired_one_sided_test as paired_one_sided_test,
    wilson as wilson,
)
from ._suite import (
    ITEM_SCHEMA as ITEM_SCHEMA,
    SUITES as SUITES,
    FaithfulnessResult as FaithfulnessResult,
    SuiteConfig as SuiteConfig,
    run_faithfulness as run_faithfulness,
)
