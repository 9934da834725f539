"""The OpenAPI description as a contract: schemathesis generates requests for every operation
it describes and runs them in process against the served App's ASGI app. No answer may be a
server error; answers to valid requests must match what the description says.

(schemathesis's own pytest integration, ``from_fixture``, does not run on pytest 9, so each
operation's case strategy drives a plain Hypothesis test here.)

Requests carry an admin token (``Authorization: Bearer``), as a client of the API would;
schemathesis's ASGI client calls itself ``testserver``, so that is the allowed host here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from schemathesis.python.asgi import shutdown_lifespans

from contexten import App, Event
from contexten.api.openapi import read_api_paths
from contexten.ingress.openapi import openapi_spec
from contexten.ingress.server import create_server

from ._support import AUTH, make_config

EXAMPLES = 30
SPEC = openapi_spec(read_api_paths())
"""What a served App describes: the ingress and the read-model API."""
# schemathesis leaves out the operation that serves the schema itself (it has no inputs).
OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, item in SPEC["paths"].items()
    for method in item
    if path != "/openapi.json"
)
# Operations with inputs that can be made invalid: parameters or a body (an event id is any
# string, so nothing about GET /api/v1/events/{id} can be invalid).
WITH_INPUTS = sorted(
    f"{method.upper()} {path}"
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
    if (operation.get("parameters") or operation.get("requestBody"))
    and path != "/api/v1/events/{id}"
)
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    app = App(f"sqlite:///{tmp_path_factory.mktemp('schema') / 'api.db'}")

    @app.on_startup
    async def seed() -> None:
        events = [Event(type=f"github.issue.e{i}", source="github") for i in range(5)]
        await app.store.append("seed", events)

    # No throttling: schemathesis's ignored_auth check re-sends requests with bad credentials
    # on purpose (to check they are refused), many more than a client would in a minute.
    config = make_config(
        allowed_hosts=("testserver",),
        auth_failure_limit=0,
        stream_seconds=0.05,
        stream_heartbeat=0.02,
    )
    asgi = create_server(app, config, close_store=True)
    try:
        # schemathesis runs the app (and its lifespan: the App) on an event loop of its own.
        yield schemathesis.openapi.from_asgi("/openapi.json", asgi, headers=AUTH)
    finally:
        shutdown_lifespans()  # stops the App and closes its store


def _call(case: schemathesis.Case, auth: dict[str, str]) -> Any:
    """Call with exactly ``auth`` as credentials (schemathesis may generate its own for an
    operation that declares a security scheme)."""
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = {**headers, **auth}
    return case.call()


def test_every_served_operation_is_exercised(api_schema: schemathesis.BaseSchema) -> None:
    labels = sorted(result.ok().label for result in api_schema.get_all_operations())
    assert labels == OPERATIONS
    assert "POST /webhooks/github" in labels


@pytest.mark.parametrize("label", OPERATIONS)
def test_valid_requests_are_answered_as_described(
    api_schema: schemathesis.BaseSchema, label: str
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None

    @SETTINGS
    @given(case=operation.as_strategy())
    def check(case: schemathesis.Case) -> None:
        # The one rule OpenAPI cannot state: before and after exclude each other (400).
        assume(not {"before", "after"} <= set(case.query or {}))
        # Nor this one: a cursor is opaque, and only one the API made itself is valid.
        assume("cursor" not in (case.query or {}))
        response = _call(case, AUTH)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        assert "www-authenticate" not in response.headers, response.text  # the token works
        assert response.status_code not in (403, 429), response.text
        case.validate_response(response)

    check()


@pytest.mark.parametrize("label", WITH_INPUTS)
def test_invalid_requests_are_refused_without_a_server_error(
    api_schema: schemathesis.BaseSchema, label: str
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None

    @SETTINGS
    @given(case=operation.as_strategy(schemathesis.GenerationMode.NEGATIVE))
    def check(case: schemathesis.Case) -> None:
        response = _call(case, AUTH)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)

    check()


@pytest.mark.parametrize("label", OPERATIONS)
def test_without_a_token_each_operation_answers_as_its_security_says(
    api_schema: schemathesis.BaseSchema, label: str
) -> None:
    """An operation that declares the bearer scheme answers 401 asking for a bearer token
    (``WWW-Authenticate``) when it gets none; one that declares none never asks for one (a
    webhook's 401 is about its signature)."""
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None
    protected = operation.definition.raw.get("security") == [{"bearerAuth": []}]

    @settings(SETTINGS, max_examples=5)
    @given(case=operation.as_strategy())
    def check(case: schemathesis.Case) -> None:
        assume(not {"before", "after"} <= set(case.query or {}))
        # Nor this one: a cursor is opaque, and only one the API made itself is valid.
        assume("cursor" not in (case.query or {}))
        assume((case.query or {}).get("verbose") != "1")
        response = _call(case, {})
        asked = response.status_code == 401 and "www-authenticate" in response.headers
        assert asked is protected, (label, response.status_code)
        case.validate_response(response)

    check()
