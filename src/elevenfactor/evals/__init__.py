"""Evaluation (factor 11): suite files in ``evals/*.yaml``, scorers, and the result types a
runner fills. See ``_suite`` for the file format and the promptfoo mapping."""

from elevenfactor.evals._from_run import observe_run
from elevenfactor.evals._html import html_report
from elevenfactor.evals._load import load_suite, load_suite_dir, parse_suite
from elevenfactor.evals._observed import Observed, ObservedCall, ScoreContext, Scorer, observe
from elevenfactor.evals._program_input import EVAL_AGENT_PROGRAM, EVAL_PROGRAM, eval_input
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
from elevenfactor.evals._store import EvalRecord, get_result, list_results, suite_history
from elevenfactor.evals._suite import PROMPTFOO_TYPES, Case, Defaults, ScorerSpec, Suite, Target

__all__ = [
    "EVAL_AGENT_PROGRAM",
    "EVAL_PROGRAM",
    "PROMPTFOO_TYPES",
    "SCORER_GROUP",
    "Case",
    "CaseResult",
    "CaseStats",
    "Comparison",
    "ContainsScorer",
    "CustomScorer",
    "Defaults",
    "EvalRecord",
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
    "eval_input",
    "get_result",
    "html_report",
    "list_results",
    "load_suite",
    "load_suite_dir",
    "observe",
    "observe_run",
    "parse_json_answer",
    "parse_suite",
    "suite_history",
]
