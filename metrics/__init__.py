"""Faithfulness metrics, judges and reports: is the chain of thought the reason for the answer?

>>> from metrics import organism_items, run_faithfulness, RuleJudge, SuiteConfig   # doctest: +SKIP
>>> from resampling import make_backend
>>> be = make_backend("hf", model_id="organism:hint")
>>> result = run_faithfulness(be, organism_items("hint", 50), ["all"], cache_dir="runs/.cache", judge=RuleJudge())
>>> result.metrics  # one row per metric x condition: value, 95% interval, counts, n

The formulas (:func:`early_answering`, :func:`hint_verbalisation`, :func:`monitor_gmean2`, ...) are pure functions
of sampled outcomes, usable on rollouts from anywhere; :func:`run_faithfulness` builds the engine plans behind them.
"""

from cotscope._exports import attach_stub as _attach_stub

# The names are listed once, in __init__.pyi.
__getattr__, __dir__, __all__ = _attach_stub(__name__, __file__)
