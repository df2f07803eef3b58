"""Retrieval benchmark: query latency and recall against exact search, ingestion throughput."""
