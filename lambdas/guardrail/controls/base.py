"""What a control is: a pure check, a remediation, and the IAM permissions both need."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ProxyConnectionError,
)

from ..model import AccountSnapshot, FixRecord, Result, Role, undo_part

if TYPE_CHECKING:
    from ..clients import AwsClients
    from ..settings import Settings


@dataclass(frozen=True)
class Permission:
    """An IAM statement a control needs, with symbolic resources the stack fills in.

    Placeholders: {partition} {region} {account} {guardrail_role_arn} {guardrail_profile_arn}
    {log_delivery_policy_arn} {core_policy_arn} {product_arn}.
    """

    actions: tuple[str, ...]
    resources: tuple[str, ...] = ("*",)
    conditions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    why: str = ""
    # Only an event's targeted read uses it (a full scan never calls it): the drift scan's role is
    # not granted it, the on-change role is.
    events_only: bool = False


# Why a fix was not started: a drift scan near its time limit keeps the rest to report.
OUT_OF_TIME = (
    "not started: the scan was near its time limit and kept the rest to report what it did; "
    "the next scan makes this fix"
)


@dataclass(frozen=True)
class FixContext:
    """What a remediation may touch: injected clients and the settings; the clock stamps fixes.
    No fix starts once `monotonic()` reaches `deadline` (each records OUT_OF_TIME instead)."""

    clients: AwsClients
    settings: Settings
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    deadline: float = math.inf
    monotonic: Callable[[], float] = time.monotonic
    # The records of one control's remediation, filled as each fix ends: a fix that raises
    # part-way leaves the others' records here for the engine (given a fresh list per control).
    made: list[FixRecord] = field(default_factory=list)
    # Role name → the policies this run's fixes attached to it (shared by every control's copy):
    # a later attach to the same role records them in its before, as IAM then holds them.
    attached: dict[str, set[str]] = field(default_factory=dict)

    def attached_to(self, role: Role | None) -> list[str]:
        """The role's attached policies as they are now: as read, and what this run attached."""
        if role is None:
            return []
        return sorted(role.attached_policy_arns | self.attached.get(role.name, set()))

    def record_attached(self, role_name: str, policy_arn: str) -> None:
        self.attached.setdefault(role_name, set()).add(policy_arn)

    def out_of_time(self) -> bool:
        return self.monotonic() >= self.deadline


class Control(Protocol):
    """A control's metadata (read-only), its pure check and its remediation."""

    @property
    def id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def related_requirements(self) -> tuple[str, ...]: ...  # e.g. "AWS Foundational ... /EC2.13"
    @property
    def finding_types(self) -> tuple[str, ...]: ...
    @property
    def recommendation(self) -> str: ...
    @property
    def recommendation_url(self) -> str: ...
    @property
    def read_permissions(self) -> tuple[Permission, ...]: ...
    @property
    def fix_permissions(self) -> tuple[Permission, ...]: ...  # empty only with `no_fix_reason`
    @property
    def no_fix_reason(self) -> str: ...
    @property
    def fix_changes(self) -> tuple[str, ...]: ...  # ASFF Details fields its fixes change

    def check(self, snapshot: AccountSnapshot, settings: Settings) -> list[Result]: ...

    def remediate(
        self, failed: Sequence[Result], snapshot: AccountSnapshot, ctx: FixContext
    ) -> list[FixRecord]: ...

    def settle(self, snapshot: AccountSnapshot, records: Sequence[FixRecord]) -> AccountSnapshot:
        """The snapshot as the applied fixes left it, for re-judging a result they fixed only in
        part (the rest skipped with a reason); `snapshot` itself when nothing is worth it."""
        ...


def error_code(error: Exception) -> str:
    """The AWS error code of a botocore ClientError; for an error that never reached AWS
    (EndpointConnectionError, ReadTimeoutError ...) its class name, so it can be retried."""
    response = getattr(error, "response", None)
    if not response:
        return type(error).__name__
    return str(response.get("Error", {}).get("Code", "Unknown"))


# Answers saying AWS turned the try away before doing anything (botocore retries them too).
THROTTLED = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})
# Errors before the request reached AWS (no connection): any other error botocore retries
# (a read timeout, a dropped connection, an SSL error mid-answer) may follow a done request.
NEVER_SENT = (EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError)
# What a call of a fix can end in: AWS's answer, or none past botocore's retries (a lost
# connection, a read timeout). A fix that stops part-way takes back what it added either way.
AWS_ERRORS = (ClientError, BotoCoreError)


@contextmanager
def answer_may_be_lost(client: Any, operation: str) -> Iterator[list[bool]]:
    """Watches the tries botocore makes of `operation` on `client` while inside (its needs-retry
    event, which sees every try): the list gains True for a try whose answer never came (a read
    timeout, a connection dropped or an SSL error while reading) or was a 5xx other than
    throttling, which AWS may have carried out. What a retry of it then answers ("not found",
    "duplicate") may be that try's own doing. A try that throttling turned away, or that never
    connected, did nothing."""
    tries: list[bool] = []
    meta = getattr(client, "meta", None)
    events = getattr(meta, "events", None)
    model = getattr(meta, "service_model", None)
    service = model.service_id.hyphenize() if model is not None else "ec2"
    event = f"needs-retry.{service}.{operation}"

    def observe(response: Any = None, caught_exception: Any = None, **_: Any) -> None:
        if caught_exception is not None:
            tries.append(not isinstance(caught_exception, NEVER_SENT))
        elif response is not None:
            http, parsed = response
            code = str((parsed or {}).get("Error", {}).get("Code", ""))
            tries.append(http.status_code >= 500 and code not in THROTTLED)

    if events is not None:
        events.register(event, observe)
    try:
        yield tries
    finally:
        if events is not None:
            events.unregister(event, observe)


def attach_failed(error: Exception) -> str:
    """Why AttachRolePolicy refused, in words a person acts on (AWS's own message kept)."""
    code = error_code(error)
    message = str(getattr(error, "response", {}).get("Error", {}).get("Message", "")).strip()
    said = f" (AWS: {message})" if message else ""
    if code == "LimitExceeded":
        return (
            f"attach failed: the role holds its quota of managed policies{said}; detach one, "
            "raise the quota, or declare a policy it carries equivalent"
        )
    if code == "UnmodifiableEntity":
        return f"attach failed: IAM lets no one change this role (service-linked){said}"
    return f"attach failed{said}"


def beyond_the_event(full: bool) -> str:
    """What a fix to a role made within an event does not show: the role's other instances
    (outside the event's read) change too; their findings follow at the next drift scan."""
    if full:
        return ""
    return (
        "; any other instance using the role gains it too: its findings follow at the next "
        "drift scan"
    )


def assumed_beyond_ec2(role: Role | None, policy: str) -> str:
    """Why `policy` is not attached to a role that more than EC2 may assume (a Lambda function,
    another account): each of them would get its permissions too. "" when only EC2 may."""
    if role is None or not role.trusted_besides_ec2:
        return ""
    return (
        f"{role.name} may also be assumed by {', '.join(role.trusted_besides_ec2)}: attaching "
        f"{policy} would give them its permissions too; attach it by hand if that is meant, or "
        "give the instances a role only EC2 assumes"
    )


def detach_hint(role_name: str, policy_arn: str) -> str:
    """How a person takes back a policy a fix attached."""
    return undo_part(
        f"aws iam detach-role-policy --role-name {role_name} --policy-arn {policy_arn}"
    )
