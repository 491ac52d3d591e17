"""ssm-session-logging: the region's Session Manager sessions are logged, and instances can deliver.

Region: the preferences document SSM-SessionManagerRunShell must exist and name an S3 bucket or a
CloudWatch log group (with encryption on). Instance: when the region logs (or the guardrail is
about to make it log to its own destinations), the instance's role must be allowed to deliver;
that is established with IAM policy simulation (SimulatePrincipalPolicy) of the role, once per
distinct role, which honours inline policies, explicit denies and permission boundaries.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import ClientError

from ..model import (
    SESSION_DOCUMENT,
    AccountSnapshot,
    DeliveryCheck,
    FixRecord,
    Outcome,
    ResourceType,
    Result,
    SessionPreferences,
    Status,
    undo_part,
)
from ..settings import Settings
from .base import (
    OUT_OF_TIME,
    FixContext,
    Permission,
    answer_may_be_lost,
    assumed_beyond_ec2,
    attach_failed,
    beyond_the_event,
    detach_hint,
    error_code,
)

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
        and not prefs.session_key
        and theirs <= ours
    )


def guardrail_prefix(settings: Settings) -> str:
    """The S3 key prefix the guardrail's log-delivery policy grants, as the preferences name it."""
    return settings.session_log_prefix.strip("/") if settings.session_log_bucket else ""


def under(prefix: str, granted: str) -> bool:
    """Whether keys under `prefix` fall under the `granted` prefix ("" grants the whole bucket)."""
    prefix = prefix.strip("/")
    return not granted or prefix == granted or prefix.startswith(granted + "/")


def delivery_target(prefs: SessionPreferences | None, settings: Settings) -> dict[str, str]:
    """Where session logs go (or will go once the guardrail turns logging on, or names its key):
    the region's configured destinations, else the guardrail's own. Empty when there is nowhere
    to deliver, or when the preferences could not be read (nowhere known)."""
    if prefs is None or prefs.unreadable:
        return {}
    owners_key = prefs.session_key
    if prefs.logging_on:
        target = {
            "bucket": prefs.s3_bucket,
            "prefix": str(prefs.inputs.get("s3KeyPrefix") or ""),
            "log_group": prefs.log_group,
            "kms_key": settings.session_log_kms_key
            if guardrail_key_missing(prefs, settings)
            else owners_key,
        }
    elif settings.session_log_bucket or settings.session_log_group:
        target = {
            "bucket": settings.session_log_bucket,
            "prefix": guardrail_prefix(settings),
            "log_group": settings.session_log_group,
            # The fix keeps a key the owners already name (desired_inputs).
            "kms_key": owners_key or settings.session_log_kms_key,
        }
    else:
        return {}
    ours = bool(target["bucket"]) and target["bucket"] == settings.session_log_bucket
    if ours:
        # The guardrail's bucket encrypts with its key (SSE-KMS): PutObject needs it too,
        # whatever key the preferences name for the sessions themselves.
        target["bucket_key"] = settings.session_log_kms_key
    # The agent reads the bucket's encryption only with s3EncryptionEnabled on, which the fix
    # turns on for the guardrail's bucket alone (foreign_left).
    if ours or flag_on(prefs.inputs.get("s3EncryptionEnabled")):
        target["reads_bucket_encryption"] = "yes"
    return target


# What the SSM Agent does with the instance role to deliver a session's log, by resource: the
# checks judge roles against it and the stack's log-delivery policy grants it.
DELIVERY_ACTIONS = {
    "objects": ("s3:PutObject",),  # one object per session, under the prefix
    "bucket": ("s3:GetEncryptionConfiguration",),  # with s3EncryptionEnabled on
    "log_stream": ("logs:CreateLogStream", "logs:PutLogEvents"),  # one stream per session
    # CloudWatch Logs authorizes it on the group, named with an empty stream (log-stream:)
    "log_group": ("logs:DescribeLogStreams",),
    "log_groups": ("logs:DescribeLogGroups",),  # a list call: every group of the region
    # The session key (kmsKeyId): the person's Session Manager plugin generates the session's
    # data key, the agent only decrypts it (its KMS client has Decrypt alone).
    "key": ("kms:Decrypt",),
    # S3 uses the bucket's key as the role: a data key for each object, and Decrypt for the
    # multipart upload the agent makes of a log over 5 MB.
    "bucket_key": ("kms:Decrypt", "kms:GenerateDataKey"),
}


