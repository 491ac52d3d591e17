"""Builds AWS Security Finding Format (ASFF) findings from check results; pure, no clients.

One finding per (account, region, control, resource), with a deterministic Id so every scan updates
the same finding instead of piling up new ones. Field limits follow the BatchImportFindings API.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .controls.base import Control
from .model import (
    FixRecord,
    Instance,
    Outcome,
    ResourceType,
    Result,
    SecurityGroup,
    Status,
    last_fix_time,
)

SCHEMA_VERSION = "2018-10-08"
PRODUCT = "ssm-guardrail"
FIELD_PREFIX = "ssm-guardrail/"
GENERATOR_PREFIX = f"{PRODUCT}/"  # every finding's GeneratorId: generator_id(control id)


def generator_id(control_id: str) -> str:
    return GENERATOR_PREFIX + control_id


# ProductFields that record a fix (Remediated, FixCount, Fix1/Action ...).
REMEDIATED_FIELD = FIELD_PREFIX + "Remediated"
FIXED_AT_FIELD = FIELD_PREFIX + "FixedAt"  # when the last of the fixes was made
FIX_PREFIX = FIELD_PREFIX + "Fix"
FIX_COUNT = FIX_PREFIX + "Count"  # how many fixes the finding records (Fix1/... shows the first 5)
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL")
ASFF_PARTITIONS = ("aws", "aws-cn", "aws-us-gov")  # Resources[].Partition accepts only these

MAX_ID = 512
MAX_TITLE = 256
MAX_DESCRIPTION = 1024
MAX_RECOMMENDATION = 512
MAX_NOTE = 512
MAX_FIELD_VALUE = 2048
MAX_FIXES_IN_FIELDS = 5  # 8 keys per fix at most; ProductFields holds at most 50 keys
MAX_IP_PERMISSIONS = 200  # keeps a group with a thousand rules far below 240 KB per finding

COMPLIANCE = {
    Status.FAILED: "FAILED",
    Status.PASSED: "PASSED",
    Status.NOT_APPLICABLE: "NOT_AVAILABLE",
}


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Left out, in this order, of a fix record too long for its field: rule tags, then descriptions
# (the Lambda's log keeps them), so every rule's id, protocol, ports and source stay readable.
OPTIONAL_KEYS = ("Tags", "Description")


def without(value: Any, key: str) -> Any:
    """`value` with `key` left out of every object in it, each such object saying so."""
    if isinstance(value, list):
        return [without(v, key) for v in value]
    if isinstance(value, dict):
        kept = {k: without(v, key) for k, v in value.items() if k != key}
        return {**kept, f"{key}Omitted": True} if key in value else kept
    return value


def json_field(value: Any, limit: int = MAX_FIELD_VALUE) -> str:
    """`value` as JSON of at most `limit` characters: without OPTIONAL_KEYS if that is what it
    takes, else cut, still valid JSON."""
    text = json.dumps(value, default=str, sort_keys=True, ensure_ascii=False)
    slim = value
    for key in OPTIONAL_KEYS:
        if len(text) <= limit:
            return text
        slim = without(slim, key)
        text = json.dumps(slim, default=str, sort_keys=True, ensure_ascii=False)
    if len(text) <= limit:
        return text
    head = text[: limit - 80]
    while True:
        wrapped = json.dumps(
            {"truncated": True, "length": len(text), "head": head}, ensure_ascii=False
        )
        if len(wrapped) <= limit:
            return wrapped
        head = head[: len(head) - (len(wrapped) - limit)]


def timestamp(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z, as ASFF expects; naive datetimes are taken as UTC."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _launched_at(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return timestamp(datetime.fromisoformat(value))
    except ValueError:
        return None


def product_arn(partition: str, region: str, account_id: str) -> str:
    """The account's own default product: where custom findings are imported."""
    return f"arn:{partition}:securityhub:{region}:{account_id}:product/{account_id}/default"


