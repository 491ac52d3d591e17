"""API calls grow with pages and distinct profiles/roles, never with the number of instances."""

from __future__ import annotations

import pytest
from guardrail.clients import AwsClients
from guardrail.engine import Guardrail
from guardrail.model import Status
from guardrail.scope import Scope
from guardrail.settings import Settings

from emulator.calls import CallCounter

from .conftest import CORE, OPEN_SSH

ALL_CONTROLS = ("ssh-open-to-internet", "ssm-instance-role", "ssm-session-logging")

pytestmark = pytest.mark.usefixtures("managed_policies")


def fleet(account, per_profile: int, tag: str = "") -> None:
    gid = account.group(OPEN_SSH)
    for n in range(3):
        account.role(f"role{n}{tag}", *([CORE] if n else []), profile=f"profile{n}{tag}")
        account.instance([gid], profile=f"profile{n}{tag}", count=per_profile)
    account.instance([gid], count=per_profile)  # no profile: DHMC candidates


def scan_calls(aws, settings: Settings) -> dict[str, int]:
    counter = CallCounter(aws)
    clients = AwsClients(session=aws, region="us-east-1")
    Guardrail(clients, settings, account_id="123456789012").run(Scope.everything())
    return counter.by_operation()


SETTINGS = Settings(session_log_bucket="guardrail-logs")


def test_calls_do_not_grow_with_instances(aws, account):
    fleet(account, 5)
    small = scan_calls(aws, SETTINGS)
    fleet(account, 40, tag="b")  # 8x the instances, same 3 profiles + 3 more
    large = scan_calls(aws, SETTINGS)
    # per distinct profile / role, once
    assert small["iam:GetInstanceProfile"] == 3 and large["iam:GetInstanceProfile"] == 6
    assert small["iam:ListAttachedRolePolicies"] == 3
    # One simulation per role: log delivery for each, with the SSM Agent's actions in the same
    # call for the 2 (then 4) that carry the core policy
    assert small["iam:SimulatePrincipalPolicy"] == 3
    assert large["iam:SimulatePrincipalPolicy"] == 6
    assert small["ssm:GetDocument"] == 1 == large["ssm:GetDocument"]
    # pages only: 20 -> 180 instances adds at most a page or two per paginated call
    for op in ("ec2:DescribeInstances", "ec2:DescribeSecurityGroupRules"):
        assert large[op] <= small[op] + 2, op
    # group names and VPCs come with the instances
    assert "ec2:DescribeSecurityGroups" not in small
    # Systems Manager's view is only needed when settings accept DHMC
    assert "ssm:DescribeInstanceInformation" not in small
    assert "sts:GetCallerIdentity" not in small  # the account id was injected


def test_targeted_scope_reads_only_what_it_names(aws, account):
    fleet(account, 10)
    gid = account.group(OPEN_SSH)
    iid = account.instance([gid])
    counter = CallCounter(aws)
    clients = AwsClients(session=aws, region="us-east-1")
    report = Guardrail(clients, Settings(), account_id="123456789012").run(
        Scope(group_ids=frozenset({gid}), controls=frozenset({"ssh-open-to-internet"}))
    )
    assert {e.result.resource_id for e in report.evaluations} == {iid, gid}
    assert counter.total <= 5, counter.by_operation()


def test_an_event_about_a_group_with_many_users_reads_them_in_pages(aws, account, monkeypatch):
    """A default group can have thousands of users: the targeted read pages them (one
    unbounded response otherwise) and still finds every one."""
    import guardrail.reader

    monkeypatch.setattr(guardrail.reader, "EC2_PAGE", 5)
    gid = account.group(OPEN_SSH)
    ids = {account.instance([gid]) for _ in range(12)}
    counter = CallCounter(aws)
    clients = AwsClients(session=aws, region="us-east-1")
    report = Guardrail(clients, Settings(), account_id="123456789012").run(
        Scope(group_ids=frozenset({gid}), controls=frozenset({"ssh-open-to-internet"}))
    )
    assert {e.result.resource_id for e in report.evaluations} == ids | {gid}
    assert counter.by_operation()["ec2:DescribeInstances"] == 3  # 12 users, 5 per page


def test_dhmc_reads_managed_instances_only_for_profileless_ones_in_batches(aws, account):
    fleet(account, 5)
    small = scan_calls(aws, Settings(session_log_bucket="guardrail-logs", accept_dhmc=True))
    fleet(account, 40, tag="b")  # 45 profile-less instances: still one page of 50 ids
    account.instance(count=10)  # 55: two
    large = scan_calls(aws, Settings(session_log_bucket="guardrail-logs", accept_dhmc=True))
    assert small["ssm:DescribeInstanceInformation"] == 1
    assert large["ssm:DescribeInstanceInformation"] == 2


# --- what the reader takes from DescribeInstances and IAM as they answer -----------------------