def delivery_requirements(
    target: Mapping[str, str], partition: str, region: str, account: str
) -> list[tuple[str, str]]:
    """The (action, resource ARN) pairs a role needs to deliver session logs to `target`."""
    needs: list[tuple[str, str]] = []
    if target.get("bucket"):
        bucket = f"arn:{partition}:s3:::{target['bucket']}"
        prefix = target.get("prefix", "").strip("/")
        needs.append(
            ("objects", f"{bucket}/{prefix}/session.log" if prefix else f"{bucket}/session.log")
        )
        if target.get("reads_bucket_encryption"):
            needs.append(("bucket", bucket))
    if target.get("log_group"):
        group = f"arn:{partition}:logs:{region}:{account}:log-group:{target['log_group']}"
        needs.append(("log_stream", f"{group}:log-stream:session"))
        needs.append(("log_group", f"{group}:log-stream:"))
        needs.append(("log_groups", f"arn:{partition}:logs:{region}:{account}:log-group:*"))
    key = key_arn(target.get("kms_key", ""), partition, region, account)
    bucket_key = key_arn(target.get("bucket_key", ""), partition, region, account)
    if key and key != bucket_key:
        needs.append(("key", key))
    if bucket_key:
        needs.append(("bucket_key", bucket_key))
    return [(action, arn) for kind, arn in needs for action in DELIVERY_ACTIONS[kind]]


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
    if prefs.unreadable:
        return inputs, (
            f"its content could not be read ({prefs.unreadable}): a new version would replace "
            "the owners' preferences; fix it by hand"
        )
    if not prefs.logging_on:
        if not (settings.session_log_bucket or settings.session_log_group):
            return inputs, "no GUARDRAIL_SESSION_LOG_BUCKET or _GROUP is set: nowhere to log"
        if settings.session_log_bucket:
            # The prefix too, whatever was left there (the console writes ""): the delivery
            # policy grants s3:PutObject under the guardrail's prefix only.
            inputs.update(
                s3BucketName=settings.session_log_bucket,
                s3KeyPrefix=guardrail_prefix(settings),
                s3EncryptionEnabled=True,
            )
        if settings.session_log_group:
            inputs.update(
                cloudWatchLogGroupName=settings.session_log_group, cloudWatchEncryptionEnabled=True
            )
            inputs.setdefault("cloudWatchStreamingEnabled", True)
        if settings.session_log_kms_key and not prefs.session_key:
            inputs["kmsKeyId"] = settings.session_log_kms_key
        return inputs, ""
    left = foreign_left(prefs, settings)
    for destination, flag in (
        (prefs.s3_bucket, "s3EncryptionEnabled"),
        (prefs.log_group, "cloudWatchEncryptionEnabled"),
    ):
        if destination and not flag_on(inputs.get(flag)) and f"turn on {flag}" not in left:
            inputs[flag] = True  # the guardrail's destination (a foreign one is left)
    if guardrail_key_missing(prefs, settings):
        inputs["kmsKeyId"] = settings.session_log_kms_key
    # Foreign destinations are left to their owners; the rest is still written (the key, say).
    return inputs, "; ".join(left.values()) if inputs == dict(prefs.inputs) else ""


def unusable_key(prefs: SessionPreferences) -> str:
    """Why no session can start with the owners' kmsKeyId, as KMS answered; "" if none known."""
    if not prefs.key_unusable:
        return ""
    return f"kmsKeyId {prefs.inputs['kmsKeyId'].strip()} {prefs.key_unusable}: no session can start"


