"""One SimulatePrincipalPolicy per role judges both the SSM Agent's calls and log delivery, each
on its own resources, read per resource as IAM's API reference documents the answer."""

from __future__ import annotations

import fnmatch
import logging

import pytest
from guardrail.model import Outcome, Status

from tests.unit.test_ssm_role import PERIMETER

from .conftest import CORE
from .test_role_fix import attached, inline, policy, simulated_roles
from .test_session_logging_fix import KEY, OURS, create_preferences, delivery_policy

ROLE, LOGGING = "ssm-instance-role", "ssm-session-logging"
INSTANCES = "arn:aws:ec2:*:123456789012:instance/*"
pytestmark = pytest.mark.usefixtures("managed_policies")


def logging_to_ours(account):
    create_preferences(
        account,
        {
            "s3BucketName": OURS["session_log_bucket"],
            "s3KeyPrefix": "session-logs",
            "s3EncryptionEnabled": True,
            "cloudWatchLogGroupName": OURS["session_log_group"],
            "cloudWatchEncryptionEnabled": True,
            "kmsKeyId": KEY,
        },
    )


def verdicts(report, iid):
    return {e.result.control: e.result for e in report.evaluations if e.result.resource_id == iid}


def test_agent_and_delivery_are_one_simulation_per_role_each_judged_on_its_own_resources(
    account, clients
):
    """The call simulates every action on every resource: ssm:UpdateInstanceInformation on the
    log bucket, s3:PutObject on the instance. Those pairs are not asked about. A policy scoped
    to instances (allowed on the instance only) passes, and a Deny on the bucket fails delivery
    but not the agent."""
    logging_to_ours(account)
    delivery = delivery_policy(account)
    scoped = policy(
        account,
        "scoped-core",
        {"Effect": "Allow", "Action": "ssm:UpdateInstanceInformation", "Resource": INSTANCES},
        {"Effect": "Allow", "Action": "ssmmessages:*", "Resource": "*"},
    )
    account.role("scoped", scoped, delivery, profile="scoped")
    working = account.instance(profile="scoped", count=2)
    account.role("fenced", CORE, delivery, profile="fenced")
    inline(account, "fenced", "no-s3", {"Effect": "Deny", "Action": "s3:*", "Resource": "*"})
    fenced = account.instance(profile="fenced")
    roles = simulated_roles(clients)

    report = account.run(
        clients,
        "report",
        [ROLE, LOGGING],
        equivalent_policy_arns=(scoped,),
        log_delivery_policy_arn=delivery,
        **OURS,
    )

    assert sorted(roles) == ["fenced", "scoped"]  # one call each (two each before)
    for iid in working:
        assert {c: r.status for c, r in verdicts(report, iid).items()} == {
            ROLE: Status.PASSED,
            LOGGING: Status.PASSED,
        }
    judged = verdicts(report, fenced)
    assert judged[ROLE].status is Status.PASSED  # the agent's calls are not the bucket's
    assert judged[LOGGING].status is Status.FAILED
    assert "s3:PutObject" in judged[LOGGING].reason
    assert "ssm:" not in judged[LOGGING].reason and "ec2:" not in judged[LOGGING].reason


def test_a_plain_deny_on_the_instance_is_not_excused_by_a_conditioned_deny_elsewhere(
    account, clients, monkeypatch
):
    """IAM answers one result per action: its top-level MissingContextValues gathers every
    resource's. A perimeter Deny needing aws:SourceVpce on the log destinations, beside a plain
    Deny of ssm:UpdateInstanceInformation on the instance, must not make the plain one look
    conditional (and so be set aside over the core policy): each resource is read alone."""
    import emulator.extension as extension

    simulate = extension.simulate

    def perimeter(*args):
        results = simulate(*args)
        for result in results:
            if result["EvalActionName"] != "ssm:UpdateInstanceInformation":
                continue
            result.update(EvalDecision="explicitDeny", MissingContextValues=["aws:SourceVpce"])
            for entry in result["ResourceSpecificResults"]:
                entry["EvalResourceDecision"] = "explicitDeny"
                if ":instance/" not in entry["EvalResourceName"]:
                    entry["MissingContextValues"] = ["aws:SourceVpce"]
        return results

    monkeypatch.setattr(extension, "simulate", perimeter)
    logging_to_ours(account)
    account.role("app", CORE, delivery_policy(account), profile="app")
    iid = account.instance(profile="app")

    report = account.run(clients, "report", [ROLE, LOGGING], **OURS)

    result = verdicts(report, iid)[ROLE]
    assert result.status is Status.FAILED
    assert "explicit Deny refuses ssm:UpdateInstanceInformation" in result.reason