SSH = "ssh-open-to-internet"
OPEN_SSH_V6 = {
    **{k: v for k, v in OPEN_SSH.items() if k != "IpRanges"},
    "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
}


def test_an_ipv6_only_instance_behind_an_ipv6_open_group_is_critical(account, clients):
    """No public IPv4, one IPv6 address (NetworkInterfaces[].Ipv6Addresses[] in the raw
    DescribeInstances answer): a ::/0 rule reaches it now, so the finding is CRITICAL, not the
    HIGH of an instance the internet cannot reach."""
    block = account.ec2.associate_vpc_cidr_block(
        VpcId=account.vpc, AmazonProvidedIpv6CidrBlock=True
    )["Ipv6CidrBlockAssociation"]["Ipv6CidrBlock"]
    account.ec2.associate_subnet_cidr_block(
        SubnetId=account.subnet, Ipv6CidrBlock=block.replace("/56", "/64")
    )
    gid = account.group(OPEN_SSH_V6)
    iid = account.instance([gid])
    raw = account.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert raw.get("PublicIpAddress") is None
    (eni,) = raw["NetworkInterfaces"]
    (address,) = account.ec2.assign_ipv6_addresses(
        NetworkInterfaceId=eni["NetworkInterfaceId"], Ipv6AddressCount=1
    )["AssignedIpv6Addresses"]
    report = Guardrail(clients, Settings(), account_id="123456789012").run(
        Scope(group_ids=frozenset({gid}), controls=frozenset({SSH}))
    )
    results = {e.result.resource_id: e.result for e in report.evaluations}
    assert (results[iid].severity, results[gid].severity) == ("CRITICAL", "CRITICAL")
    assert results[iid].reason.endswith("instance is running with a global IPv6 address")
    assert report.snapshot is not None
    assert report.snapshot.instances[iid].ipv6_addresses == (address,)


@pytest.mark.parametrize("controls", [ALL_CONTROLS, ("ssm-session-logging",)])
@pytest.mark.parametrize("before", ["ListAttachedRolePolicies", "SimulatePrincipalPolicy"])
def test_a_role_deleted_while_it_is_read_leaves_its_profile_without_a_role(
    account, clients, before, controls
):
    """The role leaves its profile and is deleted after GetInstanceProfile named it, before its
    policies are read or, one call later, before its simulation (NoSuchEntity). The scan still
    judges every instance; the one whose role went is left with a profile without a role, as
    the next read will find it. After the policies' read it was PASSED, the agent's calls never
    judged."""
    account.role("leaving", CORE, profile="leaving")
    account.role("staying", CORE, profile="staying")
    gone = account.instance(profile="leaving")
    kept = account.instance(profile="staying")

    def delete_the_role_first(params, **_):
        named = params.get("RoleName") or params.get("PolicySourceArn", "").rsplit("/", 1)[-1]
        if named == "leaving":
            account.iam.remove_role_from_instance_profile(
                InstanceProfileName="leaving", RoleName="leaving"
            )
            account.iam.detach_role_policy(RoleName="leaving", PolicyArn=CORE)
            account.iam.delete_role(RoleName="leaving")

    clients.iam.meta.events.register(f"before-parameter-build.iam.{before}", delete_the_role_first)
    # With somewhere to deliver to, so the role's log delivery is simulated too.
    settings = Settings(controls=controls, session_log_bucket="guardrail-logs")
    report = Guardrail(clients, settings, account_id="123456789012").run(Scope.everything())
    results = {(e.result.control, e.result.resource_id): e.result for e in report.evaluations}
    if "ssm-instance-role" in controls:
        assert results[("ssm-instance-role", kept)].status is Status.PASSED
        left = results[("ssm-instance-role", gone)]
        assert (left.status, left.reason) == (Status.FAILED, "instance profile leaving has no role")
    # Its logging result: no role, not "delivery not evaluated".
    logging = results[("ssm-session-logging", gone)]
    assert (logging.status, logging.reason) == (
        Status.NOT_APPLICABLE,
        "no instance role (see ssm-instance-role)",
    )


def test_an_instance_described_without_its_state_is_judged_not_archived(account, clients):
    """State is optional in EC2's model. Read as "unknown", the instance counted as ended: every
    control NOT_APPLICABLE, its findings archived, its open group judged for nobody, exit 0
    with internet SSH open."""
    gid = account.group(OPEN_SSH)
    iid = account.instance([gid])

    def without_state(parsed, **_):
        for reservation in parsed.get("Reservations", []):
            for instance in reservation["Instances"]:
                instance.pop("State", None)

    clients.ec2.meta.events.register("after-call.ec2.DescribeInstances", without_state)
    ssh = Settings(controls=("ssh-open-to-internet",))
    report = Guardrail(clients, ssh, account_id="123456789012").run(Scope.everything())
    results = {e.result.resource_id: e.result for e in report.evaluations}
    assert (results[iid].status, results[iid].severity) == (Status.FAILED, "HIGH")
    assert results[gid].status is Status.FAILED