def finding_id(account_id: str, region: str, control_id: str, resource_id: str) -> str:
    """Deterministic finding Id; a resource id that would overflow 512 characters is hashed."""
    prefix = f"{PRODUCT}/{region}/{account_id}/{control_id}/"
    if len(prefix) + len(resource_id) <= MAX_ID:
        return prefix + resource_id
    return prefix + "sha256:" + hashlib.sha256(resource_id.encode()).hexdigest()


def resource_arn(result: Result, owner: str | None = None) -> str:
    """The ASFF Resources[].Id of the result's resource; `owner`: the account owning it when
    not the scanned one (a security group shared through a VPC by its owner)."""
    p, r, a = result.partition, result.region, result.account_id
    if result.resource_type is ResourceType.INSTANCE:
        return f"arn:{p}:ec2:{r}:{a}:instance/{result.resource_id}"
    if result.resource_type is ResourceType.SECURITY_GROUP:
        return f"arn:{p}:ec2:{r}:{owner or a}:security-group/{result.resource_id}"
    return f"AWS::::Account:{a or result.resource_id}"


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    """Drops the keys without a value: ASFF rejects empty strings and lists."""
    return {k: v for k, v in values.items() if v not in (None, "", [], {})}


def instance_details(instance: Instance) -> dict[str, Any]:
    return _compact(
        {
            "Type": instance.instance_type,
            "ImageId": instance.image_id,
            "IpV4Addresses": [ip for ip in (instance.public_ip, instance.private_ip) if ip],
            "IpV6Addresses": list(instance.ipv6_addresses),
            "VpcId": instance.vpc_id,
            "SubnetId": instance.subnet_id,
            "IamInstanceProfileArn": instance.profile_arn,
            "LaunchedAt": _launched_at(instance.launched_at),
            "NetworkInterfaces": [
                {"NetworkInterfaceId": n} for n in instance.network_interface_ids
            ],
        }
    )


def ip_permissions(group: SecurityGroup) -> list[dict[str, Any]]:
    """The group's ingress rules merged per (protocol, ports), as DescribeSecurityGroups shows."""
    merged: dict[tuple[str, int | None, int | None], dict[str, list[dict[str, str]]]] = {}
    for rule in group.ingress:
        sources = merged.setdefault(
            (rule.protocol, rule.from_port, rule.to_port),
            {"IpRanges": [], "Ipv6Ranges": [], "PrefixListIds": [], "UserIdGroupPairs": []},
        )
        if rule.cidr_ipv4:
            sources["IpRanges"].append({"CidrIp": rule.cidr_ipv4})
        if rule.cidr_ipv6:
            sources["Ipv6Ranges"].append({"CidrIpv6": rule.cidr_ipv6})
        if rule.prefix_list_id:
            sources["PrefixListIds"].append({"PrefixListId": rule.prefix_list_id})
        if rule.referenced_group_id:
            sources["UserIdGroupPairs"].append({"GroupId": rule.referenced_group_id})
    return [
        _compact({"IpProtocol": protocol, "FromPort": low, "ToPort": high, **sources})
        for (protocol, low, high), sources in merged.items()
    ]


def group_details(group: SecurityGroup) -> tuple[dict[str, Any], int]:
    """AwsEc2SecurityGroup details, and how many merged ingress permissions were left out."""
    permissions = ip_permissions(group)
    details = _compact(
        {
            "GroupName": group.group_name,
            "GroupId": group.group_id,
            "OwnerId": group.owner_id,
            "VpcId": group.vpc_id,
            "IpPermissions": permissions[:MAX_IP_PERMISSIONS],
        }
    )
    return details, max(0, len(permissions) - MAX_IP_PERMISSIONS)


def describe_fix(fix: FixRecord, number: int) -> str:
    """One fix in a Description (1,024 characters in all, so cut anywhere): its undo is never
    there, only where to find it whole."""
    text = f"{fix.action} on {fix.resource_id}: {fix.outcome.value}"
    if fix.error_code:
        text += f" ({fix.error_code})"
    if fix.told:
        text += f", {fix.told}"
    if fix.undo:
        where = f"{FIELD_PREFIX}Fix{number}/Undo" if number <= MAX_FIXES_IN_FIELDS else "in the log"
        text += f" (undo: {where})"
    return text