def foreign_left(prefs: SessionPreferences, settings: Settings) -> dict[str, str]:
    """What the fix leaves to the owners, by action, with why: the encryption flag of a bucket
    or log group that is not the guardrail's, and their kmsKeyId naming no usable key (the
    guardrail never replaces a key the owners chose)."""
    bucket, group = prefs.s3_bucket, prefs.log_group
    foreign = (
        # With the flag on, the agent reads the bucket's encryption before each session: a
        # bucket of another account (a central log archive) must allow that in its policy,
        # which no simulation of the roles can see.
        (
            bucket,
            settings.session_log_bucket,
            "s3EncryptionEnabled",
            f"bucket {bucket} is not the guardrail's: turning on s3EncryptionEnabled could block "
            "sessions unless its policy lets every instance role read its encryption "
            "(s3:GetEncryptionConfiguration); turn it on once it does",
        ),
        # Session Manager refuses to start sessions if the group is not KMS-encrypted.
        (
            group,
            settings.session_log_group,
            "cloudWatchEncryptionEnabled",
            f"log group {group} is not the guardrail's: turning on cloudWatchEncryptionEnabled "
            "could block sessions; encrypt it first",
        ),
    )
    left = {
        f"turn on {flag}": why
        for destination, ours, flag, why in foreign
        if destination and destination != ours and not flag_on(prefs.inputs.get(flag))
    }
    if broken := unusable_key(prefs):
        left["replace kmsKeyId"] = f"{broken}; name a usable key in the preferences by hand"
    return left


@dataclass(frozen=True)
class Hold:
    """An input that, once written, stops the sessions of every instance whose role lacks
    `needs` (the SSM Agent checks it before each session), so it waits for those roles."""

    input: str
    needs: str  # prefix of the denied actions that make the role fail the agent's check
    what: str
    action: str  # the held fix, as its record names it
    # The agent needs it whatever the input says to deliver the log: a role refused it cannot
    # deliver now, not only later (its sessions still open while the input is off).
    needed_anyway: bool = False

    def destination(self, inputs: Mapping[str, Any]) -> str:
        """The destination a flag's encryption check is about, as the inputs name it ("" for
        none, and for the key, which is no flag)."""
        named = inputs.get(FLAG_DESTINATIONS.get(self.input, ""))
        return str(named or "").strip()

    def on(self, inputs: Mapping[str, Any]) -> bool:
        """Whether the agent applies the input: a flag only with its destination set (the
        console writes both flags true with no destination at all)."""
        if self.input == "kmsKeyId":
            return bool(str(inputs.get(self.input) or "").strip())
        return flag_on(inputs.get(self.input)) and bool(self.destination(inputs))

    def turned_on(self, prefs: SessionPreferences, inputs: Mapping[str, Any]) -> bool:
        return self.on(inputs) and not self.on(prefs.inputs)

    def held_value(self, prefs: SessionPreferences) -> Any:
        """What the held input is written as: the owners' value, or off where theirs would
        come into force with the destination the fix adds (None: left out)."""
        value = prefs.inputs.get(self.input)
        if self.input != "kmsKeyId" and flag_on(value):
            return False
        return value


FLAG_DESTINATIONS = {
    "s3EncryptionEnabled": "s3BucketName",
    "cloudWatchEncryptionEnabled": "cloudWatchLogGroupName",
}


HOLDS = (
    # The agent decrypts the session's data key with the key.
    Hold("kmsKeyId", "kms:Decrypt", "use the key", "name the guardrail's KMS key"),
    # With the flags on, the agent refuses a session unless it can see that the destination is
    # encrypted: s3:GetEncryptionConfiguration on the bucket, logs:DescribeLogGroups.
    Hold(
        "s3EncryptionEnabled",
        "s3:GetEncryptionConfiguration",
        "read the bucket's encryption",
        "turn on s3EncryptionEnabled",
    ),
    Hold(
        "cloudWatchEncryptionEnabled",
        "logs:DescribeLogGroups",
        "see the log group",
        "turn on cloudWatchEncryptionEnabled",
        # The agent looks for the log group whatever its flag says: not found, it streams
        # nothing; only with the flag on does it fail the session (ShellPlugin.validate).
        needed_anyway=True,
    ),
)


