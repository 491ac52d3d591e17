"""The only code that talks to Security Hub: imports findings, then resolves the ones we fixed.

Security Hub trouble never aborts a scan: every error ends up in the `PublishSummary`, and every
finding that did not make it is listed there by Id with its error code (and logged).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from .findings import (
    FIELD_PREFIX,
    FINGERPRINT_FIELD,
    FIXED_AT_FIELD,
    GENERATOR_PREFIX,
    MAX_NOTE,
    PRODUCT,
    REMEDIATED_FIELD,
    RESOLUTION_NOTE,
    archived_as_passed,
    clip,
    compliance,
    keep_applied_records,
    keep_fix_record,
    timestamp,
)
from .model import flat, parse_time

logger = logging.getLogger(__name__)

MAX_FINDINGS_PER_CALL = 100  # BatchImportFindings and BatchUpdateFindings alike
MAX_FILTER_VALUES = 20  # GetFindings: values per filter attribute
MAX_FINDING_BYTES = 240 * 1024
MAX_CALL_BYTES = 6 * 1024 * 1024 - 64 * 1024  # headroom for the request envelope
CALLS_PER_SECOND = 10  # Security Hub allows 10 TPS (burst 30) per API; we stay under 10 overall
READS_PER_SECOND = 3  # GetFindings alone allows 3 TPS (burst 6)
OPEN_END = timedelta(days=366)  # the End of a date filter meant to have none
BACKOFF_BASE = 0.5
BACKOFF_MAX = 10.0
# Entry errors a resend cannot cure: the finding itself is refused (AWS answers InvalidInput for
# ASFF violations). Others (InternalFailure, FindingNotFound just after an import) are retried.
DENIED = frozenset({"InvalidAccess", "AccessDenied"})  # the entry's account, not the finding
REFUSED = frozenset({"InvalidInput", "FindingSizeExceeded", *DENIED})
THROTTLING = frozenset(
    {"TooManyRequestsException", "ThrottlingException", "LimitExceededException"}
)
FATAL = frozenset(
    {
        "InvalidAccessException",  # Security Hub not enabled in this region
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
    }
)
# Fatal for an optional read too: IAM may deny GetFindings alone (an older policy, an SCP), so an
# AccessDenied there only costs the change detection; these stop every call.
FATAL_FOR_EVERY_CALL = FATAL - {"AccessDeniedException"}
NO_RESOLUTIONS: Mapping[str, str] = MappingProxyType({})
REOPEN_NOTE = (
    f"Reopened by {PRODUCT}: still failing. An earlier fix's RESOLVED mark landed after a newer "
    "reading had found the resource failing again; see the Description."
)


@dataclass(frozen=True)
class PublishSummary:
    """What reached Security Hub; `failed`/`unresolved` hold {Id, ErrorCode, ErrorMessage}."""

    imported: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    resolved: int = 0
    unresolved: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    calls: int = 0
    unchanged: int = 0  # already in Security Hub as they are: not imported again
    # Security Hub holds a newer reading (an event since the scan read or fixed the resource):
    # neither imported (it would be ignored) nor resolved (that would resolve the newer reading).
    superseded: int = 0
    reopened: int = 0  # still failing, yet RESOLVED by a late mark of ours: set NEW again
    fatal: bool = False  # no call could succeed (not enabled, access denied, unreachable)
    # The findings Security Hub took, each answer naming no failure it did not name.
    imported_ids: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        return not (self.failed or self.unresolved or self.errors)

    def as_dict(self) -> dict[str, Any]:
        """What reached Security Hub, JSON-safe (the CLI's and replay's --format json)."""
        return {
            "imported": self.imported,
            "unchanged": self.unchanged,
            "superseded": self.superseded,
            "resolved": self.resolved,
            "reopened": self.reopened,
            "failed": self.failed,
            "unresolved": self.unresolved,
            "errors": self.errors,
        }


class CallError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def throttled(self) -> bool:
        return self.code in THROTTLING


class RateLimiter:
    """At most `rate` calls in any `period` seconds of the injected clock; bursts up to `rate`.

    A sliding window over the last `rate` calls: stricter than Security Hub's own token bucket
    (10/s, burst 30), so other callers in the account keep some headroom.
    """

    def __init__(
        self,
        rate: int,
        period: float,
        sleep: Callable[[float], None],
        monotonic: Callable[[], float],
    ) -> None:
        self._recent: deque[float] = deque(maxlen=rate)
        self._period = period
        self._sleep = sleep
        self._monotonic = monotonic

    def acquire(self) -> None:
        if len(self._recent) == self._recent.maxlen:
            while (wait := self._recent[0] + self._period - self._monotonic()) > 0:
                self._sleep(max(wait, 0.001))  # the minimum guarantees progress on float rounding
        self._recent.append(self._monotonic())


@dataclass
class _Run:
    """Mutable accumulators of one publish call."""

    imported: set[str] = field(default_factory=set)
    failed: list[dict[str, str]] = field(default_factory=list)
    resolved: int = 0
    unresolved: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    calls: int = 0
    unchanged: int = 0
    superseded: set[str] = field(default_factory=set)
    # Stored findings of resources we fixed that were never marked RESOLVED (that call failed).
    unresolved_fixes: set[str] = field(default_factory=set)
    # Still-failing findings a late RESOLVED mark of ours hid (_resolved_too_late): set NEW.
    reopen: set[str] = field(default_factory=set)
    reopened: int = 0
    stopped: CallError | None = None  # an error after which no call can succeed
    # Failures an import answer counted (FailedCount) but did not name, and the findings of the
    # batches so answered: any of them may not have landed, so none is marked RESOLVED.
    unnamed_failures: int = 0
    unconfirmed: set[str] = field(default_factory=set)
    unread: str = ""  # why the stored findings could not be read: every finding is imported

    def summary(self) -> PublishSummary:
        errors = self.errors
        if self.unread and (self.imported or self.stopped is None):  # not when none could be
            errors = [
                f"could not read stored findings ({self.unread}): every finding imported, none "
                "compared, archived or resolved by what Security Hub holds",
                *errors,
            ]
        return PublishSummary(
            imported=len(self.imported),
            failed=self.failed,
            resolved=self.resolved,
            unresolved=self.unresolved,
            errors=errors,
            calls=self.calls,
            unchanged=self.unchanged,
            superseded=len(self.superseded),
            reopened=self.reopened,
            fatal=self.stopped is not None and not self.imported,
            imported_ids=frozenset(self.imported - self.unconfirmed),
        )


@dataclass(frozen=True)
class StoredFinding:
    """What Security Hub holds of one of our findings, as far as re-importing it matters."""

    fingerprint: str | None
    updated_at: datetime | None
    created_at: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ArchiveMissing:
    """A full scan's promise: every finding of these generators it did not produce is gone
    (the resource was deleted, or no instance uses the group any more), so archive it.
    `now` is when the scan read the account: findings updated later are left alone."""

    product_arn: str
    generator_ids: frozenset[str]
    now: datetime


# What an archived copy keeps of a stored finding (Security Hub's own fields are left out).
ARCHIVED_COPY = (
    "SchemaVersion",
    "Id",
    "ProductArn",
    "ProductName",
    "CompanyName",
    "GeneratorId",
    "AwsAccountId",
    "Types",
    "CreatedAt",
    "Severity",
    "Title",
    "Description",
    "Remediation",
    "Resources",
    "Compliance",
)


def kept_of_stored(stored: Mapping[str, Any]) -> dict[str, Any]:
    """What a scan keeps of a stored finding: what it compares, resolves and archives by, and
    our own ProductFields; not what Security Hub adds to each."""
    kept = {
        k: stored[k] for k in (*ARCHIVED_COPY, "RecordState", "Workflow", "Note") if k in stored
    }
    kept["ProductFields"] = {
        k: v for k, v in (stored.get("ProductFields") or {}).items() if k.startswith(FIELD_PREFIX)
    }
    return kept


def archived_copy(stored: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    finding = {k: stored[k] for k in ARCHIVED_COPY if k in stored}
    # Without the fingerprint: should the same result come back, it differs and is imported.
    fields = {
        k: v
        for k, v in (stored.get("ProductFields") or {}).items()
        if k.startswith(FIELD_PREFIX) and k != FINGERPRINT_FIELD
    }
    if fields:
        finding["ProductFields"] = fields
    finding.update(RecordState="ARCHIVED", UpdatedAt=timestamp(now), LastObservedAt=timestamp(now))
    return finding


def _against(
    finding: dict[str, Any], old: StoredFinding, fixed: bool, run: _Run
) -> dict[str, Any] | None:
    """`finding` as it should go in over what Security Hub holds; None to leave that alone."""
    stored = old.raw
    active = stored.get("RecordState") == "ACTIVE"
    ours = parse_time(finding.get("UpdatedAt"))
    if old.updated_at is not None and ours is not None and old.updated_at > ours:
        confirms = (
            active
            and compliance(stored) == "PASSED"
            and (stored.get("ProductFields") or {}).get(REMEDIATED_FIELD) != "true"
        )
        if not (fixed and confirms):
            # A newer reading (an event since the scan read or fixed it; or the event's own,
            # newer fix): it stands, with its own record and workflow.
            run.superseded.add(finding["Id"])
            return None
        # A newer plain reading agrees the resource is fixed: record the fix just after it.
        after = timestamp(old.updated_at + timedelta(milliseconds=1))
        finding = {**finding, "UpdatedAt": after, "LastObservedAt": after}
    if finding.get("RecordState") == "ARCHIVED" and compliance(stored) == "PASSED":
        finding = archived_as_passed(finding)
    if old.created_at:
        finding = {**finding, "CreatedAt": old.created_at}  # first seen stays first seen
    if active:
        finding = keep_applied_records(keep_fix_record(finding, stored), stored)
        if not fixed and _resolve_missed(finding, stored):
            run.unresolved_fixes.add(finding["Id"])
        if not fixed and _resolved_too_late(finding, old):
            run.reopen.add(finding["Id"])
    return finding


def _resolve_missed(finding: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """A fix whose RESOLVED mark never landed (BatchUpdateFindings failed): stored PASSED with
    our fix record, workflow NEW, and no note since the fix, ours or a person's (a comment
    written while it was failing does not stop the repair). A person who reopened it left our
    note (written after the fix) or their own: their choice stands."""
    fields = finding.get("ProductFields") or {}
    if not (
        fields.get(REMEDIATED_FIELD) == "true"
        and compliance(finding) == compliance(stored) == "PASSED"
        and (stored.get("Workflow") or {}).get("Status") == "NEW"
    ):
        return False
    note = stored.get("Note") or {}
    if not note:
        return True
    noted, fixed_at = parse_time(note.get("UpdatedAt")), parse_time(fields.get(FIXED_AT_FIELD))
    return bool(noted and fixed_at and noted < fixed_at)


def _resolved_too_late(finding: Mapping[str, Any], old: StoredFinding) -> bool:
    """Still failing, yet RESOLVED by our note written after the failing reading Security Hub
    holds: a fix's RESOLVED mark that landed after a newer reading found the resource open
    again (BatchImportFindings ignored the fix's older PASSED; BatchUpdateFindings cannot be
    conditional). Hidden from every failing insight until reopened. A person's RESOLVED (their
    note, or none since the reading, or none since our reopen note) stands."""
    stored = old.raw
    note = stored.get("Note") or {}
    noted = parse_time(note.get("UpdatedAt"))
    return (
        compliance(finding) == compliance(stored) == "FAILED"
        and (stored.get("Workflow") or {}).get("Status") == "RESOLVED"
        and note.get("UpdatedBy") == PRODUCT
        and note.get("Text") != REOPEN_NOTE  # a fix's mark, not our own reopening
        and noted is not None
        and old.updated_at is not None
        and noted > old.updated_at
    )


def _equals(value: str) -> dict[str, str]:
    return {"Value": value, "Comparison": "EQUALS"}


def _entry(finding_id: str, code: str, message: str) -> dict[str, str]:
    return {"Id": finding_id, "ErrorCode": code, "ErrorMessage": message}


def finding_size(finding: Mapping[str, Any]) -> int:
    """Bytes of the finding as botocore writes it into the request body (json.dumps with its
    default ", " and ": " separators, ASCII-escaped)."""
    return len(json.dumps(finding, default=str).encode())


def batches(sized: Sequence[tuple[dict[str, Any], int]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive batches of ≤100 findings and ≤6 MB."""
    batch: list[dict[str, Any]] = []
    total = 0
    for finding, size in sized:
        if batch and (len(batch) == MAX_FINDINGS_PER_CALL or total + size + 1 > MAX_CALL_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(finding)
        total += size + 1
    if batch:
        yield batch


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...): exponential, capped."""
    return float(min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1)))


class FindingPublisher:
    """Imports findings (BatchImportFindings); marks fixed ones RESOLVED (BatchUpdateFindings)."""

    def __init__(
        self,
        client: Any,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        max_attempts: int = 5,
    ) -> None:
        self._client = client
        self._sleep = sleep
        self._limiter = RateLimiter(CALLS_PER_SECOND, 1.0, sleep, monotonic)
        self._read_limiter = RateLimiter(READS_PER_SECOND, 1.0, sleep, monotonic)
        self._max_attempts = max(1, max_attempts)

    def publish(
        self,
        findings: Sequence[dict[str, Any]],
        resolutions: Mapping[str, str] = NO_RESOLUTIONS,
        *,
        refresh_before: datetime | None = None,
        archive: ArchiveMissing | None = None,
        read_back: Collection[str] = (),
    ) -> PublishSummary:
        """Import `findings`, then resolve the imported ones in `resolutions` (Id → note).

        With `refresh_before`, a finding Security Hub already holds with the same fingerprint,
        last updated after that moment, is not imported again: ingestion is billed per finding,
        and a drift scan mostly repeats itself. Imported findings keep their first CreatedAt, and
        a resource still PASSED keeps the record of the fix Security Hub shows on it (and is
        marked RESOLVED if an earlier run could not).
        One Security Hub holds with a later UpdatedAt than ours is left alone, unresolved.
        With `archive` too, stored ACTIVE findings the scan no longer produced are archived.
        Without `refresh_before`, the archived findings in `read_back` (an event's resources
        deleted since) are compared with what Security Hub holds first (_archivable).
        """
        run = _Run()
        try:
            to_import = findings
            if refresh_before is not None and (findings or archive):
                to_import = self._changed(findings, resolutions, refresh_before, run, archive)
                resolutions = {
                    **{i: RESOLUTION_NOTE for i in sorted(run.unresolved_fixes)},
                    **resolutions,
                }
            elif read_back:
                to_import = self._archivable(findings, set(read_back), run)
            self._import(to_import, run)
            self._resolve(findings, resolutions, run)
            self._reopen(findings, run)
        except Exception as error:  # a scan must never abort because of Security Hub
            logger.exception("publishing to Security Hub failed", extra={"error": str(error)})
            run.errors.append(f"publishing to Security Hub failed: {error!r}")
        summary = run.summary()
        logger.info(
            "published findings to Security Hub",
            extra={
                "imported": summary.imported,
                "failed": len(summary.failed),
                "resolved": summary.resolved,
                "unresolved": len(summary.unresolved),
                "calls": summary.calls,
                "unchanged": summary.unchanged,
                "superseded": summary.superseded,
                "reopened": summary.reopened,
                "errors": summary.errors,
            },
        )
        return summary

    def _changed(
        self,
        findings: Sequence[dict[str, Any]],
        resolutions: Mapping[str, str],
        refresh_before: datetime,
        run: _Run,
        archive: ArchiveMissing | None = None,
    ) -> list[dict[str, Any]]:
        """The findings worth importing: new, changed, due for refresh, or about to be resolved;
        plus archived copies of what the scan no longer produced."""
        products = {f["ProductArn"] for f in findings} | (
            {archive.product_arn} if archive else set()
        )
        times = [t for f in findings if (t := parse_time(f.get("UpdatedAt"))) is not None]
        try:
            stored = self.stored(products, run, min(times) if times else None)
        except CallError as error:  # cannot tell what changed: import everything, lose nothing
            logger.warning("could not read stored findings", extra={"error": str(error)})
            # Reported (PublishErrors, the CLI's warning): every finding is now billed again.
            run.unread = str(error)
            return list(findings)
        changed = []
        for finding in findings:
            old = stored.get(finding["Id"])
            if old is None:
                # An archived result with no active finding to archive (a terminated instance
                # never seen running, or one archived already) is not imported.
                if finding.get("RecordState") == "ARCHIVED":
                    run.unchanged += 1
                else:
                    changed.append(finding)
                continue
            against = _against(finding, old, finding["Id"] in resolutions, run)
            if against is None:
                continue
            finding = against
            if (
                finding["Id"] in resolutions
                or old.raw.get("RecordState") != finding.get("RecordState")
                or old.fingerprint != finding.get("ProductFields", {}).get(FINGERPRINT_FIELD)
                or old.updated_at is None
                or old.updated_at < refresh_before
            ):
                changed.append(finding)
            else:
                run.unchanged += 1
        if archive is not None:
            produced = {f["Id"] for f in findings}
            changed += [
                archived_copy(old.raw, archive.now)
                for finding_id, old in sorted(stored.items())
                if finding_id not in produced
                and old.raw.get("RecordState") != "ARCHIVED"
                and old.raw.get("GeneratorId") in archive.generator_ids
                # updated since the scan read the account (an event): the scan knows nothing newer
                and old.updated_at is not None
                and old.updated_at < archive.now
            ]
        return changed

    def _archivable(
        self, findings: Sequence[dict[str, Any]], read_back: set[str], run: _Run
    ) -> list[dict[str, Any]]:
        """An event's findings, its archived ones in `read_back` read first (GetFindings by Id,
        20 a call): one with nothing stored is not imported (nothing to archive), one stored
        PASSED stays PASSED (archived_as_passed), one stored newer is left alone. Unread, all go
        in as built."""

        def asked(finding: Mapping[str, Any]) -> bool:
            return finding.get("RecordState") == "ARCHIVED" and finding["Id"] in read_back

        archived = sorted(f["Id"] for f in findings if asked(f))
        stored: dict[str, StoredFinding] = {}
        try:
            for start in range(0, len(archived), MAX_FILTER_VALUES):
                ids = archived[start : start + MAX_FILTER_VALUES]
                stored.update(self._read({"Id": [_equals(i) for i in ids]}, run))
        except CallError as error:
            logger.warning("could not read the findings to archive", extra={"error": str(error)})
            return list(findings)
        kept = []
        for finding in findings:
            if not asked(finding):
                kept.append(finding)
            elif (old := stored.get(finding["Id"])) is None:
                run.unchanged += 1
            elif (against := _against(finding, old, False, run)) is not None:
                kept.append(against)
        return kept

    def stored(
        self, product_arns: set[str], run: _Run, since: datetime | None = None
    ) -> dict[str, StoredFinding]:
        """The active findings of ours Security Hub holds for these products (GetFindings, 100 a
        page), and those archived since `since` (an event's newer reading of a resource deleted
        meanwhile). Older archived ones stay 90 days: with instance churn they would outnumber
        the fleet in pages (3 a second) and memory, and a scan has nothing to compare with them."""
        filters = {
            "ProductArn": [_equals(a) for a in sorted(product_arns)],
            "GeneratorId": [{"Value": GENERATOR_PREFIX, "Comparison": "PREFIX"}],
        }
        found = self._read({**filters, "RecordState": [_equals("ACTIVE")]}, run)
        if since is not None:
            # An End too, far ahead: the API reference makes both optional, but AWS is reported
            # to reject a Start alone (elastic/integrations#19101), which would cost every
            # event's read and so its change detection.
            until = since + OPEN_END
            recent = {
                "RecordState": [_equals("ARCHIVED")],
                "UpdatedAt": [{"Start": timestamp(since), "End": timestamp(until)}],
            }
            found.update(self._read({**filters, **recent}, run))
        return found

    def _read(self, filters: dict[str, Any], run: _Run) -> dict[str, StoredFinding]:
        """Every page of GetFindings. A NextToken given twice would page forever (botocore's
        paginators stop that too): the read fails, and the caller imports what it cannot
        compare."""
        found: dict[str, StoredFinding] = {}
        token = None
        seen: set[str] = set()
        while True:
            params: dict[str, Any] = {"Filters": filters, "MaxResults": MAX_FINDINGS_PER_CALL}
            if token:
                params["NextToken"] = token
            self._read_limiter.acquire()
            response = self._call_retrying(run, "get_findings", params)
            for f in response.get("Findings", []):
                found[f["Id"]] = StoredFinding(
                    (f.get("ProductFields") or {}).get(FINGERPRINT_FIELD),
                    parse_time(f.get("UpdatedAt")),
                    f.get("CreatedAt"),
                    kept_of_stored(f),
                )
            token = response.get("NextToken")
            if not token:
                return found
            if token in seen:
                raise CallError("RepeatedNextToken", "GetFindings gave the same NextToken twice")
            seen.add(token)

    def _call_retrying(self, run: _Run, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One optional call, retried with backoff while throttled (GetFindings allows 3 TPS)."""
        attempt = 1
        while True:
            try:
                return self._call(run, operation, params, optional=True)
            except CallError as error:
                if not error.throttled or attempt >= self._max_attempts:
                    raise
            self._sleep(backoff(attempt))
            attempt += 1

    def _import(self, findings: Sequence[dict[str, Any]], run: _Run) -> None:
        sized = []
        for finding in findings:
            size = finding_size(finding)
            if size > MAX_FINDING_BYTES:
                message = (
                    f"finding is {size} bytes; Security Hub accepts at most {MAX_FINDING_BYTES}"
                )
                run.failed.append(_entry(finding["Id"], "FindingTooLarge", message))
            else:
                sized.append((finding, size))
        for batch in batches(sized):
            unnamed = run.unnamed_failures
            accepted, rejected = self._send(
                run,
                "batch_import_findings",
                batch,
                lambda pending: {"Findings": pending},
                _import_rejections,
            )
            run.imported.update(f["Id"] for f in accepted)
            if run.unnamed_failures > unnamed:
                run.unconfirmed.update(f["Id"] for f in accepted)
            run.failed.extend(_entry(i, code, message) for i, (code, message) in rejected.items())
        if run.failed:
            self._log_failures("findings not imported", run.failed)

    def _resolve(
        self, findings: Sequence[dict[str, Any]], resolutions: Mapping[str, str], run: _Run
    ) -> None:
        product_arns = {f["Id"]: f["ProductArn"] for f in findings}
        by_note: dict[str, list[dict[str, str]]] = {}
        for finding_id, note in resolutions.items():
            if finding_id in run.superseded:
                continue  # the newer reading stands, with its own workflow status
            if finding_id not in product_arns:
                run.unresolved.append(
                    _entry(finding_id, "UnknownFinding", "not among the published findings")
                )
            elif finding_id not in run.imported and finding_id not in run.unresolved_fixes:
                run.unresolved.append(
                    _entry(finding_id, "ImportFailed", "not resolved because its import failed")
                )
            elif finding_id in run.unconfirmed:
                # Resolving a finding whose PASSED import may not have landed could mark the
                # stored FAILED one RESOLVED. If it did land, the next drift scan finds the fix
                # unresolved and resolves it (_resolve_missed).
                run.unresolved.append(
                    _entry(
                        finding_id,
                        "ImportUnconfirmed",
                        "not resolved: its import batch counted failures it did not name",
                    )
                )
            else:
                text = clip(note.strip() or f"resolved by {PRODUCT}", MAX_NOTE)
                identifier = {"Id": finding_id, "ProductArn": product_arns[finding_id]}
                by_note.setdefault(text, []).append(identifier)
        for text, identifiers in by_note.items():
            accepted, rejected = self._set_workflow(run, identifiers, text, "RESOLVED")
            run.resolved += accepted
            run.unresolved.extend(
                _entry(i, code, message) for i, (code, message) in rejected.items()
            )
        if run.unresolved:
            self._log_failures("findings not resolved", run.unresolved)

    def _reopen(self, findings: Sequence[dict[str, Any]], run: _Run) -> None:
        """Sets NEW again the still-failing findings a late RESOLVED mark of ours hid."""
        product_arns = {f["Id"]: f["ProductArn"] for f in findings}
        identifiers = [{"Id": i, "ProductArn": product_arns[i]} for i in sorted(run.reopen)]
        accepted, rejected = self._set_workflow(run, identifiers, REOPEN_NOTE, "NEW")
        run.reopened += accepted
        if rejected:
            run.errors.append(
                f"{len(rejected)} still-failing finding(s) marked RESOLVED could not be "
                f"reopened: {', '.join(sorted(rejected))}"
            )

    def _set_workflow(
        self, run: _Run, identifiers: list[dict[str, str]], note: str, status: str
    ) -> tuple[int, dict[str, tuple[str, str]]]:
        """BatchUpdateFindings, 100 findings a call: how many took `status` and `note`, and the
        errors of the others by Id."""
        accepted, rejected = 0, {}
        for start in range(0, len(identifiers), MAX_FINDINGS_PER_CALL):
            chunk = identifiers[start : start + MAX_FINDINGS_PER_CALL]
            done, refused = self._send(
                run,
                "batch_update_findings",
                chunk,
                _workflow_request(note, status),
                _update_rejections,
            )
            accepted += len(done)
            rejected.update(refused)
        return accepted, rejected

    def _send(
        self,
        run: _Run,
        operation: str,
        items: list[dict[str, Any]],
        request: Callable[[list[dict[str, Any]]], dict[str, Any]],
        rejections: Callable[[dict[str, Any], _Run], dict[str, tuple[str, str]]],
    ) -> tuple[list[dict[str, Any]], dict[str, tuple[str, str]]]:
        """Sends `items`, retrying throttled calls and the entries an answer rejects (only
        those, and not those refused for what they are: REFUSED).

        Returns the accepted items and, by Id, the last error of those that never got through.
        """
        pending, accepted = list(items), []
        errors: dict[str, tuple[str, str]] = {}
        refused: dict[str, tuple[str, str]] = {}
        for attempt in range(1, self._max_attempts + 1):
            if run.stopped:
                errors = {
                    p["Id"]: (run.stopped.code, "not sent: " + run.stopped.message) for p in pending
                }
                break
            if attempt > 1:
                self._sleep(backoff(attempt - 1))
            try:
                response = self._call(run, operation, request(pending))
            except CallError as error:
                errors = {p["Id"]: (error.code, error.message) for p in pending}
                if error.throttled:
                    logger.warning(
                        "Security Hub throttled the call",
                        extra={"operation": operation, "attempt": attempt},
                    )
                    continue
                break
            errors = rejections(response, run)
            if errors and len(errors) == len(pending) and {e[0] for e in errors.values()} <= DENIED:
                # Every entry refused for access (an account Security Hub is not enabled for
                # can answer so, entry by entry): no later call can succeed either.
                run.stopped = CallError("InvalidAccessException", next(iter(errors.values()))[1])
                run.errors.append(self._fatal_message(run.stopped))
            accepted += [p for p in pending if p["Id"] not in errors]
            refused |= {i: e for i, e in errors.items() if e[0] in REFUSED}
            pending = [p for p in pending if p["Id"] in errors and p["Id"] not in refused]
            if not pending or attempt == self._max_attempts:
                break
            logger.warning(
                "Security Hub rejected entries; retrying them",
                extra={
                    "operation": operation,
                    "attempt": attempt,
                    "rejected": len(pending),
                    "error_codes": dict(Counter(code for code, _ in errors.values())),
                },
            )
        return accepted, {**refused, **{p["Id"]: errors[p["Id"]] for p in pending}}

    def _call(
        self, run: _Run, operation: str, params: dict[str, Any], *, optional: bool = False
    ) -> dict[str, Any]:
        """One paced API call; a ClientError or endpoint error is recorded, raised as CallError.

        An `optional` call's failure (the caller has a fallback) is only logged, unless it is
        fatal for every call (Security Hub not enabled, access denied).
        """
        self._limiter.acquire()
        run.calls += 1
        try:
            response: dict[str, Any] = getattr(self._client, operation)(**params)
            return response
        except ClientError as error:
            info = error.response.get("Error", {})
            failure = CallError(
                info.get("Code") or "ClientError", info.get("Message") or str(error)
            )
        except (BotoCoreError, ResponseParserError) as error:  # unreachable, timeouts, a proxy
            failure = CallError(type(error).__name__, flat(str(error)))
            if not optional:
                run.stopped = failure
                run.errors.append(
                    f"cannot reach Security Hub in {self._region}: {failure.message}"
                    if isinstance(error, BotoCoreError)
                    else f"the answer of Security Hub in {self._region} was not AWS's (a proxy "
                    f"or wrong endpoint?): {failure.message}"
                )
        extra = {"operation": operation, "error_code": failure.code, "error": failure.message}
        if optional and failure.code not in FATAL_FOR_EVERY_CALL:
            logger.warning("optional Security Hub call failed", extra=extra)
            raise failure
        if failure.code in FATAL:
            run.stopped = failure
            run.errors.append(self._fatal_message(failure))
        elif not (failure.throttled or run.stopped):
            run.errors.append(f"{operation} failed in {self._region}: {failure}")
        if not failure.throttled:
            logger.error("Security Hub call failed", extra=extra)
        raise failure

    @property
    def _region(self) -> str:
        return str(
            getattr(getattr(self._client, "meta", None), "region_name", None) or "this region"
        )

    def _fatal_message(self, failure: CallError) -> str:
        if failure.code == "InvalidAccessException":
            return (
                f"Security Hub is not enabled in {self._region} for this account "
                f"(InvalidAccessException: {failure.message}); enable it or turn publishing off"
            )
        return f"Security Hub denied access in {self._region} ({failure.code}: {failure.message})"

    @staticmethod
    def _log_failures(message: str, entries: list[dict[str, str]]) -> None:
        logger.error(
            message,
            extra={
                "count": len(entries),
                "error_codes": dict(Counter(e["ErrorCode"] for e in entries)),
                "ids": [e["Id"] for e in entries],
            },
        )


