"""The guardrail service: read a snapshot, run each control's check, fix (enforce), publish."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .controls import REGISTRY, Control, FixContext
from .controls.base import error_code
from .findings import (
    RESOLUTION_NOTE,
    build_finding,
    finding_id,
    generator_id,
    product_arn,
)
from .model import (
    AccountSnapshot,
    FixRecord,
    Outcome,
    ResourceType,
    Result,
    Status,
    flat,
    last_fix_time,
)
from .publisher import ArchiveMissing
from .reader import SnapshotReader
from .scope import Scope
from .settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """A control's result on one resource, with the fixes that addressed it (enforce mode)."""

    result: Result
    mode: str = "report"
    fixes: tuple[FixRecord, ...] = ()

    @property
    def remediated(self) -> bool:
        return (
            self.result.status is Status.FAILED
            and bool(self.fixes)
            and all(f.outcome.ok for f in self.fixes)
        )

    @property
    def left_failed(self) -> bool:
        return self.result.status is Status.FAILED and not self.remediated

    @property
    def fixed_at(self) -> datetime | None:
        """When the last of its fixes was made: from then on the resource is known PASSED."""
        return last_fix_time(self.fixes)

    @property
    def remediation(self) -> str:
        """What was done about the result, for people and the CLI's JSON."""
        if self.result.status is not Status.FAILED:
            return ""
        if self.mode == "report":
            return "report only (mode report)"
        if not self.fixes:
            return "no fix available"
        parts = []
        for fix in self.fixes:
            text = f"{fix.action}: {fix.outcome.value}"
            if fix.error_code:
                text += f" ({fix.error_code})"
            if fix.reason:
                text += f" - {fix.reason}"
            parts.append(text)
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """One entry of the CLI's JSON `results` (scan and replay alike)."""
        return {
            "control": self.result.control,
            "resource_type": self.result.resource_type.value,
            "resource_id": self.result.resource_id,
            "region": self.result.region,
            "status": self.result.status.value,
            "severity": self.result.severity,
            "reason": self.result.reason,
            "remediation": self.remediation,
        }


@dataclass(frozen=True)
class Stop:
    """A control's step stopped by what is not an AWS error (an answer without a field its
    model calls optional, a defect)."""

    control: str
    step: str  # check | fix | re-check | finding
    error: str

    def __str__(self) -> str:
        return f"{self.control} {self.step} stopped: {self.error}"[:300]


def exempted(
    control: Control, failed: list[Result], snapshot: AccountSnapshot
) -> tuple[list[Result], list[FixRecord]]:
    """The failed results a fix may act on, and a SKIPPED record for each instance its owners
    exempt (EXEMPT_TAG): judged and reported as it is, never changed. A security group an
    exempt instance uses is the SSH control's to leave (closing it closes the instance)."""
    acting, exempt = [], []
    for result in failed:
        instance = snapshot.instances.get(result.resource_id)
        why = (
            instance.exemption
            if instance and result.resource_type is ResourceType.INSTANCE
            else None
        )
        if why is None:
            acting.append(result)
            continue
        exempt.append(
            FixRecord(
                control.id,
                result.resource_id,
                "fix",
                Outcome.SKIPPED,
                reason=f"exempt from fixes by its tag {why}: reported, not changed (a role it "
                "shares with instances that are not exempt is still fixed for them)",
                covers=(result.resource_id,),
            )
        )
    return acting, exempt


def stopped(control: Control, step: str, error: Exception, crashed: list[Stop]) -> None:
    """Logged with its traceback, and named."""
    logger.exception("control step stopped", extra={"control": control.id, "step": step})
    crashed.append(Stop(control.id, step, f"{type(error).__name__}: {flat(str(error))}"))


def partly_applied(fixes: Sequence[FixRecord]) -> bool:
    """Some fixes changed the resource, others were skipped or failed."""
    return any(f.outcome is Outcome.APPLIED for f in fixes) and not all(f.outcome.ok for f in fixes)