def waits_for(denied: str, prefs: SessionPreferences, target: Mapping[str, str]) -> str:
    """The input not yet in force that a denied "action on resource" is needed for, "" when
    the preferences as they are need it: a role refused only the guardrail's key while no
    kmsKeyId is set, or the bucket's encryption while s3EncryptionEnabled is off, delivers its
    sessions' logs today (the guardrail's bucket still needs its key for every upload)."""
    bucket_key = target.get("bucket_key", "").rsplit("/", 1)[-1]
    for hold in HOLDS:
        if hold.needed_anyway or not denied.startswith(hold.needs) or hold.on(prefs.inputs):
            continue
        if hold.input == "kmsKeyId" and bucket_key and denied.endswith(f"/{bucket_key}"):
            return ""
        return hold.input
    return ""


def stops_sessions(denied: Sequence[str], prefs: SessionPreferences | None) -> list[str]:
    """The denied "action on resource" items that stop a role's sessions with the preferences
    as they are: the agent encrypts each session with kmsKeyId and checks the destinations'
    encryption before it (and fails it), while an upload it cannot make (another key: the
    bucket's own) only loses that session's log."""
    if prefs is None:
        return []
    session_key = prefs.session_key.rsplit("/", 1)[-1]
    stopping = []
    for item in denied:
        hold = next((h for h in HOLDS if item.startswith(h.needs)), None)
        if hold is None:
            continue
        if hold.input == "kmsKeyId":
            stops = bool(session_key) and item.endswith(f"/{session_key}")
        else:
            stops = hold.on(prefs.inputs)
        if stops:
            stopping.append(item)
    return stopping


def holds(
    prefs: SessionPreferences, settings: Settings, blocked: Mapping[str, Sequence[str]], full: bool
) -> dict[str, str]:
    """The inputs the preferences must not turn on now, with why (`blocked`: by denied-action
    prefix, the roles still lacking it after this run's grants).

    Only a full scan, which has judged every role, turns them on, and only once no role is
    left that would lose its sessions.
    """
    inputs, _ = desired_inputs(prefs, settings)
    held = {}
    for hold in HOLDS:
        if not hold.turned_on(prefs, inputs):
            continue
        if roles := blocked.get(hold.needs):
            held[hold.input] = (
                f"{hold.input} not turned on: role(s) {', '.join(roles)} cannot "
                f"{hold.what} and their sessions would stop; grant them {hold.needs}"
                + (" on it" if hold.input == "kmsKeyId" else "")
            )
        elif not full:
            held[hold.input] = (
                f"{hold.input} not turned on until a drift scan has checked that every role "
                f"can {hold.what}"
            )
    return held


MAX_VERSIONS_SEARCHED = 20  # newest first: a matching version older than that stays FAILED


def _new_version(ssm: Any, content: Mapping[str, Any], on_top_of: str) -> str:
    """The version holding `content`: a new one on top of `on_top_of`, or the one that already
    holds it (an earlier run stopped before promoting it, or an owner rolled back). Never
    whatever $LATEST holds. A retried try refused because an earlier one, whose answer was lost,
    made the version ($LATEST moved on: InvalidDocumentVersion) finds that version, newer than
    `on_top_of`."""
    tries: list[bool] = []
    try:
        with answer_may_be_lost(ssm, "UpdateDocument") as tries:
            answer = ssm.update_document(
                Name=SESSION_DOCUMENT,
                Content=json.dumps(content),
                DocumentVersion=on_top_of,
                DocumentFormat="JSON",
            )
    except ClientError as error:
        code = error_code(error)
        lost = code == "InvalidDocumentVersion" and any(tries) and on_top_of.isdigit()
        if code != "DuplicateDocumentContent" and not lost:
            raise
        found = version_holding(ssm, content, newer_than=int(on_top_of) if lost else 0)
        if found is None:
            raise
        return found
    # Optional in UpdateDocument's answer: without it, the version now holding the content.
    created = (answer.get("DocumentDescription") or {}).get("DocumentVersion")
    found = str(created) if created else version_holding(ssm, content)
    if found is None:
        raise LookupError("UpdateDocument named no version, and no version holds the content")
    return found


