"""``contexten tokens create|list|revoke`` against a real SQLite store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from contexten.cli import cli
from contexten.security import TokenRegistry
from contexten.store import create_store

from ._audit import audit_events


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tokens.db'}"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def authenticate(url: str, token: str) -> str | None:
    async def check() -> str | None:
        async with create_store(url) as store:
            principal = await TokenRegistry(store).authenticate(token)
            return None if principal is None else str(principal.role)

    return asyncio.run(check())


def test_create_prints_the_token_once_on_stdout_and_stores_its_hash(store_url: str) -> None:
    code, out, err = invoke(
        "tokens", "create", "--role", "operator", "--name", "oncall", "--store", store_url
    )
    assert code == 0, err
    token = out.strip()
    assert token.startswith("ctx_")
    assert "\n" not in token
    assert "shown only now" in err
    assert authenticate(store_url, token) == "operator"

    code, listed, _ = invoke("tokens", "list", "--store", store_url)
    assert code == 0
    token_id = token.split("_")[1]
    assert token_id in listed
    assert "operator" in listed
    assert "oncall" in listed
    assert token not in listed
    assert token.rpartition("_")[2] not in listed

    code, as_json, _ = invoke("tokens", "list", "--store", store_url, "--json")
    row = json.loads(as_json)
    assert (row["id"], row["role"], row["active"]) == (token_id, "operator", True)
    assert token not in as_json


def test_revoke_refuses_the_token_and_says_what_it_did(store_url: str) -> None:
    _, out, _ = invoke(
        "tokens", "create", "--role", "viewer", "--name", "grafana", "--store", store_url
    )
    token = out.strip()
    token_id = token.split("_")[1]
    code, out, _ = invoke("tokens", "revoke", token_id, "--store", store_url)
    assert (code, out.strip()) == (0, f"revoked: {token_id}")
    assert authenticate(store_url, token) is None
    code, _, err = invoke("tokens", "revoke", token_id, "--store", store_url)
    assert code == 1
    assert "already revoked" in err
    code, _, err = invoke("tokens", "revoke", "0123456789ab", "--store", store_url)
    assert code == 1
    assert "no token with id '0123456789ab'" in err

    assert invoke("tokens", "list", "--store", store_url)[1].strip() == ""  # active only
    assert "revoked" in invoke("tokens", "list", "--all", "--store", store_url)[1]

    audit = audit_events(store_url)
    assert [(a["type"], a["target"], a["outcome"]) for a in audit] == [
        ("contexten.audit.tokens.manage", token_id, "created"),
        ("contexten.audit.tokens.manage", token_id, "revoked"),
        ("contexten.audit.tokens.manage", token_id, "unchanged"),
        ("contexten.audit.tokens.manage", "0123456789ab", "unknown"),
    ]
    assert all(token not in a["text"] for a in audit)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "root", "--name", "x"], "'root' is not one of"),
        (["--role", "viewer", "--name", "bad\x1b[2Jname"], "a token name is 1 to 64"),
        (["--role", "viewer"], "Missing option '--name'"),
    ],
)
def test_bad_input_is_refused_and_stores_nothing(
    store_url: str, args: list[str], message: str
) -> None:
    code, _, err = invoke("tokens", "create", *args, "--store", store_url)
    assert code != 0
    assert message in err
    assert invoke("tokens", "list", "--all", "--store", store_url)[1] == ""