@dataclass
class ScanReport:
    account_id: str
    region: str
    evaluations: list[Evaluation] = field(default_factory=list)
    fixes: list[FixRecord] = field(default_factory=list)
    published: Any = None  # PublishSummary, or None when not published
    snapshot: AccountSnapshot | None = None
    full_scan: bool = False
    # When the account was read: the findings' UpdatedAt, so a later reading (an event during a
    # long drift scan) is never overwritten by an older one (Security Hub keeps the latest).
    read_at: datetime | None = None
    # Steps that stopped: a fix (its results recorded FAILED), a check, the re-check after
    # fixes, a finding. What the others did is published; the handlers then fail the
    # invocation, so the Lambda's Errors alarm tells a person.
    crashed: list[Stop] = field(default_factory=list)
    # Results for what no longer exists: what an event named (replay.gone), or what a fix found
    # deleted since the read. Archived as Security Hub holds them, so read back first (a fixed
    # resource stays PASSED, RESOLVED).
    gone: list[Result] = field(default_factory=list)
    # The deployment's own full scan (the drift scan): the findings of controls it does not
    # enable are archived, as Security Hub does for a control it disables.
    retire_disabled: bool = False

    @property
    def left_failed(self) -> list[Evaluation]:
        return [e for e in self.evaluations if e.left_failed]

    @property
    def unjudged(self) -> set[str]:
        """Controls whose check (or one of whose findings) stopped, or that could not judge
        some resources (Result.others_unjudged): a full scan does not archive their stored
        findings as gone."""
        stopped = {s.control for s in self.crashed if s.step in ("check", "finding")}
        return stopped | {e.result.control for e in self.evaluations if e.result.others_unjudged}

    @property
    def stopped(self) -> list[str]:
        """Each stop as one line (the CLI's JSON and stderr, the handlers' summary)."""
        return [str(s) for s in self.crashed]


