"""Factors 5 and 6: durable runs over the hash-chained journal, workers, timers, approvals."""

from elevenfactor.runtime._agent import Agent, AgentDeps
from elevenfactor.runtime._agent_spec import AgentSpec, load_agents
from elevenfactor.runtime._approvals import (
    ApprovalInfo,
    Decision,
    approval,
    decide_approval,
    get_approval,
    list_approvals,
)
from elevenfactor.runtime._audit import (
    AuditReport,
    Finding,
    audit,
    check_chain,
    verify_one_run,
    verify_run,
)
from elevenfactor.runtime._breakers import AgentBreakers, RunBreakers, RunLimits
from elevenfactor.runtime._claims import claim_run
from elevenfactor.runtime._context import Park, RunContext, StepRetry, step_key
from elevenfactor.runtime._feedback import Feedback, FeedbackPage, add_feedback, list_feedback
from elevenfactor.runtime._housekeeping import Housekeeper
from elevenfactor.runtime._journal import (
    Event,
    VerifyReport,
    describe_steps,
    load_events,
)
from elevenfactor.runtime._kill import kill_and_cancel
from elevenfactor.runtime._loader import load_programs
from elevenfactor.runtime._programs import Program, Programs
from elevenfactor.runtime._runs import (
    Lease,
    RunInfo,
    cancel_run,
    delete_run,
    get_run,
    list_runs,
    run_input,
    run_result,
    submit_run,
)
from elevenfactor.runtime._saga import Saga
from elevenfactor.runtime._service import Runtime, build_runtime, build_worker, running
from elevenfactor.runtime._subruns import run_child
from elevenfactor.runtime._webhooks import webhook_hook
from elevenfactor.runtime._worker import Worker, WorkerOptions

__all__ = [
    "Agent",
    "AgentBreakers",
    "AgentDeps",
    "AgentSpec",
    "ApprovalInfo",
    "AuditReport",
    "Decision",
    "Event",
    "Feedback",
    "FeedbackPage",
    "Finding",
    "Housekeeper",
    "Lease",
    "Park",
    "Program",
    "Programs",
    "RunBreakers",
    "RunContext",
    "RunInfo",
    "RunLimits",
    "Runtime",
    "Saga",
    "StepRetry",
    "VerifyReport",
    "Worker",
    "WorkerOptions",
    "add_feedback",
    "approval",
    "audit",
    "build_runtime",
    "build_worker",
    "cancel_run",
    "check_chain",
    "claim_run",
    "decide_approval",
    "delete_run",
    "describe_steps",
    "get_approval",
    "get_run",
    "kill_and_cancel",
    "list_approvals",
    "list_feedback",
    "list_runs",
    "load_agents",
    "load_events",
    "load_programs",
    "run_child",
    "run_input",
    "run_result",
    "running",
    "step_key",
    "submit_run",
    "verify_one_run",
    "verify_run",
    "webhook_hook",
]
