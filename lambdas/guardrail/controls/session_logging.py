"""ssm-session-logging: the region's Session Manager sessions are logged, and instances can deliver.

Region: the preferences document SSM-SessionManagerRunShell must exist and name an S3 bucket or a
CloudWatch log group (with encryption on). Instance: when the region logs (or the guardrail is
about to make it log to its own destinations), the instance's role must be allowed to deliver;
that is established with IAM policy simulation (SimulatePrincipalPolicy) of the role, once per
distinct role, which honours inline policies, explicit denies and permission boundaries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from ..model import (
    SESSION_DOCUMENT,
    AccountSnapshot,
    FixRecord,
    Outcome,
    ResourceType,
    Result,
    SessionPreferences,
    Status,
)
from ..settings import Settings
from .base import FixContext, Permission, error_code

DEFAULT_CONTENT: dict[str, Any] = {
    "schemaVersion": "1.0",
    "description": "Document to hold regional settings for Session Manager",
    "sessionType": "Standard_Stream",
    "inputs": {},
}
# The preferences fix's action, by whether the document existed (indexed by prefs.exists).
PREFERENCE_ACTIONS = ("create Session Manager preferences", "update Session Manager preferences")


def guardrail_key_missing(prefs: SessionPreferences, settings: Settings) -> bool:
    """Sessions log to the guardrail's own destinations only, without the guardrail's KMS key
    (the preferences were written while a role could not use it, or by an event)."""
    ours = {settings.session_log_bucket, settings.session_log_group} - {""}
    theirs = {prefs.s3_bucket, prefs.log_group} - {""}
    return bool(
        prefs.logging_on
        and settings.session_log_kms_key
        and not prefs.inputs.get("kmsKeyId")
        and theirs <= ours
    )


def delivery_target(prefs: SessionPreferences | None, settings: Settings) -> dict[str, str]:
    """Where session logs go (or will go once the guardrail turns logging on, or names its key):
    the region's configured destinations, else the guardrail's own. Empty when there is nowhere
    to deliver."""
    if prefs is None:
        return {}
    if prefs.logging_on:
        key = str(prefs.inputs.get("kmsKeyId") or "")
        return {
            "bucket": prefs.s3_bucket,
            "prefix": str(prefs.inputs.get("s3KeyPrefix") or ""),
            "log_group": prefs.log_group,
            "kms_key": settings.session_log_kms_key
            if guardrail_key_missing(prefs, settings)
            else key,
        }
    if not (settings.session_log_bucket or settings.session_log_group):
        return {}
    return {
        "bucket": settings.session_log_bucket,
        "prefix": settings.session_log_prefix if settings.session_log_bucket else "",
        "log_group": settings.session_log_group,
        "kms_key": settings.session_log_kms_key,
    }


def delivery_requirements(
    target: Mapping[str, str], partition: str, region: str, account: str
) -> list[tuple[str, str]]:
    """The (action, resource ARN) pairs a role needs to deliver session logs to `target`."""
    pairs: list[tuple[str, str]] = []
    if target.get("bucket"):
        bucket = f"arn:{partition}:s3:::{target['bucket']}"
        prefix = target.get("prefix", "").strip("/")
        key = f"{prefix}/session.log" if prefix else "session.log"
        pairs += [("s3:PutObject", f"{bucket}/{key}"), ("s3:GetEncryptionConfiguration", bucket)]
    if target.get("log_group"):
        group = f"arn:{partition}:logs:{region}:{account}:log-group:{target['log_group']}"
        pairs += [
            ("logs:CreateLogStream", f"{group}:log-stream:session"),
            ("logs:PutLogEvents", f"{group}:log-stream:session"),
            ("logs:DescribeLogStreams", f"{group}:log-stream:session"),
            ("logs:DescribeLogGroups", f"arn:{partition}:logs:{region}:{account}:log-group:*"),
        ]
    key = key_arn(target.get("kms_key", ""), partition, region, account)
    if key:
        pairs += [("kms:Decrypt", key), ("kms:GenerateDataKey", key)]
    return pairs


def key_arn(key_id: str, partition: str, region: str, account: str) -> str:
    """The key ARN IAM authorizes against, from a key ARN or a bare key id; "" for an alias
    (only KMS can resolve it, so key access is then not evaluated)."""
    if not key_id or "alias/" in key_id:
        return ""
    if key_id.startswith("arn:"):
        return key_id
    return f"arn:{partition}:kms:{region}:{account}:key/{key_id}"


def flag_on(value: Any) -> bool:
    """A preferences flag as the SSM Agent reads it: missing (or anything but true) is off."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def unencrypted(prefs: SessionPreferences) -> list[str]:
    """Configured destinations whose encryption flag is not on."""
    off = []
    if prefs.s3_bucket and not flag_on(prefs.inputs.get("s3EncryptionEnabled")):
        off.append("s3EncryptionEnabled")
    if prefs.log_group and not flag_on(prefs.inputs.get("cloudWatchEncryptionEnabled")):
        off.append("cloudWatchEncryptionEnabled")
    return off