def ended(result: Result, snapshot: AccountSnapshot) -> bool:
    """A result for a terminated or shutting-down instance (a group's former instance, say),
    whose finding goes in archived: only if stored, as for a deleted resource (a drift scan
    imports none for an instance it never saw running)."""
    if result.resource_type is not ResourceType.INSTANCE:
        return False
    rid = result.resource_id
    instance = snapshot.instances.get(rid) or snapshot.bystanders.get(rid)
    return instance is not None and not instance.evaluated


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while fixing or publishing: the report holds the fixes made before it;
    `publishing`: Security Hub may have taken some of the findings."""

    def __init__(self, report: ScanReport, *, publishing: bool = False) -> None:
        super().__init__()
        self.report = report
        self.publishing = publishing


class Guardrail:
    """One account-region. Collaborators are injected; nothing here builds a client."""

    def __init__(
        self,
        clients: Any,
        settings: Settings,
        *,
        account_id: str | None = None,
        publisher: Any = None,
        controls: Sequence[Control] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clients, self.settings, self.publisher, self.clock = (
            clients,
            settings,
            publisher,
            clock,
        )
        self.monotonic = monotonic
        self._account_id = account_id
        self.controls = list(REGISTRY.values()) if controls is None else list(controls)

    @property
    def account_id(self) -> str:
        if not self._account_id:
            self._account_id = self.clients.account_id
        return self._account_id

    def selected(self, scope: Scope) -> list[Control]:
        return [
            c
            for c in self.controls
            if self.settings.enabled(c.id) and (not scope.controls or c.id in scope.controls)
        ]

    def run(
        self,
        scope: Scope | None = None,
        *,
        fix_deadline: float = math.inf,
        retire_disabled: bool = False,
    ) -> ScanReport:
        """Read, check, fix (enforce), publish. No fix starts once `monotonic()` reaches
        `fix_deadline`: each is SKIPPED for the next scan, and what was done is still published.
        `retire_disabled` (a full scan of the deployment's settings, never a person's look with
        some controls) archives what the controls not enabled left in Security Hub."""
        scope = scope or Scope.everything()
        controls = self.selected(scope)
        reader = SnapshotReader(
            self.clients, self.settings, self.account_id, self.clients.partition
        )
        read_at = self.clock()
        snapshot = reader.read(scope, {c.id for c in controls}, read_at)
        report = ScanReport(
            self.account_id,
            self.clients.region,
            snapshot=snapshot,
            full_scan=scope.full,
            read_at=read_at,
            retire_disabled=retire_disabled and scope.full,
        )
        ctx = FixContext(self.clients, self.settings, self.clock, fix_deadline, self.monotonic)
        try:
            self._judge(controls, snapshot, ctx, report)
        except KeyboardInterrupt as interrupt:  # a person's Ctrl-C (the CLI): say what changed
            raise Interrupted(report) from interrupt
        self.publish_into(report)
        return report

    def publish_into(self, report: ScanReport) -> None:
        """Publish the report's findings, with a publisher and publishing on (Ctrl-C: the
        fixes made are listed, the findings said to be partly published at most)."""
        if self.publisher is None or not self.settings.publish:
            return
        try:
            report.published = self.publish(report)
        except KeyboardInterrupt as interrupt:
            raise Interrupted(report, publishing=True) from interrupt

    def _judge(
        self,
        controls: list[Control],
        snapshot: AccountSnapshot,
        ctx: FixContext,
        report: ScanReport,
    ) -> None:
        """Each control: check, fix (enforce), re-judge what its fixes changed; into `report`."""
        for control in controls:
            try:
                results = control.check(snapshot, self.settings)
            except Exception as error:  # one control's defect never blinds the others
                stopped(control, "check", error, report.crashed)
                continue
            mode = self.settings.mode_for(control.id)
            failed = [r for r in results if r.status is Status.FAILED]
            failed, exempt = exempted(control, failed, snapshot)
            fixing = replace(ctx, made=[])
            try:
                records = (
                    self._remediate(control, failed, snapshot, fixing, report.crashed)
                    if mode == "enforce" and failed
                    else []
                )
                records += exempt if mode == "enforce" else []
            except KeyboardInterrupt:
                report.fixes += fixing.made  # those made before it
                raise
            report.fixes += records
            covering: dict[str, list[FixRecord]] = {}
            for record in records:
                for resource_id in record.covers or (record.resource_id,):
                    covering.setdefault(resource_id, []).append(record)
            try:
                settled = control.settle(snapshot, records) if records else snapshot
                rejudged = (
                    {r.key: r for r in control.check(settled, self.settings)}
                    if settled is not snapshot
                    else {}
                )
            except Exception as error:  # the results stand as read, with their fix records
                stopped(control, "re-check", error, report.crashed)
                rejudged = {}
            deleted = {r.resource_id: r.reason for r in records if r.gone}
            for result in results:
                fixes = (
                    tuple(covering.get(result.resource_id, ()))
                    if result.status is Status.FAILED
                    else ()
                )
                if result.follows_fix and not fixes:
                    continue  # nothing it shares was fixed: its finding stands as it is
                if result.resource_id in deleted:
                    # Its fix found it deleted since the read: archived as a deleted resource's
                    # finding is (read back first), not PASSED and RESOLVED as if fixed.
                    result = snapshot.not_applicable(
                        result.control,
                        result.resource_type,
                        result.resource_id,
                        deleted[result.resource_id],
                    )
                    report.gone.append(result)
                    fixes = ()
                elif partly_applied(fixes) and result.key in rejudged:
                    # Reported as the applied fixes left it, not as it was read.
                    result = rejudged[result.key]
                report.evaluations.append(Evaluation(result, mode, fixes))
            for record in records:
                logger.info("fix", extra={"fix": record.as_dict()})

    @staticmethod
    def _remediate(
        control: Control,
        failed: list[Result],
        snapshot: AccountSnapshot,
        ctx: FixContext,
        crashed: list[Stop],
    ) -> list[FixRecord]:
        """Controls record per-resource AWS errors themselves; anything that escapes is recorded
        against every result of the control but the resources of the fixes it finished, whose
        records stand. A result those only cover (the instances of a closed group, of a role
        given its policy) also gets the failure: which of the control's fixes it still waited
        for is not known here, so it stays FAILED for the next run rather than read fixed. One
        control's failure never stops the others, nor publishing. What is not an AWS error is
        also added to `crashed`."""
        try:
            return control.remediate(failed, snapshot, ctx)
        except Exception as error:  # logged with its traceback, and recorded
            if isinstance(error, (ClientError, BotoCoreError)):
                logger.exception("remediation failed", extra={"control": control.id})
            else:
                stopped(control, "fix", error, crashed)
            done = {r.resource_id for r in ctx.made}
            return ctx.made + [
                FixRecord(
                    control.id,
                    r.resource_id,
                    "remediate",
                    Outcome.FAILED,
                    reason=str(error)[:200],
                    error_code=error_code(error),
                    covers=(r.resource_id,),
                )
                for r in failed
                if r.resource_id not in done
            ]

    @staticmethod
    def _finding(
        evaluation: Evaluation, control: Control, snapshot: AccountSnapshot, now: datetime
    ) -> dict[str, Any]:
        result = evaluation.result
        return build_finding(
            result,
            control,
            # A resource we fixed is known PASSED as of its fix, not the read.
            generated_at=(evaluation.fixed_at or now) if evaluation.remediated else now,
            fixes=evaluation.fixes,
            remediated=evaluation.remediated,
            instance=snapshot.instances.get(result.resource_id)
            or snapshot.bystanders.get(result.resource_id)
            if result.resource_type is ResourceType.INSTANCE
            else None,
            group=snapshot.security_groups.get(result.resource_id)
            if result.resource_type is ResourceType.SECURITY_GROUP
            else None,
        )

    def publish(self, report: ScanReport) -> Any:
        snapshot = report.snapshot
        assert snapshot is not None
        now = report.read_at or self.clock()
        findings, resolutions, read_back = [], {}, []
        gone = {r.key for r in report.gone}
        for evaluation in report.evaluations:
            result = evaluation.result
            control = next(c for c in self.controls if c.id == result.control)
            try:
                finding = self._finding(evaluation, control, snapshot, now)
            except Exception as error:  # that finding is left as stored, the others go in
                stopped(control, "finding", error, report.crashed)
                continue
            findings.append(finding)
            if evaluation.remediated:
                resolutions[finding["Id"]] = RESOLUTION_NOTE
            if result.key in gone or ended(result, snapshot):
                read_back.append(finding["Id"])  # archived only if Security Hub holds it
        if report.full_scan:
            # A full scan mostly repeats what Security Hub holds: import what changed (and each
            # finding at least every finding_refresh_days; 0: all), not every result every hour.
            refresh_before = now - timedelta(days=self.settings.finding_refresh_days)
            # What a full scan no longer produces is gone (deleted, detached, or its control
            # taken out of the deployment): archive it.
            judged = [c for c in self.selected(Scope.everything()) if c.id not in report.unjudged]
            retired = [c for c in self.controls if not self.settings.enabled(c.id)]
            archive = ArchiveMissing(
                product_arn(snapshot.partition, snapshot.region, snapshot.account_id),
                frozenset(
                    generator_id(c.id) for c in judged + (retired if report.retire_disabled else [])
                ),
                now,
            )
            return self.publisher.publish(
                findings, resolutions, refresh_before=refresh_before, archive=archive
            )
        return self.publisher.publish(findings, resolutions, read_back=read_back)


__all__ = ["Evaluation", "Guardrail", "ScanReport", "finding_id", "product_arn"]
