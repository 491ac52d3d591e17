"""EMULATION: the AWS APIs moto 5.2.5 lacks that the guardrail calls, patched into moto at runtime.

This is not AWS and not product code. It lets the real guardrail run end to end against moto (in
process under `mock_aws`, or over loopback in `ThreadedMotoServer`) without the product skipping a
call. Each emulated action follows the AWS API shape; where its *behaviour* is a simplification,
the docstring says so. `install()` adds, idempotently and without touching moto's files:

- ``ssm:DescribeInstanceInformation`` (JSON). Emulated rule: an EC2 instance of the same
  account-region is reported when the simulation below (the role's policies and its permissions
  boundary, on the instance's ARN: what SimulatePrincipalPolicy answers) allows its instance
  profile's role the SSM Agent's heartbeat (``HEARTBEAT``, ssm:UpdateInstanceInformation), as on
  AWS, where that call alone registers the agent: carrying ``AmazonSSMManagedInstanceCore`` is
  not enough when an explicit Deny or the boundary refuses it, and a role refused only the
  session channels (ssmmessages) is listed all the same. An instance without a profile that
  requires IMDSv2 registers with the role Default Host Management's setting names (below), if
  that role exists. Running → ``Online``; every
  other instance is absent: an unregistered one, and, as AWS documents ("does not return
  information for nodes that are either Stopped or Terminated"; amazon-ssm-agent#407), a stopped
  one. An ``InstanceIds`` filter naming an instance that is shutting down, terminated or unknown
  to EC2 fails the call with ``InvalidInstanceId``, as AWS does; so do both filter forms in one
  request and two ResourceType values (``InvalidInstanceInformationFilterValue``).
- ``ssm:GetServiceSetting`` and ``ssm:UpdateServiceSetting`` (JSON), for the one setting the
  guardrail reads, Default Host Management's role
  (``/ssm/managed-instance/default-ec2-instance-management-role``, by path or ARN). Simplified: a
  setting never updated reads ``$None`` with status ``Default``; any other setting id is
  ``ServiceSettingNotFound``.
- ``securityhub:BatchUpdateFindings`` (REST-JSON, ``PATCH /findings/batchupdate``): sets
  Workflow.Status, Note (and the other customer fields) on stored findings; unknown Id/ProductArn →
  ``UnprocessedFindings`` with ``FindingNotFound``. Like AWS, it does not change ``UpdatedAt``, and
  refuses the whole request (``InvalidInputException``) for a Note whose Text or UpdatedBy is
  blank or longer than 512 characters.
- ``iam:SimulatePrincipalPolicy`` (query/XML) for role ARNs: see `simulate`.
- ``ec2:GetManagedPrefixListAssociations`` (query/XML): the account-region's security groups
  with a rule (ingress or egress) that references the list; an unknown list is
  ``InvalidPrefixListID.NotFound``. Simplified: EC2 also lists route tables and other resources
  that reference a list, and pages its answer; here every group comes in one answer.
- ``securityhub:GetFindings`` string filters and date filters (Start/End, DateRange in days;
  UpdatedAt, CreatedAt, NoteUpdatedAt) (moto ignored every filter): see `finding_matches`.

It also corrects moto behaviours the guardrail's results depend on (documented AWS rules):

- ``BatchImportFindings`` on an existing finding keeps Note, UserDefinedFields, VerificationState
  and Workflow (moto overwrote them), ignores an update whose ``UpdatedAt`` is not later than the
  stored one, and resets Workflow NOTIFIED/RESOLVED → NEW when RecordState goes ARCHIVED → ACTIVE
  or Compliance.Status goes PASSED → FAILED/WARNING/NOT_AVAILABLE. New findings start
  ``Workflow.Status = NEW``. With Security Hub disabled every finding comes back in
  ``FailedFindings`` with ``InvalidAccess`` (moto accepted them). A finding ASFF does not allow
  (`asff_problem`: 240 KB, required attributes, lengths, counts, enumerations, patterns,
  timestamps) comes back in ``FailedFindings`` with ``InvalidInput``; a finding for another
  account, or through another product, and more than 100 findings fail the whole request
  (``AccessDeniedException``, ``InvalidInputException``), as in AWS (moto took anything with an
  Id and a resource). Findings
  are looked up by Id in a dict (moto scanned a list per finding: quadratic at benchmark sizes).
- ``ReplaceIamInstanceProfileAssociation`` now shows in DescribeInstances' ``IamInstanceProfile``,
  whose ``Id`` is the instance profile's id, as in AWS (moto put the association id there).
- ``AuthorizeSecurityGroupIngress`` answers with every rule it created, as EC2 does (moto listed
  only those of the last IpPermission sent), and is all or nothing: a refused permission (a
  duplicate, the rules quota) leaves none of the call's rules (moto kept those added before it).
- ``RevokeSecurityGroupIngress`` is all or nothing too, as EC2 documents for a non-default VPC:
  a permission that matches no rule fails the call (``InvalidPermission.NotFound``) and no rule
  is revoked; moto had removed those matched before it.
- ``RunInstances`` with ``IamInstanceProfile`` and a count above one gives the profile to every
  instance launched (moto associated it with the first one only).
- ``DescribeInstances`` accepts the filters ``iam-instance-profile.arn`` (the profile currently
  associated), ``network-interface.group-id`` (a group on any of the instance's interfaces) and
  ``network-interface.network-interface-id``, with EC2's ``*`` and ``?`` wildcards; moto raised
  NotImplementedError for all three.

Known moto gaps NOT corrected here (a test against the emulator cannot catch what they hide; the
guardrail's narrowing in place, ``ModifySecurityGroupRules``, is the code path they touch, and its
adapter tests run on this path, so correcting them is a change of its own):

- ``ModifySecurityGroupRules`` keeps the rule's old description when the request omits
  ``Description``; AWS replaces the rule's content, so the description is cleared.
- It ignores a ``CidrIpv6`` change (the rule keeps its old IPv6 source), and accepts ``CidrIpv6``
  for an IPv4 rule (its check is the wrong way round); AWS refuses a change of address family.
- It accepts modifying a rule into a copy of another rule of the group; AWS refuses a duplicate.
- Its rules quota counts IPv4 and IPv6 rules together; AWS counts them separately (60 inbound
  IPv4 and 60 inbound IPv6 rules per group by default).
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

# The SSM Agent's call whose success makes Systems Manager list its instance Online (the
# heartbeat; the first of the agent actions the guardrail simulates for a role, ssm_role.py).
HEARTBEAT = ("ssm:UpdateInstanceInformation",)
AGENT_VERSION = "3.3.1142.0"
SSM_PAGE_DEFAULT, SSM_PAGE_MIN, SSM_PAGE_MAX = 50, 5, 50
SIMULATE_PAGE_DEFAULT = 100
WORKFLOW_STATUSES = ("NEW", "NOTIFIED", "RESOLVED", "SUPPRESSED")
CUSTOMER_FIELDS = ("Note", "UserDefinedFields", "VerificationState", "Workflow")
BATCH_UPDATE_PATH = "{0}/findings/batchupdate$"

_lock = threading.Lock()
_installed = False


# --------------------------------------------------------------------------------------------
# Policy evaluation (iam:SimulatePrincipalPolicy)
# --------------------------------------------------------------------------------------------


IAM_POLICY = "IAM Policy"  # SimulatePrincipalPolicy's SourcePolicyType


@dataclass(frozen=True)
class SourcePolicy:
    """One policy document taking part in a simulation, named as SimulatePrincipalPolicy names it."""

    # As IAM names them: a managed policy by its name, a role's inline policy as
    # role_<role>_<policy>, a policy given with the call as PolicyInputList.<n>; every type is
    # "IAM Policy" (answers AWS and others have published show no other).
    policy_id: str
    policy_type: str
    document: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    decision: str  # allowed | explicitDeny | implicitDeny
    matched: tuple[SourcePolicy, ...] = ()
    # Context keys the statements covering the pair name that the request context lacks.
    missing: tuple[str, ...] = ()


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, str | dict) else list(value)


@lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """IAM wildcards: `*` any run of characters, `?` any one character; everything else literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _any_match(patterns: Iterable[Any], value: str, *, ignore_case: bool) -> bool:
    return any(_glob(str(p), ignore_case).fullmatch(value) for p in patterns)


