"""GitHub webhooks: verify a delivery's signature, and turn its payload into an :class:`Event`.

Pure functions, no I/O; the ingress (``contexten.ingress``) reads the body, calls them, and
stores the result.

Verification follows GitHub's documentation: ``X-Hub-Signature-256`` is ``sha256=`` and the
hex HMAC-SHA256 of the raw body under the webhook secret, compared in constant time. The
legacy SHA-1 header (``X-Hub-Signature``) is never enough on its own.

Normalisation:

* type ``github.<X-GitHub-Event>[.<action>]`` (``github.pull_request.opened``, ``github.push``);
* subject ``owner/repo#number`` for pull requests, issues and discussions (and their comments,
  reviews and threads), ``owner/repo@<sha>`` for commit-bound events (checks, statuses,
  workflow runs, deployments, commit comments), ``owner/repo:<ref>`` for ``push``, ``create``,
  ``delete`` and releases, else the repository, else the organisation;
* actor ``sender.login``; delivery id ``X-GitHub-Delivery``; data the payload, unchanged;
* correlation id: the work item named by the branch, then title, body and commit messages
  (see :mod:`contexten.integrations.correlation`).

Deduplication (see :func:`dedup_key`): the same event delivered by two hooks (a repository
hook and an App) arrives under two delivery ids, so the key is *semantic* when the payload
allows it: the event name, the action, the object's id and ``updated_at``, plus a digest of
what distinguishes two changes to one object in the same second (the label, the assignee,
``changes``, the sender...). A redelivery carries the same payload, so it gets the same key.
Payloads with no updatable object (``push``, ``ping``) fall back to the delivery id.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from contexten.events.codec import encode_json
from contexten.events.envelope import Event
from contexten.exceptions import MalformedPayload, SignatureInvalid
from contexten.integrations.correlation import find_work_item
from contexten.integrations.signing import hmac_sha256_hex, matches_any

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "dedup_key",
    "event_type",
    "normalise",
    "semantic_key",
    "sign",
    "subject",
    "verify",
]

SIGNATURE_HEADER: Final = "X-Hub-Signature-256"
EVENT_HEADER: Final = "X-GitHub-Event"
DELIVERY_HEADER: Final = "X-GitHub-Delivery"
_PREFIX: Final = "sha256="
_UNSAFE_SEGMENT: Final = re.compile(r"[^a-z0-9_\-]+")

# Payload keys holding a numbered object: its subject is "owner/repo#number".
_NUMBERED: Final = ("pull_request", "issue", "discussion")
# Events bound to one commit, and where the sha is.
_COMMIT_SHA: Final[Mapping[str, tuple[str, str]]] = {
    "check_run": ("check_run", "head_sha"),
    "check_suite": ("check_suite", "head_sha"),
    "workflow_run": ("workflow_run", "head_sha"),
    "workflow_job": ("workflow_job", "head_sha"),
    "commit_comment": ("comment", "commit_id"),
    "deployment": ("deployment", "sha"),
    "deployment_status": ("deployment", "sha"),
    "merge_group": ("merge_group", "head_sha"),
}
# The object an event is about, for semantic dedup, when it is not the payload key named like
# the event.
_OBJECT_KEY: Final[Mapping[str, str]] = {
    "issue_comment": "comment",
    "commit_comment": "comment",
    "discussion_comment": "comment",
    "pull_request_review_comment": "comment",
    "pull_request_review": "review",
    "pull_request_review_thread": "thread",
    "issues": "issue",
    "deployment_status": "deployment_status",
}
# Top-level keys that can differ between two hooks delivering one event, or that already
# are in the semantic key.
_NOT_DISTINGUISHING: Final = frozenset(
    {"action", "installation", "hook", "hook_id", "organization", "enterprise", "repository"}
)
_MAX_COMMITS_SEARCHED: Final = 20


def sign(secret: str | bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub would send for ``body``."""
    return _PREFIX + hmac_sha256_hex(secret, body)