def desired_inputs(prefs: SessionPreferences, settings: Settings) -> tuple[dict[str, Any], str]:
    """The inputs the fix writes: every owner's input kept, logging and encryption turned on.

    Returns the new inputs and, when nothing can be done, why not.
    """
    inputs = dict(prefs.inputs)
    if not prefs.logging_on:
        if not (settings.session_log_bucket or settings.session_log_group):
            return inputs, "no GUARDRAIL_SESSION_LOG_BUCKET or _GROUP is set: nowhere to log"
        if settings.session_log_bucket:
            inputs.update(s3BucketName=settings.session_log_bucket, s3EncryptionEnabled=True)
            inputs.setdefault("s3KeyPrefix", settings.session_log_prefix.rstrip("/"))
        if settings.session_log_group:
            inputs.update(
                cloudWatchLogGroupName=settings.session_log_group, cloudWatchEncryptionEnabled=True
            )
            inputs.setdefault("cloudWatchStreamingEnabled", True)
        if settings.session_log_kms_key and not inputs.get("kmsKeyId"):
            inputs["kmsKeyId"] = settings.session_log_kms_key
        return inputs, ""
    if prefs.s3_bucket and not flag_on(inputs.get("s3EncryptionEnabled")):
        # Every S3 bucket has default encryption (SSE-S3) since January 2023, so this is safe.
        inputs["s3EncryptionEnabled"] = True
    if prefs.log_group and not flag_on(inputs.get("cloudWatchEncryptionEnabled")):
        if prefs.log_group != settings.session_log_group:
            # Session Manager refuses to start sessions if the group is not KMS-encrypted.
            return inputs, (
                f"log group {prefs.log_group} is not the guardrail's: turning on "
                "cloudWatchEncryptionEnabled could block sessions; encrypt it first"
            )
        inputs["cloudWatchEncryptionEnabled"] = True
    if guardrail_key_missing(prefs, settings):
        inputs["kmsKeyId"] = settings.session_log_kms_key
    return inputs, ""


def key_hold(
    prefs: SessionPreferences, settings: Settings, keyless_roles: Sequence[str], full: bool
) -> str:
    """Why the preferences must not name the guardrail's KMS key now ("" when they may).

    A key a role cannot use stops every session of its instances, so only a full scan, which
    has judged every role, names it, and only once no role is left without it.
    """
    inputs, _ = desired_inputs(prefs, settings)
    if not inputs.get("kmsKeyId") or prefs.inputs.get("kmsKeyId"):
        return ""  # nothing to name, or the owners named their own key
    if keyless_roles:
        return (
            f"kmsKeyId left unset: role(s) {', '.join(keyless_roles)} cannot use the key and "
            "their sessions would stop; grant them kms:Decrypt on it"
        )
    if not full:
        return "kmsKeyId left unset until a drift scan has checked that every role can use the key"
    return ""