def version_holding(ssm: Any, content: Mapping[str, Any], newer_than: int = 0) -> str | None:
    """The newest version of the preferences whose content is `content` (compared as JSON)."""
    latest = int(ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]["LatestVersion"])
    for number in range(latest, max(latest - MAX_VERSIONS_SEARCHED, newer_than), -1):
        try:
            raw = ssm.get_document(
                Name=SESSION_DOCUMENT, DocumentVersion=str(number), DocumentFormat="JSON"
            )
            if json.loads(raw.get("Content") or "null") == content:
                return str(number)
        except json.JSONDecodeError:
            continue
        except ClientError as error:
            if error_code(error) != "InvalidDocumentVersion":  # a version deleted by its owners
                raise
    return None


def default_holds(ssm: Any, content: Mapping[str, Any]) -> bool:
    """Whether the default version of the preferences now holds exactly `content` (compared as
    JSON): a concurrent run wrote what this one would, or a retried CreateDocument was refused
    after the first try went through. Unreadable or gone counts as no; a refused read raises
    (throttling, say): "no" would call the guardrail's own write someone else's."""
    try:
        raw = ssm.get_document(Name=SESSION_DOCUMENT, DocumentFormat="JSON")
        return bool(json.loads(raw.get("Content") or "null") == content)
    except json.JSONDecodeError:
        return False
    except ClientError as error:
        if error_code(error) in ("InvalidDocument", "InvalidDocumentVersion"):
            return False
        raise