def verify(body: bytes, signature: str | None, secrets: Sequence[bytes]) -> None:
    """Check ``signature`` (the ``X-Hub-Signature-256`` header) against the raw ``body``.

    Raises:
        SignatureInvalid: no secret is configured, the header is missing (a SHA-1
            ``X-Hub-Signature`` alone does not count) or malformed, or no secret matches.
    """
    if not secrets:
        raise SignatureInvalid("github: no webhook secret configured")
    if not signature:
        raise SignatureInvalid(f"github: {SIGNATURE_HEADER} missing")
    if not signature.startswith(_PREFIX):
        raise SignatureInvalid(f"github: {SIGNATURE_HEADER} is not sha256=<hex>")
    if not matches_any(secrets, signature[len(_PREFIX) :], body):
        raise SignatureInvalid("github: signature mismatch")


def _segment(value: str) -> str:
    """``value`` as one event-type segment: lower case, unsafe characters as ``_``."""
    segment = _UNSAFE_SEGMENT.sub("_", value.strip().lower())
    if not segment or segment.startswith("-"):
        segment = "_" + segment
    return segment


# Event types already built, by (event name, action): a server sees few distinct ones, so
# most deliveries skip the two regular-expression substitutions. Bounded, as the action is
# whatever the payload says.
_TYPES: Final[dict[tuple[str, str | None], str]] = {}
_TYPES_LIMIT: Final = 1_000


def event_type(event_name: str, payload: Mapping[str, Any]) -> str:
    """``github.<event>[.<action>]`` for a delivery of ``event_name`` (``X-GitHub-Event``)."""
    action = payload.get("action")
    if not isinstance(action, str):
        action = None
    known = _TYPES.get((event_name, action))
    if known is not None:
        return known
    if not event_name or not event_name.strip():
        raise MalformedPayload(f"github: {EVENT_HEADER} missing")
    if action is not None and action.strip():
        built = f"github.{_segment(event_name)}.{_segment(action)}"
    else:
        built = f"github.{_segment(event_name)}"
    if len(_TYPES) < _TYPES_LIMIT:
        _TYPES[event_name, action] = built
    return built


_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


def _dict(value: Any) -> Mapping[str, Any]:
    # Decoded JSON objects are dicts, and absent keys are None: test those first (a Mapping
    # isinstance goes through the ABC machinery, and normalising a push payload calls this
    # ~40 times, mostly on keys it does not have).
    if type(value) is dict:
        return value
    if value is None or not isinstance(value, Mapping):
        return _EMPTY
    return value


def _field(payload: Mapping[str, Any], key: str, name: str) -> Any:
    """``payload[key][name]`` when ``payload[key]`` is a mapping holding it, else None."""
    obj = payload.get(key)
    if obj is None:
        return None
    return _dict(obj).get(name)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _ref(event_name: str, payload: Mapping[str, Any]) -> str | None:
    if event_name == "push":
        return _str(payload.get("ref"))
    if event_name in ("create", "delete"):
        ref = _str(payload.get("ref"))
        if ref is None or ref.startswith("refs/"):
            return ref
        return f"refs/tags/{ref}" if payload.get("ref_type") == "tag" else f"refs/heads/{ref}"
    if event_name == "release":
        tag = _str(_field(payload, "release", "tag_name"))
        return f"refs/tags/{tag}" if tag else None
    return None


def subject(event_name: str, payload: Mapping[str, Any]) -> str | None:
    """What the delivery is about, as described in the module docstring (None: nothing)."""
    repo = _str(_field(payload, "repository", "full_name"))
    if repo is not None:
        for key in _NUMBERED:
            number = _field(payload, key, "number")
            if isinstance(number, int) and not isinstance(number, bool):
                return f"{repo}#{number}"
        where = _COMMIT_SHA.get(event_name)
        if event_name == "status":
            sha = _str(payload.get("sha"))
        elif where is not None:
            sha = _str(_field(payload, where[0], where[1]))
        else:
            sha = None
        if sha is not None:
            return f"{repo}@{sha}"
        ref = _ref(event_name, payload)
        return f"{repo}:{ref}" if ref is not None else repo
    org = _str(_field(payload, "organization", "login"))
    if org is not None:
        return org
    return _str(_field(payload, "sender", "login"))


_BRANCH_OWNERS: Final = ("check_suite", "workflow_run", "workflow_job")


