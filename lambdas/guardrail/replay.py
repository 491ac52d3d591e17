"""One EventBridge event through the guardrail: the path the on_change Lambda and `guardrail replay`
share. Parse the event (events.py), evaluate and fix only what it touched (a targeted `Scope`),
archive the findings of resources that are gone, publish once, and say what happened.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from botocore import exceptions as botocore_errors

from .clients import region_arg
from .controls.base import THROTTLED
from .engine import Evaluation, Guardrail, Interrupted, ScanReport, ended, finding_id
from .events import SSH, Change, DropKind, Dropped, parse_event
from .model import ResourceType, Result
from .publisher import THROTTLING
from .reader import ScopeTooBroad

logger = logging.getLogger(__name__)

# CloudTrail's userIdentity.invokedBy on the calls CloudFormation makes for a stack.
CLOUDFORMATION = "cloudformation.amazonaws.com"


def _subclasses(cls: type) -> set[type]:
    subs: list[type] = cls.__subclasses__()
    return {cls}.union(*(_subclasses(sub) for sub in subs))


# Error codes (and botocore exception names) meaning "AWS was unavailable or throttled us after
# botocore's own retries": the event is raised, so Lambda runs it again later (the path is
# idempotent), then dead-letters it.
# EC2's and Security Hub's throttling codes are the fixes' and the publisher's (one list each).
RETRYABLE = (
    THROTTLING
    | THROTTLED
    | frozenset(
        {
            "ThrottledException",
            "EC2ThrottledException",
            "BandwidthLimitExceeded",
            "PriorRequestNotComplete",
            "RequestThrottled",
            "RequestThrottledException",
            "SlowDown",
            "ServiceUnavailable",
            "ServiceUnavailableException",
            "Unavailable",
            "InternalError",
            "InternalFailure",
            "InternalServerError",
            "InternalException",
            "RequestTimeout",
            "RequestTimeoutException",
            "InternalServerException",
            "ServiceFailure",  # IAM's HTTP 500
            "ServiceException",
            # IAM: another change to the same object at the same moment; try again later.
            "ConcurrentModification",
        }
    )
    | frozenset(
        # A failure below HTTP (no connection, a timeout, SSL torn down, a reset mid-answer): every
        # botocore class its standard retry mode counts as transient, by name (error_code's).
        cls.__name__
        for base in (botocore_errors.ConnectionError, botocore_errors.HTTPClientError)
        for cls in _subclasses(base)
    )
)


def is_retryable(code: str | None) -> bool:
    """A code in RETRYABLE, or the bare HTTP status botocore gives an answer it cannot parse (a
    load balancer's HTML 502/503/504, an empty 500, a 429) after its own retries."""
    code = code or ""
    return code in RETRYABLE or (code.isdigit() and (code.startswith("5") or code == "429"))


class RetryableEventError(RuntimeError):
    """AWS throttled or failed a call the event needed; raising makes EventBridge retry it."""


@dataclass
class EventOutcome:
    """What one event led to: why it was dropped, or the evaluation report."""

    parsed: Change | Dropped
    report: ScanReport | None = None
    archived: list[Result] = field(default_factory=list)  # resources gone: findings archived
    notes: list[str] = field(default_factory=list)
    deferred: str = ""  # why the event's role and logging checks wait for the drift scan

    @property
    def dropped(self) -> Dropped | None:
        return self.parsed if isinstance(self.parsed, Dropped) else None

    @property
    def unjudged(self) -> str:
        """Why all or part of it (the roles and logging) was left to the drift scan, or ""."""
        dropped = self.dropped
        if dropped is not None and dropped.kind is DropKind.DEFERRED:
            return dropped.reason
        return self.deferred

    @property
    def change(self) -> Change | None:
        return self.parsed if isinstance(self.parsed, Change) else None

    def archived_in_hub(self) -> list[Result]:
        """The results whose findings Security Hub took as ARCHIVED (resources gone, instances
        terminated): none unpublished (--no-publish), refused, or never held (nothing to
        archive: none is imported)."""
        report = self.report
        if report is None or report.published is None or report.snapshot is None:
            return []
        taken, snapshot = report.published.imported_ids, report.snapshot
        gone = {r.key for r in self.archived}
        return [
            r
            for r in (e.result for e in report.evaluations)
            if (r.key in gone or ended(r, snapshot))
            and finding_id(r.account_id, r.region, r.control, r.resource_id) in taken
        ]

    def retryable_failures(self) -> list[str]:
        """Fixes or Security Hub entries that failed for a transient reason."""
        if self.report is None:
            return []
        failures = [
            f"{f.action} on {f.resource_id}: {f.error_code}"
            for f in self.report.fixes
            if is_retryable(f.error_code)
        ]
        published = self.report.published
        if published is not None:
            # Imports only: a retry finds the resource already fixed, so it could never mark it
            # RESOLVED; the next drift scan resolves a fixed finding left NEW.
            failures += [
                f"Security Hub {e['Id']}: {e['ErrorCode']}"
                for e in published.failed
                if is_retryable(e.get("ErrorCode"))
            ]
        return failures


def _guardrail_for(
    guardrail: Guardrail, account_id: str | None, *, publisher: Any = None
) -> Guardrail:
    """The same guardrail bound to the event's account (so no STS call is needed)."""
    return Guardrail(
        guardrail.clients,
        guardrail.settings,
        account_id=account_id or guardrail.account_id,
        publisher=publisher,
        controls=guardrail.controls,
        clock=guardrail.clock,
    )


def gone(change: Change, report: ScanReport, guardrail: Guardrail) -> list[Result]:
    """NOT_APPLICABLE (so ARCHIVED) results for what the event named but no longer exists.

    An instance that is gone (or terminated) and a group that no instance uses any more get no
    result from the checks; without these their findings would stay ACTIVE for 90 days.
    """
    snapshot = report.snapshot
    if snapshot is None:
        return []
    scope = change.scope
    seen = {(e.result.control, e.result.resource_id) for e in report.evaluations}
    controls = [c.id for c in guardrail.selected(scope)]
    results = []
    for iid in sorted(scope.instance_ids):
        instance = snapshot.instances.get(iid)
        if instance is not None and instance.evaluated:
            continue
        reason = (
            "instance no longer exists" if instance is None else f"instance is {instance.state}"
        )
        results += [
            snapshot.not_applicable(c, ResourceType.INSTANCE, iid, reason)
            for c in controls
            if (c, iid) not in seen
        ]
    if SSH in controls:
        results += [
            snapshot.not_applicable(
                SSH,
                ResourceType.SECURITY_GROUP,
                gid,
                "security group no longer exists or no instance uses it",
            )
            for gid in sorted(scope.group_ids)
            if (SSH, gid) not in seen and gid not in snapshot.security_groups
        ]
    return results


def process_event(
    event: Any,
    guardrail: Guardrail,
    *,
    home_account: str | None = None,
    strict: bool = True,
) -> EventOutcome:
    """Evaluate (and in enforce mode fix) exactly what `event` touched, in the guardrail's region.

    `home_account` is the account the guardrail runs in, when known without a call (the Lambda's
    own ARN). `strict` drops events of another account or region; `guardrail replay` turns it off
    to run a captured event against another account (e.g. an emulator), noting the difference.
    Raises on AWS errors while reading (Lambda retries, then dead-letters); never on a bad event.
    """
    region = guardrail.clients.region
    settings = guardrail.settings
    try:
        parsed = parse_event(
            event, actor_arns=settings.actor_arns, region=region if strict else None
        )
    except Exception as error:  # a parser bug must not turn one odd event into endless retries
        parsed = Dropped(f"could not parse the event: {error!r}"[:300], DropKind.MALFORMED)
    if isinstance(parsed, Dropped):
        return EventOutcome(parsed)
    if parsed.ignored:  # evaluated without them; a value no id pattern takes may be a new shape
        logger.warning(
            "event named invalid ids",
            extra={
                "event_name": parsed.event_name,
                "event_id": parsed.event_id,
                "ignored": list(parsed.ignored),
            },
        )
    notes: list[str] = []
    account = parsed.account_id
    if account and home_account and account != home_account:
        if strict:
            return EventOutcome(
                Dropped(
                    f"event from account {account}; the guardrail runs in {home_account}",
                    DropKind.OTHER_ACCOUNT,
                    parsed.event_name,
                    parsed.event_id,
                )
            )
        notes.append(f"event from account {account}, evaluated in account {home_account}")
        account = home_account
    own_policy = settings.log_delivery_policy_arn
    if (
        own_policy
        and parsed.invoked_by == CLOUDFORMATION
        and parsed.scope.policy_arns
        and parsed.scope.policy_arns <= {own_policy}
    ):
        # CloudFormation makes a new default version of it whenever a stack update changes it:
        # every role the guardrail gave it, in every region, would be read again in one
        # on-change run. Its stack owns it; the drift scan judges its roles. Anyone else's edit
        # (a Deny added by hand) is judged now, like any policy's.
        return EventOutcome(
            Dropped(
                "the guardrail's own log-delivery policy, changed by its stack "
                "(CloudFormation): the drift scan judges the roles it is attached to",
                DropKind.IRRELEVANT,
                parsed.event_name,
                parsed.event_id,
            )
        )
    if not strict and parsed.region and parsed.region != region and not parsed.global_service:
        notes.append(f"event from {parsed.region}, evaluated in {region}")
    # Run without publishing, add the archived results, then publish everything in one go.
    runner = _guardrail_for(guardrail, account or home_account)
    deferred = ""
    try:
        report = runner.run(parsed.scope)
    except ScopeTooBroad as error:
        if SSH not in {c.id for c in runner.selected(parsed.scope)}:
            return EventOutcome(
                Dropped(str(error), DropKind.DEFERRED, parsed.event_name, parsed.event_id)
            )
        # Internet SSH needs no IAM read: it is judged (and closed) now; the roles wait.
        report = runner.run(replace(parsed.scope, controls=frozenset({SSH})))
        deferred = f"role and logging left to the drift scan: {error}"
        notes.append(deferred)
    publisher = guardrail.publisher
    bound = _guardrail_for(guardrail, report.account_id, publisher=publisher)
    try:  # Ctrl-C (replay): the fixes made are listed
        named = gone(parsed, report, bound)
    except KeyboardInterrupt as interrupt:
        raise Interrupted(report) from interrupt
    report.gone += named  # after those a fix found deleted
    report.evaluations += [Evaluation(r, settings.mode_for(r.control)) for r in named]
    if report.evaluations:
        bound.publish_into(report)
    return EventOutcome(parsed, report, report.gone, notes, deferred)


def replay(event: Any, guardrail: Guardrail, *, home_account: str | None = None) -> EventOutcome:
    """`guardrail replay`: the Lambda's path for one event, lenient about account and region."""
    return process_event(event, guardrail, home_account=home_account, strict=False)


# --- output --------------------------------------------------------------------------------------


def _names(values: Iterable[str]) -> str:
    return ", ".join(sorted(values)) or "-"


def outcome_dict(outcome: EventOutcome) -> dict[str, Any]:
    """What the event touched and what was done, JSON-safe (the CLI's --format json)."""
    if outcome.dropped is not None:
        return {"results": [], "dropped": outcome.dropped.as_log()}
    change, report = outcome.change, outcome.report
    assert change is not None and report is not None
    published = report.published
    return {
        "event": change.as_log(),
        "account": report.account_id,
        "region": report.region,
        "notes": outcome.notes,
        "results": [{**e.as_dict(), "remediated": e.remediated} for e in report.evaluations],
        "fixes": [f.as_dict() for f in report.fixes],
        "gone": [r.resource_id for r in outcome.archived],
        "archived": [r.resource_id for r in outcome.archived_in_hub()],
        "stopped": report.stopped,
        "published": None if published is None else published.as_dict(),
    }


def format_outcome(outcome: EventOutcome) -> str:
    """A person's view of one event: what it touched, each result, each fix, Security Hub."""
    if outcome.dropped is not None:
        d = outcome.dropped
        name = d.event_name or "event"
        return f"{name}: dropped ({d.kind.value}): {d.reason}"
    change, report = outcome.change, outcome.report
    assert change is not None and report is not None
    scope = change.scope
    lines = [
        f"{change.event_name} {change.event_id}".rstrip()
        + (f" by {change.actor}" if change.actor else ""),
        f"account {report.account_id}  region {report.region}",
        *(f"note: {n}" for n in outcome.notes),
        "touched: "
        + "; ".join(
            [
                f"instances {_names(scope.instance_ids)}",
                f"interfaces {_names(scope.interface_ids)}",
                f"groups {_names(scope.group_ids)}",
                f"prefix lists {_names(scope.prefix_list_ids)}",
                f"profiles {_names(scope.profile_names)}",
                f"roles {_names(scope.role_names)}",
                f"policies {_names(scope.policy_arns)}",
                f"preferences {'yes' if scope.preferences else 'no'}",
                f"controls {_names(scope.controls) if scope.controls else 'all'}",
            ]
        ),
    ]
    if not report.evaluations:
        lines.append("no resource to evaluate (nothing uses what the event touched)")
    gone_keys = {r.key for r in outcome.archived}
    archived = {r.key for r in outcome.archived_in_hub()}
    published = report.published
    for e in report.evaluations:
        r = e.result
        status = "FIXED" if e.remediated else r.status.value
        if r.key in archived:  # only once Security Hub took it (not with --no-publish)
            status = "ARCHIVED"
        elif r.key in gone_keys:
            status = "GONE"
        lines.append(f"  {status:<14} {r.control:<22} {r.resource_id:<22} {r.reason}")
        if e.remediation:
            lines.append(f"  {'':<14} -> {e.remediation}")
    if published is not None:
        lines.append(
            f"Security Hub: {published.imported} imported, {len(published.failed)} failed, "
            f"{published.resolved} resolved"
            + (f", {len(published.unresolved)} not resolved" if published.unresolved else "")
            + (f"; errors: {'; '.join(published.errors)}" if published.errors else "")
        )
    return "\n".join(lines)


# --- `guardrail replay` ----------------------------------------------------------------------------


def add_replay_parser(commands: Any) -> argparse.ArgumentParser:
    """The `replay` subcommand, on cli.py's subparsers (flags mirror `scan`'s)."""
    from .cli import add_settings_flags  # cli imports this module; import lazily (a cycle)
    from .controls import REGISTRY

    replay_cmd = commands.add_parser(
        "replay",
        help="run one EventBridge event (JSON file, - for stdin) through the on_change path",
    )
    replay_cmd.add_argument("event_file", metavar="EVENT.json")
    replay_cmd.add_argument(
        "--region",
        type=region_arg,
        help="region to evaluate in (default: the event's; for IAM events GUARDRAIL_REGIONS)",
    )
    replay_cmd.add_argument("--profile", help="AWS named profile")
    replay_cmd.add_argument(
        "--control", action="append", choices=sorted(REGISTRY), dest="control_ids", metavar="ID"
    )
    replay_cmd.add_argument("--format", choices=("table", "json"), default="table")
    replay_cmd.add_argument("--no-publish", action="store_true")
    add_settings_flags(replay_cmd, skip=frozenset())
    return replay_cmd


def load_event(path: str, stdin: TextIO | None = None) -> Any:
    from .cli import UsageError

    try:
        if path == "-":  # as bytes, so stdin gets a file's byte-order-mark handling too
            source = stdin or sys.stdin
            raw = getattr(source, "buffer", None)
            text = decoded(raw.read()) if raw is not None else source.read()
        else:
            text = decoded(Path(path).read_bytes())
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise UsageError(f"{path} is neither UTF-8 nor UTF-16 text: {error.reason}") from error
    try:
        event = json.loads(text)
    except ValueError as error:  # JSONDecodeError, or an integer past Python's digit limit
        raise UsageError(f"{path} is not JSON: {error}") from error
    except RecursionError as error:  # json's parser recurses once per nesting level
        raise UsageError(f"{path} is nested too deeply to read as JSON") from error
    return dead_letter_payload(event)


def decoded(data: bytes) -> str:
    """A saved event's text: UTF-8 (with or without a byte-order mark), or UTF-16 with one
    (what Windows PowerShell's `>` writes)."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16")
    return data.decode("utf-8-sig")


def dead_letter_payload(message: Any) -> Any:
    """The event inside a message from the stack's dead-letter queue: Lambda's on-failure
    destination wraps it as `requestPayload` (with `requestContext`, `responsePayload`), so a
    dead-lettered event replays as it is. Anything else is taken as the event itself."""
    if (
        isinstance(message, dict)
        and isinstance(message.get("requestPayload"), dict)
        and "requestContext" in message
    ):
        return message["requestPayload"]
    return message


def replay_regions(
    change: Change, requested: str | None, settings_regions: Iterable[str], default: str | None
) -> list[str]:
    """Where to evaluate: --region; else IAM events in every covered region (as the stack's
    forwarding does); else the event's own region; else the session's default."""
    if requested:
        return [requested]
    if change.global_service:
        regions = list(dict.fromkeys(settings_regions))
        if regions:
            return regions
    if change.region and not change.global_service:
        return [change.region]
    return [default] if default else []


def rendered(outcomes: Sequence[EventOutcome], fmt: str) -> Callable[[TextIO], None]:
    """How to print the outcomes: one text block per region, or one JSON object with `results`
    as `scan` prints them (an event evaluated in several regions: every region's results, and
    each region's outcome in `regions`)."""
    if fmt == "json":
        dicts = [outcome_dict(o) for o in outcomes]
        document = (
            dicts[0]
            if len(dicts) == 1
            else {"results": [r for d in dicts for r in d["results"]], "regions": dicts}
        )
        text = json.dumps(document, indent=2, default=str)
    else:
        text = "\n".join(format_outcome(o) for o in outcomes)
    return lambda out: print(text, file=out)


def run_replay(
    args: argparse.Namespace, out: TextIO, err: TextIO, env: Mapping[str, str] | None = None
) -> int:
    """`guardrail replay EVENT.json`: exit 0 nothing left FAILED (or dropped as irrelevant), 1
    something left FAILED, a step stopped or a check left to the drift scan, 2 usage or setup
    errors (an event that cannot be read or routed is printed as dropped; the others are raised
    as cli.UsageError for cli.main to print)."""
    from .cli import (
        UsageError,
        clients_for,
        crashed_or_failed,
        emit,
        exit_code,
        name_crashes,
        settings_from,
    )
    from .clients import NO_REGION_HINT, default_region
    from .publisher import FindingPublisher

    settings = settings_from(args, dict(os.environ if env is None else env))
    event = load_event(args.event_file)
    parsed = parse_event(event, actor_arns=settings.actor_arns)
    if isinstance(parsed, Dropped):
        if parsed.bad_input and args.format != "json":
            # An event that cannot be read is a usage error here (the Lambda only counts it):
            # said where errors go, as every exit 2 is. JSON keeps it on stdout for its reader.
            print(f"guardrail: {format_outcome(EventOutcome(parsed))}", file=err)
            return 2
        emit(out, rendered([EventOutcome(parsed)], args.format))
        return 2 if parsed.bad_input else 0
    regions = replay_regions(parsed, args.region, settings.regions, default_region(args.profile))
    if not regions:
        raise UsageError(f"no AWS region: {NO_REGION_HINT}, or GUARDRAIL_REGIONS")
    outcomes: list[EventOutcome] = []
    try:  # every region checked before any is changed, not after the first one was
        for clients in clients_for(regions, args.profile, settings):
            publisher = FindingPublisher(clients.securityhub) if settings.publish else None
            guardrail = Guardrail(clients, settings, publisher=publisher)
            outcomes.append(replay(event, guardrail, home_account=clients.account_id))
    except BaseException:
        if outcomes:  # what the regions before the failing one did (and changed) is printed
            emit(out, rendered(outcomes, args.format))
        raise
    emit(out, rendered(outcomes, args.format))
    name_crashes((o.report for o in outcomes if o.report), err)
    # Left to the drift scan (more roles than an event evaluates): not known to pass.
    unjudged = [o.unjudged for o in outcomes if o.unjudged]
    for reason in unjudged:
        print(f"guardrail: warning: not judged: {reason} (`guardrail scan` judges now)", file=err)
    failed = any(crashed_or_failed(o.report) for o in outcomes) or bool(unjudged)
    summaries = [o.report.published if o.report else None for o in outcomes]
    # As `guardrail scan`: results printed first; exit 2 if Security Hub could take nothing.
    return max(exit_code(failed, published, err) for published in summaries)