class SessionLogging:
    id = "ssm-session-logging"
    title = "Session Manager sessions should be logged, and instance roles able to deliver them"
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
        "log group, and grant instance roles s3:PutObject and logs:CreateLogStream / PutLogEvents / "
        "DescribeLogStreams / DescribeLogGroups on those destinations, kms:Decrypt on the session "
        "key, and kms:Decrypt / kms:GenerateDataKey on an SSE-KMS bucket's key."
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
        Permission(
            ("kms:DescribeKey",),
            resources=("arn:{partition}:kms:{region}:{account}:key/*",),
            why="whether sessions can use the kmsKeyId key, and the key an alias names",
        ),
    )
    fix_permissions = (
        Permission(
            (
                "ssm:CreateDocument",
                "ssm:UpdateDocument",
                "ssm:UpdateDocumentDefaultVersion",
            ),
            resources=(
                f"arn:{{partition}}:ssm:{{region}}:{{account}}:document/{SESSION_DOCUMENT}",
            ),
            why="create or update the preferences and make the version holding them the default",
        ),
        Permission(
            ("iam:AttachRolePolicy",),
            resources=("arn:{partition}:iam::{account}:role/*",),
            conditions={"ArnEquals": {"iam:PolicyARN": ["{log_delivery_policy_arn}"]}},
            why="give an instance role the guardrail's log-delivery policy",
        ),
    )
    no_fix_reason = ""
    fix_changes: tuple[str, ...] = ()  # its resource, the account, carries no details

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
                results.append(self._undelivered(snapshot, iid, role.name, delivery, details))
        return results

    def _undelivered(
        self,
        snapshot: AccountSnapshot,
        instance_id: str,
        role_name: str,
        delivery: DeliveryCheck,
        details: dict[str, Any],
    ) -> Result:
        """FAILED: MEDIUM when the role cannot deliver with the preferences as they are; LOW when
        it can, but not once the guardrail turns on the key or a flag it still waits for (the
        fix grants the role first)."""
        prefs = snapshot.session_preferences
        later: dict[str, list[str]] = {}
        now: list[str] = []
        for item in delivery.denied:
            awaited = (
                waits_for(item, prefs, details["target"]) if prefs and prefs.logging_on else ""
            )
            if awaited:
                later.setdefault(awaited, []).append(item)
            else:
                now.append(item)
        if now:
            severity, reason = (
                "MEDIUM",
                f"cannot deliver session logs: not allowed {', '.join(now)}",
            )
            reason += "".join(f"; once {k} is set, also {', '.join(v)}" for k, v in later.items())
        else:
            severity = "LOW"
            reason = "delivers session logs now, but its sessions would stop once " + " and ".join(
                f"{k} is set (not allowed {', '.join(v)})" for k, v in later.items()
            )
        return snapshot.result(
            self.id,
            ResourceType.INSTANCE,
            instance_id,
            Status.FAILED,
            severity,
            f"role {role_name} {reason}",
            details={**details, "denied": list(delivery.denied)},
        )

    def _region_result(
        self, prefs: SessionPreferences, snapshot: AccountSnapshot, settings: Settings
    ) -> Result:
        account = snapshot.account_id
        if not prefs.exists:
            not_logged = (
                f"no Session Manager preferences ({SESSION_DOCUMENT} absent): sessions are "
                "not logged"
            )
        elif prefs.unreadable:
            not_logged = (
                f"{SESSION_DOCUMENT} could not be read ({prefs.unreadable}): whether sessions "
                "are logged is not known"
            )
        elif not prefs.logging_on:
            not_logged = (
                "Session Manager preferences name neither an S3 bucket nor a CloudWatch "
                "log group: sessions are not logged"
            )
        else:
            not_logged = ""
        broken = unusable_key(prefs)
        if not_logged:
            reason = "; ".join(filter(None, [not_logged, broken]))
            result = snapshot.result(
                self.id, ResourceType.ACCOUNT, account, Status.FAILED, "MEDIUM", reason
            )
            return replace(result, others_unjudged=bool(prefs.unreadable))
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
        problems = [f"{flag} is false" for flag in off]
        if guardrail_key_missing(prefs, settings):
            problems.append("not encrypted with the guardrail's KMS key (kmsKeyId unset)")
        if broken:
            problems.append(broken)
        if problems:
            return snapshot.result(
                self.id,
                ResourceType.ACCOUNT,
                account,
                Status.FAILED,
                "MEDIUM" if broken else "LOW",
                f"sessions are logged to {where} but {' and '.join(problems)}",
                details={"unencrypted": off} if off else {},
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
        # The owners' kmsKeyId is written back as it was: what KMS said of it still holds.
        written_prefs = replace(
            prefs, exists=True, inputs=dict(written[-1]), content=content, document_version=None
        )
        return replace(snapshot, session_preferences=written_prefs)

    def remediate(
        self, failed: Sequence[Result], snapshot: AccountSnapshot, ctx: FixContext
    ) -> list[FixRecord]:
        # Roles first: preferences that turn on KMS session encryption or an encryption flag
        # stop every session on an instance whose role fails the agent's check, so they wait for
        # the grants and then turn on only what no role is left without.
        records = ctx.made
        by_role: dict[str, list[str]] = {}
        for result in failed:
            if result.resource_type is ResourceType.INSTANCE:
                by_role.setdefault(result.details["role_name"], []).append(result.resource_id)
        for role_name, instance_ids in by_role.items():
            records.append(self._grant_delivery(role_name, instance_ids, snapshot, ctx))
        granted = {r.resource_id for r in records if r.outcome is Outcome.APPLIED}
        denied = {
            r.details["role_name"]: r.details.get("denied", ())
            for r in failed
            if r.resource_type is ResourceType.INSTANCE and r.details["role_name"] not in granted
        }
        # An exempt instance's role is never granted (its result is not among `failed`): what
        # it lacks holds the preferences back as any other role's would, or its sessions stop.
        for instance in snapshot.instances.values():
            role = snapshot.role_of(instance) if instance.exemption is not None else None
            delivery = snapshot.delivery.get(role.name) if role else None
            if role and delivery and not delivery.allowed and role.name not in granted:
                denied.setdefault(role.name, delivery.denied)
        blocked = {
            hold.needs: sorted(
                role
                for role, actions in denied.items()
                if any(a.startswith(hold.needs) for a in actions)
            )
            for hold in HOLDS
        }
        prefs = snapshot.session_preferences
        if prefs is not None and any(r.resource_type is ResourceType.ACCOUNT for r in failed):
            account = snapshot.account_id
            held = holds(prefs, ctx.settings, blocked, snapshot.full)
            # Recorded first, and at once: a stop after the write keeps its record.
            records.insert(0, fixed := self._fix_preferences(prefs, account, ctx, held=held))
            if fixed.outcome.ok:
                # Logging is on; what is held, or a foreign group's encryption, is not: the
                # region's result stays FAILED (LOW).
                left = {h.action: held[h.input] for h in HOLDS if h.input in held}
                left.update(foreign_left(prefs, ctx.settings))
                records[1:1] = [
                    FixRecord(
                        self.id, account, action, Outcome.SKIPPED, reason=why, covers=(account,)
                    )
                    for action, why in left.items()
                ]
        return records

    def _fix_preferences(
        self,
        prefs: SessionPreferences,
        account: str,
        ctx: FixContext,
        *,
        held: Collection[str] = (),
    ) -> FixRecord:
        action = PREFERENCE_ACTIONS[prefs.exists]
        inputs, why_not = desired_inputs(prefs, ctx.settings)
        before = dict(prefs.inputs) if prefs.exists and not prefs.unreadable else None

        def record(
            outcome: Outcome, after: Any, reason: str = "", code: str | None = None
        ) -> FixRecord:
            at = ctx.clock() if outcome is Outcome.APPLIED else None
            return FixRecord(
                self.id,
                account,
                action,
                outcome,
                before,
                after,
                reason,
                code,
                covers=(account,),
                at=at,
            )

        for hold in HOLDS:
            if hold.input not in held:
                continue
            if (value := hold.held_value(prefs)) is None and hold.input not in prefs.inputs:
                inputs.pop(hold.input, None)
            else:
                inputs[hold.input] = value
        if why_not:
            return record(Outcome.SKIPPED, None, why_not)
        if prefs.exists and inputs == dict(prefs.inputs):
            return record(Outcome.ALREADY_COMPLIANT, before)
        if ctx.out_of_time():
            return record(Outcome.SKIPPED, None, OUT_OF_TIME)
        content = {**(dict(prefs.content) or DEFAULT_CONTENT), "inputs": inputs}
        ssm = ctx.clients.ssm

        def meanwhile(how: str) -> FixRecord:
            if default_holds(ssm, content):
                return record(
                    Outcome.ALREADY_COMPLIANT,
                    inputs,
                    f"the preferences were {how} meanwhile, to exactly what this run would write",
                )
            return record(
                Outcome.SKIPPED,
                None,
                f"the preferences were {how} meanwhile; left as they are for the next run to judge",
            )

        where = f"--name {SESSION_DOCUMENT} --region {ctx.clients.region}"
        created = "there were none" + undo_part(f"aws ssm delete-document {where}")
        tries: list[bool] = []
        try:
            if not prefs.exists:
                with answer_may_be_lost(ssm, "CreateDocument") as tries:
                    ssm.create_document(
                        Name=SESSION_DOCUMENT,
                        Content=json.dumps(content),
                        DocumentType="Session",
                        DocumentFormat="JSON",
                    )
                undo = created
            elif version := self._update(ssm, content, prefs.document_version):
                undo = (
                    f"version {version} is now the default, was {prefs.document_version}"
                    + undo_part(
                        f"aws ssm update-document-default-version {where} --document-version "
                        f"{prefs.document_version}"
                    )
                )
            else:
                # Changed since the read (a person, a concurrent run): what we would write was
                # judged on the older version and would drop their change.
                return meanwhile("changed")
        except ClientError as error:
            if error_code(error) == "InvalidDocument":  # deleted since the read
                return meanwhile("deleted")
            if error_code(error) == "DocumentAlreadyExists":
                if any(tries) and default_holds(ssm, content):  # this run's try, answer lost
                    undo = created
                else:
                    # Created meanwhile (a person, a concurrent run): what we would write was
                    # judged on no document at all and would drop their inputs. The next run
                    # judges theirs.
                    return meanwhile("created")
            else:
                return record(Outcome.FAILED, inputs, "preferences not changed", error_code(error))
        # Held back for a role, or a flag left off on a destination that is not the guardrail's.
        off = [
            h.input
            for h in HOLDS
            if not h.on(inputs) and (h.input in held or h.destination(inputs))
        ]
        how = (
            f"{', '.join(off)} left off for now (a skipped record says why)"
            if off
            else "with encryption"
        )
        return record(
            Outcome.APPLIED, inputs, f"sessions now logged, {how}; other preferences kept; {undo}"
        )

    @staticmethod
    def _update(ssm: Any, content: Mapping[str, Any], read_version: str | None) -> str | None:
        """A new version made the default (UpdateDocument does not), only while the default is
        still the version read: an owner's rollback or new default since would be overridden
        (and the undo would name the wrong version); None, nothing changed. UpdateDocument
        accepts only the latest version: the write goes on top of it (an owner's draft left at
        $LATEST is not the default and changes no session). Returns the version made the
        default."""
        described = ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]
        if read_version and str(described.get("DefaultVersion")) != read_version:
            return None
        try:
            version = _new_version(ssm, content, str(described.get("LatestVersion") or "$LATEST"))
        except ClientError as error:
            if error_code(error) == "InvalidDocumentVersion":  # a newer latest since
                return None
            raise
        ssm.update_document_default_version(Name=SESSION_DOCUMENT, DocumentVersion=version)
        return version

    def _grant_delivery(
        self, role_name: str, instance_ids: list[str], snapshot: AccountSnapshot, ctx: FixContext
    ) -> FixRecord:
        action, covers = "attach log-delivery policy", tuple(instance_ids)
        settings, target = ctx.settings, snapshot.delivery_target
        role = snapshot.roles.get(role_name)
        before = ctx.attached_to(role)
        delivery = snapshot.delivery.get(role_name)
        ours = {settings.session_log_bucket, settings.session_log_group} - {""}
        theirs = {target.get("bucket", ""), target.get("log_group", "")} - {""}
        named = target.get("kms_key", "")
        # As ARNs: the owners may name the guardrail's own key by its bare id.
        key, guardrail_key = (
            key_arn(k, snapshot.partition, snapshot.region, snapshot.account_id)
            for k in (named, settings.session_log_kms_key)
        )
        if (
            key
            and key != guardrail_key
            and delivery is not None
            and any(d.startswith("kms:") and key in d for d in delivery.denied)
        ):
            # The owners' key, which the guardrail's policy does not grant.
            theirs.add(f"KMS key {named}")
        if not settings.log_delivery_policy_arn:
            reason = "GUARDRAIL_LOG_DELIVERY_POLICY_ARN is not set"
        elif delivery is not None and delivery.explicitly_denied:
            # An explicit Deny wins over any Allow; a permissions boundary and the account's
            # service control policies cap every policy.
            reason = (
                f"{', '.join(delivery.explicitly_denied)}: attaching a policy cannot override "
                "that; change what refuses it"
            )
            if any("conditions" in d for d in delivery.explicitly_denied):
                reason += " (a Deny with conditions may let the real calls through: check them)"
        elif (
            target.get("bucket")
            and target.get("bucket") == settings.session_log_bucket
            and not under(target.get("prefix", ""), guardrail_prefix(settings))
        ):
            reason = (
                f"sessions log under s3://{target['bucket']}/{target.get('prefix', '')}, outside "
                f"the prefix {guardrail_prefix(settings)}/ the log-delivery policy grants: set "
                "s3KeyPrefix to it in the preferences"
            )
        elif not theirs <= ours:
            reason = (
                f"sessions log to {', '.join(sorted(theirs - ours))}, not the guardrail's "
                "destinations or key: grant delivery there yourself"
            )
        elif settings.log_delivery_policy_arn in before:
            reason = (
                "the log-delivery policy is already attached and delivery is still not allowed "
                "(a permissions boundary?): attaching again cannot help"
            )
        elif not settings.may_modify(role_name):
            reason = "GUARDRAIL_MODIFY_EXISTING_ROLES=false: report only"
        elif shared := assumed_beyond_ec2(role, "the guardrail's log-delivery policy"):
            reason = shared
        elif ctx.out_of_time():
            reason = OUT_OF_TIME
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
                attach_failed(error),
                error_code(error),
                covers=covers,
            )
        ctx.record_attached(role_name, settings.log_delivery_policy_arn)
        return FixRecord(
            self.id,
            role_name,
            action,
            Outcome.APPLIED,
            before,
            sorted({*before, settings.log_delivery_policy_arn}),
            f"attached the guardrail's log-delivery policy to {role_name}"
            f"{beyond_the_event(snapshot.full)}"
            f"{detach_hint(role_name, settings.log_delivery_policy_arn)}",
            covers=covers,
            at=ctx.clock(),
        )


SESSION_LOGGING = SessionLogging()