def judged_with_core_and_delivery(account, clients):
    """Both verdicts, in a report scan, on an instance whose role carries the core policy and
    the guardrail's delivery policy, logging to the guardrail's destinations."""
    logging_to_ours(account)
    account.role("app", CORE, delivery_policy(account), profile="app")
    iid = account.instance(profile="app")
    report = account.run(clients, "report", [ROLE, LOGGING], **OURS)
    return {control: result.status for control, result in verdicts(report, iid).items()}


def answered_as(monkeypatch, reshape):
    """The emulated SimulatePrincipalPolicy, its answer passed through `reshape(results,
    resources)` first: the shapes and details IAM gives that the emulator does not model."""
    import emulator.extension as extension

    simulate = extension.simulate

    def answered(identity, actions, resources, *rest):
        return reshape(simulate(identity, actions, resources, *rest), resources)

    monkeypatch.setattr(extension, "simulate", answered)


def scp_allowing_s3_only_on(pattern):
    """A data-perimeter SCP: s3:* only on resources matching `pattern`. OrganizationsDecisionDetail
    has no per-resource form: one flag per action, over every resource of the call."""

    def reshape(results, resources):
        for result in results:
            if not result["EvalActionName"].startswith("s3:"):
                continue
            allowed = {r: fnmatch.fnmatchcase(r, pattern) for r in resources}
            for entry in result["ResourceSpecificResults"]:
                if not allowed[entry["EvalResourceName"]]:
                    entry["EvalResourceDecision"] = "implicitDeny"
            if not all(allowed.values()):
                result["EvalDecision"] = "implicitDeny"
            result["OrganizationsDecisionDetail"] = {
                "AllowedByOrganizations": all(allowed.values())
            }
        return results

    return reshape


@pytest.mark.parametrize(
    ("perimeter", "refused"),
    [("arn:aws:s3:::guardrail-logs*", False), ("arn:aws:s3:::corp-*", True)],
    ids=["scp-allows-the-bucket", "scp-refuses-the-bucket"],
)
def test_an_scp_is_pinned_on_the_log_bucket_only_when_it_refuses_the_bucket(
    account, clients, monkeypatch, perimeter, refused
):
    """One call simulates s3:PutObject on the instance too, which an SCP allowing s3 only on the
    company's buckets refuses: the action's one SCP flag is then False. The bucket's own pairs
    are asked again alone, so a role that merely lacks the grant gets it (attaching helps), and
    only an SCP that refuses the bucket itself is reported as one (attaching cannot help)."""
    answered_as(monkeypatch, scp_allowing_s3_only_on(perimeter))
    logging_to_ours(account)
    delivery = delivery_policy(account)
    account.role("app", CORE, profile="app")
    iid = account.instance(profile="app")
    roles = simulated_roles(clients)

    report = account.run(
        clients, "enforce", [ROLE, LOGGING], log_delivery_policy_arn=delivery, **OURS
    )

    # The merged call, then one per bucket resource its s3 pairs name (object and bucket).
    assert roles == ["app"] * 3
    (grant,) = [f for f in report.fixes if f.resource_id == "app"]
    if refused:
        assert grant.outcome is Outcome.SKIPPED
        assert "service control polic" in grant.reason
    else:
        assert grant.outcome is Outcome.APPLIED, grant.reason
    assert verdicts(report, iid)[ROLE].status is Status.PASSED