def statement_covers(statement: dict[str, Any], action: str, resource: str) -> bool:
    """Whether a statement's Action/NotAction and Resource/NotResource cover the pair."""
    if "Action" in statement:
        covered = _any_match(_as_list(statement["Action"]), action, ignore_case=True)
    elif "NotAction" in statement:
        covered = not _any_match(_as_list(statement["NotAction"]), action, ignore_case=True)
    else:
        return False
    if not covered:
        return False
    if "Resource" in statement:
        return _any_match(_as_list(statement["Resource"]), resource, ignore_case=False)
    if "NotResource" in statement:
        return not _any_match(_as_list(statement["NotResource"]), resource, ignore_case=False)
    return False


# The condition operators evaluated on a key the context holds, each also with IfExists:
# name → (negated, how values compare). ARNs compare segment by segment, with wildcards.
_OPERATORS = {
    "StringEquals": (False, "exact"),
    "StringNotEquals": (True, "exact"),
    "StringEqualsIgnoreCase": (False, "ignore-case"),
    "StringNotEqualsIgnoreCase": (True, "ignore-case"),
    "StringLike": (False, "like"),
    "StringNotLike": (True, "like"),
    "ArnEquals": (False, "arn"),
    "ArnLike": (False, "arn"),
    "ArnNotEquals": (True, "arn"),
    "ArnNotLike": (True, "arn"),
    "Bool": (False, "ignore-case"),
}


def _values(raw: Any) -> list[str]:
    """A condition's values as IAM reads them: a JSON true, false or number is its text."""
    items = raw if isinstance(raw, list) else [raw]
    return [json.dumps(v) if isinstance(v, bool) else str(v) for v in items]


def _arn_match(pattern: str, arn: str) -> bool:
    wanted, given = pattern.split(":", 5), arn.split(":", 5)
    return len(wanted) == len(given) == 6 and all(
        _glob(w, False).fullmatch(g) for w, g in zip(wanted, given, strict=True)
    )


def _compares(how: str, values: list[str], given: str) -> bool:
    if how == "arn":
        return any(_arn_match(v, given) for v in values)
    if how == "like":
        return _any_match(values, given, ignore_case=False)
    if how == "ignore-case":
        return given.lower() in {v.lower() for v in values}
    return given in values


def _key_holds(operator: str, values: list[str], present: list[str] | None) -> bool | None:
    """Whether one key's test holds; None for an operator not evaluated on a present key
    (Numeric*, Date*, IpAddress, Binary*, ForAnyValue:/ForAllValues:)."""
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    name = base.removesuffix("IfExists")
    if name == "Null" and not (qualifier or if_exists):
        return any(v.lower() == ("true" if present is None else "false") for v in values)
    if present is None:
        # IAM: a key absent from the request context matches nothing, so the condition is
        # false, except a negated operator's and ...IfExists (true); over a set, ForAllValues
        # holds (vacuously) and ForAnyValue does not.
        if qualifier:
            return qualifier == "ForAllValues"
        return if_exists or "Not" in name
    if qualifier or name not in _OPERATORS:
        return None
    negated, how = _OPERATORS[name]
    matched = any(_compares(how, values, given) for given in present)
    return matched is not negated


def condition_holds(
    condition: dict[str, Any], context: dict[str, list[str]]
) -> tuple[bool | None, tuple[str, ...]]:
    """Whether a statement's Condition block holds for the request `context` (key in lower case
    → values), and the keys it names that the context lacks. Every operator, and every key
    under one, must hold. None when it depends on an operator not evaluated here."""
    verdicts: list[bool | None] = []
    missing: dict[str, str] = {}
    for operator, tests in condition.items():
        if not isinstance(tests, dict):
            verdicts.append(None)
            continue
        for key, values in tests.items():
            present = context.get(str(key).lower())
            if present is None:
                missing.setdefault(str(key).lower(), str(key))
            verdicts.append(_key_holds(str(operator), _values(values), present))
    if False in verdicts:
        return False, tuple(missing.values())
    return (None if None in verdicts else True), tuple(missing.values())


def with_keys(keys: list[str], more: Iterable[str]) -> list[str]:
    """`keys` and those of `more` not yet in it (key names are case-insensitive)."""
    merged: dict[str, str] = {}
    for key in [*keys, *more]:
        merged.setdefault(key.lower(), key)
    return list(merged.values())


def statement_applies(
    statement: dict[str, Any],
    action: str,
    resource: str,
    context: dict[str, list[str]] | None = None,
) -> bool:
    """Whether a statement covers (action, resource) and its Condition, if any, holds for the
    request `context`. Conservative simplification: a test the emulator does not evaluate (an
    operator it lacks, on a key the context holds) never holds, for Allow and Deny alike."""
    return statement_covers(statement, action, resource) and _holds(statement, context or {})[0]


def _holds(
    statement: dict[str, Any], context: dict[str, list[str]]
) -> tuple[bool, tuple[str, ...]]:
    condition = statement.get("Condition")
    if not condition:
        return True, ()
    if not isinstance(condition, dict):
        return False, ()
    holds, missing = condition_holds(condition, context)
    return holds is True, missing


def evaluate(
    policies: Sequence[SourcePolicy],
    action: str,
    resource: str,
    context: dict[str, list[str]] | None = None,
) -> Decision:
    """Identity-policy evaluation: an explicit Deny wins, then any Allow, else implicit deny.
    The keys missing from `context` are those named by the statements covering the pair."""
    allows: list[SourcePolicy] = []
    denies: list[SourcePolicy] = []
    missing: list[str] = []
    for policy in policies:
        for statement in _as_list(policy.document.get("Statement")):
            if not isinstance(statement, dict) or not statement_covers(statement, action, resource):
                continue
            holds, lacking = _holds(statement, context or {})
            missing = with_keys(missing, lacking)
            if not holds:
                continue
            effect = str(statement.get("Effect", ""))
            if effect == "Deny":
                denies.append(policy)
            elif effect == "Allow":
                allows.append(policy)
    if denies:
        return Decision("explicitDeny", _unique(denies), tuple(missing))
    if allows:
        return Decision("allowed", _unique(allows), tuple(missing))
    return Decision("implicitDeny", (), tuple(missing))


def _unique(policies: list[SourcePolicy]) -> tuple[SourcePolicy, ...]:
    seen: dict[tuple[str, str], SourcePolicy] = {}
    for policy in policies:
        seen.setdefault((policy.policy_type, policy.policy_id), policy)
    return tuple(seen.values())