def undo_field(fix: FixRecord) -> str:
    """The commands that undo the fix, whole or not at all: a cut command could run half (the
    revoke of an SSH fix without its re-authorize)."""
    if len(fix.undo) <= MAX_FIELD_VALUE:
        return fix.undo
    return (
        f"too long for this field ({len(fix.undo)} characters): in the guardrail Lambda's log "
        '(message "fix") and the CLI\'s output'
    )


# The BatchUpdateFindings Note of every fixed finding: one text, so one call (of up to 100)
# resolves them all; the per-fix detail is in each finding's Description and ProductFields.
RESOLUTION_NOTE = (
    f"{PRODUCT} fixed this automatically. What it changed, before and after, is in the "
    f"finding's Description and ProductFields ({FIELD_PREFIX}Fix1/...) until an event about "
    'the resource re-evaluates it, and always in the guardrail Lambda\'s log (message "fix").'
)


def product_fields(
    result: Result,
    control: Control,
    fixes: Sequence[FixRecord],
    remediated: bool,
    omitted_permissions: int,
) -> dict[str, str]:
    """Strings only, ≤2048 characters each, ≤50 keys (BatchImportFindings' ProductFields)."""
    fields = {
        "ControlId": control.id,
        "ResultStatus": result.status.value,
        "Reason": clip(result.reason, MAX_FIELD_VALUE),
        "Remediated": "true" if remediated else "false",
    }
    if result.details:
        fields["Details"] = json_field(result.details)
    if omitted_permissions:
        fields["IpPermissionsOmitted"] = str(omitted_permissions)
    if fixes:
        fields[FIX_COUNT.removeprefix(FIELD_PREFIX)] = str(len(fixes))
    fixed_at = last_fix_time(fixes)
    if remediated and fixed_at:
        fields["FixedAt"] = timestamp(fixed_at)
    for number, fix in enumerate(fixes[:MAX_FIXES_IN_FIELDS], start=1):
        key = f"Fix{number}/"
        fields[key + "Action"] = clip(fix.action, MAX_FIELD_VALUE)
        fields[key + "Resource"] = clip(fix.resource_id, MAX_FIELD_VALUE)
        fields[key + "Outcome"] = fix.outcome.value
        if fix.error_code:
            fields[key + "ErrorCode"] = clip(fix.error_code, MAX_FIELD_VALUE)
        if fix.told:
            fields[key + "Reason"] = clip(fix.told, MAX_FIELD_VALUE)
        if fix.undo:
            fields[key + "Undo"] = undo_field(fix)
        if fix.before is not None:
            fields[key + "Before"] = json_field(fix.before)
        if fix.after is not None:
            fields[key + "After"] = json_field(fix.after)
    return {FIELD_PREFIX + k: v for k, v in fields.items() if v.strip()}


def _description(
    result: Result, control: Control, fixes: Sequence[FixRecord], remediated: bool
) -> str:
    if remediated:
        changes = "; ".join(describe_fix(f, n) for n, f in enumerate(fixes, 1)) or "remediated"
        text = f"Fixed by {PRODUCT}: {changes}. It had found: {result.reason.rstrip('.')}."
    elif result.status is Status.FAILED:
        text = f"{result.reason.rstrip('.')}. {control.description}"
    else:
        text = result.reason
    return clip(text.strip() or control.description, MAX_DESCRIPTION)