def test_an_answer_without_per_resource_results_is_asked_again_per_resource(
    account, clients, monkeypatch
):
    """Answered with the action's aggregate alone (no ResourceSpecificResults, no resource
    name), a refusal cannot be pinned on a resource: s3:PutObject is refused on the instance
    (nothing grants it there) though allowed on the bucket. Allowed pairs are allowed everywhere;
    the refused ones are asked again alone, and the role is judged as it is: PASSED."""

    def aggregate_only(results, resources):
        for result in results:
            result.pop("ResourceSpecificResults")
            result.pop("EvalResourceName", None)
        return results

    answered_as(monkeypatch, aggregate_only)
    assert judged_with_core_and_delivery(account, clients) == {
        ROLE: Status.PASSED,
        LOGGING: Status.PASSED,
    }


def test_action_names_echoed_in_another_case_are_the_same_actions(account, clients, monkeypatch):
    """IAM action names are case-insensitive: an answer naming s3:putobject answers s3:PutObject.
    Read case-sensitively, every role would be reported unable to deliver, for good."""

    def lower_case(results, resources):
        for result in results:
            result["EvalActionName"] = result["EvalActionName"].lower()
        return results

    answered_as(monkeypatch, lower_case)
    assert judged_with_core_and_delivery(account, clients) == {
        ROLE: Status.PASSED,
        LOGGING: Status.PASSED,
    }