# Most restrictive first: the aggregate decision of an action over several resources.
_RESTRICTIVE = ("explicitDeny", "implicitDeny", "allowed")


def simulate(
    identity: Sequence[SourcePolicy],
    actions: Sequence[str],
    resources: Sequence[str],
    boundary: Sequence[SourcePolicy] | None = None,
    context: dict[str, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """EvaluationResults as IAM's API reference documents them now: one per action, whatever
    the number of resources. Its top-level EvalDecision (and MatchedStatements, boundary detail)
    is the aggregate, the most restrictive over the resources; ResourceSpecificResults holds the
    decision for each resource.

    A permissions boundary, when the role has one, must also allow the pair (its explicit Deny
    wins as well). Conditions are evaluated against `context` (ContextEntries: key in lower
    case → values); the keys a covering statement names that it lacks come first in each
    resource's MissingContextValues, then those any other statement names (IAM lists them
    all, a statement's of another action too: boto/boto3#3111, aws/aws-sdk-java-v2#1751), and
    all of them are the action's. Resource policies, SCPs and session policies are not
    modelled.
    """
    named = named_missing([*identity, *(boundary or ())], context or {})
    results = []
    for action in actions:
        specific = []
        for resource in resources:
            decision = evaluate(identity, action, resource, context)
            missing = list(decision.missing)
            entry: dict[str, Any] = {"EvalResourceName": resource}
            if boundary is not None:
                bounded = evaluate(boundary, action, resource, context)
                missing = with_keys(missing, bounded.missing)
                entry["PermissionsBoundaryDecisionDetail"] = {
                    "AllowedByPermissionsBoundary": bounded.decision == "allowed"
                }
                if bounded.decision == "explicitDeny" and decision.decision != "explicitDeny":
                    decision = bounded
                elif bounded.decision == "implicitDeny" and decision.decision == "allowed":
                    decision = Decision("implicitDeny")
            missing = with_keys(missing, named)
            entry["EvalResourceDecision"] = decision.decision
            entry["MatchedStatements"] = [
                {"SourcePolicyId": p.policy_id, "SourcePolicyType": p.policy_type}
                for p in decision.matched
            ]
            if missing:
                entry["MissingContextValues"] = missing
            specific.append(entry)
        worst = min(specific, key=lambda e: _RESTRICTIVE.index(e["EvalResourceDecision"]))
        result: dict[str, Any] = {
            "EvalActionName": action,
            "EvalDecision": worst["EvalResourceDecision"],
            "MatchedStatements": worst["MatchedStatements"],
            "ResourceSpecificResults": specific,
        }
        every_missing: list[str] = []
        for entry in specific:
            every_missing = with_keys(every_missing, entry.get("MissingContextValues", []))
        if every_missing:
            result["MissingContextValues"] = every_missing
        if len(resources) == 1:
            result["EvalResourceName"] = resources[0]
        if boundary is not None:
            result["PermissionsBoundaryDecisionDetail"] = {
                "AllowedByPermissionsBoundary": all(
                    e["PermissionsBoundaryDecisionDetail"]["AllowedByPermissionsBoundary"]
                    for e in specific
                )
            }
        results.append(result)
    return results


def named_missing(policies: Sequence[SourcePolicy], context: dict[str, list[str]]) -> list[str]:
    """The context keys any statement of `policies` names in its Condition that `context`
    lacks, whatever the statement's action and resource."""
    named: list[str] = []
    for policy in policies:
        for statement in _as_list(policy.document.get("Statement")):
            condition = statement.get("Condition") if isinstance(statement, dict) else None
            if isinstance(condition, dict):
                named = with_keys(named, condition_holds(condition, context)[1])
    return named


def request_context(entries: Iterable[Any]) -> dict[str, list[str]]:
    """SimulatePrincipalPolicy's ContextEntries as key in lower case → values (names are
    case-insensitive in IAM; values are compared as written)."""
    context: dict[str, list[str]] = {}
    for entry in entries:
        if isinstance(entry, dict) and entry.get("ContextKeyName"):
            values = [str(v) for v in _as_list(entry.get("ContextKeyValues"))]
            context.setdefault(str(entry["ContextKeyName"]).lower(), []).extend(values)
    return context


def _document(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    text = str(raw or "")
    for candidate in (text, urllib.parse.unquote(text)):
        try:
            parsed = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            return parsed
    return {}


def _managed_document(policy: Any) -> dict[str, Any]:
    """The default version's document of a moto ManagedPolicy."""
    for version in getattr(policy, "versions", []):
        if version.version_id == policy.default_version_id:
            return _document(version.document)
    return {}


def _managed_source(policy: Any) -> SourcePolicy:
    return SourcePolicy(policy.name, IAM_POLICY, _managed_document(policy))


def role_policies(role: Any) -> list[SourcePolicy]:
    """A moto Role's attached managed policies (default versions) and inline policies."""
    sources = [_managed_source(p) for p in role.managed_policies.values()]
    sources += [
        SourcePolicy(f"role_{role.name}_{name}", IAM_POLICY, _document(doc))
        for name, doc in role.policies.items()
    ]
    return sources


def role_boundary(backend: Any, role: Any) -> list[SourcePolicy] | None:
    """The role's permissions boundary as a simulation takes it; None when it has none (a
    boundary whose policy is gone allows nothing, as IAM would)."""
    if not role.permissions_boundary_arn:
        return None
    policy = backend.managed_policies.get(role.permissions_boundary_arn)
    return [_managed_source(policy)] if policy else []


def role_allows(backend: Any, role: Any, actions: Sequence[str], resource: str = "*") -> bool:
    """Whether `simulate` (role policies and boundary, as SimulatePrincipalPolicy answers)
    allows every action on the resource."""
    results = simulate(role_policies(role), actions, [resource], role_boundary(backend, role))
    return all(r["EvalDecision"] == "allowed" for r in results)


# --------------------------------------------------------------------------------------------
# The emulated actions, as methods added to moto's response classes
# --------------------------------------------------------------------------------------------


def _iam_simulate_principal_policy(self: Any) -> Any:
    """EMULATION of iam:SimulatePrincipalPolicy for role ARNs (see `simulate`)."""
    from moto.core.responses import ActionResult
    from moto.iam.exceptions import NotFoundException, ValidationError

    arn = str(self._get_param("PolicySourceArn") or "")
    actions = list(self._get_param("ActionNames") or [])
    resources = list(self._get_param("ResourceArns") or []) or ["*"]
    if not actions:
        raise ValidationError("ActionNames must contain at least one action")
    if ":role/" not in arn:
        raise ValidationError(
            f"emulation: SimulatePrincipalPolicy supports role ARNs only, not {arn}"
        )
    backend = self.backend
    role = next((r for r in backend.get_roles() if r.arn == arn), None)
    if role is None:
        raise NotFoundException(f"The role with name {arn.rsplit('/', 1)[-1]} cannot be found.")
    identity = role_policies(role)
    identity += [
        SourcePolicy(f"PolicyInputList.{n}", IAM_POLICY, _document(doc))
        for n, doc in enumerate(self._get_param("PolicyInputList") or [], start=1)
    ]
    boundary_inputs = self._get_param("PermissionsBoundaryPolicyInputList") or []
    boundary = (
        [
            SourcePolicy(f"PermissionsBoundaryPolicyInputList.{n}", IAM_POLICY, _document(doc))
            for n, doc in enumerate(boundary_inputs, start=1)
        ]
        if boundary_inputs
        else role_boundary(backend, role)
    )
    context = request_context(self._get_param("ContextEntries") or [])
    results = simulate(identity, actions, resources, boundary, context)
    start = _decode_token(self._get_param("Marker"), len(results), ValidationError)
    size = int(self._get_param("MaxItems") or SIMULATE_PAGE_DEFAULT)
    page = results[start : start + size]
    body: dict[str, Any] = {"EvaluationResults": page, "IsTruncated": start + size < len(results)}
    if body["IsTruncated"]:
        body["Marker"] = _encode_token(start + size)
    return ActionResult(body)


DHMC_SETTING_ID = "/ssm/managed-instance/default-ec2-instance-management-role"


def service_settings(account_id: str, region: str) -> dict[str, Any]:
    """The emulated service settings of an account-region (kept on moto's SSM backend, so a
    reset of the emulator resets them), by path."""
    from moto.ssm.models import ssm_backends

    backend = ssm_backends[account_id][region]
    return backend.__dict__.setdefault("_emulated_service_settings", {})


def _service_setting(response: Any) -> tuple[dict[str, Any], str]:
    """The emulated settings of the caller's account-region, and the setting id asked for, as a
    path."""
    from moto.ssm.exceptions import SSMException

    settings = service_settings(response.current_account, response.region)
    setting_id = str(response._get_param("SettingId") or "")
    path = (
        "/" + setting_id.split(":servicesetting/", 1)[1]
        if ":servicesetting/" in setting_id
        else setting_id
    )
    if path != DHMC_SETTING_ID:
        raise SSMException("ServiceSettingNotFound", f"ServiceSetting {setting_id} is not found")
    return settings, path


def _ssm_get_service_setting(self: Any) -> Any:
    """EMULATION of ssm:GetServiceSetting (rule: module doc)."""
    from moto.core.responses import ActionResult
    from moto.utilities.utils import get_partition

    settings, path = _service_setting(self)
    value, status = settings.get(path, ("$None", "Default"))
    partition = get_partition(self.region)
    return ActionResult(
        {
            "ServiceSetting": {
                "SettingId": path,
                "SettingValue": value,
                "Status": status,
                "ARN": f"arn:{partition}:ssm:{self.region}:{self.current_account}:servicesetting"
                f"{path}",
            }
        }
    )


def _ssm_update_service_setting(self: Any) -> Any:
    """EMULATION of ssm:UpdateServiceSetting (rule: module doc)."""
    from moto.core.responses import ActionResult

    settings, path = _service_setting(self)  # an empty value: botocore refuses it (min 1)
    settings[path] = (str(self._get_param("SettingValue")), "Customized")
    return ActionResult({})


def _ssm_describe_instance_information(self: Any) -> Any:
    """EMULATION of ssm:DescribeInstanceInformation over moto's EC2 instances (rule: module doc)."""
    from moto.core.responses import ActionResult
    from moto.ssm.exceptions import SSMException

    size = self._get_param("MaxResults")
    if size is None:
        size = SSM_PAGE_DEFAULT
    elif not SSM_PAGE_MIN <= int(size) <= SSM_PAGE_MAX:
        raise SSMException(
            "ValidationException",
            f"1 validation error detected: Value '{size}' at 'maxResults' failed to satisfy "
            f"constraint: Member must have value between {SSM_PAGE_MIN} and {SSM_PAGE_MAX}",
        )
    wanted = _ssm_filters(
        self._get_param("Filters") or [], self._get_param("InstanceInformationFilterList") or []
    )
    invalid = _invalid_instance_ids(
        self.current_account,
        self.region,
        {v for field, values in wanted if field == "InstanceId" for v in values},
    )
    if invalid:
        raise SSMException(
            "InvalidInstanceId",
            f"Instances [[{', '.join(invalid)}]] not in a valid state for account "
            f"{self.current_account}",
        )
    # Only the instances an InstanceIds filter names are simulated (one call per 50 ids).
    named = [values for field, values in wanted if field == "InstanceId"]
    items = [
        item
        for item in managed_instances(
            self.current_account, self.region, set.intersection(*named) if named else None
        )
        if all(str(item.get(field, "")) in values for field, values in wanted)
    ]
    start = _decode_token(
        self._get_param("NextToken"),
        len(items),
        lambda message: SSMException("InvalidNextToken", message),
    )
    page = items[start : start + int(size)]
    body: dict[str, Any] = {"InstanceInformationList": page}
    if start + int(size) < len(items):
        body["NextToken"] = _encode_token(start + int(size))
    return ActionResult(body)


def _invalid_instance_ids(account_id: str, region: str, ids: set[str]) -> list[str]:
    """The EC2 instance ids Systems Manager refuses: shutting down, terminated or unknown."""
    from moto.ec2.models import ec2_backends

    states = {i.id: i._state.name for i in ec2_backends[account_id][region].all_instances()}
    return sorted(
        i
        for i in ids
        if i.startswith("i-") and states.get(i, "terminated") in ("shutting-down", "terminated")
    )


_SSM_FILTER_FIELDS = {
    "instanceids": "InstanceId",
    "pingstatus": "PingStatus",
    "platformtypes": "PlatformType",
    "resourcetype": "ResourceType",
    "agentversion": "AgentVersion",
}


def _ssm_filters(
    filters: list[dict[str, Any]], legacy: list[dict[str, Any]]
) -> list[tuple[str, set[str]]]:
    """(field, accepted values) pairs from `Filters` (Key/Values) or the older
    `InstanceInformationFilterList` (key/valueSet); every pair must hold. As AWS: not both
    forms in one request, at least one value, and one value at most for ResourceType."""
    from moto.ssm.exceptions import InvalidFilterKey, SSMException

    def invalid(message: str) -> Exception:
        return SSMException("InvalidInstanceInformationFilterValue", message)

    if filters and legacy:
        raise invalid("use either Filters or InstanceInformationFilterList, not both")
    pairs = [(f.get("Key", ""), f.get("Values") or []) for f in filters]
    pairs += [(f.get("key", ""), f.get("valueSet") or []) for f in legacy]
    wanted = []
    for key, values in pairs:
        field = _SSM_FILTER_FIELDS.get(str(key).lower())
        if field is None:
            raise InvalidFilterKey(f"emulation: filter key {key!r} is not supported")
        if not values:
            raise invalid(f"filter {key} needs at least one value")
        if field == "ResourceType" and len(values) > 1:
            raise invalid("ResourceType filter may contain only one value")
        wanted.append((field, {str(v).strip() for v in values}))
    return wanted


def dhmc_roles(account_id: str, region: str, iam: Any) -> list[Any]:
    """The role Default Host Management's setting names in the account-region (by name, or a
    path and name), if it exists: an instance without a profile registers with it."""
    value = service_settings(account_id, region).get(DHMC_SETTING_ID, ("$None",))[0]
    name = value.rsplit("/", 1)[-1]
    return [r for r in iam.roles.values() if r.name == name] if value != "$None" else []


def managed_instances(
    account_id: str, region: str, instance_ids: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """What Systems Manager would know of the region's EC2 instances, or of those among
    `instance_ids` (emulated rule), by id."""
    from moto.ec2.models import ec2_backends
    from moto.iam.models import iam_backends
    from moto.utilities.utils import get_partition

    partition = get_partition(region)
    ec2 = ec2_backends[account_id][region]
    iam = iam_backends[account_id][partition]
    now = datetime.now(UTC).replace(microsecond=0)
    profiles = {p.arn: p for p in iam.get_instance_profiles()}
    dhmc = dhmc_roles(account_id, region, iam)
    items = []
    for instance in ec2.all_instances():
        state = instance._state.name
        if state != "running" or (instance_ids is not None and instance.id not in instance_ids):
            continue
        ping, last = "Online", now
        profile = profiles.get((instance.iam_instance_profile or {}).get("Arn") or "")
        # Decided as SimulatePrincipalPolicy answers for the role on this instance (policies and
        # boundary), never by the core policy's name alone: a Deny or a boundary of the
        # heartbeat keeps it out.
        arn = f"arn:{partition}:ec2:{region}:{account_id}:instance/{instance.id}"
        # No profile: Default Host Management's role, for an instance that requires IMDSv2.
        imdsv2 = instance.metadata_options.http_tokens == "required"
        roles = profile.roles if profile else dhmc if imdsv2 else []
        if not any(role_allows(iam, role, HEARTBEAT, arn) for role in roles):
            continue
        windows = (instance.platform or "").lower() == "windows"
        ip = instance.private_ip or ""
        items.append(
            {
                "InstanceId": instance.id,
                "PingStatus": ping,
                "LastPingDateTime": last,
                "AgentVersion": AGENT_VERSION,
                "IsLatestVersion": False,
                "PlatformType": "Windows" if windows else "Linux",
                "PlatformName": "Microsoft Windows Server 2022 Datacenter"
                if windows
                else "Amazon Linux",
                "PlatformVersion": "10.0.20348" if windows else "2023",
                "ResourceType": "EC2Instance",
                "IPAddress": ip,
                "ComputerName": f"ip-{ip.replace('.', '-')}.{region}.compute.internal"
                if ip
                else instance.id,
                "SourceId": instance.id,
                "SourceType": "AWS::EC2::Instance",
            }
        )
    return sorted(items, key=lambda i: i["InstanceId"])


MAX_NOTE = 512  # Note.Text and Note.UpdatedBy (API_Note; AWS::SecurityHub NoteUpdate)
NOT_BLANK = re.compile(r".*\S.*", re.DOTALL)


def note_problem(note: Any) -> str:
    """Why Security Hub refuses a BatchUpdateFindings Note ("" when it takes it): Text and
    UpdatedBy are required, 1 to 512 characters, not blank."""
    if not isinstance(note, dict):
        return "Note must be an object with Text and UpdatedBy"
    for key in ("Text", "UpdatedBy"):
        value = note.get(key)
        if not isinstance(value, str) or not NOT_BLANK.fullmatch(value):
            return f"Note.{key} is required and must not be blank"
        if len(value) > MAX_NOTE:
            return f"Note.{key} must be at most {MAX_NOTE} characters, not {len(value)}"
    return ""


def _securityhub_batch_update_findings(self: Any) -> str:
    """EMULATION of securityhub:BatchUpdateFindings over moto's stored findings."""
    from moto.securityhub.exceptions import InvalidInputException

    op = "BatchUpdateFindings"
    body = json.loads(self.body) if self.body else {}
    identifiers = body.get("FindingIdentifiers") or []
    if not 1 <= len(identifiers) <= 100:
        raise InvalidInputException(op=op, msg="FindingIdentifiers must hold 1 to 100 identifiers")
    status = (body.get("Workflow") or {}).get("Status")
    if status is not None and status not in WORKFLOW_STATUSES:
        raise InvalidInputException(
            op=op, msg=f"Workflow.Status must be one of {WORKFLOW_STATUSES}"
        )
    note = body.get("Note")
    if note is not None and (problem := note_problem(note)):
        raise InvalidInputException(op=op, msg=problem)
    backend = self.securityhub_backend
    if not backend.enabled:
        from moto.securityhub.exceptions import SecurityHubClientError

        raise SecurityHubClientError(
            "InvalidAccessException",
            f"Account {backend.account_id} is not subscribed to AWS Security Hub",
        )
    stored = {f.id: f for f in backend.findings}
    now = _iso_now()
    processed, unprocessed = [], []
    for identifier in identifiers:
        finding = stored.get(identifier.get("Id", ""))
        if finding is None or finding.data.get("ProductArn") != identifier.get("ProductArn"):
            unprocessed.append(
                {
                    "FindingIdentifier": identifier,
                    "ErrorCode": "FindingNotFound",
                    "ErrorMessage": "Finding Not Found",
                }
            )
            continue
        data = finding.data
        if status is not None:
            data["Workflow"] = {"Status": status}
            data["WorkflowState"] = (
                "NEW" if status == "NEW" else "RESOLVED" if status == "RESOLVED" else "IN_PROGRESS"
            )
        if note is not None:
            data["Note"] = {"Text": note["Text"], "UpdatedBy": note["UpdatedBy"], "UpdatedAt": now}
        for key in (
            "VerificationState",
            "Confidence",
            "Criticality",
            "Types",
            "UserDefinedFields",
            "RelatedFindings",
        ):
            if key in body:
                data[key] = body[key]
        if "Severity" in body:
            data["Severity"] = {**data.get("Severity", {}), **body["Severity"]}
        processed.append({"Id": identifier["Id"], "ProductArn": identifier["ProductArn"]})
    return json.dumps({"ProcessedFindings": processed, "UnprocessedFindings": unprocessed})


def _securityhub_import_findings(
    self: Any, findings: list[dict[str, Any]]
) -> tuple[int, int, list[dict[str, Any]]]:
    """BatchImportFindings with Security Hub's documented update rules (see module doc)."""
    from moto.securityhub.models import Finding

    stored = {f.id: f for f in self.findings}
    failed: list[dict[str, Any]] = []
    success = 0
    if not self.enabled:
        # Documented: with Security Hub disabled the findings come back in FailedFindings.
        message = f"Account {self.account_id} is not subscribed to AWS Security Hub"
        failed = [
            {"Id": f.get("Id", ""), "ErrorCode": "InvalidAccess", "ErrorMessage": message}
            for f in findings
        ]
        return len(failed), 0, failed
    if len(findings) > MAX_IMPORT:
        from moto.securityhub.exceptions import InvalidInputException

        raise InvalidInputException(
            "BatchImportFindings", f"at most {MAX_IMPORT} findings per request, not {len(findings)}"
        )
    for data in findings:
        if foreign := foreign_finding(data, self.account_id, self.region_name):
            from moto.securityhub.exceptions import SecurityHubClientError

            # As AWS Support describes it (prowler#867): the whole call is refused.
            raise SecurityHubClientError("AccessDeniedException", foreign)
    for data in findings:
        finding_id = data.get("Id", "")
        problem = asff_problem(data)
        if problem:
            failed.append({"Id": finding_id, "ErrorCode": "InvalidInput", "ErrorMessage": problem})
            continue
        success += 1
        existing = stored.get(finding_id)
        if existing is None:
            new = dict(data)
            new.setdefault("Workflow", {"Status": "NEW"})
            new.setdefault("WorkflowState", "NEW")
            new.setdefault("RecordState", "ACTIVE")
            stored[finding_id] = Finding(finding_id, new)
            self.findings.append(stored[finding_id])
            continue
        old = existing.data
        if not _later(data.get("UpdatedAt"), old.get("UpdatedAt")):
            continue  # Security Hub ignores an update that is not newer than the stored finding
        merged = {**old, **data, **{k: old[k] for k in CUSTOMER_FIELDS if k in old}}
        for k in CUSTOMER_FIELDS:
            if k not in old:
                merged.pop(k, None)
        merged.setdefault("Workflow", {"Status": "NEW"})
        was = (old.get("Compliance") or {}).get("Status")
        now = (merged.get("Compliance") or {}).get("Status")
        reopened = old.get("RecordState") == "ARCHIVED" and merged.get("RecordState") == "ACTIVE"
        regressed = was == "PASSED" and now in ("FAILED", "WARNING", "NOT_AVAILABLE")
        if (reopened or regressed) and merged["Workflow"].get("Status") in ("NOTIFIED", "RESOLVED"):
            merged["Workflow"] = {"Status": "NEW"}
            merged["WorkflowState"] = "NEW"
        existing.data = merged
    return len(failed), success, failed


# ASFF's documented limits, checked apart from the product's own (findings.py) so that a
# finding AWS would refuse fails here too.
MAX_IMPORT = 100  # findings per BatchImportFindings request
MAX_FINDING_BYTES = 240 * 1024
ASFF_REQUIRED = (
    "SchemaVersion",
    "Id",
    "ProductArn",
    "GeneratorId",
    "AwsAccountId",
    "CreatedAt",
    "UpdatedAt",
    "Title",
    "Description",
    "Resources",
)
ASFF_SCHEMA_VERSION = "2018-10-08"
# ASFF's timestamp formats: a date, T, a time (fractions optional) and Z or an offset.
ASFF_TIMESTAMP = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:?[0-9]{2})\Z"
)
ASFF_MAX_LENGTH = {"Id": 512, "GeneratorId": 512, "Title": 256, "Description": 1024}
ASFF_MAX_ITEMS = {"Resources": 32, "Types": 50}
MAX_PRODUCT_FIELDS, MAX_PRODUCT_FIELD_KEY, MAX_PRODUCT_FIELD_VALUE = 50, 128, 2048
ASFF_ENUMS = {
    ("Severity", "Label"): ("INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"),
    ("Compliance", "Status"): ("PASSED", "WARNING", "FAILED", "NOT_AVAILABLE"),
    ("RecordState",): ("ACTIVE", "ARCHIVED"),
}


def asff_problem(data: dict[str, Any]) -> str:
    """Why Security Hub would put the finding in FailedFindings ("" if it takes it), in its
    words: size, required attributes, lengths, counts, enumerations and patterns."""
    invalid = "Finding does not adhere to Amazon Finding Format."
    if len(json.dumps(data, separators=(",", ":"))) > MAX_FINDING_BYTES:
        return f"Finding size exceeds the maximum of {MAX_FINDING_BYTES // 1024} KB"
    for key in ASFF_REQUIRED:
        if data.get(key) in (None, "", []):
            return f"{invalid} data should have required property '{key}'"
    if data["SchemaVersion"] != ASFF_SCHEMA_VERSION:
        return f"{invalid} data.SchemaVersion should be equal to {ASFF_SCHEMA_VERSION}"
    for key in ("Title", "Description"):
        if not str(data[key]).strip():
            return f'{invalid} data.{key} should match pattern ".*\\S.*"'
    if not (data.get("Types") or (data.get("FindingProviderFields") or {}).get("Types")):
        return f"{invalid} data should have required property 'Types'"
    if not (data.get("Severity") or (data.get("FindingProviderFields") or {}).get("Severity")):
        return f"{invalid} data should have required property 'Severity'"
    for key, limit in ASFF_MAX_LENGTH.items():
        if len(str(data[key])) > limit:
            return f"{invalid} data.{key} should NOT be longer than {limit} characters"
    for key, limit in ASFF_MAX_ITEMS.items():
        if len(data.get(key) or ()) > limit:
            return f"{invalid} data.{key} should NOT have more than {limit} items"
    fields = data.get("ProductFields") or {}
    if len(fields) > MAX_PRODUCT_FIELDS:
        return f"{invalid} data.ProductFields should NOT have more than {MAX_PRODUCT_FIELDS} properties"
    for name, value in fields.items():
        if not isinstance(value, str) or len(name) > MAX_PRODUCT_FIELD_KEY:
            return f"{invalid} data.ProductFields['{name}'] is not a string under a short key"
        if len(value) > MAX_PRODUCT_FIELD_VALUE:
            return (
                f"{invalid} data.ProductFields['{name}'] should NOT be longer than "
                f"{MAX_PRODUCT_FIELD_VALUE} characters"
            )
    for path, allowed in ASFF_ENUMS.items():
        value: Any = data
        for step in path:
            value = value.get(step) if isinstance(value, dict) else None
        if value is not None and value not in allowed:
            return f"{invalid} data.{'.'.join(path)} should be equal to one of the allowed values"
    for key in ("CreatedAt", "UpdatedAt", "FirstObservedAt", "LastObservedAt"):
        if key in data and not ASFF_TIMESTAMP.match(str(data[key])):
            return f'{invalid} data.{key} should match format "date-time"'
    return ""


def foreign_finding(data: dict[str, Any], account_id: str, region: str) -> str:
    """Why the calling account may not import the finding ("" if it may): another account's,
    or through a product other than its own default one in the region called."""
    if data.get("AwsAccountId") != account_id:
        return f"AwsAccountId {data.get('AwsAccountId')} is not the calling account {account_id}"
    product = str(data.get("ProductArn"))
    if not re.fullmatch(
        rf"arn:[\w-]+:securityhub:{re.escape(region)}:{account_id}:product/{account_id}/default",
        product,
    ):
        return f"ProductArn {product} is not this account's default product in {region}"
    return ""


# GetFindings string filters emulated: the filter name → where the value sits in a finding.
FINDING_FIELDS: dict[str, tuple[str, ...]] = {
    "Id": ("Id",),
    "ProductArn": ("ProductArn",),
    "GeneratorId": ("GeneratorId",),
    "AwsAccountId": ("AwsAccountId",),
    "Region": ("Region",),
    "Title": ("Title",),
    "RecordState": ("RecordState",),
    "ComplianceStatus": ("Compliance", "Status"),
    "WorkflowStatus": ("Workflow", "Status"),
    "SeverityLabel": ("Severity", "Label"),
    "ResourceId": ("Resources", "Id"),
    "ResourceType": ("Resources", "Type"),
}
# GetFindings date filters emulated: the filter name → where the date sits in a finding.
DATE_FIELDS: dict[str, tuple[str, ...]] = {
    "UpdatedAt": ("UpdatedAt",),
    "CreatedAt": ("CreatedAt",),
    "NoteUpdatedAt": ("Note", "UpdatedAt"),
}
POSITIVE = {"EQUALS": str.__eq__, "PREFIX": str.startswith, "CONTAINS": str.__contains__}
NEGATIVE = {
    "NOT_EQUALS": str.__eq__,
    "PREFIX_NOT_EQUALS": str.startswith,
    "NOT_CONTAINS": str.__contains__,
}


def _finding_values(data: dict[str, Any], path: tuple[str, ...]) -> list[str]:
    values: list[Any] = [data]
    for key in path:
        nxt: list[Any] = []
        for value in values:
            items = value if isinstance(value, list) else [value]
            nxt += [i.get(key) for i in items if isinstance(i, dict) and key in i]
        values = nxt
    return [v for v in values if isinstance(v, str)]


def _in_range(value: Any, condition: dict[str, Any]) -> bool:
    """A DateFilter: Start and End, both inclusive, or a DateRange of the last N days."""
    at = _parse_time(value)
    if at is None:
        return False
    if "DateRange" in condition:
        days = condition["DateRange"]
        if days.get("Unit") != "DAYS" or not isinstance(days.get("Value"), int):
            from moto.securityhub.exceptions import InvalidInputException

            raise InvalidInputException(
                op="GetFindings", msg="DateRange needs Unit DAYS and a Value"
            )
        return at >= datetime.now(UTC) - timedelta(days=days["Value"])
    start, end = _parse_time(condition.get("Start")), _parse_time(condition.get("End"))
    return (start is None or start <= at) and (end is None or at <= end)


def finding_matches(data: dict[str, Any], filters: dict[str, Any]) -> bool:
    """AWS's StringFilter rules: per field, positive comparisons are ORed and negative ones
    ANDed; fields are ANDed. Only the fields in FINDING_FIELDS are emulated."""
    from moto.securityhub.exceptions import InvalidInputException

    for name, conditions in (filters or {}).items():
        if name in DATE_FIELDS:
            values = _finding_values(data, DATE_FIELDS[name]) or [None]
            if not any(_in_range(v, c) for c in conditions for v in values):
                return False
            continue
        if name not in FINDING_FIELDS:
            raise InvalidInputException(
                op="GetFindings", msg=f"EMULATION: filter {name} is not emulated"
            )
        values = _finding_values(data, FINDING_FIELDS[name])
        positive = [c for c in conditions if c.get("Comparison", "EQUALS") in POSITIVE]
        negative = [c for c in conditions if c.get("Comparison") in NEGATIVE]
        if positive and not any(
            POSITIVE[c.get("Comparison", "EQUALS")](v, c["Value"]) for c in positive for v in values
        ):
            return False
        if any(NEGATIVE[c["Comparison"]](v, c["Value"]) for c in negative for v in values):
            return False
    return True


def _securityhub_get_findings() -> Any:
    from moto.securityhub.exceptions import InvalidInputException, SecurityHubClientError
    from moto.securityhub.models import SecurityHubBackend
    from moto.utilities.paginator import paginate

    @paginate(pagination_model=SecurityHubBackend.PAGINATION_MODEL)
    def get_findings(
        self: Any,
        filters: dict[str, Any] | None = None,
        sort_criteria: Any = None,
        max_results: Any = None,
    ) -> list[dict[str, Any]]:
        """GetFindings with string filters (moto ignored them) and Security Hub's access rule."""
        if max_results is not None and not 1 <= int(max_results) <= 100:
            raise InvalidInputException(
                op="GetFindings", msg="MaxResults must be a number between 1 and 100"
            )
        if not self.enabled:
            raise SecurityHubClientError(
                "InvalidAccessException",
                f"Account {self.account_id} is not subscribed to AWS Security Hub",
            )
        return [f.as_dict() for f in self.findings if finding_matches(f.data, filters or {})]

    get_findings.emulation = True  # type: ignore[attr-defined]
    return get_findings


def _ec2_run_instances(original: Any) -> Any:
    def run_instances(self: Any, *args: Any, **kwargs: Any) -> Any:
        reservation = original(self, *args, **kwargs)
        name, arn = kwargs.get("iam_instance_profile_name"), kwargs.get("iam_instance_profile_arn")
        if name or arn:
            # moto's RunInstances response associates the profile with the first instance only
            # (it does that one itself after this returns); AWS gives it to every instance.
            for instance in reservation.instances[1:]:
                self.associate_iam_instance_profile(
                    instance_id=instance.id,
                    iam_instance_profile_name=name,
                    iam_instance_profile_arn=None if name else arn,
                )
        return reservation

    run_instances.__wrapped__ = original  # type: ignore[attr-defined]
    run_instances.emulation = True  # type: ignore[attr-defined]
    return run_instances


def _ec2_prefix_list_associations(self: Any) -> Any:
    """GetManagedPrefixListAssociations: the security groups of the account-region with a rule
    (ingress or egress) that references the list, each once. Simplified: EC2 also lists other
    resources that reference a list (route tables, say); the guardrail reads only groups. Not
    paged (NextToken is never set): one answer holds them all."""
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError

    prefix_list_id = self._get_param("PrefixListId")
    backend = self.ec2_backend
    if prefix_list_id not in backend.managed_prefix_lists:
        raise EC2ClientError(
            "InvalidPrefixListID.NotFound", f"The prefix list ID '{prefix_list_id}' does not exist"
        )
    groups = [g for by_id in backend.groups.values() for g in by_id.values()]
    associations = [
        {"ResourceId": group.id, "ResourceOwner": group.owner_id}
        for group in groups
        if any(
            rule.prefix_list_id == prefix_list_id
            for rule in [*group.ingress_rules, *group.egress_rules]
        )
    ]
    return ActionResult({"PrefixListAssociations": associations})


def _ec2_authorize_ingress(self: Any) -> Any:
    """AuthorizeSecurityGroupIngress answering with every rule it created, as EC2 does; moto
    lists only those of the last IpPermission sent. All or nothing, as EC2 is: a permission
    refused (a duplicate, the rules quota) leaves none of the call's rules behind; moto kept
    those it had added before it."""
    from moto.core.responses import ActionResult

    self.error_on_dryrun()
    created: list[Any] = []
    before: dict[int, tuple[Any, list[Any]]] = {}
    try:
        for kwargs in self._process_rules_from_querystring():
            group = self.ec2_backend.get_security_group_by_name_or_id(
                kwargs["group_name_or_id"], kwargs.get("vpc_id")
            )
            if group is not None:
                before.setdefault(id(group), (group, list(group.ingress_rules)))
            rules, _ = self.ec2_backend.authorize_security_group_ingress(**kwargs)
            created += rules
    except Exception:
        for group, rules in before.values():
            group.ingress_rules = rules
        raise
    return ActionResult({"Return": True, "SecurityGroupRules": created})


def _ec2_revoke_ingress(self: Any) -> Any:
    """RevokeSecurityGroupIngress all or nothing, as EC2 documents for a non-default VPC: a
    permission that matches no rule fails the call with InvalidPermission.NotFound "and no
    rules are revoked"; moto had already removed the rules matched before it. Simplified: a
    default VPC's partial answer (UnknownIpPermissions, no error) is not emulated."""
    from moto.core.responses import ActionResult

    self.error_on_dryrun()
    before: dict[int, tuple[Any, list[Any]]] = {}
    try:
        for args in self._process_rules_from_querystring():
            del args["sgrule_tags"]  # not needed to revoke
            group = self.ec2_backend.get_security_group_by_name_or_id(
                args["group_name_or_id"], args.get("vpc_id")
            )
            if group is not None:
                before.setdefault(id(group), (group, list(group.ingress_rules)))
            self.ec2_backend.revoke_security_group_ingress(**args)
    except Exception:
        for group, rules in before.values():
            group.ingress_rules = rules
        raise
    return ActionResult({"Return": True})


def _show_profile(backend: Any, association: Any) -> None:
    """DescribeInstances' IamInstanceProfile as AWS gives it: the profile's ARN and *its* id."""
    profile = association.iam_instance_profile
    backend.modify_instance_attribute(
        association.instance_id, "iam_instance_profile", {"Arn": profile.arn, "Id": profile.id}
    )


def _ec2_profile_association_init(original: Any) -> Any:
    def __init__(self: Any, ec2_backend: Any, *args: Any, **kwargs: Any) -> None:
        original(self, ec2_backend, *args, **kwargs)
        _show_profile(ec2_backend, self)  # moto put the association id in IamInstanceProfile.Id

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    __init__.emulation = True  # type: ignore[attr-defined]
    return __init__


def _ec2_replace_profile_association(original: Any) -> Any:
    def replace_iam_instance_profile_association(self: Any, *args: Any, **kwargs: Any) -> Any:
        association = original(self, *args, **kwargs)
        _show_profile(self, association)  # moto left DescribeInstances showing the old profile
        return association

    replace_iam_instance_profile_association.__wrapped__ = original  # type: ignore[attr-defined]
    replace_iam_instance_profile_association.emulation = True  # type: ignore[attr-defined]
    return replace_iam_instance_profile_association


def _profile_arns(instance: Any) -> list[str]:
    arn = (getattr(instance, "iam_instance_profile", None) or {}).get("Arn")
    return [arn] if arn else []


def _interface_group_ids(instance: Any) -> list[str]:
    nics = getattr(instance, "nics", {}) or {}
    return sorted({g.id for nic in nics.values() for g in nic.group_set})


# DescribeInstances filters moto lacks: name → the instance's values (EC2 wildcards apply).
def _interface_ids(instance: Any) -> list[str]:
    return sorted(nic.id for nic in (getattr(instance, "nics", {}) or {}).values())


INSTANCE_FILTERS: dict[str, Callable[[Any], list[str]]] = {
    "iam-instance-profile.arn": _profile_arns,
    "network-interface.group-id": _interface_group_ids,
    "network-interface.network-interface-id": _interface_ids,
}


def _ec2_instance_filters(original: Any) -> Any:
    def passes_filter_dict(instance: Any, filter_dict: dict[str, Any]) -> bool:
        for name, values_of in INSTANCE_FILTERS.items():
            patterns = filter_dict.get(name)
            if patterns is None:
                continue
            values = values_of(instance)
            if not any(fnmatch.fnmatchcase(v, p) for v in values for p in patterns):
                return False
        rest = {k: v for k, v in filter_dict.items() if k not in INSTANCE_FILTERS}
        return bool(original(instance, rest))

    passes_filter_dict.__wrapped__ = original  # type: ignore[attr-defined]
    passes_filter_dict.emulation = True  # type: ignore[attr-defined]
    return passes_filter_dict


# --------------------------------------------------------------------------------------------
# Helpers and install
# --------------------------------------------------------------------------------------------


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"emulated-offset": offset}).encode()).decode()


