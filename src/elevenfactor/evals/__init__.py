"""Evaluation (factor 11): suite files in ``evals/*.yaml``, scorers, and the result types a
runner fills. See ``_suite`` for the file format and the promptfoo mapping."""

from elevenfactor.evals._load import load_suite, load_suite_dir, parse_suite
from elevenfactor.evals._observed import Observed, ObservedCall, ScoreContext, Scorer, observe
from elevenfactor.evals._results import (
    CaseResult,
    CaseStats,
    Comparison,
    Regression,
    Score,
    SuiteResult,
    compare,
)
from elevenfactor.evals._scorers import (
    ContainsScorer,
    ExactScorer,
    JsonSchemaScorer,
    NotContainsScorer,
    RegexScorer,
    parse_json_answer,
)
from elevenfactor.evals._scorers_calls import (
    ExpectedCall,
    MaxCostScorer,
    MaxLatencyScorer,
    MaxTokensScorer,
    TrajectoryScorer,
)
from elevenfactor.evals._scorers_ext import SCORER_GROUP, CustomScorer, GuardScorer, JudgeScorer
from elevenfactor.evals._suite import PROMPTFOO_TYPES, Case, Defaults, ScorerSpec, Suite, Target

__all__ = [
    "PROMPTFOO_TYPES",
    "SCORER_GROUP",
    "Case",
    "CaseResult",
    "CaseStats",
    "Comparison",
    "ContainsScorer",
    "CustomScorer",
    "Defaults",
    "ExactScorer",
    "ExpectedCall",
    "GuardScorer",
    "JsonSchemaScorer",
    "JudgeScorer",
    "MaxCostScorer",
    "MaxLatencyScorer",
    "MaxTokensScorer",
    "NotContainsScorer",
    "Observed",
    "ObservedCall",
    "RegexScorer",
    "Regression",
    "Score",
    "ScoreContext",
    "Scorer",
    "ScorerSpec",
    "Suite",
    "SuiteResult",
    "Target",
    "TrajectoryScorer",
    "compare",
    "load_suite",
    "load_suite_dir",
    "observe",
    "parse_json_answer",
    "parse_suite",
]