def test_a_boundary_detail_given_only_for_the_action_is_asked_again_per_resource(
    account, clients, monkeypatch
):
    """A boundary allowing s3 on the guardrail's bucket only. Answered with the boundary detail
    at the action's level alone (no per-resource detail), s3:PutObject's is False: the call also
    simulated it on the instance, outside the boundary. The bucket's pairs are asked alone: the
    boundary allows them, the role merely lacks the grant, and attaching it is the fix (not
    SKIPPED as "the permissions boundary does not allow")."""

    def boundary_for_the_action_only(results, resources):
        for result in results:
            for entry in result["ResourceSpecificResults"]:
                entry.pop("PermissionsBoundaryDecisionDetail", None)
        return results

    answered_as(monkeypatch, boundary_for_the_action_only)
    logging_to_ours(account)
    delivery = delivery_policy(account)
    boundary = policy(
        account,
        "app-boundary",
        {"Effect": "Allow", "Action": ["ssm:*", "ssmmessages:*", "ec2messages:*"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["logs:*", "kms:*"], "Resource": "*"},
        {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::guardrail-logs*"},
    )
    account.role("app", CORE, profile="app", boundary=boundary)
    iid = account.instance(profile="app")
    roles = simulated_roles(clients)

    report = account.run(
        clients, "enforce", [ROLE, LOGGING], log_delivery_policy_arn=delivery, **OURS
    )

    assert roles == ["app"] * 3  # the merged call, then the object's and the bucket's pairs
    (grant,) = [f for f in report.fixes if f.resource_id == "app"]
    assert grant.outcome is Outcome.APPLIED, grant.reason
    assert verdicts(report, iid)[ROLE].status is Status.PASSED


# --- The request context: what IAM knows of every call the agent makes --------------------------
# The emulator evaluates conditions against SimulatePrincipalPolicy's ContextEntries and lists the
# keys it lacks as missing, as IAM does. The account is in us-east-1.


def app_role(account, *statements, boundary=None, path=None):
    """Role "app" with the core and the guardrail's delivery policy, the owners' `statements`
    inline, on an instance; sessions log to the guardrail's destinations."""
    logging_to_ours(account)
    account.role("app", CORE, delivery_policy(account), profile="app", boundary=boundary, path=path)
    if statements:
        inline(account, "app", "owners", *statements)
    return account.instance(profile="app")


def regional_boundary(account, region):
    """A permissions boundary allowing everything, in `region` only."""
    return policy(
        account,
        "regional",
        {
            "Effect": "Allow",
            "Action": "*",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
        },
    )


@pytest.mark.parametrize(
    ("region", "status"),
    [("us-east-1", Status.PASSED), ("eu-west-1", Status.FAILED)],
    ids=["boundary-allows-this-region", "boundary-allows-another-region"],
)
def test_a_boundary_allowing_one_region_is_judged_in_the_region_the_agent_calls(
    account, clients, region, status
):
    """A permissions boundary allowing everything in one region only (a common delegation
    guard). Without the region in the simulation's context its Allow never matched, and a role
    in that very region read as refused by its boundary: FAILED, and its fixes SKIPPED."""
    iid = app_role(account, boundary=regional_boundary(account, region))

    judged = verdicts(account.run(clients, "report", [ROLE, LOGGING], **OURS), iid)

    assert {c: r.status for c, r in judged.items()} == {ROLE: status, LOGGING: status}
    if status is Status.FAILED:
        assert "the permissions boundary does not allow" in judged[ROLE].reason


def test_delivery_allowed_over_tls_only_is_delivery_and_nothing_is_attached(account, clients):
    """The owners grant delivery themselves, over TLS only (aws:SecureTransport, true on every
    agent call). Its key missing, that Allow never matched: delivery read FAILED and enforce
    attached the guardrail's delivery policy to a role that needed nothing."""
    logging_to_ours(account)
    delivery = delivery_policy(account)
    account.role("app", CORE, profile="app")
    inline(
        account,
        "app",
        "owners-delivery",
        {
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:GetEncryptionConfiguration", "logs:*"],
            "Resource": "*",
            "Condition": {"Bool": {"aws:SecureTransport": "true"}},
        },
        # S3 calls KMS on the role's behalf: whether that call carries aws:SecureTransport is
        # not documented, so the key is granted without the condition.
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
    )
    iid = account.instance(profile="app")

    report = account.run(
        clients, "enforce", [ROLE, LOGGING], log_delivery_policy_arn=delivery, **OURS
    )

    assert verdicts(report, iid)[LOGGING].status is Status.PASSED
    assert [f for f in report.fixes if f.resource_id == "app"] == []
    assert delivery not in attached(account, "app")


REGION_PERIMETER = {
    "Effect": "Deny",
    "NotAction": ["iam:*", "sts:*"],
    "Resource": "*",
    "Condition": {"StringNotEquals": {"aws:RequestedRegion": "us-east-1"}},
}


def test_a_log_bucket_that_may_be_in_another_region_is_not_judged_as_in_this_one(account, clients):
    """The owners' bucket may be in another region, where the agent's uploads go. Told "this
    region", the simulation would read a region perimeter allowing only this one as allowing
    the upload: PASSED while AWS refuses it. The region is then not given: the perimeter still
    "may refuse" delivery (FAILED, fix SKIPPED naming it), and the agent's own calls, which
    stay here, are not failed on it."""
    create_preferences(account, {"s3BucketName": "owners-logs", "s3EncryptionEnabled": True})
    account.role("app", CORE, profile="app")
    inline(
        account,
        "app",
        "owners",
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        REGION_PERIMETER,
    )
    iid = account.instance(profile="app")

    judged = verdicts(account.run(clients, "report", [ROLE, LOGGING], **OURS), iid)

    assert judged[ROLE].status is Status.PASSED
    assert judged[LOGGING].status is Status.FAILED
    assert "s3:PutObject" in judged[LOGGING].reason


def test_the_agents_calls_are_judged_in_their_region_beside_delivery_that_may_leave_it(
    account, clients
):
    """A boundary allowing this region only, and sessions logged to the owners' bucket (whose
    region is not read). The role's one simulation is not told the region, and the boundary
    refuses the agent there: its calls, which stay in this region, are asked again with it
    (one more call, for this role only) and are allowed. Delivery stays "may be refused"."""
    create_preferences(account, {"s3BucketName": "owners-logs", "s3EncryptionEnabled": True})
    account.role("app", CORE, profile="app", boundary=regional_boundary(account, "us-east-1"))
    inline(account, "app", "owners", {"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
    iid = account.instance(profile="app")
    roles = simulated_roles(clients)

    judged = verdicts(account.run(clients, "report", [ROLE, LOGGING], **OURS), iid)

    assert judged[ROLE].status is Status.PASSED
    assert judged[LOGGING].status is Status.FAILED
    assert roles == ["app", "app"]


@pytest.mark.parametrize(
    ("condition", "status"),
    [
        # Denies of calls unlike the agent's: nothing is refused.
        ({"StringNotEquals": {"aws:PrincipalAccount": "123456789012"}}, Status.PASSED),
        ({"StringNotEquals": {"aws:PrincipalType": "AssumedRole"}}, Status.PASSED),
        (
            {"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::123456789012:role/apps/*"}},
            Status.PASSED,
        ),
        ({"Bool": {"aws:SecureTransport": "false"}}, Status.PASSED),
        (
            {"StringNotEquals": {"aws:RequestedRegion": ["us-east-1", "eu-central-1"]}},
            Status.PASSED,
        ),
        # Denies that match the agent's calls: refused.
        (
            {"StringNotEquals": {"aws:RequestedRegion": ["eu-west-1", "eu-central-1"]}},
            Status.FAILED,
        ),
        ({"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/admin-*"}}, Status.FAILED),
    ],
    ids=[
        "other-accounts",
        "other-principal-types",
        "roles-off-the-path",
        "plain-http",
        "outside-this-region",
        "outside-other-regions",
        "all-but-admins",
    ],
)
def test_a_deny_on_keys_every_agent_call_carries_is_judged_on_those_calls(
    account, clients, condition, status
):
    """A Deny of every call but IAM's under a condition on what the agent's calls carry (the
    account, the kind of principal, the role's ARN on its apps/ path, TLS, the region). Its key
    missing, each read "may refuse": the agent was PASSED even where every call is refused, and
    delivery FAILED even where none is. Any value the simulation is given, wrong, fails a case."""
    iid = app_role(
        account,
        {
            "Effect": "Deny",
            "NotAction": ["iam:*", "sts:*"],
            "Resource": "*",
            "Condition": condition,
        },
        path="/apps/",
    )

    judged = verdicts(account.run(clients, "report", [ROLE, LOGGING], **OURS), iid)

    assert {c: r.status for c, r in judged.items()} == {ROLE: status, LOGGING: status}
    if status is Status.FAILED:
        assert "an explicit Deny refuses" in judged[ROLE].reason


# --- A Deny the simulation cannot evaluate, told apart by reading the policy that holds it ------
# IAM lists as missing the context keys of every statement it read. An Allow of the channels only
# through a VPC endpoint (aws:SourceVpce) beside a plain Deny made the Deny read "cannot evaluate":
# over the core policy the role was PASSED while the agent was refused.
NO_DATA_CHANNEL = {"Effect": "Deny", "Action": "ssmmessages:OpenDataChannel", "Resource": "*"}
# The perimeter's opposite: the channels allowed through the endpoint only.
THROUGH_ENDPOINT = PERIMETER | {
    "Effect": "Allow",
    "Action": "ssmmessages:*",
    "Condition": {"StringEquals": {"aws:SourceVpce": "vpce-1"}},
}


def matched_as(monkeypatch, respell):
    """The emulated answer with each result's and resource's MatchedStatements, where it has
    any, replaced by `respell(statements)` (None: the list dropped): spellings IAM may use."""

    def reshape(results, resources):
        for result in results:
            for entry in [result, *result["ResourceSpecificResults"]]:
                if entry.get("MatchedStatements"):
                    respelled = respell(entry["MatchedStatements"])
                    if respelled is None:
                        del entry["MatchedStatements"]
                    else:
                        entry["MatchedStatements"] = respelled
        return results

    answered_as(monkeypatch, reshape)


def reads_of_policies(clients):
    from emulator.calls import CallCounter

    counter = CallCounter(clients.iam)
    return lambda: {
        op: n
        for op, n in counter.by_operation().items()
        if op in ("iam:GetRolePolicy", "iam:GetRole", "iam:GetPolicy", "iam:GetPolicyVersion")
    }


@pytest.mark.parametrize(
    ("deny", "reads"),
    [
        ("inline", {"iam:GetRolePolicy": 1}),
        ("managed", {"iam:GetPolicy": 1, "iam:GetPolicyVersion": 1}),
        ("inline-on-principals", {"iam:GetRolePolicy": 1}),
    ],
)
def test_a_plain_deny_beside_an_unrelated_condition_fails_the_role(account, clients, deny, reads):
    """The role carries the core policy; a Deny of ssmmessages:OpenDataChannel refuses every
    session, whatever endpoint the call comes through. Read from the policy that holds it
    (inline, or managed), it is a refusal: FAILED, naming the Deny. So is a Deny conditioned on
    keys the simulation was given (every principal but admins: the app role is refused). Before,
    each read PASSED."""
    statements = [THROUGH_ENDPOINT]
    if deny == "inline":
        statements.append(NO_DATA_CHANNEL)
    elif deny == "inline-on-principals":
        admins = {"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/admin-*"}}
        statements.append(NO_DATA_CHANNEL | {"Condition": admins})
    iid = app_role(account, *statements)
    if deny == "managed":
        denying = policy(account, "no-data-channel", NO_DATA_CHANNEL)
        account.iam.attach_role_policy(RoleName="app", PolicyArn=denying)
    policy_reads = reads_of_policies(clients)

    result = verdicts(account.run(clients, "report", [ROLE, LOGGING], **OURS), iid)[ROLE]

    assert result.status is Status.FAILED
    assert "explicit Deny refuses ssmmessages:OpenDataChannel" in result.reason
    assert "ssm:UpdateInstanceInformation" not in result.reason  # allowed: not named
    assert policy_reads() == reads


def test_a_perimeter_deny_read_from_its_policy_is_still_not_called_a_refusal(account, clients):
    """A data perimeter (every call refused outside the VPC endpoint), read from the
    role's inline policy: its Deny names aws:SourceVpce, which the agent's real calls carry
    through the endpoint. Over the core policy the role stays PASSED, as before; the policy is
    read once for every pair the perimeter's answer covers (the agent's five calls, delivery's)."""
    iid = app_role(account, PERIMETER)
    policy_reads = reads_of_policies(clients)

    judged = verdicts(account.run(clients, "report", [ROLE, LOGGING], **OURS), iid)

    assert judged[ROLE].status is Status.PASSED
    assert policy_reads() == {"iam:GetRolePolicy": 1}


def test_a_shared_policy_is_read_once_a_scan(account, clients):
    """Two roles carrying the same managed policy with the plain Deny: both FAILED, the policy
    read once."""
    denying = policy(account, "no-data-channel", NO_DATA_CHANNEL)
    iids = []
    for name in ("app", "web"):
        account.role(name, CORE, denying, profile=name)
        inline(account, name, "endpoint", THROUGH_ENDPOINT)
        iids.append(account.instance(profile=name))
    policy_reads = reads_of_policies(clients)

    report = account.run(clients, "report", [ROLE])

    assert [verdicts(report, iid)[ROLE].status for iid in iids] == [Status.FAILED] * 2
    assert policy_reads() == {"iam:GetPolicy": 1, "iam:GetPolicyVersion": 1}


@pytest.mark.parametrize(
    "source",
    [
        {"SourcePolicyId": "p-perimeter", "SourcePolicyType": "none"},  # an SCP, as IAM may say
        {"SourcePolicyId": "role_app_deleted-since", "SourcePolicyType": "IAM Policy"},
        None,  # no MatchedStatements at all
    ],
    ids=["not-a-role-policy", "deleted-inline-policy", "no-matched-statements"],
)
def test_a_deny_whose_policy_cannot_be_read_stays_one_the_simulation_cannot_evaluate(
    account, clients, monkeypatch, source
):
    """Where the matched statement's policy cannot be read (a service control policy, an
    inline policy deleted since, an answer naming none), whether the Deny has conditions is not
    known: over the core policy it is not called a refusal, as before."""

    matched_as(monkeypatch, lambda _: None if source is None else [source])
    iid = app_role(account, THROUGH_ENDPOINT, NO_DATA_CHANNEL)

    result = verdicts(account.run(clients, "report", [ROLE], **OURS), iid)[ROLE]

    assert result.status is Status.PASSED


def test_an_inline_policy_is_not_mistaken_for_a_managed_one_of_the_same_name(account, clients):
    """The answer names the inline perimeter "guard" (type role); a managed policy named
    "guard" is attached too, a Deny for admins only. Read in its place, its Deny (on a key the
    simulation was given) made the perimeter's answer a refusal: FAILED. The inline one is read:
    PASSED, as over any perimeter."""
    iid = app_role(account)
    inline(account, "app", "guard", PERIMETER)
    admins = {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/admin-*"}}
    guard = policy(account, "guard", NO_DATA_CHANNEL | {"Condition": admins})
    account.iam.attach_role_policy(RoleName="app", PolicyArn=guard)
    policy_reads = reads_of_policies(clients)

    result = verdicts(account.run(clients, "report", [ROLE], **OURS), iid)[ROLE]

    assert result.status is Status.PASSED
    assert policy_reads() == {"iam:GetRolePolicy": 1}


def test_a_matched_statement_without_a_type_is_read_as_the_inline_policy_of_its_name(
    account, clients, monkeypatch
):
    """IAM's own example answer names the policy only (SourcePolicyId, no SourcePolicyType).
    No attached policy has that name: the role's inline policy of that name is read, and its
    plain Deny refuses."""

    matched_as(
        monkeypatch,
        lambda statements: [
            {k: v for k, v in m.items() if k != "SourcePolicyType"} for m in statements
        ],
    )
    iid = app_role(account, THROUGH_ENDPOINT, NO_DATA_CHANNEL)

    result = verdicts(account.run(clients, "report", [ROLE], **OURS), iid)[ROLE]

    assert result.status is Status.FAILED
    assert "explicit Deny refuses ssmmessages:OpenDataChannel" in result.reason


def test_a_policy_read_refused_leaves_the_deny_one_the_simulation_cannot_evaluate(
    account, clients, caplog, monkeypatch
):
    """An SCP (or a narrowed role, for the CLI) refusing iam:GetRolePolicy does not stop the
    scan: the Deny is judged as before the guardrail read policies (PASSED over the core
    policy), and the log says which policy was not read and why."""
    from tests.aws_errors import error_answer

    clients.iam.meta.events.register(
        "before-call.iam.GetRolePolicy", error_answer("AccessDenied", 403)
    )
    iid = app_role(account, THROUGH_ENDPOINT, NO_DATA_CHANNEL)

    # A handler test's Powertools logger may have stopped "guardrail" propagating to caplog.
    monkeypatch.setattr(logging.getLogger("guardrail"), "propagate", True)
    with caplog.at_level("WARNING", logger="guardrail"):
        result = verdicts(account.run(clients, "report", [ROLE], **OURS), iid)[ROLE]

    assert result.status is Status.PASSED
    assert "policy owners of role app not read: AccessDenied" in caplog.text


def test_a_resources_empty_matched_statements_are_not_taken_from_the_action(
    account, clients, monkeypatch
):
    """The instance's own answer lists no matched statement (a Deny in a policy IAM does not
    name: an SCP); the action's list may be another resource's. Reading the action's list, the
    plain Deny found there was pinned on the instance: FAILED. Not known: PASSED."""

    def unnamed(results, resources):
        for result in results:
            for entry in result["ResourceSpecificResults"]:
                if entry["EvalResourceDecision"] == "explicitDeny":
                    entry["MatchedStatements"] = []
        return results

    answered_as(monkeypatch, unnamed)
    iid = app_role(account, THROUGH_ENDPOINT, NO_DATA_CHANNEL)

    result = verdicts(account.run(clients, "report", [ROLE], **OURS), iid)[ROLE]

    assert result.status is Status.PASSED


@pytest.mark.parametrize(
    ("deny", "status"),
    [(NO_DATA_CHANNEL, Status.FAILED), (PERIMETER, Status.PASSED)],
    ids=["plain", "perimeter"],
)
@pytest.mark.parametrize(
    "kind", ["IAM Policy", "Permissions Boundary Policy", "Permissions Boundary"]
)
def test_a_deny_in_the_permissions_boundary_is_read_from_the_role(
    account, clients, monkeypatch, deny, status, kind
):
    """The role's permissions boundary allows everything but holds the Deny; the answer names
    the boundary, which the role as its profile lists it does not: GetRole says which it is.
    A plain Deny there refuses (FAILED; before, PASSED over the core policy), a perimeter
    there stays "cannot evaluate". How IAM types a boundary's entry is not documented; answers
    people have published type it "IAM Policy", "Permissions Boundary Policy" or "Permissions
    Boundary", each naming the policy: each is read."""
    matched_as(
        monkeypatch,
        lambda statements: [
            {**m, "SourcePolicyType": kind} if m["SourcePolicyId"] == "bounded" else m
            for m in statements
        ],
    )
    bounded = policy(account, "bounded", {"Effect": "Allow", "Action": "*", "Resource": "*"}, deny)
    iid = app_role(account, THROUGH_ENDPOINT, boundary=bounded)
    policy_reads = reads_of_policies(clients)

    result = verdicts(account.run(clients, "report", [ROLE], **OURS), iid)[ROLE]

    assert result.status is status
    if status is Status.FAILED:
        assert "explicit Deny refuses ssmmessages:OpenDataChannel" in result.reason
    assert policy_reads() == {"iam:GetRole": 1, "iam:GetPolicy": 1, "iam:GetPolicyVersion": 1}


def test_a_roles_inline_policy_is_not_taken_for_another_roles_of_the_same_name(account, clients):
    """Two roles each have an inline policy "owners": app's a plain Deny beside an Allow
    through the endpoint, web's a perimeter. Each is read from its own role: app FAILED, web
    PASSED."""
    app = app_role(account, THROUGH_ENDPOINT, NO_DATA_CHANNEL)
    account.role("web", CORE, profile="web")
    inline(account, "web", "owners", PERIMETER)
    web = account.instance(profile="web")
    policy_reads = reads_of_policies(clients)

    report = account.run(clients, "report", [ROLE], **OURS)

    assert verdicts(report, app)[ROLE].status is Status.FAILED
    assert verdicts(report, web)[ROLE].status is Status.PASSED
    assert policy_reads() == {"iam:GetRolePolicy": 2}


@pytest.mark.parametrize(
    ("where", "spelled"),
    [
        ("inline", lambda name: {"SourcePolicyId": "owners", "SourcePolicyType": "role"}),
        (
            "managed",
            lambda name: {
                "SourcePolicyId": f"arn:aws:iam::123456789012:policy/{name}",
                "SourcePolicyType": "user-managed",
            },
        ),
    ],
    ids=["inline-by-bare-name", "managed-by-arn"],
)
def test_other_spellings_of_a_matched_policy_are_read(
    account, clients, monkeypatch, where, spelled
):
    """IAM answers "IAM Policy" for every policy, naming an inline one role_<role>_<policy>.
    Other spellings seen in answers' documentation (a bare inline name of type role, a
    managed policy's ARN) find the same policy."""

    matched_as(monkeypatch, lambda statements: [spelled(m["SourcePolicyId"]) for m in statements])
    iid = app_role(account, THROUGH_ENDPOINT, *([NO_DATA_CHANNEL] if where == "inline" else []))
    if where == "managed":
        denying = policy(account, "no-data-channel", NO_DATA_CHANNEL)
        account.iam.attach_role_policy(RoleName="app", PolicyArn=denying)

    result = verdicts(account.run(clients, "report", [ROLE], **OURS), iid)[ROLE]

    assert result.status is Status.FAILED
    assert "explicit Deny refuses ssmmessages:OpenDataChannel" in result.reason
