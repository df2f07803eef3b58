"""The LiteLLM proxy with its OpenTelemetry callback: the venv of ``bench.gateway.peers`` plus
the OpenTelemetry SDK and OTLP/HTTP exporter its ``otel`` callback needs."""

from __future__ import annotations

from bench.gateway.peers import PEERS_VENV, LiteLLMInstall
from bench.peers import ensure_peer_venv

__all__ = ["LITELLM_OTEL_CONFIG", "ensure_litellm_otel"]

LITELLM_OTEL_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/mock-gpt
      api_base: http://127.0.0.1:{port}/v1
      api_key: sk-mock-upstream
litellm_settings:
  num_retries: 0
  request_timeout: 60
  callbacks: ["otel"]
general_settings:
  master_key: {master_key}
"""


def ensure_litellm_otel() -> LiteLLMInstall:
    """``litellm[proxy]`` with the OpenTelemetry SDK and OTLP/HTTP exporter, in the peers'
    venv (installed on first use)."""
    specs = ["litellm[proxy]", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"]
    ensure_peer_venv(PEERS_VENV, specs, "opentelemetry-exporter-otlp-proto-http")
    exe = PEERS_VENV / "bin" / "litellm"
    version = ensure_peer_venv(PEERS_VENV, specs, "litellm", needs=exe)
    return LiteLLMInstall(venv=PEERS_VENV, executable=exe, version=version)
