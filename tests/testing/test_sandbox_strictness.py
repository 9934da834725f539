"""The sandbox refuses what the platforms refuse, the way they refuse it.

Each case here was accepted (or crashed the sandbox) before the sandbox checked requests
against the platforms' published descriptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from contexten.testing.sandbox import Sandbox, SandboxConfig
from contexten.testing.sandbox.app import SANDBOX_TOKEN

AUTH = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox()


@pytest.fixture
async def raw(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=sandbox.transport(), base_url="http://sandbox", headers=AUTH
    ) as client:
        yield client


async def graphql(raw: httpx.AsyncClient, query: str, variables: Any = None) -> httpx.Response:
    return await raw.post("/linear/graphql", json={"query": query, "variables": variables})


# -- Linear -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "variables", "message"),
    [
        ("query { issue(id: $id) { id } }", {"id": "x"}, "not defined"),
        ("query($id: String!) { issue(id: $id) { id nope } }", {"id": "x"}, "Cannot query"),
        ("query($id: String!) { issue(id: $id) { id } }", {"id": 42}, "non string"),
        ("query($id: String!) { issue(id: $id) { id } }", {}, "to be provided"),
        (
            'mutation($input: IssueUpdateInput!) { issueUpdate(id: "x", input: $input)'
            " { success } }",
            {"input": {"stateName": "Done"}},
            "stateName",
        ),
        ("query { issue(id: 1) { id } }", None, "String cannot represent"),
        ("query { issues { nodes { id } } ", None, "Syntax Error"),
    ],
)
async def test_linear_refuses_what_its_schema_refuses(
    raw: httpx.AsyncClient, query: str, variables: Any, message: str
) -> None:
    response = await graphql(raw, query, variables)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert message in error["message"]


async def test_linear_answers_only_the_selected_fields(
    raw: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    issue = sandbox.linear.create_issue("Add SSO")
    response = await graphql(
        raw,
        "query($id: String!) { issue(id: $id) { key: identifier state { name } __typename } }",
        {"id": issue["id"]},
    )
    assert response.status_code == 200
    assert response.json() == {
        "data": {
            "issue": {"key": issue["identifier"], "state": {"name": "Todo"}, "__typename": "Issue"}
        }
    }


async def test_linear_refuses_a_client_chosen_id_that_is_not_a_v4_uuid(
    raw: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    query = "mutation($input: IssueCreateInput!) { issueCreate(input: $input) { success } }"
    team = sandbox.linear.team["id"]
    v5 = "2ed6657d-e927-568b-95e1-2665a8aea6a2"
    response = await graphql(raw, query, {"input": {"teamId": team, "title": "T", "id": v5}})
    assert "UUID v4" in response.json()["errors"][0]["message"]
    assert sandbox.linear.issues == {}


# -- GitHub -------------------------------------------------------------------------------------


async def test_github_refuses_wrong_types_and_enum_values(
    raw: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    sandbox.github.create_issue("acme/api", "Bug")
    wrong_enum = await raw.patch("/github/repos/acme/api/issues/1", json={"state": "merged"})
    assert wrong_enum.status_code == 422
    assert "'merged' is not one of" in wrong_enum.json()["message"]
    wrong_type = await raw.post("/github/repos/acme/api/issues/1/labels", json={"labels": "bug"})
    assert wrong_type.status_code == 422
    null_body = await raw.patch("/github/repos/acme/api/pulls/1", json={"body": None})
    assert null_body.status_code == 422
    bad_number = await raw.get("/github/repos/acme/api/pulls/one")
    assert bad_number.status_code == 422
    assert (await raw.get("/github/repos/acme/api/nope")).status_code == 404
    assert sandbox.github.repo("acme/api").issues[1]["state"] == "open"
    assert sandbox.github.repo("acme/api").issues[1]["labels"] == []


async def test_github_rate_budget_refills_each_window() -> None:
    sandbox = Sandbox(SandboxConfig(github_rate_limit=2, rate_limit_window=3600))
    now = [1_000_000.0]
    sandbox.core.now = lambda: now[0]  # type: ignore[method-assign]
    sandbox.core.started = now[0]
    sandbox.github.create_issue("acme/api", "Bug")
    async with httpx.AsyncClient(
        transport=sandbox.transport(), base_url="http://sandbox", headers=AUTH
    ) as raw:
        for _ in range(2):
            ok = await raw.get("/github/repos/acme/api/issues/1/comments")
            assert ok.status_code == 200
        spent = await raw.get("/github/repos/acme/api/issues/1/comments")
        assert spent.status_code == 403
        assert spent.headers["X-RateLimit-Remaining"] == "0"
        assert int(spent.headers["X-RateLimit-Reset"]) == int(now[0] + 3600)
        now[0] += 3600  # the next window
        again = await raw.get("/github/repos/acme/api/issues/1/comments")
        assert again.status_code == 200
        assert again.headers["X-RateLimit-Remaining"] == "1"


# -- Slack --------------------------------------------------------------------------------------


async def test_slack_takes_forms_and_json_where_slack_does(
    raw: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    channel = sandbox.slack.add_channel("eng")
    form = await raw.post(
        "/slack/api/chat.postMessage",
        data={
            "channel": channel,
            "text": "hi",
            "metadata": '{"event_type":"x","event_payload":{}}',
        },
    )
    assert form.json()["ok"] is True
    ts = form.json()["ts"]
    json_post = await raw.post(
        "/slack/api/chat.postMessage", json={"channel": channel, "text": "j"}
    )
    assert json_post.json()["ok"] is True
    # reactions.add takes forms only (Slack's SDK sends it so): JSON is refused.
    as_json = await raw.post(
        "/slack/api/reactions.add", json={"channel": channel, "timestamp": ts, "name": "eyes"}
    )
    assert as_json.json()["ok"] is False
    assert as_json.json()["error"] == "invalid_arguments"
    as_form = await raw.post(
        "/slack/api/reactions.add", data={"channel": channel, "timestamp": ts, "name": "eyes"}
    )
    assert as_form.json() == {"ok": True}
    missing = await raw.post("/slack/api/chat.update", data={"channel": channel})
    assert missing.json()["error"] == "invalid_arguments"
    unknown = await raw.post("/slack/api/chat.fly", data={})
    assert unknown.json()["error"] == "unknown_method"


# -- Codegen ------------------------------------------------------------------------------------


async def test_codegen_honours_no_idempotency_key_and_checks_bodies(
    raw: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    url = "/codegen/v1/organizations/1/agent/run"
    headers = {"Idempotency-Key": "same"}
    first = await raw.post(url, json={"prompt": "Fix"}, headers=headers)
    second = await raw.post(url, json={"prompt": "Fix"}, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] != second.json()["id"]  # the header is not documented
    bad = await raw.post(url, json={"prompt": "Fix", "repo_id": "acme/api"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body"]
    assert len(sandbox.codegen.runs) == 2
