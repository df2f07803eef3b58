"""What the targets are configured with: project files for elevenfactor, config files for the
LiteLLM proxy, the budgets and limits, and the overshoot's exact prices.

Templates keep ``{port}`` and ``{model}`` (and ``{master_key}`` for LiteLLM) for
``bench.gateway.targets`` to fill in; YAML braces are doubled.
"""

from __future__ import annotations

import json

from bench.gateway.targets import MODEL

__all__ = [
    "BURST_BODY",
    "BURST_CALLS",
    "BURST_COST",
    "BURST_LIMIT",
    "BURST_MAX_TOKENS",
    "GENEROUS_BUDGET",
    "LATENCY_PRICE",
    "RPM",
    "TPM",
    "ef_project",
    "litellm_config",
]

# Latency runs: limits and a budget so generous the run is never throttled or refused; the
# point is what checking them costs.
RPM = 1_000_000
TPM = 100_000_000
GENEROUS_BUDGET = 1_000_000.0  # USD, window total
LATENCY_PRICE = (1.0, 2.0)  # input, output USD per million tokens

# Overshoot runs: the mock answers 9 completion tokens; output at $15,625 per million tokens
# makes one call cost 9/64 = $0.140625 (a binary fraction: sums are exact), input is free, and
# max_tokens is 9, so the reservation equals the real cost and the budget admits exactly
# BURST_CALLS calls however they interleave.
BURST_OUTPUT_PER_MTOK = 15_625.0
BURST_MAX_TOKENS = 9
BURST_COST = BURST_MAX_TOKENS * BURST_OUTPUT_PER_MTOK / 1e6
BURST_CALLS = 40
BURST_LIMIT = BURST_CALLS * BURST_COST
BURST_BODY = json.dumps(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": BURST_MAX_TOKENS,
    },
    separators=(",", ":"),
)

_EF_PROJECT = """\
version: 1
providers:
  mock:
    type: openai
    base_url: http://127.0.0.1:{{port}}/v1
    api_key: sk-mock-upstream
models:
  mock-gpt:
    provider: mock
    model: mock-gpt
    retry:
      attempts: 1
    price:
      input_per_mtok: {input}
      output_per_mtok: {output}
routes:
  {{model}}:
    chain: [mock-gpt]
default_route: {{model}}
"""

_EF_LIMITS = f"""\
limits:
  key:
    rpm: {RPM}
    tpm: {TPM}
"""


def ef_project(*, limits: bool, burst: bool = False) -> str:
    """The project file: the mock behind route ``bench``, priced (the overshoot's exact price
    with ``burst``), with generous per-key rpm/tpm limits when ``limits``."""
    inp, out = (0.0, BURST_OUTPUT_PER_MTOK) if burst else LATENCY_PRICE
    text = _EF_PROJECT.format(input=inp, output=out)
    return text + (_EF_LIMITS if limits else "")


_LITELLM = """\
model_list:
  - model_name: {{model}}
    litellm_params:
      model: openai/mock-gpt
      api_base: http://127.0.0.1:{{port}}/v1
      api_key: sk-mock-upstream
{extra_params}    model_info:
      id: {model_id}
{router}litellm_settings:
  num_retries: 0
  request_timeout: 60
general_settings:
  master_key: {{master_key}}
"""


def litellm_config(
    model_id: str,
    *,
    budget: float | None = None,
    limits: bool = False,
    price: tuple[float, float] = LATENCY_PRICE,
    redis: tuple[str, int] | None = None,
) -> str:
    """A LiteLLM proxy config without a database. ``budget``: the deployment's ``max_budget``
    (USD, ``budget_duration: 30d``; enforced by LiteLLM's router budget limiter from its
    in-memory spend, synced through Redis when ``redis`` is given); ``limits``: rpm/tpm on the
    deployment, enforced by the ``enforce_model_rate_limits`` pre-call check. ``model_id``
    names the deployment (and so its Redis keys) for this run alone."""
    params = []
    if budget is not None or limits:
        inp, out = price
        params += [f"input_cost_per_token: {inp / 1e6!r}", f"output_cost_per_token: {out / 1e6!r}"]
    if budget is not None:
        params += [f"max_budget: {budget!r}", "budget_duration: 30d"]
    if limits:
        params += [f"rpm: {RPM}", f"tpm: {TPM}"]
    router = []
    if limits:
        router += ["  optional_pre_call_checks:", "    - enforce_model_rate_limits"]
    if redis is not None:
        router += [f"  redis_host: {redis[0]}", f"  redis_port: {redis[1]}"]
    return _LITELLM.format(
        extra_params="".join(f"      {p}\n" for p in params),
        model_id=model_id,
        router="router_settings:\n" + "\n".join(router) + "\n" if router else "",
    )