def _branches(event_name: str, payload: Mapping[str, Any]) -> list[str | None]:
    # Only the keys the payload has are looked into (a push has none of them but its ref);
    # the order is the search order.
    branches: list[str | None] = []
    if "pull_request" in payload:
        branches.append(_str(_field(_dict(payload["pull_request"]), "head", "ref")))
    if event_name in ("push", "create", "delete"):
        branches.append(_ref(event_name, payload))
    for key in _BRANCH_OWNERS:
        if key in payload:
            branches.append(_str(_field(payload, key, "head_branch")))
    if "check_run" in payload:
        branches.append(_str(_field(_dict(payload["check_run"]), "check_suite", "head_branch")))
    return branches


def _texts(payload: Mapping[str, Any]) -> Iterator[str | None]:
    # Lazy: find_work_item stops at the first text naming a work item, so the commit
    # messages of a push that names one early are never looked up.
    for key in _NUMBERED:
        obj = payload.get(key)
        if obj is not None:
            obj = _dict(obj)
            yield _str(obj.get("title"))
            yield _str(obj.get("body"))
    yield _str(_field(payload, "head_commit", "message"))
    commits = payload.get("commits")
    if isinstance(commits, list):
        for commit in commits[:_MAX_COMMITS_SEARCHED]:
            yield _str(_dict(commit).get("message"))


def correlation_id(
    event_name: str, payload: Mapping[str, Any], *, team_keys: Collection[str] | None = None
) -> str | None:
    """The work item the delivery belongs to (a Linear identifier, else an agent run)."""
    return find_work_item(
        branches=_branches(event_name, payload), texts=_texts(payload), team_keys=team_keys
    )


def _object(event_name: str, payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for key in (_OBJECT_KEY.get(event_name), event_name):
        if key is None:
            continue
        obj = payload.get(key)
        if isinstance(obj, Mapping) and obj.get("id") is not None and obj.get("updated_at"):
            return obj
    return None


def semantic_key(event_name: str, payload: Mapping[str, Any]) -> str | None:
    """A key equal for every delivery of the same change, whichever hook sent it.

    ``None`` when the payload has no object with an id and ``updated_at`` to build it from.
    """
    obj = _object(event_name, payload)
    if obj is None:
        return None
    object_key = _OBJECT_KEY.get(event_name, event_name)
    distinguishing = {
        k: v for k, v in payload.items() if k not in _NOT_DISTINGUISHING and k != object_key
    }
    try:
        extra = encode_json(dict(sorted(distinguishing.items())))
    except (TypeError, OverflowError):  # not JSON-encodable: the delivery id will do
        return None
    digest = hashlib.sha256()
    for part in (event_name, str(payload.get("action", "")), str(obj["id"])):
        digest.update(part.encode() + b"\x00")
    digest.update(str(obj["updated_at"]).encode() + b"\x00" + extra)
    return digest.hexdigest()


def dedup_key(event_name: str, delivery_id: str, payload: Mapping[str, Any]) -> str:
    """The key the ingress commits with this delivery (see the module docstring).

    ``github:sem:<sha256>`` when :func:`semantic_key` can be built, else
    ``github:<X-GitHub-Delivery>``.
    """
    semantic = semantic_key(event_name, payload)
    return f"github:sem:{semantic}" if semantic is not None else f"github:{delivery_id}"


def normalise(
    event_name: str,
    payload: dict[str, Any],
    *,
    delivery_id: str | None = None,
    time: datetime | None = None,
    team_keys: Collection[str] | None = None,
) -> Event:
    """The :class:`Event` for one delivery of ``event_name`` with ``payload`` (kept as data).

    Raises:
        MalformedPayload: the event name is missing.
    """
    fields: dict[str, Any] = {}
    if time is not None:
        fields["time"] = time
    return Event(
        type=event_type(event_name, payload),
        source="github",
        subject=subject(event_name, payload),
        actor=_str(_field(payload, "sender", "login")),
        delivery_id=delivery_id,
        correlation_id=correlation_id(event_name, payload, team_keys=team_keys),
        data=payload,
        **fields,
    )
