"""The dashboard over real HTTP: every page as every role, the session, CSRF, escaping,
redaction, audit, actions and the live stream.

Served by uvicorn on loopback with the real security middleware and token registry; the
app is real (SQLite store, dispatcher, workflow engine); nothing is mocked.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from contexten import Event
from contexten.bus.dead_letters import DeadLetterStatus, park
from contexten.dashboard.data import LETTERS_PAGE
from contexten.dashboard.render import CSP
from contexten.security import AUDIT_STREAM_PREFIX
from contexten.workflows.schedules import SCHEDULE_PREFIX, request_trigger

from ._support import (
    HANG_GUARD,
    ROLES,
    Served,
    leave_an_old_version,
    populate,
    serve_dashboard,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

CSRF_RE = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


async def audit_events(served: Served) -> list[Event]:
    store = served.app.store
    out: list[Event] = []
    for info in await store.list_streams(AUDIT_STREAM_PREFIX):
        out.extend(r.event for r in await store.read_stream(info.stream))
    return out


def pages(ids: dict[str, str]) -> list[str]:
    return [
        "/",
        "/events",
        "/events?type=test.**&correlation_id=ENG-1&since_minutes=60",
        f"/events/{ids['poison']}",
        "/workflows",
        "/workflows?status=compensated&q=eng",
        "/workflows/ship:ENG-1",
        "/workflows/ship:ENG-2",
        "/workflows/pr-lifecycle:pr-7",
        "/schedules",
        "/versions",
        "/versions?name=ship&version=0",
        "/work-items",
        "/work-items/ENG-1",
        "/dead-letters",
        "/dead-letters?status=all",
        f"/dead-letters/{ids['letter']}",
    ]


async def csrf_of(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200
    match = CSRF_RE.search(page.text)
    assert match is not None, "the page has no CSRF token"
    return match.group(1)


async def test_every_page_as_every_role_and_anonymous(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        ids = await populate(served)
        async with served.client() as anonymous:
            for path in pages(ids):
                answer = await anonymous.get(path)
                assert answer.status_code == 303, path
                assert answer.headers["location"].startswith("/login?next=")
            assert (await anonymous.get("/events/stream")).status_code in (303, 401)
        for role in ROLES:
            async with served.client(role) as client:
                for path in pages(ids):
                    answer = await client.get(path)
                    assert answer.status_code == 200, (role, path, answer.text[:300])
                    assert answer.headers["content-security-policy"] == CSP
                    assert "unsafe-inline" not in answer.headers["content-security-policy"]
                    assert answer.headers["x-frame-options"] == "DENY"
                    assert f'<b class="role">{role}</b>' in answer.text
        async with served.client("viewer") as viewer:
            assert (await viewer.get("/events/no-such-id")).status_code == 404
            assert (await viewer.get("/workflows/no:such")).status_code == 404
            assert (await viewer.get("/dead-letters/nope")).status_code == 404
            assert (await viewer.get("/workflows?status=bogus")).status_code == 400
            assert (await viewer.get("/events?type=a..b")).status_code == 400


async def test_the_overview_counts_and_charts(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        await populate(served)
        async with served.client("viewer") as viewer:
            text = (await viewer.get("/")).text
        assert re.search(r'id="open-letters"><b>1</b> open', text)
        assert re.search(r'status=completed">completed</a> <b>1</b>', text)
        assert re.search(r'status=compensated">compensated</a> <b>1</b>', text)
        assert "1 in the last hour" in text  # the parked poison pill
        # the activity read model's sources: this app publishes as "contexten"
        assert re.search(
            r'id="event-sources">by source: .*<a href="/events\?source=contexten">', text
        )
        assert "poison-handler" in text  # its subscription's health row


async def test_failed_logins_are_throttled_and_foreign_hosts_refused(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        async with served.client() as client:
            statuses = [
                (await client.post("/login", data={"token": f"ctx_wrong_{n}"})).status_code
                for n in range(11)
            ]
            assert statuses[:10] == [401] * 10
            assert statuses[10] == 429
            good = await client.post("/login", data={"token": served.tokens["viewer"]})
            assert good.status_code == 429  # even a good token waits out the window
            assert int(good.headers["retry-after"]) > 0
        async with served.client("viewer", headers={"host": "evil.example"}) as rebinding:
            assert (await rebinding.get("/")).status_code == 400
        throttled = [e for e in await audit_events(served) if e.type.endswith("auth.throttled")]
        assert throttled


async def test_the_audit_trail_is_shown_to_admins_only(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        async with served.client() as anonymous:
            await anonymous.post("/login", data={"token": "ctx_wrong"})  # audited
        audit = (await audit_events(served))[0]
        for role, shown in (("viewer", False), ("operator", False), ("admin", True)):
            async with served.client(role) as client:
                listing = await client.get("/events")
                assert ("contexten.audit.auth.failed" in listing.text) is shown, role
                page = await client.get(f"/events/{audit.id}")
                assert page.status_code == (200 if shown else 404), role
                tokens = await client.get("/events?type=contexten.token.*")
                assert ("contexten.token.created" in tokens.text) is shown, role


async def test_the_schedules_page_lists_each_schedule_with_its_requests(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served, served.client("viewer") as viewer:
        assert "No schedule has run on this store." in (await viewer.get("/schedules")).text
    (tmp_path / "scheduled").mkdir()
    async with serve_dashboard(tmp_path / "scheduled", schedule=True) as served:
        store = served.app.store

        async def scheduled() -> bool:
            return bool(await store.list_streams(SCHEDULE_PREFIX))

        await wait_until(scheduled)
        await request_trigger(store, "nightly")
        async with served.client("viewer") as viewer:
            text = (await viewer.get("/schedules")).text
        assert "<td>nightly</td>" in text
        assert ">active<" in text
        assert re.search(r"\d trigger", text)


async def test_the_versions_page_counts_in_flight_and_links_the_blocked(tmp_path: Path) -> None:
    await leave_an_old_version(tmp_path)  # version 0 of ship: gone from the code
    async with serve_dashboard(tmp_path) as served:
        app = served.app

        async def settled() -> bool:
            row = await app.read.workflow("ship:ENG-OLD")
            return row is not None and row["status"] == "blocked"

        await wait_until(settled)
        async with served.client("viewer") as viewer:
            text = (await viewer.get("/versions")).text
            # the same numbers as the API's GET /api/v1/workflow-versions
            api = await viewer.get(
                "/api/v1/workflow-versions",
                headers={"authorization": f"Bearer {served.tokens['viewer']}"},
            )
            assert api.status_code == 200
            items = api.json()["items"]
            assert items == [{"name": "ship", "version": "0", "in_flight": 1, "blocked": 1}]
            for v in items:
                assert re.search(
                    rf'{v["name"]}</a></td><td class="mono">{v["version"]}</td>'
                    rf'<td class="num">{v["in_flight"]}</td>',
                    text,
                ), v
            assert 'href="/versions?name=ship&amp;version=0#blocked">1 blocked</a>' in text
            assert 'href="/workflows/ship%3AENG-OLD"' in text
            assert "<b>version_not_registered</b>: " in text
            assert "version 0 is not registered" in text
            one = (await viewer.get("/versions?name=ship&version=0")).text
            assert "Blocked instances of ship version 0" in one
            assert "ship%3AENG-OLD" in one
            none = (await viewer.get("/versions?name=ship&version=1")).text
            assert "ship%3AENG-OLD" not in none
            assert "No instance is blocked here." in none
            assert (await viewer.get("/versions?version=0")).status_code == 400


async def test_a_bearer_header_works_and_a_bad_cookie_is_anonymous(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        headers = {"authorization": f"Bearer {served.tokens['viewer']}"}
        async with httpx.AsyncClient(base_url=served.url, headers=headers) as client:
            assert (await client.get("/workflows")).status_code == 200
        async with httpx.AsyncClient(
            base_url=served.url, cookies={"contexten_session": "ctx_0123456789ab_" + "x" * 43}
        ) as client:
            assert (await client.get("/")).status_code == 303


async def test_login_sets_a_strict_httponly_cookie_and_drops_the_token_from_the_url(
    tmp_path: Path,
) -> None:
    async with serve_dashboard(tmp_path) as served:
        async with served.client() as client:
            token = served.tokens["operator"]
            answer = await client.get(f"/?token={token}")
            assert answer.status_code == 303
            assert answer.headers["location"] == "/"
            cookie = answer.headers["set-cookie"]
            assert cookie.startswith(f"contexten_session={token};")
            assert "HttpOnly" in cookie
            assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert (await client.get("/")).status_code == 200  # the cookie now logs it in

            form = await client.post(
                "/login", data={"token": token, "next": "//evil.example/steal"}
            )
            assert form.status_code == 303
            assert form.headers["location"] == "/"  # never another origin

            bad = await client.post("/login", data={"token": "ctx_nope", "next": "/"})
            assert bad.status_code == 401
            assert "not valid" in bad.text
            assert "set-cookie" not in bad.headers

            csrf = await csrf_of(client, "/")
            out = await client.post("/logout", data={"csrf_token": csrf})
            assert out.status_code == 303
            assert 'contexten_session=""' in out.headers["set-cookie"]
        failed = [e for e in await audit_events(served) if e.type == "contexten.audit.auth.failed"]
        assert failed, "a refused login is an audit event"
        assert all(token not in str(e.data) for e in failed)


async def test_viewers_see_no_buttons_and_get_403_when_they_post(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        ids = await populate(served)
        async with served.client("viewer") as viewer:
            letter_page = await viewer.get(f"/dead-letters/{ids['letter']}")
            list_page = await viewer.get("/dead-letters")
            workflow_page = await viewer.get("/workflows/pr-lifecycle:pr-7")
            for page in (letter_page, list_page, workflow_page):
                assert "formaction=" not in page.text
                assert "/cancel" not in page.text
                assert 'type="checkbox"' not in page.text
            csrf = await csrf_of(viewer, "/dead-letters")
            refused = await viewer.post(
                "/dead-letters/redrive",
                data={"csrf_token": csrf, "id": ids["letter"], "confirm": "yes"},
            )
            assert refused.status_code == 403
            cancel = await viewer.post(
                "/workflows/pr-lifecycle:pr-7/cancel", data={"csrf_token": csrf}
            )
            assert cancel.status_code == 403
        assert (await served.app.dead_letters.get(ids["letter"])).status is DeadLetterStatus.PARKED
        assert str((await served.app.get_workflow("pr-lifecycle:pr-7")).status) == "waiting"
        denied = [e for e in await audit_events(served) if e.type == "contexten.audit.auth.denied"]
        assert {e.data["detail"] for e in denied} >= {"dlq:redrive", "workflows:cancel"}
        async with served.client("operator") as operator:
            page = await operator.get(f"/dead-letters/{ids['letter']}")
            assert 'id="redrive-one"' in page.text
            assert (
                'id="cancel-workflow"' in (await operator.get("/workflows/pr-lifecycle:pr-7")).text
            )


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async with serve_dashboard(tmp_path) as served:
        ids = await populate(served)
        async with served.client("admin") as admin:
            for data in (
                {"id": ids["letter"], "confirm": "yes"},
                {"id": ids["letter"], "confirm": "yes", "csrf_token": "0" * 64},
            ):
                answer = await admin.post("/dead-letters/redrive", data=data)
                assert answer.status_code == 403
            wf = await admin.post("/workflows/pr-lifecycle:pr-7/cancel", data={})
            assert wf.status_code == 403
            # another session's token does not fit this session
            async with served.client("operator") as other:
                foreign = await csrf_of(other, "/dead-letters")
            answer = await admin.post(
                "/dead-letters/discard",
                data={"id": ids["letter"], "confirm": "yes", "csrf_token": foreign},
            )
            assert answer.status_code == 403
        assert (await served.app.dead_letters.get(ids["letter"])).status is DeadLetterStatus.PARKED
        # an Authorization header is no ambient credential: no CSRF token needed
        headers = {"authorization": f"Bearer {served.tokens['operator']}"}
        async with httpx.AsyncClient(base_url=served.url, headers=headers) as api:
            answer = await api.post(
                "/dead-letters/discard", data={"id": ids["letter"], "confirm": "yes"}
            )
            assert answer.status_code == 303
        assert (
            await served.app.dead_letters.get(ids["letter"])
        ).status is DeadLetterStatus.DISCARDED


async def test_hostile_payloads_render_as_text(tmp_path: Path) -> None:
    script = "<script>alert('subject')</script>"
    attribute = '"><img src=x onerror=alert(1)>'
    async with serve_dashboard(tmp_path) as served:
        hostile = Event(
            type="test.hostile.created",
            subject=script,
            correlation_id=attribute,
            data={
                "title": script,
                "body": attribute,
                "pull_request": {"html_url": "javascript:alert(1)", "title": attribute},
                "api_token": "canary-token-3f9a",
                "nested": {"password": "canary-password-77"},
            },
        )
        await served.publish(hostile)
        async with served.client("viewer") as viewer:
            for path in (
                "/events",
                f"/events/{hostile.id}",
                f"/events?correlation_id={httpx.QueryParams({'x': attribute})['x']}",
            ):
                text = (await viewer.get(path)).text
                assert "<script>alert" not in text
                assert "<img src=x" not in text
                assert 'href="javascript:' not in text
            page = (await viewer.get(f"/events/{hostile.id}")).text
            assert "&lt;script&gt;alert(&#39;subject&#39;)&lt;/script&gt;" in page
            assert "canary-token-3f9a" not in page
            assert "canary-password-77" not in page
            assert "[redacted]" in page
            item = await viewer.get(
                "/work-items/" + httpx.URL(path="/" + attribute).raw_path.decode()[1:]
            )
            assert item.status_code == 200
            assert "<img src=x" not in item.text


async def test_redrive_from_the_page_confirms_acts_and_is_audited(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        ids = await populate(served)
        letter_id = ids["letter"]
        served.healed.add(ids["poison"])  # the bug is fixed: the redrive will succeed
        async with served.client("operator") as operator:
            csrf = await csrf_of(operator, f"/dead-letters/{letter_id}")
            form = {"csrf_token": csrf, "id": letter_id, "status": "all", "back": "/dead-letters"}
            confirm = await operator.post("/dead-letters/redrive", data=form)
            assert confirm.status_code == 200
            assert "Redrive 1 dead letter?" in confirm.text
            hostile = await operator.post(
                "/dead-letters/redrive", data={**form, "back": "javascript:alert(1)"}
            )
            assert "javascript:" not in hostile.text  # the way back is a path on this site
            assert (await served.app.dead_letters.get(letter_id)).status is DeadLetterStatus.PARKED
            done = await operator.post("/dead-letters/redrive", data={**form, "confirm": "yes"})
            assert done.status_code == 303
            assert done.headers["location"] == "/dead-letters?done=redrive:1/1"

            async def resolved() -> bool:
                letter = await served.app.dead_letters.get(letter_id)
                return letter.status is DeadLetterStatus.RESOLVED

            await wait_until(resolved)
            again = await operator.post("/dead-letters/redrive", data={**form, "confirm": "yes"})
            assert again.headers["location"] == "/dead-letters?done=redrive:0/1"
            page = await operator.get(f"/dead-letters/{letter_id}")
            assert "dlq.redrive" not in page.text  # the audit trail is for admins
        async with served.client("admin") as admin:
            page = await admin.get(f"/dead-letters/{letter_id}")
            assert "dlq.redrive" in page.text  # the action shows on the letter's page
            item = await admin.get("/work-items/ENG-1")
            assert "contexten.audit.dlq.redrive" in item.text  # and in the work item's timeline
        acted = [e for e in await audit_events(served) if e.type == "contexten.audit.dlq.redrive"]
        assert [(e.subject, e.data["outcome"]) for e in acted] == [
            (letter_id, "done"),
            (letter_id, "unchanged"),
        ]
        assert acted[0].actor == "operator-1"
        assert acted[0].data["principal"]["role"] == "operator"


async def test_bulk_redrive_of_everything_matching_a_filter(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        await populate(served)
        for n in range(3):
            await served.publish(Event(type="test.poison.more", subject=f"more-{n}"))

        async def four() -> bool:
            return len(await served.app.dead_letters.list()) == 4

        await wait_until(four)
        async with served.client("operator") as operator:
            listing = await operator.get("/dead-letters?error_type=RuntimeError")
            assert "RuntimeError</a> 4" in listing.text
            csrf = CSRF_RE.search(listing.text)
            assert csrf is not None
            form = {
                "csrf_token": csrf.group(1),
                "scope": "matching",
                "status": "parked",
                "error_type": "RuntimeError",
                "back": "/dead-letters",
            }
            confirm = await operator.post("/dead-letters/discard", data=form)
            assert "Discard 4 dead letters?" in confirm.text
            done = await operator.post("/dead-letters/discard", data={**form, "confirm": "yes"})
            assert done.headers["location"] == "/dead-letters?done=discard:4/4"
        assert await served.app.dead_letters.list() == []
        acted = [e for e in await audit_events(served) if e.type == "contexten.audit.dlq.discard"]
        assert len(acted) == 4


async def test_cancel_a_workflow_from_its_page(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        await populate(served)
        async with served.client("operator") as operator:
            csrf = await csrf_of(operator, "/workflows/pr-lifecycle:pr-7")
            answer = await operator.post(
                "/workflows/pr-lifecycle:pr-7/cancel", data={"csrf_token": csrf}
            )
            assert answer.status_code == 303
            assert answer.headers["location"].endswith("?done=cancel-requested")

            async def cancelled() -> bool:
                info = await served.app.get_workflow("pr-lifecycle:pr-7")
                return str(info.status) == "cancelled"

            await wait_until(cancelled)
            page = await operator.get("/workflows/pr-lifecycle:pr-7")
            assert 'id="wf-status">cancelled<' in page.text
            assert 'id="cancel-workflow"' not in page.text  # it has ended
            assert "workflows.cancel" not in page.text  # the audit trail is for admins
        async with served.client("admin") as admin:
            page = await admin.get("/workflows/pr-lifecycle:pr-7")
            assert "workflows.cancel</b> by operator-1" in page.text


async def test_redrive_a_failed_workflow_from_its_page(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        app = served.app
        await app.start_workflow("ship", {"key": "ENG-3", "flaky": True}, workflow_id="ship:ENG-3")

        async def status_is(word: str) -> bool:
            return str((await app.get_workflow("ship:ENG-3")).status) == word

        await wait_until(lambda: status_is("failed"))
        served.healed.add("ENG-3")
        async with served.client("operator") as operator:
            page = await operator.get("/workflows/ship:ENG-3")
            assert 'id="redrive-workflow"' in page.text
            assert "ENG-3: the agent is down" in page.text
            csrf = await csrf_of(operator, "/workflows/ship:ENG-3")
            answer = await operator.post("/workflows/ship:ENG-3/redrive", data={"csrf_token": csrf})
            assert answer.headers["location"].endswith("?done=redrive-requested")
            await wait_until(lambda: status_is("completed"))
            again = await operator.post("/workflows/ship:ENG-3/redrive", data={"csrf_token": csrf})
            assert again.headers["location"].endswith("?done=redrive-unchanged")
        acted = [
            e for e in await audit_events(served) if e.type == "contexten.audit.workflows.redrive"
        ]
        assert [(e.subject, e.data["outcome"]) for e in acted] == [
            ("ship:ENG-3", "done"),
            ("ship:ENG-3", "unchanged"),
        ]


async def test_workflow_pages_show_the_timeline_the_error_and_the_diagram(
    tmp_path: Path,
) -> None:
    async with serve_dashboard(tmp_path) as served:
        await populate(served)
        async with served.client("viewer") as viewer:
            failed = (await viewer.get("/workflows/ship:ENG-2")).text
            assert "compensated" in failed
            assert "the agent gave up" in failed
            assert "compensation step completed" in failed
            done = (await viewer.get("/workflows/ship:ENG-1")).text
            assert "&#34;merged&#34;: true" in done or "&quot;merged&quot;: true" in done
            machine = (await viewer.get("/workflows/pr-lifecycle:pr-7")).text
            assert '<svg xmlns="http://www.w3.org/2000/svg" class="sm"' in machine
            assert re.search(r'class="state current" data-state="in_review"', machine)
            assert "test.pr.review_requested" in machine
            assert "stateDiagram-v2" in machine
            listing = (await viewer.get("/workflows?status=completed")).text
            assert "ship:ENG-1" in listing
            assert "ship:ENG-2" not in listing
            search = (await viewer.get("/workflows?q=pr-7")).text
            assert "pr-lifecycle:pr-7" in search
            assert "ship:ENG-1" not in search


async def test_a_work_item_gathers_every_platform_and_its_workflows(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        await populate(served)
        await served.publish(
            Event(
                type="test.issue.updated",
                source="linear",
                subject="ENG-1",
                correlation_id="ENG-1",
                data={"url": "https://linear.example/ENG-1"},
            )
        )
        async with served.client("viewer") as viewer:
            search = await viewer.get("/work-items?q=ENG-1")
            assert search.status_code == 303
            assert search.headers["location"] == "/work-items/ENG-1"

            async def linked() -> bool:  # the read models fold the new event in a moment
                page = (await viewer.get("/work-items/ENG-1")).text
                return 'href="https://linear.example/ENG-1"' in page

            await wait_until(linked)
            text = (await viewer.get("/work-items/ENG-1")).text
            assert "test.poison.pill" in text
            assert "test.pr.review_requested" in text
            assert "contexten.dead_letter.parked" in text
            other = (await viewer.get("/work-items/ENG-404")).text
            assert "Nothing carries this id." in other


async def read_sse(answer: httpx.Response, want: int) -> list[dict[str, Any]]:
    """Read server-sent events until one with data arrives for position >= ``want``."""
    messages: list[dict[str, Any]] = []
    current: dict[str, Any] = {"data": []}
    async for line in answer.aiter_lines():
        if line == "":
            if current["data"]:
                messages.append(current)
                if int(current.get("id", 0)) >= want:
                    return messages
            current = {"data": []}
        elif line.startswith("data: "):
            current["data"].append(line[6:])
        elif line.startswith("id: "):
            current["id"] = line[4:]
    return messages


async def test_the_live_stream_sends_new_events_as_rows(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path, stream_seconds=HANG_GUARD) as served:
        head = await served.app.store.head()
        async with served.client("viewer") as viewer:
            url = f"/events/stream?after={head}&type=test.live.*"
            async with viewer.stream("GET", url) as answer:
                assert answer.status_code == 200
                assert answer.headers["content-type"].startswith("text/event-stream")
                await served.publish(Event(type="test.other.thing"))
                live = Event(type="test.live.arrived", subject="<b>bold</b>")
                await served.publish(live)
                position = (await served.app.store.get_event(live.id)).position  # type: ignore[union-attr]
                messages = await asyncio.wait_for(read_sse(answer, position), HANG_GUARD)
        rows = ["".join(m["data"]) for m in messages]
        assert len(rows) == 1  # the filter kept the other event out
        assert "test.live.arrived" in rows[0]
        assert f'id="ev-{position}"' in rows[0]
        assert "<b>bold</b>" not in rows[0]
        assert messages[0]["id"] == str(position)


async def test_the_overview_shows_workers_partitions_and_platforms(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        await populate(served)
        store = served.app.store
        await store.ensure_partitions("sub:orders", 4, position=0)
        await store.heartbeat("worker-<b>a</b>", ttl=60.0, meta="host-1")
        await store.claim_partitions("sub:orders", "worker-<b>a</b>", limit=3, ttl=60.0)
        await served.publish(Event(type="github.pull_request.opened", source="github"))
        await served.app.projections.catch_up()
        async with served.client("viewer") as viewer:
            text = (await viewer.get("/")).text
        workers = text[text.index('id="workers"') :]
        assert "worker-&lt;b&gt;a&lt;/b&gt;" in workers  # escaped, like every value
        assert "<b>a</b>" not in workers
        assert "orders: 3 (lag" in workers
        assert re.search(r"<td>orders</td><td class=\"bad\">3/4</td>", text)
        platforms = text[text.index('id="platforms"') : text.index('id="workers"')]
        assert re.search(r"<td>github</td><td>1</td>", platforms)  # one webhook counted


async def test_listings_refuse_a_cursor_they_did_not_make(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served, served.client("viewer") as viewer:
        assert (await viewer.get("/workflows?cursor=not-a-cursor")).status_code == 400
        assert (await viewer.get("/dead-letters?cursor=!!!")).status_code == 400
        assert (await viewer.get("/work-items/ENG-1?after=x")).status_code == 400


async def test_dead_letters_are_paged_and_the_cursor_reaches_every_one(tmp_path: Path) -> None:
    async with serve_dashboard(tmp_path) as served:
        now = served.app.clock.now()
        for n in range(LETTERS_PAGE + 1):
            await park(
                served.app.store,
                subscription="many",
                event=Event(type="test.many", subject=f"m{n}"),
                position=n + 1,
                error=RuntimeError("boom"),
                attempts=1,
                first_failure_at=now,
                last_failure_at=now,
                now=now,
            )
        await served.app.projections.catch_up()
        async with served.client("viewer") as viewer:
            first = (await viewer.get("/dead-letters?subscription=many")).text
            assert f"{LETTERS_PAGE + 1} letters" in first  # the exact total, not the page
            found = re.search(r'href="(/dead-letters\?[^"]*cursor=[^"]+)" id="letters-next"', first)
            assert found is not None
            second = (await viewer.get(found.group(1).replace("&amp;", "&"))).text
        ids = re.compile(r'href="/dead-letters/([0-9a-f-]{20,})"')
        assert len(set(ids.findall(first))) == LETTERS_PAGE
        assert len(set(ids.findall(second))) == 1
        assert not set(ids.findall(first)) & set(ids.findall(second))
        assert 'id="letters-next"' not in second


async def test_a_stream_ending_on_time_asks_for_a_quick_reconnection(tmp_path: Path) -> None:
    """A connection the server ends on purpose tells the browser to come back after 50 ms
    (an event stored meanwhile is not a second late); one that fails keeps the 1 s wait."""
    async with serve_dashboard(tmp_path, stream_seconds=0.3) as served:
        head = await served.app.store.head()
        async with served.client("viewer") as viewer:
            async with viewer.stream("GET", f"/events/stream?after={head}") as answer:
                assert answer.status_code == 200
                lines = [line async for line in answer.aiter_lines()]
            retries = [line for line in lines if line.startswith("retry: ")]
            assert retries == ["retry: 1000", "retry: 50"]
            await served.publish(Event(type="test.live.later"))
            # the reconnection (Last-Event-ID: where the last one ended) gets what it missed
            last = [line[4:] for line in lines if line.startswith("id: ")][-1]
            again = await viewer.get("/events/stream", headers={"last-event-id": last})
            assert "test.live.later" in again.text