class SessionLogging:
    id = "ssm-session-logging"
    title = "Session Manager sessions are not logged"
    description = (
        "Session Manager preferences (document SSM-SessionManagerRunShell) send no session logs "
        "to S3 or CloudWatch Logs, send them unencrypted, or an instance's role cannot deliver them."
    )
    related_requirements: tuple[str, ...] = ()  # no Security Hub control covers session logging
    finding_types = (
        "Software and Configuration Checks/AWS Security Best Practices",
        "Software and Configuration Checks/Industry and Regulatory Standards/NIST 800-53 Controls",
    )
    recommendation = (
        "Set Session Manager preferences to log sessions to an encrypted S3 bucket or CloudWatch "
        "log group, and grant instance roles s3:PutObject / logs:PutLogEvents / kms:GenerateDataKey "
        "on those destinations."
    )
    recommendation_url = (
        "https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-logging.html"
    )
    read_permissions = (
        Permission(
            ("ssm:GetDocument", "ssm:DescribeDocument"),
            resources=(
                f"arn:{{partition}}:ssm:{{region}}:{{account}}:document/{SESSION_DOCUMENT}",
            ),
            why="the region's preferences",
        ),
        Permission(
            ("iam:SimulatePrincipalPolicy",),
            resources=("arn:{partition}:iam::{account}:role/*",),
            why="whether each distinct role may deliver session logs",
        ),
    )
    fix_permissions = (
        Permission(
            ("ssm:CreateDocument", "ssm:UpdateDocument", "ssm:UpdateDocumentDefaultVersion"),
            resources=(
                f"arn:{{partition}}:ssm:{{region}}:{{account}}:document/{SESSION_DOCUMENT}",
            ),
            why="create or update the preferences and make the new version the default",
        ),
        Permission(
            ("iam:AttachRolePolicy",),
            resources=("arn:{partition}:iam::{account}:role/*",),
            conditions={"ArnEquals": {"iam:PolicyARN": ["{log_delivery_policy_arn}"]}},
            why="give an instance role the guardrail's log-delivery policy",
        ),
    )
    no_fix_reason = ""

    def check(self, snapshot: AccountSnapshot, settings: Settings) -> list[Result]:
        prefs = snapshot.session_preferences
        results: list[Result] = []
        if prefs is not None:
            results.append(self._region_result(prefs, snapshot, settings))
        target = snapshot.delivery_target
        for instance in snapshot.instances.values():
            iid = instance.instance_id
            if not instance.evaluated:  # terminated or shutting down: its finding is archived
                results.append(snapshot.not_evaluated(self.id, instance))
                continue
            role = snapshot.role_of(instance)
            # prefs is None when a targeted read skipped them: no evaluated instance had a role.
            if role is None and (target or prefs is None):
                results.append(
                    snapshot.not_applicable(
                        self.id,
                        ResourceType.INSTANCE,
                        iid,
                        "no instance role (see ssm-instance-role)",
                    )
                )
                continue
            if role is None or not target:
                continue
            delivery = snapshot.delivery.get(role.name)
            details = {"role_name": role.name, "target": dict(target)}
            if delivery is None:
                results.append(
                    snapshot.not_applicable(
                        self.id,
                        ResourceType.INSTANCE,
                        iid,
                        "delivery not evaluated",
                        details=details,
                    )
                )
            elif delivery.allowed:
                results.append(
                    snapshot.result(
                        self.id,
                        ResourceType.INSTANCE,
                        iid,
                        Status.PASSED,
                        "INFORMATIONAL",
                        f"role {role.name} may deliver session logs"
                        + (
                            " (kmsKeyId is an alias: key access not evaluated)"
                            if "alias/" in target.get("kms_key", "")
                            else ""
                        ),
                        details=details,
                    )
                )
            else:
                results.append(
                    snapshot.result(
                        self.id,
                        ResourceType.INSTANCE,
                        iid,
                        Status.FAILED,
                        "MEDIUM",
                        f"role {role.name} cannot deliver session logs: not allowed "
                        f"{', '.join(delivery.denied)}",
                        details={**details, "denied": list(delivery.denied)},
                    )
                )
        return results

    def _region_result(
        self, prefs: SessionPreferences, snapshot: AccountSnapshot, settings: Settings
    ) -> Result:
        account = snapshot.account_id
        if not prefs.exists:
            return snapshot.result(
                self.id,
                ResourceType.ACCOUNT,
                account,
                Status.FAILED,
                "MEDIUM",
                f"no Session Manager preferences ({SESSION_DOCUMENT} absent): sessions "
                "are not logged",
            )
        if not prefs.logging_on:
            return snapshot.result(
                self.id,
                ResourceType.ACCOUNT,
                account,
                Status.FAILED,
                "MEDIUM",
                "Session Manager preferences name neither an S3 bucket nor a CloudWatch "
                "log group: sessions are not logged",
            )
        where = " and ".join(
            filter(
                None,
                [
                    prefs.s3_bucket and f"s3://{prefs.s3_bucket}",
                    prefs.log_group and f"log group {prefs.log_group}",
                ],
            )
        )
        off = unencrypted(prefs)
        if off:
            return snapshot.result(
                self.id,
                ResourceType.ACCOUNT,
                account,
                Status.FAILED,
                "LOW",
                f"sessions are logged to {where} but {', '.join(off)} is false",
                details={"unencrypted": off},
            )
        if guardrail_key_missing(prefs, settings):
            return snapshot.result(
                self.id,
                ResourceType.ACCOUNT,
                account,
                Status.FAILED,
                "LOW",
                f"sessions are logged to {where} but not encrypted with the guardrail's KMS key "
                "(kmsKeyId unset)",
            )
        return snapshot.result(
            self.id,
            ResourceType.ACCOUNT,
            account,
            Status.PASSED,
            "INFORMATIONAL",
            f"sessions are logged to {where}, encrypted",
        )

    def settle(self, snapshot: AccountSnapshot, records: Sequence[FixRecord]) -> AccountSnapshot:
        """With the preferences written but the key held back, the region is re-judged on the
        preferences as written (logging on, FAILED LOW), not as they were read."""
        prefs = snapshot.session_preferences
        written = [
            r.after
            for r in records
            if r.action in PREFERENCE_ACTIONS
            and r.outcome is Outcome.APPLIED
            and isinstance(r.after, Mapping)
        ]
        if prefs is None or not written:
            return snapshot
        content = {**(dict(prefs.content) or DEFAULT_CONTENT), "inputs": dict(written[-1])}
        return replace(
            snapshot,
            session_preferences=SessionPreferences(True, dict(written[-1]), content),
        )

    def remediate(
        self, failed: Sequence[Result], snapshot: AccountSnapshot, ctx: FixContext
    ) -> list[FixRecord]:
        # Roles first: preferences that turn on KMS session encryption stop every session on an
        # instance whose role cannot use the key, so they wait for the grants and then only name
        # the key if no role is left without it.
        records = []
        by_role: dict[str, list[str]] = {}
        for result in failed:
            if result.resource_type is ResourceType.INSTANCE:
                by_role.setdefault(result.details["role_name"], []).append(result.resource_id)
        for role_name, instance_ids in by_role.items():
            records.append(self._grant_delivery(role_name, instance_ids, snapshot, ctx))
        granted = {r.resource_id for r in records if r.outcome is Outcome.APPLIED}
        keyless = sorted(
            role
            for role, ids in by_role.items()
            if role not in granted
            and any(
                d.startswith("kms:")
                for r in failed
                if r.resource_id in ids
                for d in r.details.get("denied", ())
            )
        )
        prefs = snapshot.session_preferences
        if prefs is not None and any(r.resource_type is ResourceType.ACCOUNT for r in failed):
            account = snapshot.account_id
            hold = key_hold(prefs, ctx.settings, keyless, snapshot.full)
            fixed = [self._fix_preferences(prefs, account, ctx, without_key=bool(hold))]
            if hold and fixed[0].outcome is not Outcome.FAILED:
                # Logging is on; the key is not: the region's result stays FAILED (LOW).
                fixed.append(
                    FixRecord(
                        self.id,
                        account,
                        "name the guardrail's KMS key",
                        Outcome.SKIPPED,
                        reason=hold,
                        covers=(account,),
                    )
                )
            records[:0] = fixed
        return records

    def _fix_preferences(
        self,
        prefs: SessionPreferences,
        account: str,
        ctx: FixContext,
        *,
        without_key: bool = False,
    ) -> FixRecord:
        action = PREFERENCE_ACTIONS[prefs.exists]
        inputs, why_not = desired_inputs(prefs, ctx.settings)
        before = dict(prefs.inputs) if prefs.exists else None
        if without_key and not prefs.inputs.get("kmsKeyId"):
            inputs.pop("kmsKeyId", None)
        if why_not:
            return FixRecord(
                self.id, account, action, Outcome.SKIPPED, before, None, why_not, covers=(account,)
            )
        if prefs.exists and inputs == dict(prefs.inputs):
            return FixRecord(
                self.id,
                account,
                action,
                Outcome.ALREADY_COMPLIANT,
                before,
                before,
                covers=(account,),
            )
        content = {**(dict(prefs.content) or DEFAULT_CONTENT), "inputs": inputs}
        body = json.dumps(content)
        ssm = ctx.clients.ssm
        try:
            if not prefs.exists:
                try:
                    ssm.create_document(
                        Name=SESSION_DOCUMENT,
                        Content=body,
                        DocumentType="Session",
                        DocumentFormat="JSON",
                    )
                except ClientError as error:
                    if error_code(error) != "DocumentAlreadyExists":
                        raise
                    # Created meanwhile (a concurrent run or a person): update it like any other.
                    self._update(ssm, body)
            else:
                self._update(ssm, body)
        except ClientError as error:
            return FixRecord(
                self.id,
                account,
                action,
                Outcome.FAILED,
                before,
                inputs,
                "preferences not changed",
                error_code(error),
                covers=(account,),
            )
        return FixRecord(
            self.id,
            account,
            action,
            Outcome.APPLIED,
            before,
            inputs,
            "sessions now logged with encryption; other preferences kept",
            covers=(account,),
            at=ctx.clock(),
        )

    @staticmethod
    def _update(ssm: Any, body: str) -> None:
        """UpdateDocument makes a new version but not the default: promote it explicitly."""
        try:
            version = ssm.update_document(
                Name=SESSION_DOCUMENT,
                Content=body,
                DocumentVersion="$LATEST",
                DocumentFormat="JSON",
            )["DocumentDescription"]["DocumentVersion"]
        except ClientError as error:
            if error_code(error) != "DuplicateDocumentContent":
                raise
            # $LATEST already holds this content (an earlier run stopped before promoting it).
            version = ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]["LatestVersion"]
        ssm.update_document_default_version(Name=SESSION_DOCUMENT, DocumentVersion=version)

    def _grant_delivery(
        self, role_name: str, instance_ids: list[str], snapshot: AccountSnapshot, ctx: FixContext
    ) -> FixRecord:
        action, covers = "attach log-delivery policy", tuple(instance_ids)
        settings, target = ctx.settings, snapshot.delivery_target
        role = snapshot.roles.get(role_name)
        before = sorted(role.attached_policy_arns) if role else []
        ours = {settings.session_log_bucket, settings.session_log_group} - {""}
        theirs = {target.get("bucket", ""), target.get("log_group", "")} - {""}
        delivery = snapshot.delivery.get(role_name)
        if not settings.log_delivery_policy_arn:
            reason = "GUARDRAIL_LOG_DELIVERY_POLICY_ARN is not set"
        elif delivery is not None and delivery.explicitly_denied:
            # An explicit Deny wins over any Allow; a permissions boundary caps every policy.
            reason = (
                f"an explicit Deny or the permissions boundary blocks "
                f"{', '.join(delivery.explicitly_denied)}: attaching a policy cannot override "
                "it; change the Deny or the boundary"
            )
        elif settings.log_delivery_policy_arn in before:
            reason = (
                "the log-delivery policy is already attached and delivery is still not allowed "
                "(a permissions boundary?): attaching again cannot help"
            )
        elif not theirs <= ours:
            reason = (
                f"sessions log to {', '.join(sorted(theirs - ours))}, not the guardrail's "
                "destinations: grant delivery there yourself"
            )
        elif not settings.modify_existing_roles:
            reason = "GUARDRAIL_MODIFY_EXISTING_ROLES=false: report only"
        else:
            reason = ""
        if reason:
            return FixRecord(
                self.id, role_name, action, Outcome.SKIPPED, before, None, reason, covers=covers
            )
        try:
            ctx.clients.iam.attach_role_policy(
                RoleName=role_name, PolicyArn=settings.log_delivery_policy_arn
            )
        except ClientError as error:
            return FixRecord(
                self.id,
                role_name,
                action,
                Outcome.FAILED,
                before,
                None,
                "attach failed",
                error_code(error),
                covers=covers,
            )
        return FixRecord(
            self.id,
            role_name,
            action,
            Outcome.APPLIED,
            before,
            sorted({*before, settings.log_delivery_policy_arn}),
            f"attached the guardrail's log-delivery policy to {role_name}",
            covers=covers,
            at=ctx.clock(),
        )


SESSION_LOGGING = SessionLogging()
