"""Gates: turn a metric source's answers into a verdict with its value and limit.

A gate measures the candidate; its verdict is a value (Pass, Fail, Inconclusive),
never an exception. No data, NaN, an empty or a multi-series result, too little data,
differing bucket edges and an unreachable source are all *inconclusive*; what that
leads to is set per gate (``onInconclusive``) and applied by the engine.

One module per kind (formulas, defaults and limits in docs/analysis.md):

- ``query``:      a PromQL template of the candidate, against min and/or max;
- ``latency``:    ``histogram_quantile(q, sum by (le) (rate(<hist>_bucket{...}[interval])))``;
- ``error_rate``: errors / requests over the interval;
- ``throughput``: requests per second over the interval;
- ``null_rate``:  null outputs / requests over the interval;
- ``drift``:      the candidate's input or output distribution against stable's (or a
  baseline window), by PSI, Jensen-Shannon distance, KS or chi-square, each judged by
  a confidence sequence or an e-value;
- ``agreement``:  the share of shadow pairs that agree (a binomial confidence sequence);
- ``compare``:    candidate against stable on one metric: an equivalence test of the
  Hodges-Lehmann shift of per-step values, or the normal-mixture CS (the mSPRT) of the
  difference of cumulative counters;
- ``score``:      a Kayenta-style weighted score over several per-step comparisons;
- ``accuracy``:   late-label accuracy, candidate against stable, with a margin;
- ``llm``:        the LLM serving gates on vLLM's metrics (time to first token,
  inter-token latency, queue time, output tokens/s, KV-cache usage, cost per 1,000
  tokens), one module with six registry entries, judged by the threshold kinds' tests;

and ``min_samples`` (any gate): too few requests to the candidate is inconclusive.
``common`` holds what they share; ``registry`` finds a gate's kind. The built-in kinds
assume the metric names and labels of docs/metrics-conventions.md (``model`` and
``version`` labels). The ML kinds are anytime-valid tests with three outcomes at the
gate's level ``GateContext.alpha``; ``shown`` builds their results.
"""

from modelrollout.analysis.gates.common import (
    GateContext,
    Plot,
    Series,
    TemplateError,
    context_for,
    previous_results,
    render,
    stage_seconds,
)
from modelrollout.analysis.gates.registry import (
    KINDS,
    evaluate,
    evaluator_for,
    kind_name,
    limit_text,
    preflight_queries,
    queries,
)

__all__ = [
    "KINDS",
    "GateContext",
    "Plot",
    "Series",
    "TemplateError",
    "context_for",
    "evaluate",
    "evaluator_for",
    "kind_name",
    "limit_text",
    "preflight_queries",
    "previous_results",
    "queries",
    "render",
    "stage_seconds",
]