def _decode_token(token: Any, total: int, invalid: Callable[[str], Exception]) -> int:
    """The offset a page token of ours carries; `invalid(message)` is the service's own error
    (moto serializes an error through the service model of the exception's module)."""
    if not token:
        return 0
    try:
        offset = int(json.loads(base64.urlsafe_b64decode(str(token).encode()))["emulated-offset"])
    except (ValueError, KeyError, TypeError) as error:
        raise invalid("The pagination token is not valid") from error
    return max(0, min(offset, total))


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _later(new: Any, old: Any) -> bool:
    """Whether UpdatedAt `new` is strictly later than `old` (unparseable counts as later)."""
    new_time, old_time = _parse_time(new), _parse_time(old)
    return new_time is None or old_time is None or new_time > old_time


def installed() -> bool:
    return _installed


def install() -> None:
    """Patch the emulated actions into moto (idempotent, process-wide, never on disk).

    Call it before the first request to the emulator: `ThreadedMotoServer` builds each service's
    URL map on that service's first request.
    """
    global _installed
    with _lock:
        if _installed:
            return
        from moto.ec2 import utils as ec2_utils
        from moto.ec2.models.iam_instance_profile import (
            IamInstanceProfileAssociation,
            IamInstanceProfileAssociationBackend,
        )
        from moto.ec2.models.instances import InstanceBackend
        from moto.ec2.responses.security_groups import SecurityGroups
        from moto.ec2.responses.vpcs import VPCs
        from moto.iam.responses import IamResponse
        from moto.securityhub import urls as securityhub_urls
        from moto.securityhub.models import SecurityHubBackend
        from moto.securityhub.responses import SecurityHubResponse
        from moto.ssm.responses import SimpleSystemManagerResponse

        SimpleSystemManagerResponse.describe_instance_information = (
            _ssm_describe_instance_information  # type: ignore[attr-defined]
        )
        SimpleSystemManagerResponse.get_service_setting = _ssm_get_service_setting  # type: ignore[attr-defined]
        SimpleSystemManagerResponse.update_service_setting = _ssm_update_service_setting  # type: ignore[attr-defined]
        IamResponse.simulate_principal_policy = _iam_simulate_principal_policy  # type: ignore[attr-defined]
        SecurityHubResponse.batch_update_findings = _securityhub_batch_update_findings  # type: ignore[attr-defined]
        SecurityGroups.authorize_security_group_ingress = _ec2_authorize_ingress  # type: ignore[method-assign]
        SecurityGroups.revoke_security_group_ingress = _ec2_revoke_ingress  # type: ignore[method-assign]
        VPCs.get_managed_prefix_list_associations = _ec2_prefix_list_associations  # type: ignore[attr-defined]
        securityhub_urls.url_paths.setdefault(BATCH_UPDATE_PATH, SecurityHubResponse.dispatch)
        SecurityHubBackend.batch_import_findings = _securityhub_import_findings  # type: ignore[method-assign]
        SecurityHubBackend.get_findings = _securityhub_get_findings()  # type: ignore[method-assign]
        passes = ec2_utils.passes_filter_dict
        if not getattr(passes, "emulation", False):
            ec2_utils.passes_filter_dict = _ec2_instance_filters(passes)
        run = InstanceBackend.run_instances
        if not getattr(run, "emulation", False):
            InstanceBackend.run_instances = _ec2_run_instances(run)  # type: ignore[method-assign]
        init = IamInstanceProfileAssociation.__init__
        if not getattr(init, "emulation", False):
            IamInstanceProfileAssociation.__init__ = _ec2_profile_association_init(init)  # type: ignore[method-assign]
        replace = IamInstanceProfileAssociationBackend.replace_iam_instance_profile_association
        if not getattr(replace, "emulation", False):
            IamInstanceProfileAssociationBackend.replace_iam_instance_profile_association = (  # type: ignore[method-assign]
                _ec2_replace_profile_association(replace)
            )
        _installed = True


__all__ = [
    "HEARTBEAT",
    "Decision",
    "SourcePolicy",
    "condition_holds",
    "evaluate",
    "install",
    "installed",
    "managed_instances",
    "request_context",
    "role_policies",
    "simulate",
    "statement_applies",
]
