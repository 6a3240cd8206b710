"""Schemathesis against the live server on loopback: every operation of /openapi.json, its schema examples (real
PNGs) and generated valid and invalid requests, checked for server errors and conformance to the schema
(status codes, content types, response bodies). The same run over a reward that raises on the schema example's
request must report the 500: the check can fail."""
from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from prometheus_client.parser import text_string_to_metric_families
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .serve_fakes import CountingReward, serve, tiny_judge, tiny_policy

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 12                       # generated requests per operation and mode: bounded, a few seconds in all


def fuzz(url: str, max_examples: int = EXAMPLES) -> tuple[list[str], int]:
    """(failures as 'METHOD /path: what', requests sent) of a bounded schemathesis run against url."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    failures, sent = [], [0]
    for result in schema.get_all_operations():
        operation = result.ok()
        strategies = [(s, False) for s in operation.get_strategies_from_examples()] + [
            (operation.as_strategy(generation_mode=GenerationMode.POSITIVE), False),
            (operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), True)]
        for strategy, negative in strategies:
            @given(case=strategy)
            @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            def run(case):
                sent[0] += 1
                try:
                    case.call_and_validate(base_url=url, checks=CHECKS, timeout=60)
                except (FailureGroup, Exception) as failure:   # failed checks, or a transport error
                    failures.append(f"{operation.label}: {type(failure).__name__}: {str(failure)[:300]}")
            try:
                run()
            except Unsatisfiable:
                if not negative:         # an operation with nothing to send wrong (GET /healthz) has no negatives
                    raise
    return failures, sent[0]


@pytest.fixture(scope="module")
def judge():
    return tiny_judge()


def test_live_server_conforms_to_its_schema(judge):
    server = serve(judge, tiny_policy(), rerank_steps=1, max_rerank_n=4)
    try:
        failures, sent = fuzz(server.url)
        health = server.app.state.metrics
        statuses = {(s.labels["endpoint"], s.labels["status"]) for family in
                    text_string_to_metric_families(httpx.get(server.url + "/metrics").text)
                    for s in family.samples if s.name == "editrl_serve_requests_total"}
    finally:
        server.stop()
    assert sent >= 20
    assert failures == [], "\n".join(failures)
    assert health.accepted_count == health.answered_count
    assert {("score", "200"), ("score", "400"), ("rerank", "200"), ("rerank", "400")} <= statuses, statuses


def test_the_run_reports_a_server_error():
    server = serve(CountingReward(fail_on="make the square blue"))    # the schema examples' instruction
    try:
        failures, _ = fuzz(server.url, max_examples=2)
    finally:
        server.stop()
    assert any(f.startswith("POST /v1/score") and "500" in f for f in failures), failures