def build_finding(
    result: Result,
    control: Control,
    *,
    generated_at: datetime,
    fixes: Sequence[FixRecord] = (),
    remediated: bool = False,
    instance: Instance | None = None,
    group: SecurityGroup | None = None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """One ASFF finding for one result; `remediated` reports the fixed resource as PASSED.

    `created_at` (default `generated_at`) lets a caller keep the first-seen time on re-imports.
    """
    if not result.account_id or not result.region:
        raise ValueError(f"result {result.key} has no account_id/region; cannot build a finding")
    severity = result.severity.upper()
    if severity not in SEVERITIES:
        raise ValueError(
            f"result {result.key}: severity {result.severity!r} is not in {SEVERITIES}"
        )
    compliance = "PASSED" if remediated else COMPLIANCE[result.status]
    if compliance == "PASSED":
        severity = "INFORMATIONAL"
    archived = result.status is Status.NOT_APPLICABLE and not remediated
    now = timestamp(generated_at)

    owner = group.owner_id if group is not None else None
    resource: dict[str, Any] = {
        "Type": result.resource_type.value,
        "Id": resource_arn(result, owner),
    }
    if result.partition in ASFF_PARTITIONS:
        resource["Partition"] = result.partition
    resource["Region"] = result.region
    omitted = 0
    if instance is not None and result.resource_type is ResourceType.INSTANCE:
        resource["Details"] = {"AwsEc2Instance": instance_details(instance)}
    elif group is not None and result.resource_type is ResourceType.SECURITY_GROUP:
        details, omitted = group_details(group)
        resource["Details"] = {"AwsEc2SecurityGroup": details}
    if remediated or any(f.outcome is Outcome.APPLIED for f in fixes):
        # The resource was read before its fixes: what they changed (the group's rules, the
        # instance's profile) is left out rather than shown as it was, also when a fix was
        # skipped or failed beside an applied one; the next read adds it.
        left_out = {
            name
            for details in resource.get("Details", {}).values()
            for name in control.fix_changes
            if details.pop(name, None) is not None
        }
        if "IpPermissions" in left_out:
            omitted = 0  # no rule is shown, so none is counted as left out
    if not any(resource.get("Details", {}).values()):
        resource.pop("Details", None)

    types = list(control.finding_types)
    finding: dict[str, Any] = {
        "SchemaVersion": SCHEMA_VERSION,
        "Id": finding_id(result.account_id, result.region, control.id, result.resource_id),
        "ProductArn": product_arn(result.partition, result.region, result.account_id),
        "ProductName": PRODUCT,
        "CompanyName": PRODUCT,
        "GeneratorId": generator_id(control.id),
        "AwsAccountId": result.account_id,
        "Types": types,
        "CreatedAt": timestamp(created_at) if created_at else now,
        "UpdatedAt": now,
        "LastObservedAt": now,
        "Severity": {"Label": severity},
        "Title": clip(control.title, MAX_TITLE),
        "Description": _description(result, control, fixes, remediated),
        "Remediation": {
            "Recommendation": _compact(
                {
                    "Text": clip(control.recommendation, MAX_RECOMMENDATION),
                    "Url": control.recommendation_url,
                }
            )
        },
        "ProductFields": product_fields(result, control, fixes, remediated, omitted),
        "Resources": [resource],
        "Compliance": _compact(
            {
                "Status": compliance,
                "RelatedRequirements": list(control.related_requirements),
            }
        ),
        "RecordState": "ARCHIVED" if archived else "ACTIVE",
        "FindingProviderFields": {"Severity": {"Label": severity}, "Types": types},
    }
    finding["ProductFields"][FINGERPRINT_FIELD] = fingerprint(finding)
    return finding


def keep_fix_record(finding: dict[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """`finding` (a PASSED result with no fix of its own) keeping the record of the fix Security
    Hub shows on the resource: the RESOLVED note points to it, so a later scan must not erase
    what was changed, before and after, while the resource stays PASSED."""
    fixed = {
        k: v
        for k, v in (stored.get("ProductFields") or {}).items()
        if k.startswith((FIX_PREFIX, REMEDIATED_FIELD)) and isinstance(v, str)
    }
    fields = finding.get("ProductFields", {})
    if (
        fixed.get(REMEDIATED_FIELD) != "true"
        or compliance(stored) != Status.PASSED.value
        or compliance(finding) != Status.PASSED.value
        or any(k.startswith(FIX_PREFIX) for k in fields)
    ):
        return finding
    kept = {
        **finding,
        "Description": stored.get("Description") or finding["Description"],
        "ProductFields": {**fields, **fixed},
    }
    kept["ProductFields"][FINGERPRINT_FIELD] = fingerprint(kept)
    return kept


FIX_FIELD = re.compile(re.escape(FIX_PREFIX) + r"([0-9]+)/(.+)")
EARLIER = "(an earlier run) "


def fix_records(fields: Mapping[str, Any]) -> list[dict[str, str]]:
    """The Fix{n}/... fields as one dict per fix, in order (name after the slash → value)."""
    records: dict[int, dict[str, str]] = {}
    for key, value in fields.items():
        if (match := FIX_FIELD.fullmatch(key)) and isinstance(value, str):
            records.setdefault(int(match[1]), {})[match[2]] = value
    return [records[n] for n in sorted(records)]


def keep_applied_records(finding: dict[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """`finding`, still FAILED with nothing applied by its own run, keeping the applied fixes
    Security Hub shows on it: a partial fix (an SSH revoke beside a prefix-list rule left to a
    person, preferences written with the key held back) stays failing, and the next scan's own
    records (SKIPPED, already compliant) would otherwise replace what was changed and its undo.
    They go first, their reason marked as an earlier run's; kept until a run applies a fix of
    its own or the resource passes."""
    fields = finding.get("ProductFields", {})
    own = fix_records(fields)
    if (
        compliance(finding) != Status.FAILED.value
        or compliance(stored) != Status.FAILED.value
        or any(r.get("Outcome") == Outcome.APPLIED.value for r in own)
    ):
        return finding
    earlier = [
        {**r, "Reason": clip(EARLIER + r.get("Reason", "").removeprefix(EARLIER), MAX_FIELD_VALUE)}
        for r in fix_records(stored.get("ProductFields") or {})
        if r.get("Outcome") == Outcome.APPLIED.value
    ]
    if not earlier:
        return finding
    kept = {k: v for k, v in fields.items() if not FIX_FIELD.fullmatch(k)}
    kept[FIX_COUNT] = str(len(earlier) + int(fields.get(FIX_COUNT, "0")))
    for number, record in enumerate([*earlier, *own][:MAX_FIXES_IN_FIELDS], start=1):
        kept.update({f"{FIX_PREFIX}{number}/{name}": value for name, value in record.items()})
    carried = {**finding, "ProductFields": kept}
    kept[FINGERPRINT_FIELD] = fingerprint(carried)
    return carried


def archived_as_passed(finding: dict[str, Any]) -> dict[str, Any]:
    """An archived finding (its resource deleted, or out of scope) over a stored PASSED one:
    it stays PASSED. NOT_AVAILABLE would make Security Hub reset a RESOLVED workflow to NEW,
    and the fix would drop out of the resolved insight."""
    kept = {**finding, "Compliance": {**(finding.get("Compliance") or {}), "Status": "PASSED"}}
    kept["ProductFields"] = {**finding.get("ProductFields", {})}
    kept["ProductFields"][FINGERPRINT_FIELD] = fingerprint(kept)
    return kept


def compliance(finding: Mapping[str, Any]) -> str | None:
    """A finding's Compliance.Status (PASSED, FAILED ...), None without one."""
    return (finding.get("Compliance") or {}).get("Status")


# Times change on every import; the fingerprint covers everything else a reader would see.
VOLATILE = frozenset({"CreatedAt", "UpdatedAt", "LastObservedAt", "FirstObservedAt"})
FINGERPRINT_FIELD = FIELD_PREFIX + "Fingerprint"


def fingerprint(finding: dict[str, Any]) -> str:
    """A digest of what the finding says, without its timestamps: equal digests mean a re-import
    would change nothing a person or an insight can see (so the drift scan may skip it)."""
    content = {k: v for k, v in finding.items() if k not in VOLATILE}
    content["ProductFields"] = {
        k: v for k, v in finding.get("ProductFields", {}).items() if k != FINGERPRINT_FIELD
    }
    body = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:32]