def _workflow_request(note: str, status: str) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """BatchUpdateFindings parameters setting the identified findings' workflow, with `note`."""

    def request(identifiers: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "FindingIdentifiers": identifiers,
            "Workflow": {"Status": status},
            "Note": {"Text": note, "UpdatedBy": PRODUCT},
        }

    return request


def _import_rejections(response: dict[str, Any], run: _Run) -> dict[str, tuple[str, str]]:
    """FailedFindings by Id; a 200 answer can still reject findings (BatchImportFindings)."""
    rejected = {
        f.get("Id", ""): (f.get("ErrorCode") or "Unknown", f.get("ErrorMessage") or "")
        for f in response.get("FailedFindings", [])
    }
    failed_count = int(response.get("FailedCount", len(rejected)))
    run.unnamed_failures += max(0, failed_count - len(rejected))
    if failed_count != len(rejected):
        run.errors.append(
            f"BatchImportFindings reported FailedCount {failed_count} "
            f"but listed {len(rejected)} FailedFindings"
        )
        logger.error(
            "FailedCount disagrees with FailedFindings",
            extra={"failed_count": failed_count, "listed": len(rejected)},
        )
    return rejected


def _update_rejections(response: dict[str, Any], run: _Run) -> dict[str, tuple[str, str]]:
    """UnprocessedFindings by Id (BatchUpdateFindings)."""
    return {
        u.get("FindingIdentifier", {}).get("Id", ""): (
            u.get("ErrorCode") or "Unknown",
            u.get("ErrorMessage") or "",
        )
        for u in response.get("UnprocessedFindings", [])
    }
