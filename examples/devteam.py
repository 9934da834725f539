"""A dev team's automation: Linear issues labelled ``agent`` are implemented by a coding agent,
approved in Slack and merged, and everything is rolled back if the agent fails.

For an issue ENG-1 that someone labels ``agent`` in Linear, the ``implement-issue`` workflow:

1. moves ENG-1 to *In Progress* and opens a draft pull request, so the team sees the work
   start (both undone if anything later fails);
2. starts a Codegen agent run on the issue (cancelled if the workflow is cancelled);
3. waits for the run to end. If it failed, it says so in Slack and stops: the compensations
   then close the draft and move ENG-1 back to *Todo*;
4. waits for the agent's pull request (its branch and title name ENG-1), links it to the
   issue with a comment and closes the draft it supersedes;
5. moves ENG-1 to *In Review* and asks for an approval in Slack (Approve/Reject buttons);
6. on *Approve*: merges the pull request and moves ENG-1 to *Done*.

Every step is durable: if the process stops, the workflow resumes where it was and no step
runs twice. Every action is recorded as an event, so the webhooks our own actions cause (the
comment we post comes back as ``github.issue_comment.created``) are recognised as echoes:
the ``mirror_comments`` handler below copies people's comments into Linear, and never
sees its own app's comment.

Try it with no accounts, against the local sandbox: ``contexten demo``. Serve it for real
with ``contexten serve --app examples/devteam.py`` and the credentials in the environment
(``CONTEXTEN_GITHUB_TOKEN``, ``CONTEXTEN_LINEAR_API_KEY``, ``CONTEXTEN_SLACK_BOT_TOKEN``,
``CONTEXTEN_CODEGEN_TOKEN`` and ``CONTEXTEN_CODEGEN_ORG_ID``: agent runs are polled), the
webhook secrets, and ``CONTEXTEN_GITHUB_BOT_LOGIN``... for echo detection). On a real
repository the draft's branch must exist before the draft can be opened: create it first,
or drop that step if your agent opens a draft itself.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from contexten import App, Event, HandlerContext, NonRetryableError, Workflow
from contexten.integrations import codegen, github, linear, slack

REPO = os.environ.get("DEVTEAM_REPO", "acme/api")
"""The repository the agent works in."""
CHANNEL = os.environ.get("DEVTEAM_SLACK_CHANNEL", "#eng")
"""Where approvals are asked for and failures reported."""
LABEL = os.environ.get("DEVTEAM_LABEL", "agent")
"""The Linear label that hands an issue to the agent."""

AGENT_TIMEOUT = timedelta(hours=2)
PR_TIMEOUT = timedelta(minutes=30)
APPROVAL_TIMEOUT = timedelta(days=3)


class AgentRunFailed(NonRetryableError):
    """The coding agent gave up on the issue."""


class ChangeRejected(NonRetryableError):
    """A reviewer pressed *Reject* on the approval request."""


def _run_ended(run_id: int) -> Any:
    def ended(event: Event) -> bool:
        return event.data.get("id") == run_id and event.type in (
            "codegen.agent_run.completed",
            "codegen.agent_run.failed",
            "codegen.agent_run.cancelled",
        )

    return ended


def _opened_by_agent(draft_number: int) -> Any:
    def opened(event: Event) -> bool:
        return bool(event.data["pull_request"]["number"] != draft_number)

    return opened


def _answer_to(request_id: str) -> Any:
    def answers(event: Event) -> bool:
        decision = slack.approval_decision(event)
        return decision is not None and decision[1] == request_id

    return answers


async def implement_issue(wf: Workflow, event: Event) -> dict[str, Any]:
    """Issue labelled ``agent`` → agent run → PR → review → approval → merge → done."""
    issue = event.data["data"]
    key: str = issue["identifier"]  # ENG-1: every platform's events about it carry it
    prompt = f"{key}: {issue['title']}\n\n{issue.get('description') or ''}".strip()

    # 1. Claim the work where the team looks: Linear and GitHub.
    await wf.step(
        linear.move_issue, issue["id"], state="In Progress", compensate=linear.move_issue.undo
    )
    draft = await wf.step(
        github.create_pull_request,
        REPO,
        title=f"[agent] {key}: {issue['title']}",
        head=f"agent/{key.lower()}",
        base="main",
        body=f"The coding agent is working on {key} ({issue['url']}).",
        draft=True,
        compensate=github.create_pull_request.undo,
    )

    # 2. Hand it to the agent; the run carries the work item's key, so its updates and its
    #    pull request come back correlated with ENG-1.
    run = await wf.step(
        codegen.create_agent_run,
        prompt,
        repo=REPO,
        metadata={"correlation_id": key},
        compensate=codegen.create_agent_run.undo,
    )

    # 3. Wait for the agent to finish.
    ended = await wf.wait_for(
        "codegen.agent_run.*",
        correlation_id=key,
        match=_run_ended(run["id"]),
        timeout=AGENT_TIMEOUT,
    )
    if ended.type != "codegen.agent_run.completed":
        reason = ended.data.get("result") or ended.type.rsplit(".", 1)[-1]
        await wf.step(
            slack.post_message,
            CHANNEL,
            f":x: The agent could not implement {key}: {reason}\n"
            f"Moving {key} back to Todo and closing draft #{draft['number']}. "
            f"Agent run: {ended.data.get('web_url')}",
        )
        raise AgentRunFailed(f"agent run {run['id']} ended {ended.type.rsplit('.', 1)[-1]}")

    # 4. Link the agent's pull request to the issue; it supersedes the draft.
    opened = await wf.wait_for(
        "github.pull_request.opened",
        correlation_id=key,
        match=_opened_by_agent(draft["number"]),
        timeout=PR_TIMEOUT,
    )
    pr = opened.data["pull_request"]
    await wf.step(
        github.create_issue_comment,
        REPO,
        pr["number"],
        f"Implements [{key}]({issue['url']}) (agent run {ended.data.get('web_url')}); "
        f"supersedes draft #{draft['number']}.",
        compensate=github.create_issue_comment.undo,
    )
    await wf.step(github.close_pull_request, REPO, draft["number"])

    # 5. Ask for a review.
    await wf.step(
        linear.move_issue, issue["id"], state="In Review", compensate=linear.move_issue.undo
    )
    approval = await wf.step(
        slack.request_approval,
        CHANNEL,
        f"*{key}: {issue['title']}*\nThe agent opened {pr['html_url']}. Merge it?",
        wf.workflow_id,
        compensate=slack.request_approval.undo,
    )
    answer = await wf.wait_for(
        "slack.block_actions", match=_answer_to(wf.workflow_id), timeout=APPROVAL_TIMEOUT
    )
    decision = slack.approval_decision(answer)
    assert decision is not None  # _answer_to matched it
    verdict, _, reviewer = decision
    await wf.step(
        slack.update_message,
        approval["channel"],
        approval["ts"],
        text=f"{key}: {verdict} by <@{reviewer}>",
        blocks=[],
    )
    if verdict != "approved":
        raise ChangeRejected(f"{key} was rejected by {reviewer}")

    # 6. Ship it.
    await wf.step(github.merge_pull_request, REPO, pr["number"])
    await wf.step(linear.move_issue, issue["id"], state="Done")
    return {"issue": key, "agent_run": run["id"], "pull_request": pr["number"], "merged": True}


async def mirror_comments(event: Event, ctx: HandlerContext) -> None:
    """Copy people's GitHub comments about a work item into its Linear issue.

    Our own comments (the link posted by ``implement_issue``) are echoes: never delivered
    here, so this handler does not copy them.
    """
    if event.correlation_id is None:
        return  # not about a work item
    comment = event.data["comment"]
    await ctx.agents.linear.create_comment(
        event.correlation_id,
        f"**{comment['user']['login']}** on {comment['html_url']}:\n\n{comment['body']}",
        idempotency_key=ctx.idempotency_key,
    )


def create_app() -> App:
    """The app: the store comes from ``CONTEXTEN_STORE_URL`` (default ``sqlite:///contexten.db``),
    the platform clients from the environment (or ``app.use_agents(...)``)."""
    app = App()
    app.workflow(
        "implement-issue",
        on="linear.issue.updated",
        where=linear.label_added(LABEL),
        key=lambda e: e.correlation_id,
    )(implement_issue)
    app.on("github.issue_comment.created", name="devteam.mirror-comments")(mirror_comments)
    return app


app = create_app()
