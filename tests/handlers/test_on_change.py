"""handlers.on_change end to end on moto: a change is made in the emulated account, its event is
delivered, the account is fixed (mode enforce) and the finding is PASSED.

Every fixture in tests/fixtures/events is delivered here at least once. The fixtures carry
placeholder ids (account 111122223333, i-0a1b2c3d4e5f6000N, sg-0a1b2c3d4e5f60001, ...); each
test swaps in the ids of what it created. The function runs in eu-west-1; IAM events come from
us-east-1 as the stack forwards them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.exceptions import ClientError, HTTPClientError, SSLError
from guardrail import reader
from guardrail.clients import AwsClients
from guardrail.engine import Guardrail
from guardrail.model import Outcome
from guardrail.publisher import FindingPublisher
from guardrail.replay import RetryableEventError
from guardrail.settings import Settings
from handlers import on_change

from emulator.calls import CallCounter
from emulator.seed import EC2_TRUST
from tests.aws_errors import error_answer, without_rule_ids
from tests.conftest import rule_key

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
ACCOUNT = "123456789012"  # moto's account
REGION = "eu-west-1"
PLACEHOLDER_ACCOUNT = "111122223333"
I1, I2 = "i-0a1b2c3d4e5f60001", "i-0a1b2c3d4e5f60002"
SG = "sg-0a1b2c3d4e5f60001"
ASSOC = "iip-assoc-0a1b2c3d4e5f60001"
ENI = "eni-0a1b2c3d4e5f60001"
GUARDRAIL_ACTOR = f"arn:aws:iam::{ACCOUNT}:role/ssm-guardrail-OnChangeFunctionRole-1A2B3C4D5E6F"
GUARDRAIL_PROFILE = GUARDRAIL_ROLE = "ssm-guardrail-instance"
BUCKET = f"ssm-guardrail-session-logs-{ACCOUNT}"
SSH, ROLE, LOGGING = "ssh-open-to-internet", "ssm-instance-role", "ssm-session-logging"
CORE_NAME = "AmazonSSMManagedInstanceCore"
CORE = f"arn:aws:iam::aws:policy/{CORE_NAME}"
PREFS = "SSM-SessionManagerRunShell"
TRUST = json.dumps(EC2_TRUST)
DELIVERY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"},
            {
                "Effect": "Allow",
                "Action": "s3:GetEncryptionConfiguration",
                "Resource": f"arn:aws:s3:::{BUCKET}",
            },
        ],
    }
)


def prefs_content(**inputs: Any) -> str:
    return json.dumps(
        {
            "schemaVersion": "1.0",
            "description": "Document to hold regional settings for Session Manager",
            "sessionType": "Standard_Stream",
            "inputs": inputs,
        }
    )


LOGGED = {"s3BucketName": BUCKET, "s3KeyPrefix": "session-logs", "s3EncryptionEnabled": True}


@dataclass
class World:
    """One emulated account-region with the guardrail's own resources, as the stack leaves it."""

    session: Any
    vpc: str
    subnet: str
    web: str  # a group without internet SSH
    delivery_policy: str
    counter: CallCounter = field(default_factory=CallCounter)

    _clients: dict[str, Any] = field(default_factory=dict)
    _counted: Any = None

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service, region_name=REGION)
        return self._clients[service]

    def new_session(self) -> Any:
        return session_with_shared_models()

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    @property
    def iam(self) -> Any:
        return self.client("iam")

    @property
    def ssm(self) -> Any:
        return self.client("ssm")

    def settings(self, mode: str = "enforce", **overrides: Any) -> Settings:
        values = {
            "mode": mode,
            "instance_profile": GUARDRAIL_PROFILE,
            "instance_role": GUARDRAIL_ROLE,
            "session_log_bucket": BUCKET,
            "session_log_prefix": "session-logs/",
            "log_delivery_policy_arn": self.delivery_policy,
            "actor_arns": (GUARDRAIL_ACTOR,),
            "regions": (REGION, "us-west-2"),
        }
        values.update(overrides)
        return Settings(**values)

    def guardrail(
        self, mode: str = "enforce", *, fresh: bool = False, **overrides: Any
    ) -> Guardrail:
        """A Guardrail whose API calls are counted (`self.calls`); `fresh` gives it a session of
        its own (for tests that hook its calls)."""
        if fresh or self._counted is None:
            session = self.new_session()
            self.counter.attach(session)  # before the session creates its clients
            if fresh:
                clients = AwsClients(session=session, region=REGION)
            else:
                self._counted = AwsClients(session=session, region=REGION)
        clients = clients if fresh else self._counted
        publisher = FindingPublisher(clients.securityhub, sleep=lambda _: None)
        return Guardrail(
            clients, self.settings(mode, **overrides), account_id=ACCOUNT, publisher=publisher
        )

    @property
    def calls(self) -> dict[str, int]:
        """AWS calls ("service:Operation", HTTP attempts) since the last delivery."""
        return self.counter.by_operation()

    # --- changes a person makes --------------------------------------------------------------

    def group(self, name: str) -> str:
        return str(
            self.ec2.create_security_group(GroupName=name, Description=name, VpcId=self.vpc)[
                "GroupId"
            ]
        )

    def launch(
        self,
        count: int = 1,
        groups: list[str] | None = None,
        profile: str | None = None,
        public: bool = True,
    ) -> list[str]:
        kwargs: dict[str, Any] = {}
        if profile:
            kwargs["IamInstanceProfile"] = {"Name": profile}
        interface = {
            "DeviceIndex": 0,
            "SubnetId": self.subnet,
            "Groups": groups or [self.web],
            "AssociatePublicIpAddress": public,
        }
        reservation = self.ec2.run_instances(
            ImageId="ami-0123456789abcdef0",
            InstanceType="t3.micro",
            MinCount=count,
            MaxCount=count,
            NetworkInterfaces=[interface],
            MetadataOptions={"HttpTokens": "required"},
            **kwargs,
        )
        return [i["InstanceId"] for i in reservation["Instances"]]

    def open_ssh(
        self,
        group: str,
        cidr: str = "0.0.0.0/0",
        low: int = 22,
        high: int = 22,
        protocol: str = "tcp",
    ) -> str:
        source = (
            {"Ipv6Ranges": [{"CidrIpv6": cidr}]}
            if ":" in cidr
            else {"IpRanges": [{"CidrIp": cidr}]}
        )
        response = self.ec2.authorize_security_group_ingress(
            GroupId=group,
            IpPermissions=[{"IpProtocol": protocol, "FromPort": low, "ToPort": high, **source}],
        )
        return str(response["SecurityGroupRules"][0]["SecurityGroupRuleId"])

    def app_role(
        self,
        name: str = "app-role",
        profile: str = "app-profile",
        core: bool = True,
        delivery_inline: bool = True,
    ) -> None:
        """A team's own role and profile: SSM core policy, and an inline log-delivery policy."""
        self.iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)
        if core:
            self.iam.attach_role_policy(RoleName=name, PolicyArn=CORE)
        if delivery_inline:
            self.iam.put_role_policy(
                RoleName=name, PolicyName="session-log-delivery", PolicyDocument=DELIVERY
            )
        self.iam.create_instance_profile(InstanceProfileName=profile)
        self.iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=name)

    # --- what the account looks like ---------------------------------------------------------

    def internet_ssh(self, group: str) -> list[dict[str, Any]]:
        rules = self.ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [group]}]
        )["SecurityGroupRules"]
        return [
            r
            for r in rules
            if not r["IsEgress"]
            and (r.get("CidrIpv4") == "0.0.0.0/0" or r.get("CidrIpv6") == "::/0")
            and (
                r["IpProtocol"] == "-1"
                or (r["IpProtocol"] == "tcp" and r["FromPort"] <= 22 <= r["ToPort"])
            )
        ]

    def ingress(self, group: str) -> list[tuple[Any, ...]]:
        rules = self.ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [group]}]
        )["SecurityGroupRules"]
        return sorted(rule_key(r) for r in rules if not r["IsEgress"])

    def interface_of(self, instance_id: str) -> str:
        """The instance's primary network interface."""
        return str(
            self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][
                0
            ]["NetworkInterfaces"][0]["NetworkInterfaceId"]
        )

    def profile_of(self, instance_id: str) -> str | None:
        associations = self.ec2.describe_iam_instance_profile_associations(
            Filters=[{"Name": "instance-id", "Values": [instance_id]}]
        )["IamInstanceProfileAssociations"]
        live = [a for a in associations if a["State"] in ("associating", "associated")]
        return live[0]["IamInstanceProfile"]["Arn"].rsplit("/", 1)[-1] if live else None

    def attached(self, role: str) -> set[str]:
        policies = self.iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
        return {p["PolicyArn"] for p in policies}

    def prefs_inputs(self) -> dict[str, Any] | None:
        try:
            document = self.ssm.get_document(Name=PREFS)
        except ClientError:
            return None
        return dict(json.loads(document["Content"]).get("inputs") or {})

    def findings(self) -> dict[str, dict[str, Any]]:
        hub = self.client("securityhub")
        found = {}
        for page in hub.get_paginator("get_findings").paginate():
            found.update({f["Id"]: f for f in page["Findings"]})
        return found

    @staticmethod
    def finding_id(control: str, resource_id: str) -> str:
        return f"ssm-guardrail/{REGION}/{ACCOUNT}/{control}/{resource_id}"

    def finding(self, control: str, resource_id: str) -> dict[str, Any]:
        fid = self.finding_id(control, resource_id)
        findings = self.findings()
        assert fid in findings, f"no finding {fid}; have {sorted(findings)}"
        return findings[fid]

    def state(self) -> dict[str, Any]:
        """Everything a fix could change, to prove that nothing did."""
        groups = self.ec2.describe_security_groups()["SecurityGroups"]
        roles = self.iam.list_roles()["Roles"]
        profiles = self.iam.list_instance_profiles()["InstanceProfiles"]
        return {
            "ingress": {g["GroupId"]: self.ingress(g["GroupId"]) for g in groups},
            "associations": sorted(
                (a["InstanceId"], a["IamInstanceProfile"]["Arn"], a["State"])
                for a in self.ec2.describe_iam_instance_profile_associations()[
                    "IamInstanceProfileAssociations"
                ]
            ),
            "roles": {r["RoleName"]: sorted(self.attached(r["RoleName"])) for r in roles},
            "inline": {
                r["RoleName"]: sorted(
                    self.iam.list_role_policies(RoleName=r["RoleName"])["PolicyNames"]
                )
                for r in roles
            },
            "profiles": {
                p["InstanceProfileName"]: sorted(x["RoleName"] for x in p["Roles"])
                for p in profiles
            },
            "prefs": self.prefs_inputs(),
        }

    # --- delivering events -------------------------------------------------------------------

    def event(self, name: str, ids: dict[str, str] | None = None) -> dict[str, Any]:
        """The fixture `name` with its placeholders replaced by the ids of this world."""
        text = (FIXTURES / f"{name}.json").read_text()
        for placeholder, real in {PLACEHOLDER_ACCOUNT: ACCOUNT, **(ids or {})}.items():
            text = text.replace(placeholder, real)
        return json.loads(text)

    def deliver(
        self,
        name: str | dict[str, Any],
        ids: dict[str, str] | None = None,
        mode: str = "enforce",
        **overrides: Any,
    ) -> dict[str, Any]:
        event = self.event(name, ids) if isinstance(name, str) else name
        self.counter.reset()
        return on_change.handle(event, self.guardrail(mode, **overrides), home_account=ACCOUNT)


@cache
def _models_loader() -> Any:
    return botocore.session.get_session().get_component("data_loader")


def session_with_shared_models() -> Any:
    """A boto3 Session reusing service models already loaded (parsing ec2's takes ~0.3 s)."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _models_loader())
    return boto3.Session(botocore_session=core, region_name=REGION)


@cache
def _managed_policy_data() -> dict[str, Any]:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    return {CORE_NAME: json.loads(aws_managed_policies_data)[CORE_NAME]}


def _core_policy_only(backend: Any) -> list[Any]:
    from moto.iam.models import AWSManagedPolicy

    return [
        AWSManagedPolicy.from_data(name, backend.account_id, backend.region_name, data)
        for name, data in _managed_policy_data().items()
    ]


@contextlib.contextmanager
def emulated_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The account as the stack leaves it: Security Hub on, the guardrail's instance profile and
    role (SSM core policy + log-delivery policy), session logs going to the guardrail's bucket."""
    from moto import mock_aws
    from moto.iam import models as iam_models

    from emulator.extension import install

    # AWS managed policies: only the one the guardrail attaches (loading all ~1,300 costs seconds
    # per IAM backend, and moto builds several per test).
    monkeypatch.setattr(iam_models.IAMBackend, "_init_aws_policies", _core_policy_only)
    install()
    with mock_aws():
        session = session_with_shared_models()
        session.client("securityhub", region_name=REGION).enable_security_hub()
        ec2 = session.client("ec2", region_name=REGION)
        iam = session.client("iam", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        web = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
        ec2.authorize_security_group_ingress(
            GroupId=web,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 443,
                    "ToPort": 443,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                }
            ],
        )
        policy = iam.create_policy(
            PolicyName="ssm-guardrail-log-delivery", PolicyDocument=DELIVERY
        )["Policy"]["Arn"]
        iam.create_role(RoleName=GUARDRAIL_ROLE, AssumeRolePolicyDocument=TRUST)
        iam.attach_role_policy(RoleName=GUARDRAIL_ROLE, PolicyArn=CORE)
        iam.attach_role_policy(RoleName=GUARDRAIL_ROLE, PolicyArn=policy)
        iam.create_instance_profile(InstanceProfileName=GUARDRAIL_PROFILE)
        iam.add_role_to_instance_profile(
            InstanceProfileName=GUARDRAIL_PROFILE, RoleName=GUARDRAIL_ROLE
        )
        session.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        session.client("ssm", region_name=REGION).create_document(
            Name=PREFS,
            Content=prefs_content(**LOGGED),
            DocumentType="Session",
            DocumentFormat="JSON",
        )
        yield World(session, vpc, subnet, web, policy)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with emulated_world(monkeypatch) as emulated:
        yield emulated


def passed(world: World, control: str, resource_id: str) -> bool:
    finding = world.finding(control, resource_id)
    return finding["Compliance"]["Status"] == "PASSED" and finding["RecordState"] == "ACTIVE"


def resolved(world: World, control: str, resource_id: str) -> bool:
    """PASSED because the guardrail fixed it: marked RESOLVED with its note."""
    finding = world.finding(control, resource_id)
    return passed(world, control, resource_id) and finding["Workflow"]["Status"] == "RESOLVED"


# --- security groups: the group → the instances that use it ------------------------------------


@pytest.mark.parametrize(
    ("name", "cidr", "low", "high", "protocol"),
    [
        ("authorize_ingress_ip_permissions", "0.0.0.0/0", 22, 22, "tcp"),
        ("authorize_ingress_ipv6", "::/0", 22, 22, "tcp"),
        ("authorize_ingress_flat_cidr", "0.0.0.0/0", 0, 1024, "tcp"),
        ("authorize_ingress_group_name", "0.0.0.0/0", -1, -1, "-1"),
        ("modify_security_group_rules", "0.0.0.0/0", 22, 22, "tcp"),
    ],
)
def test_opened_port_22_is_closed_in_the_same_invocation(world, name, cidr, low, high, protocol):
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad, cidr, low, high, protocol)
    assert world.internet_ssh(bad)

    result = world.deliver(name, {SG: bad})

    assert world.internet_ssh(bad) == []
    assert result["fixes"] == {"applied": 1} and result["left_failed"] == 0
    assert passed(world, SSH, instance) and passed(world, SSH, bad)
    assert world.finding(SSH, instance)["Workflow"]["Status"] == "RESOLVED"


def test_flat_range_keeps_the_other_ports_it_admitted(world):
    bad = world.group("ops")
    world.launch(groups=[bad])
    world.open_ssh(bad, low=0, high=1024)
    world.deliver("authorize_ingress_flat_cidr", {SG: bad})
    assert world.ingress(bad) == [("tcp", 0, 21, "0.0.0.0/0"), ("tcp", 23, 1024, "0.0.0.0/0")]


def test_other_sources_of_the_same_call_are_kept(world):
    bad, peer = world.group("ops"), world.group("bastion")
    prefix_list = world.ec2.create_managed_prefix_list(
        PrefixListName="corp",
        MaxEntries=5,
        AddressFamily="IPv4",
        Entries=[{"Cidr": "192.0.2.0/24"}],
    )["PrefixList"]["PrefixListId"]
    instance = world.launch(groups=[bad])[0]
    world.ec2.authorize_security_group_ingress(
        GroupId=bad,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "UserIdGroupPairs": [{"GroupId": peer}],
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                "PrefixListIds": [{"PrefixListId": prefix_list}],
            }
        ],
    )
    world.deliver(
        "authorize_ingress_mixed_sources",
        {SG: bad, "sg-0fedcba987654321f": peer, "pl-0123456789abcdef0": prefix_list},
    )
    assert world.ingress(bad) == sorted([("tcp", 22, 22, peer), ("tcp", 22, 22, prefix_list)])
    assert passed(world, SSH, instance)


def test_report_mode_reports_and_changes_nothing(world):
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad)
    before = world.state()
    result = world.deliver("authorize_ingress_ip_permissions", {SG: bad}, mode="report")
    assert world.state() == before
    assert result["left_failed"] == 2 and not result["fixes"]
    finding = world.finding(SSH, instance)
    assert (
        finding["Compliance"]["Status"] == "FAILED" and finding["Severity"]["Label"] == "CRITICAL"
    )


def test_a_revoke_event_turns_the_finding_passed(world):
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    rule = world.open_ssh(bad)
    world.deliver("authorize_ingress_ip_permissions", {SG: bad}, mode="report")
    assert world.finding(SSH, instance)["Compliance"]["Status"] == "FAILED"
    world.ec2.revoke_security_group_ingress(GroupId=bad, SecurityGroupRuleIds=[rule])
    world.deliver(
        "revoke_ingress_rule_ids", {SG: bad, "sgr-0a1b2c3d4e5f60001": rule}, mode="report"
    )
    assert passed(world, SSH, instance) and passed(world, SSH, bad)


def test_instance_moved_into_an_open_group(world):
    bad = world.group("ops")
    world.open_ssh(bad)
    instance = world.launch()[0]
    world.ec2.modify_instance_attribute(InstanceId=instance, Groups=[bad])
    result = world.deliver("modify_instance_attribute_groups", {I1: instance, SG: bad})
    assert world.internet_ssh(bad) == [] and result["fixes"] == {"applied": 1}
    assert passed(world, SSH, instance)


def test_interface_moved_into_an_open_group(world):
    bad = world.group("ops")
    world.open_ssh(bad)
    instance = world.launch()[0]
    eni = world.interface_of(instance)
    bystander = world.launch(groups=[bad])[0]  # already in the group: not what changed
    world.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[bad])
    result = world.deliver("modify_network_interface_attribute", {ENI: eni, SG: bad})
    assert world.internet_ssh(bad) == []
    assert passed(world, SSH, instance)
    assert result["event"]["interface_ids"] == [eni]
    # Only the interface's instance was evaluated for every control; the group's other user is
    # published for SSH only because closing the group fixed it too.
    assert resolved(world, SSH, bystander)
    assert world.finding_id(ROLE, bystander) not in world.findings()


def attach_interface(world: World, instance: str, group: str) -> str:
    """A second interface, in `group` and without a public address, attached to `instance`."""
    eni = world.ec2.create_network_interface(SubnetId=world.subnet, Groups=[group])
    eni_id = str(eni["NetworkInterface"]["NetworkInterfaceId"])
    world.ec2.attach_network_interface(
        NetworkInterfaceId=eni_id, InstanceId=instance, DeviceIndex=1
    )
    return eni_id


@pytest.mark.parametrize("mode", ["enforce", "report"])
def test_interface_attached_from_an_open_group(world, mode):
    bad = world.group("ops")
    world.open_ssh(bad)
    instance = world.launch()[0]  # its primary interface is in `web` only
    state = world.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "running"
    world.guardrail("report").run()  # the drift scan: nothing wrong yet
    assert passed(world, SSH, instance)
    eni = attach_interface(world, instance, bad)
    before = world.state()

    result = world.deliver("attach_network_interface", {I1: instance, ENI: eni}, mode=mode)

    assert "dropped" not in result, result
    assert result["event"]["instance_ids"] == [instance]
    assert result["event"]["controls"] == [SSH]
    finding = world.finding(SSH, instance)
    if mode == "enforce":
        assert world.internet_ssh(bad) == [] and result["fixes"] == {"applied": 1}
        assert resolved(world, SSH, instance) and passed(world, SSH, bad)
    else:
        assert world.state() == before and not result["fixes"]
        assert finding["Compliance"]["Status"] == "FAILED"
        # The group is on the attached interface, which has no public address: HIGH.
        assert finding["Severity"]["Label"] == "HIGH"
        assert world.finding(SSH, bad)["Compliance"]["Status"] == "FAILED"


@pytest.mark.parametrize("to", ["instance", "interface"])
def test_an_elastic_ip_makes_internet_ssh_critical_within_its_event(world, to):
    """In report mode, an instance behind an open group without a public address is HIGH. An
    Elastic IP associated to it made it reachable, but AssociateAddress was not routed: HIGH
    until the hourly scan. Now its event judges it CRITICAL, as the drift scan would."""
    bad = world.group("ops")
    world.open_ssh(bad)
    instance = world.launch(groups=[bad], public=False)[0]
    world.deliver("state_change_running", {I1: instance}, mode="report")
    assert world.finding(SSH, instance)["Severity"]["Label"] == "HIGH"
    allocation = world.ec2.allocate_address(Domain="vpc")["AllocationId"]
    eni = world.interface_of(instance)
    target = {"InstanceId": instance} if to == "instance" else {"NetworkInterfaceId": eni}
    world.ec2.associate_address(AllocationId=allocation, **target)
    event = world.event("associate_address", {I1: instance})
    if to == "interface":
        request = event["detail"]["requestParameters"]
        del request["instanceId"]
        request["networkInterfaceId"] = eni

    result = world.deliver(event, mode="report")

    assert result["event"]["controls"] == [SSH] and not result["fixes"]
    finding = world.finding(SSH, instance)
    assert (finding["Compliance"]["Status"], finding["Severity"]["Label"]) == ("FAILED", "CRITICAL")


def test_an_ipv6_address_makes_internet_ssh_over_ipv6_critical_within_its_event(world):
    """A ::/0 SSH rule on an instance without IPv6 is HIGH. An IPv6 address assigned to its
    interface made it reachable; AssignIpv6Addresses was not routed: HIGH until the hourly scan."""
    bad = world.group("ops")
    world.open_ssh(bad, cidr="::/0")
    instance = world.launch(groups=[bad], public=False)[0]
    world.deliver("state_change_running", {I1: instance}, mode="report")
    assert world.finding(SSH, instance)["Severity"]["Label"] == "HIGH"
    eni = world.interface_of(instance)
    world.ec2.assign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6Addresses=["2a05:d018::10"])

    result = world.deliver("assign_ipv6_addresses", {ENI: eni}, mode="report")

    assert result["event"]["controls"] == [SSH] and not result["fixes"]
    finding = world.finding(SSH, instance)
    assert (finding["Compliance"]["Status"], finding["Severity"]["Label"]) == ("FAILED", "CRITICAL")

    # Taken away again: HIGH within its event (UnassignIpv6Addresses was not routed: CRITICAL
    # until the hourly scan).
    world.ec2.unassign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6Addresses=["2a05:d018::10"])
    result = world.deliver("unassign_ipv6_addresses", {ENI: eni}, mode="report")
    assert result["event"]["controls"] == [SSH] and not result["fixes"]
    finding = world.finding(SSH, instance)
    assert (finding["Compliance"]["Status"], finding["Severity"]["Label"]) == ("FAILED", "HIGH")


PL = "pl-0a1b2c3d4e5f60001"


def office_list_on_ssh(world: World) -> tuple[str, str, str]:
    """A prefix list of one office range, referenced by a group's TCP 22 rule, and a running
    instance with a public address behind the group: (list, group, instance)."""
    pl = world.ec2.create_managed_prefix_list(
        PrefixListName="office",
        MaxEntries=10,
        AddressFamily="IPv4",
        Entries=[{"Cidr": "203.0.113.0/24", "Description": "office"}],
    )["PrefixList"]["PrefixListId"]
    ops = world.group("ops")
    world.ec2.authorize_security_group_ingress(
        GroupId=ops,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "PrefixListIds": [{"PrefixListId": pl}],
            }
        ],
    )
    return pl, ops, world.launch(groups=[ops])[0]


def test_a_prefix_list_given_the_internet_fails_its_groups_ssh_within_its_event(world):
    """0.0.0.0/0 added to a list an SSH rule references opens SSH to the internet without any
    security group event: the list's event finds its groups (GetManagedPrefixListAssociations).
    Enforce mode changes neither the rule nor the list (other entries, other users), and says so."""
    pl, ops, instance = office_list_on_ssh(world)
    world.deliver("state_change_running", {I1: instance})
    assert passed(world, SSH, instance)
    world.ec2.modify_managed_prefix_list(
        PrefixListId=pl, CurrentVersion=1, AddEntries=[{"Cidr": "0.0.0.0/0"}]
    )
    before = world.state()

    result = world.deliver("modify_managed_prefix_list", {PL: pl})

    assert result["event"]["controls"] == [SSH] and result["fixes"] == {"skipped": 1}
    assert world.state() == before
    for resource in (instance, ops):
        finding = world.finding(SSH, resource)
        assert (finding["Compliance"]["Status"], finding["Severity"]["Label"]) == (
            "FAILED",
            "CRITICAL",
        )
    assert f"0.0.0.0/0 (in prefix list {pl})" in world.finding(SSH, ops)["Description"]
    # The list's state and groups, their users and rules, the entries, one import.
    assert dict(world.calls) == {
        "ec2:DescribeManagedPrefixLists": 1,
        "ec2:GetManagedPrefixListAssociations": 1,
        "ec2:DescribeInstances": 1,
        "ec2:DescribeSecurityGroupRules": 1,
        "ec2:GetManagedPrefixListEntries": 1,
        "securityhub:BatchImportFindings": 1,
    }
    # A person takes the entry out again: the next event of the list passes them.
    world.ec2.modify_managed_prefix_list(
        PrefixListId=pl, CurrentVersion=2, RemoveEntries=[{"Cidr": "0.0.0.0/0"}]
    )
    world.deliver("modify_managed_prefix_list", {PL: pl})
    assert passed(world, SSH, instance) and passed(world, SSH, ops)


def test_a_list_still_being_changed_is_retried_not_read_as_it_was(world):
    """EC2 changes a list's entries asynchronously (the event's own answer says
    modify-in-progress): until then its current version holds the old entries, and 0.0.0.0/0
    just added would read as absent, the groups PASSED. The event raises instead, so Lambda runs
    it again; then it is judged on the new entries."""
    from guardrail.reader import PrefixListChanging

    pl, _, instance = office_list_on_ssh(world)
    world.deliver("state_change_running", {I1: instance})
    world.ec2.modify_managed_prefix_list(
        PrefixListId=pl, CurrentVersion=1, AddEntries=[{"Cidr": "0.0.0.0/0"}]
    )
    findings = world.findings()

    def in_progress(parsed: dict[str, Any], **_: Any) -> None:
        for listed in parsed.get("PrefixLists", []):
            listed["State"] = "modify-in-progress"

    guardrail = world.guardrail(fresh=True)
    events = guardrail.clients.ec2.meta.events
    events.register("after-call.ec2.DescribeManagedPrefixLists", in_progress)
    with pytest.raises(PrefixListChanging, match=f"prefix list {pl} is still being changed"):
        on_change.handle(world.event("modify_managed_prefix_list", {PL: pl}), guardrail)
    assert world.findings() == findings  # nothing judged on the old entries, nothing published

    events.unregister("after-call.ec2.DescribeManagedPrefixLists", in_progress)
    on_change.handle(world.event("modify_managed_prefix_list", {PL: pl}), guardrail)
    assert world.finding(SSH, instance)["Compliance"]["Status"] == "FAILED"


def test_a_list_no_group_references_costs_two_calls(world):
    pl = world.ec2.create_managed_prefix_list(
        PrefixListName="unused", MaxEntries=5, AddressFamily="IPv4", Entries=[]
    )["PrefixList"]["PrefixListId"]
    result = world.deliver("modify_managed_prefix_list", {PL: pl})
    assert result["results"] == 0 and not result["fixes"]
    assert dict(world.calls) == {
        "ec2:DescribeManagedPrefixLists": 1,
        "ec2:GetManagedPrefixListAssociations": 1,
    }


@pytest.mark.parametrize("mode", ["report", "enforce"])
def test_an_instance_event_sees_every_user_of_its_open_group(world, mode):
    """An event about one instance of a shared open group: the group's finding counts every user
    (as the drift scan does); closing it updates the other users' findings, and in report mode
    their findings are left as the drift scan wrote them."""
    bad = world.group("ops")
    world.open_ssh(bad)
    changed = world.launch(groups=[bad], public=False)[0]
    public = world.launch(groups=[bad])[0]  # the one exposure that makes the group CRITICAL
    other = world.group("other")
    elsewhere = world.launch(groups=[bad, other])[0]  # a group the event never reads
    world.guardrail("report").run()  # the drift scan, reporting
    before = world.findings()
    scanned = world.finding(SSH, bad)
    assert "used by 3 instance(s)" in scanned["Description"]
    world.deliver("state_change_running", {I1: changed}, mode=mode)
    group = world.finding(SSH, bad)
    if mode == "report":
        assert group["Severity"]["Label"] == scanned["Severity"]["Label"] == "CRITICAL"
        assert "used by 3 instance(s)" in group["Description"]
        assert world.finding(SSH, public) == before[world.finding_id(SSH, public)]
    else:
        assert world.internet_ssh(bad) == [] and passed(world, SSH, bad)
        assert resolved(world, SSH, public)
        details = world.finding(SSH, public)["Resources"][0]["Details"]  # IPs, VPC, type ...
        assert details == before[world.finding_id(SSH, public)]["Resources"][0]["Details"]
    # An instance with a group the event did not read is never judged from half its groups.
    assert world.finding(SSH, elsewhere) == before[world.finding_id(SSH, elsewhere)]


# --- instances: every control --------------------------------------------------------------------


def test_run_instances_fixes_both_new_instances(world):
    bad = world.group("ops")
    world.open_ssh(bad)
    first, second = world.launch(2, groups=[bad])
    result = world.deliver("run_instances_two", {I1: first, I2: second})
    assert world.internet_ssh(bad) == []
    assert world.profile_of(first) == world.profile_of(second) == GUARDRAIL_PROFILE
    assert result["left_failed"] == 0
    for instance in (first, second):
        assert passed(world, SSH, instance) and passed(world, ROLE, instance)
        # Read before the fix, the instances had no role to judge delivery by: not applicable
        # now; the next event or drift scan judges the guardrail's role (which may deliver).
        assert world.finding(LOGGING, instance)["Compliance"]["Status"] == "NOT_AVAILABLE"


def test_run_instances_from_a_launch_template(world):
    world.app_role(delivery_inline=False)
    template = world.ec2.create_launch_template(
        LaunchTemplateName="app",
        LaunchTemplateData={
            "ImageId": "ami-0123456789abcdef0",
            "InstanceType": "t3.micro",
            "IamInstanceProfile": {"Name": "app-profile"},
        },
    )["LaunchTemplate"]["LaunchTemplateId"]
    instance = world.ec2.run_instances(
        MinCount=1,
        MaxCount=1,
        SubnetId=world.subnet,
        SecurityGroupIds=[world.web],
        LaunchTemplate={"LaunchTemplateId": template},
        IamInstanceProfile={"Name": "app-profile"},  # moto does not apply the template's
    )["Instances"][0]["InstanceId"]
    assert world.profile_of(instance) == "app-profile"
    world.deliver("run_instances_launch_template", {I1: instance, "lt-0a1b2c3d4e5f60001": template})
    # The role lacked the log-delivery permissions; the guardrail attached its policy.
    assert world.delivery_policy in world.attached("app-role")
    assert passed(world, LOGGING, instance) and passed(world, ROLE, instance)
    assert passed(world, SSH, instance)


def test_start_instances_with_whitespace_ids(world):
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.ec2.stop_instances(InstanceIds=[instance])
    world.open_ssh(bad)
    world.ec2.start_instances(InstanceIds=[instance])
    world.deliver("start_instances", {I1: instance})
    assert world.internet_ssh(bad) == [] and world.profile_of(instance) == GUARDRAIL_PROFILE
    assert passed(world, SSH, instance) and passed(world, ROLE, instance)


@pytest.mark.parametrize("name", ["state_change_running", "state_change_pending"])
def test_state_change_to_pending_or_running(world, name):
    bad = world.group("ops")
    world.open_ssh(bad, "::/0")
    instance = world.launch(groups=[bad])[0]
    world.deliver(name, {I1: instance})
    assert world.internet_ssh(bad) == [] and world.profile_of(instance) == GUARDRAIL_PROFILE
    assert passed(world, SSH, instance) and passed(world, ROLE, instance)


@pytest.mark.parametrize("dhmc_configured", [True, False])
@pytest.mark.parametrize("name", ["state_change_running", "start_instances"])
def test_with_dhmc_accepted_a_start_is_judged_by_the_regions_dhmc_setting(
    world, name, dhmc_configured
):
    """The event comes before the agent registers: a region with DHMC leaves the instance
    without a profile and PASSED (no flap to FAILED at every start); one without DHMC gives it
    the guardrail's profile in the same invocation."""
    if dhmc_configured:
        world.ssm.update_service_setting(
            SettingId="/ssm/managed-instance/default-ec2-instance-management-role",
            SettingValue="AWSSystemsManagerDefaultEC2InstanceManagementRole",
        )
    instance = world.launch()[0]  # IMDSv2, no profile
    world.deliver(name, {I1: instance}, accept_dhmc=True)
    assert world.calls["ssm:GetServiceSetting"] == 1
    finding = world.finding(ROLE, instance)
    if dhmc_configured:
        assert world.profile_of(instance) is None and passed(world, ROLE, instance)
        assert "started too recently" in finding["Description"]
    else:
        assert world.profile_of(instance) == GUARDRAIL_PROFILE and passed(world, ROLE, instance)


def test_state_change_to_stopped_is_ignored_without_a_call(world):
    bad = world.group("ops")
    world.open_ssh(bad)
    instance = world.launch(groups=[bad])[0]
    result = world.deliver("state_change_stopped", {I1: instance})
    assert result["dropped"] == "irrelevant" and sum(world.calls.values()) == 0
    assert world.internet_ssh(bad)


# --- instance-profile calls ----------------------------------------------------------------------


def test_associated_profile_whose_role_lacks_the_core_policy(world):
    world.app_role(core=False)
    instance = world.launch()[0]
    world.ec2.associate_iam_instance_profile(
        IamInstanceProfile={"Name": "app-profile"}, InstanceId=instance
    )
    world.deliver("associate_iam_instance_profile", {I1: instance})
    assert CORE in world.attached("app-role")
    assert passed(world, ROLE, instance) and passed(world, LOGGING, instance)


def test_disassociated_profile_is_replaced_by_the_guardrails(world):
    world.app_role()
    instance = world.launch(profile="app-profile")[0]
    association = world.ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [instance]}]
    )["IamInstanceProfileAssociations"][0]["AssociationId"]
    world.ec2.disassociate_iam_instance_profile(AssociationId=association)
    world.deliver("disassociate_iam_instance_profile", {I1: instance, ASSOC: association})
    assert world.profile_of(instance) == GUARDRAIL_PROFILE
    assert passed(world, ROLE, instance)


def test_replaced_profile_without_a_role_gets_the_guardrails_role(world):
    world.app_role()
    world.iam.create_instance_profile(InstanceProfileName="bare-profile")
    instance = world.launch(profile="app-profile")[0]
    association = world.ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [instance]}]
    )["IamInstanceProfileAssociations"][0]["AssociationId"]
    world.ec2.replace_iam_instance_profile_association(
        IamInstanceProfile={"Name": "bare-profile"}, AssociationId=association
    )
    world.deliver("replace_iam_instance_profile_association", {I1: instance, ASSOC: association})
    profile = world.iam.get_instance_profile(InstanceProfileName="bare-profile")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [GUARDRAIL_ROLE]
    assert passed(world, ROLE, instance)


# --- IAM: forwarded from us-east-1, evaluated in this region -------------------------------------


def test_detached_core_policy_is_reattached(world):
    world.app_role()
    instance = world.launch(profile="app-profile")[0]
    world.iam.detach_role_policy(RoleName="app-role", PolicyArn=CORE)
    event = world.event("iam_detach_role_policy")
    assert event["region"] == "us-east-1"
    world.deliver(event)
    assert CORE in world.attached("app-role")
    assert passed(world, ROLE, instance)


def test_deleted_inline_delivery_policy_is_replaced_by_the_guardrails(world):
    world.app_role()
    instance = world.launch(profile="app-profile")[0]
    world.iam.delete_role_policy(RoleName="app-role", PolicyName="session-log-delivery")
    world.deliver("iam_delete_role_policy")
    assert world.delivery_policy in world.attached("app-role")
    assert passed(world, LOGGING, instance)


def test_role_removed_from_profile_gets_the_guardrails_role(world):
    world.app_role()
    instance = world.launch(profile="app-profile")[0]
    world.iam.remove_role_from_instance_profile(
        InstanceProfileName="app-profile", RoleName="app-role"
    )
    world.deliver("iam_remove_role_from_instance_profile")
    profile = world.iam.get_instance_profile(InstanceProfileName="app-profile")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [GUARDRAIL_ROLE]
    assert passed(world, ROLE, instance)


def test_deleted_profile_is_reported_never_replaced(world):
    world.app_role()
    instance = world.launch(profile="app-profile")[0]
    world.iam.remove_role_from_instance_profile(
        InstanceProfileName="app-profile", RoleName="app-role"
    )
    world.iam.delete_instance_profile(InstanceProfileName="app-profile")
    before = world.state()
    result = world.deliver("iam_delete_instance_profile")
    # ssm-instance-role never replaces a profile: the deleted one is reported for a person.
    assert world.state() == before and result["fixes"] == {"skipped": 1}
    finding = world.finding(ROLE, instance)
    assert finding["Compliance"]["Status"] == "FAILED"
    assert "no longer exists" in finding["Description"]


def test_a_deleted_profile_recreated_on_another_path_still_leads_to_its_instances(world):
    """DeleteInstanceProfile, then a profile of that name created on another path before the
    event is read: the instance still names the deleted one (EC2 keeps it there), found through
    its association; the new profile, found by name, has no instance and is not the instance's."""
    world.app_role()
    instance = world.launch(profile="app-profile")[0]
    world.iam.remove_role_from_instance_profile(
        InstanceProfileName="app-profile", RoleName="app-role"
    )
    world.iam.delete_instance_profile(InstanceProfileName="app-profile")
    world.iam.create_instance_profile(InstanceProfileName="app-profile", Path="/new/")
    world.iam.add_role_to_instance_profile(InstanceProfileName="app-profile", RoleName="app-role")

    result = world.deliver("iam_delete_instance_profile")

    assert result["fixes"] == {"skipped": 1}
    finding = world.finding(ROLE, instance)
    assert finding["Compliance"]["Status"] == "FAILED"
    assert "no longer exists" in finding["Description"]


def test_a_profile_event_reads_the_profile_by_name_not_the_regions_associations(world):
    """RemoveRoleFromInstanceProfile of a profile that still exists: its ARN finds its instances
    (one call whatever the region's size). Deleted before the event is read, the profile leads to
    its instances through their associations instead."""
    world.app_role()
    instance = world.launch(profile="app-profile")[0]
    world.launch()  # another instance of the region, without a profile
    world.iam.remove_role_from_instance_profile(
        InstanceProfileName="app-profile", RoleName="app-role"
    )
    world.deliver("iam_remove_role_from_instance_profile")
    assert "ec2:DescribeIamInstanceProfileAssociations" not in world.calls
    assert world.calls["iam:GetInstanceProfile"] == 1  # read once, for both uses
    assert resolved(world, ROLE, instance)  # the guardrail's role added to the empty profile

    world.iam.remove_role_from_instance_profile(
        InstanceProfileName="app-profile", RoleName=GUARDRAIL_ROLE
    )
    world.iam.delete_instance_profile(InstanceProfileName="app-profile")
    result = world.deliver("iam_remove_role_from_instance_profile")
    assert world.calls["ec2:DescribeIamInstanceProfileAssociations"] == 1
    assert result["results"] > 0 and result["fixes"] == {"skipped": 1}
    assert "no longer exists" in world.finding(ROLE, instance)["Description"]


# --- IAM: what the SSM Agent may do with a role (SimulatePrincipalPolicy) --------------------------

DENY_SSM = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": ["ssm:*", "ssmmessages:*", "ec2messages:*"],
                "Resource": "*",
            }
        ],
    }
)
# Allows log delivery and the agent's channels, but not ssm:UpdateInstanceInformation.
BOUNDARY_WITHOUT_SSM = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:*", "logs:*", "kms:*", "ssmmessages:*", "ec2messages:*"],
                "Resource": "*",
            }
        ],
    }
)


def inline_deny_of_the_fixture() -> tuple[str, str]:
    """The inline policy iam_put_role_policy.json records (name, document): Deny ssmmessages:*."""
    request = json.loads((FIXTURES / "iam_put_role_policy.json").read_text())["detail"][
        "requestParameters"
    ]
    return request["policyName"], request["policyDocument"]


def agent_refused(world: World, instance: str) -> str:
    """The instance's ssm-instance-role finding is FAILED because the role carries the core
    policy but the SSM Agent's calls are refused; its description."""
    finding = world.finding(ROLE, instance)
    assert finding["Compliance"]["Status"] == "FAILED" and finding["RecordState"] == "ACTIVE"
    details = json.loads(finding["ProductFields"]["ssm-guardrail/Details"])
    assert details["problem"] == "agent_denied", details
    return str(finding["Description"])


def role_with_core_and_delivery_passing(world: World) -> str:
    """app-role (core policy, inline log delivery) on a running instance, PASSED by a drift scan."""
    world.app_role()
    instance = world.launch(profile="app-profile")[0]
    world.guardrail("report").run()
    assert passed(world, ROLE, instance) and passed(world, LOGGING, instance)
    return instance


def test_attached_deny_policy_fails_the_role_and_is_left_to_a_person(world):
    """A managed policy whose Deny covers the agent's calls: the finding turns FAILED within the
    event (not at the next drift scan), and nothing is changed: no Allow lifts a Deny."""
    instance = role_with_core_and_delivery_passing(world)
    deny = world.iam.create_policy(PolicyName="app-policy", PolicyDocument=DENY_SSM)
    world.iam.attach_role_policy(RoleName="app-role", PolicyArn=deny["Policy"]["Arn"])
    before = world.state()

    result = world.deliver("iam_attach_role_policy")

    assert result["event"]["role_names"] == ["app-role"]
    assert result["event"]["controls"] == [ROLE, LOGGING]
    description = agent_refused(world, instance)
    assert "an explicit Deny refuses ssm:UpdateInstanceInformation" in description
    assert result["fixes"] == {"skipped": 1} and world.state() == before
    fields = world.finding(ROLE, instance)["ProductFields"]
    assert fields["ssm-guardrail/Fix1/Outcome"] == "skipped"
    assert "remove or narrow the Deny" in fields["ssm-guardrail/Fix1/Reason"]
    assert passed(world, LOGGING, instance)  # the Deny covers no delivery action


def test_inline_deny_put_on_the_role_fails_it_and_is_left_to_a_person(world):
    instance = role_with_core_and_delivery_passing(world)
    name, document = inline_deny_of_the_fixture()
    world.iam.put_role_policy(RoleName="app-role", PolicyName=name, PolicyDocument=document)
    before = world.state()

    result = world.deliver("iam_put_role_policy")

    description = agent_refused(world, instance)
    assert "an explicit Deny refuses ssmmessages:CreateControlChannel" in description
    assert "ssm:UpdateInstanceInformation" not in description  # the Deny names ssmmessages only
    assert result["fixes"] == {"skipped": 1} and world.state() == before
    assert passed(world, LOGGING, instance)


def test_deleting_the_inline_deny_turns_the_role_passed_again(world):
    """The drift scan found the agent refused by an inline Deny; a person deletes the Deny and its
    DeleteRolePolicy event turns the finding PASSED (it used to re-read log delivery only)."""
    world.app_role()
    name, document = inline_deny_of_the_fixture()
    world.iam.put_role_policy(RoleName="app-role", PolicyName=name, PolicyDocument=document)
    instance = world.launch(profile="app-profile")[0]
    world.guardrail("report").run()
    agent_refused(world, instance)
    world.iam.delete_role_policy(RoleName="app-role", PolicyName=name)

    result = world.deliver("iam_delete_role_policy", {"session-log-delivery": name})

    assert result["event"]["controls"] == [ROLE, LOGGING] and not result["fixes"]
    assert passed(world, ROLE, instance) and passed(world, LOGGING, instance)


def test_a_trust_that_no_longer_lets_ec2_assume_the_role_fails_it_and_restoring_it_passes(world):
    """UpdateAssumeRolePolicy was not routed: a role whose trust a person narrowed to Lambda
    (its instances get no credentials) stayed PASSED until the drift scan, and the scan judged
    it PASSED too. Now the event fails it, left to its owners (the guardrail never edits a
    trust), and setting the trust back passes it within its own event."""
    instance = role_with_core_and_delivery_passing(world)
    request = world.event("iam_update_assume_role_policy")["detail"]["requestParameters"]
    world.iam.update_assume_role_policy(
        RoleName="app-role", PolicyDocument=request["policyDocument"]
    )
    before = world.state()

    result = world.deliver("iam_update_assume_role_policy")

    assert result["event"]["role_names"] == ["app-role"] and result["fixes"] == {"skipped": 1}
    finding = world.finding(ROLE, instance)
    assert finding["Compliance"]["Status"] == "FAILED"
    assert "does not let EC2 assume it" in finding["Description"]
    assert world.state() == before  # trust, policies and profile as they were
    world.iam.update_assume_role_policy(RoleName="app-role", PolicyDocument=TRUST)

    result = world.deliver("iam_update_assume_role_policy")

    assert not result["fixes"] and passed(world, ROLE, instance)


def test_core_policy_attached_by_a_person_turns_the_role_passed(world):
    """In seconds, not at the next drift scan; the guardrail has nothing left to do, and (the core
    policy granting no delivery action) reads nothing of log delivery."""
    world.app_role(core=False)
    instance = world.launch(profile="app-profile")[0]
    world.guardrail("report").run()
    assert world.finding(ROLE, instance)["Compliance"]["Status"] == "FAILED"
    world.iam.attach_role_policy(RoleName="app-role", PolicyArn=CORE)
    before = world.state()

    result = world.deliver("iam_attach_role_policy_core")

    assert result["event"]["controls"] == [ROLE]
    assert not result["fixes"] and world.state() == before
    assert passed(world, ROLE, instance)
    assert world.finding(ROLE, instance)["Workflow"]["Status"] != "RESOLVED"  # a person fixed it
    assert "ssm:GetDocument" not in world.calls


def test_core_role_added_to_the_empty_profile_turns_the_instance_passed(world):
    """The instance's profile had no role (FAILED); a person adds theirs: PASSED, and the guardrail
    does not add its own role as well (a profile holds one)."""
    world.app_role()
    world.iam.remove_role_from_instance_profile(
        InstanceProfileName="app-profile", RoleName="app-role"
    )
    instance = world.launch(profile="app-profile")[0]
    world.guardrail("report").run()
    assert "has no role" in world.finding(ROLE, instance)["Description"]
    world.iam.add_role_to_instance_profile(InstanceProfileName="app-profile", RoleName="app-role")
    before = world.state()

    result = world.deliver("iam_add_role_to_instance_profile")

    assert result["event"]["profile_names"] == ["app-profile"]
    assert not result["fixes"] and world.state() == before
    assert before["profiles"]["app-profile"] == ["app-role"]
    assert passed(world, ROLE, instance) and passed(world, LOGGING, instance)


def test_boundary_without_the_agents_actions_fails_the_role_until_it_is_deleted(world):
    instance = role_with_core_and_delivery_passing(world)
    boundary = world.iam.create_policy(
        PolicyName="app-boundary", PolicyDocument=BOUNDARY_WITHOUT_SSM
    )["Policy"]["Arn"]
    world.iam.put_role_permissions_boundary(RoleName="app-role", PermissionsBoundary=boundary)
    before = world.state()

    result = world.deliver("iam_put_role_permissions_boundary")

    description = agent_refused(world, instance)
    assert "the permissions boundary does not allow ssm:UpdateInstanceInformation" in description
    assert "ssmmessages" not in description  # the boundary allows the channels
    assert result["fixes"] == {"skipped": 1} and world.state() == before
    assert passed(world, LOGGING, instance)  # the boundary allows delivery

    world.iam.delete_role_permissions_boundary(RoleName="app-role")
    result = world.deliver("iam_delete_role_permissions_boundary")

    assert not result["fixes"] and passed(world, ROLE, instance)


def test_attached_policy_granting_delivery_turns_logging_passed(world):
    """AttachRolePolicy of a policy other than the core one also re-reads log delivery: a team
    attaching its own delivery policy sees ssm-session-logging PASSED without a fix."""
    world.app_role(delivery_inline=False)
    instance = world.launch(profile="app-profile")[0]
    world.guardrail("report").run()
    assert world.finding(LOGGING, instance)["Compliance"]["Status"] == "FAILED"
    grant = world.iam.create_policy(PolicyName="app-policy", PolicyDocument=DELIVERY)
    world.iam.attach_role_policy(RoleName="app-role", PolicyArn=grant["Policy"]["Arn"])
    before = world.state()

    result = world.deliver("iam_attach_role_policy")

    assert not result["fixes"] and world.state() == before
    assert world.delivery_policy not in world.attached("app-role")
    assert passed(world, LOGGING, instance) and passed(world, ROLE, instance)


# --- IAM: a customer-managed policy edited in place (a new default version) ----------------------

# What AmazonSSMManagedInstanceCore grants the SSM Agent for Session Manager, as a team's own
# policy (declared equivalent) may.
AGENT_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "ssm:UpdateInstanceInformation",
                    "ssmmessages:CreateControlChannel",
                    "ssmmessages:CreateDataChannel",
                    "ssmmessages:OpenControlChannel",
                    "ssmmessages:OpenDataChannel",
                    "ec2messages:*",
                ],
                "Resource": "*",
            }
        ],
    }
)
TEAM_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ec2:DescribeTags", "Resource": "*"}],
    }
)
DENY_DELIVERY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "ec2:DescribeTags", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "*"},
        ],
    }
)


def agent_policy_of_the_fixture() -> str:
    """The version iam_create_policy_version.json records: the agent may register, but has no
    Session Manager channel (ssmmessages)."""
    request = json.loads((FIXTURES / "iam_create_policy_version.json").read_text())["detail"][
        "requestParameters"
    ]
    return str(request["policyDocument"])


def team_policy_on_app_role(world: World, document: str) -> str:
    """The team's customer-managed app-policy (the fixtures' policy), attached to app-role."""
    arn = str(
        world.iam.create_policy(PolicyName="app-policy", PolicyDocument=document)["Policy"]["Arn"]
    )
    world.iam.attach_role_policy(RoleName="app-role", PolicyArn=arn)
    return arn


def test_an_equivalent_policy_edited_in_place_fails_the_role_until_rolled_back(world):
    """A policy declared equivalent to the core policy gets a new default version without the
    Session Manager channels: the finding turns FAILED within the event (the guardrail leaves
    the owner's policy alone), and SetDefaultPolicyVersion back to v1 turns it PASSED."""
    world.app_role(core=False)
    arn = team_policy_on_app_role(world, AGENT_POLICY)
    equivalent = {"equivalent_policy_arns": (arn,)}
    instance = world.launch(profile="app-profile")[0]
    world.guardrail("report", **equivalent).run()
    assert passed(world, ROLE, instance) and passed(world, LOGGING, instance)
    world.iam.create_policy_version(
        PolicyArn=arn, PolicyDocument=agent_policy_of_the_fixture(), SetAsDefault=True
    )
    before = world.state()

    result = world.deliver("iam_create_policy_version", **equivalent)

    assert result["event"]["policy_arns"] == [arn]
    assert result["event"]["controls"] == [ROLE, LOGGING]
    description = agent_refused(world, instance)
    assert f"carries a policy declared equivalent to {CORE_NAME}" in description
    assert "no policy of the role allows ssmmessages:CreateControlChannel" in description
    assert "ssm:UpdateInstanceInformation" not in description  # v2 still allows registering
    assert result["fixes"] == {"skipped": 1} and world.state() == before
    assert CORE not in world.attached("app-role")  # the owner's policy, the owner's fix
    assert passed(world, LOGGING, instance)

    world.iam.set_default_policy_version(PolicyArn=arn, VersionId="v1")
    result = world.deliver("iam_set_default_policy_version", **equivalent)

    assert result["event"]["policy_arns"] == [arn] and not result["fixes"]
    assert passed(world, ROLE, instance) and world.state() == before


def test_a_policy_whose_new_default_denies_delivery_fails_logging_for_a_person(world):
    """A team policy on the role gets a new default version with a Deny on s3:PutObject: the
    logging finding turns FAILED within the event, and the delivery fix is SKIPPED naming the
    explicit Deny (no Allow the guardrail could attach lifts it)."""
    instance = role_with_core_and_delivery_passing(world)
    arn = team_policy_on_app_role(world, TEAM_POLICY)
    world.iam.create_policy_version(PolicyArn=arn, PolicyDocument=DENY_DELIVERY, SetAsDefault=True)
    before = world.state()

    result = world.deliver("iam_create_policy_version")

    assert result["event"]["policy_arns"] == [arn]
    finding = world.finding(LOGGING, instance)
    assert finding["Compliance"]["Status"] == "FAILED"
    assert result["fixes"] == {"skipped": 1} and world.state() == before
    assert world.delivery_policy not in world.attached("app-role")
    fields = finding["ProductFields"]
    assert fields["ssm-guardrail/Fix1/Outcome"] == "skipped"
    reason = fields["ssm-guardrail/Fix1/Reason"]
    assert "s3:PutObject on arn:aws:s3:::" in reason and "refused by an explicit Deny" in reason
    assert "attaching a policy cannot override that" in reason
    assert passed(world, ROLE, instance)  # the Deny covers no agent action


def test_a_policy_many_roles_use_lists_the_accounts_profiles_once_not_each_roles(world):
    """The same Deny edited into a policy 30 other roles (Lambda functions', without profiles)
    also use: their instance profiles are found in one ListInstanceProfiles page, not 31
    ListInstanceProfilesForRole calls, and app-role's instance is judged as with one role."""
    instance = role_with_core_and_delivery_passing(world)
    arn = team_policy_on_app_role(world, TEAM_POLICY)
    for n in range(30):
        world.iam.create_role(RoleName=f"fn-{n}", AssumeRolePolicyDocument=TRUST)
        world.iam.attach_role_policy(RoleName=f"fn-{n}", PolicyArn=arn)
    world.iam.create_policy_version(PolicyArn=arn, PolicyDocument=DENY_DELIVERY, SetAsDefault=True)

    result = world.deliver("iam_create_policy_version")

    assert world.finding(LOGGING, instance)["Compliance"]["Status"] == "FAILED"
    assert result["fixes"] == {"skipped": 1} and passed(world, ROLE, instance)
    assert world.calls["iam:ListEntitiesForPolicy"] == 1
    assert world.calls["iam:ListInstanceProfiles"] == 1
    assert "iam:ListInstanceProfilesForRole" not in world.calls


@pytest.mark.parametrize("roles_with_instances", [2, 3])
def test_an_event_whose_instances_carry_more_roles_than_the_limit_is_left_to_the_drift_scan(
    world, monkeypatch, roles_with_instances
):
    """The same Deny edited into a policy that 1 or 2 more roles with running instances use (one
    role on two profiles; a role whose profile has no instance here does not count), the limit
    set to 2 roles. At 2 the event is judged as with one role. At 3 it is deferred: counted,
    nothing judged, fixed or published (no ListAttachedRolePolicies, no simulation, no Security
    Hub call), the account and the findings as they were; the next drift scan judges them."""
    monkeypatch.setattr(reader, "EVENT_ROLE_LIMIT", 2)
    instance = role_with_core_and_delivery_passing(world)
    arn = team_policy_on_app_role(world, TEAM_POLICY)
    for n in range(roles_with_instances):  # the last role's profile has no instance here
        world.app_role(name=f"team-{n}", profile=f"team-{n}")
        world.iam.attach_role_policy(RoleName=f"team-{n}", PolicyArn=arn)
        if n < roles_with_instances - 1:
            world.launch(profile=f"team-{n}")
    # A second profile of team-0's role, with an instance: roles are counted, not profiles.
    world.iam.create_instance_profile(InstanceProfileName="team-0-spare")
    world.iam.add_role_to_instance_profile(InstanceProfileName="team-0-spare", RoleName="team-0")
    world.launch(profile="team-0-spare")
    world.iam.create_policy_version(PolicyArn=arn, PolicyDocument=DENY_DELIVERY, SetAsDefault=True)
    before, findings = world.state(), world.findings()
    on_change.metrics.clear_metrics()

    result = world.deliver("iam_create_policy_version")

    if roles_with_instances == 2:
        assert world.finding(LOGGING, instance)["Compliance"]["Status"] == "FAILED"
        assert result["fixes"] == {"skipped": 2}
        assert "EventsEvaluated" in on_change.metrics.metric_set
    else:
        assert result == {
            "dropped": "deferred",
            "reason": "its instances carry 3 roles (an instance profile not read yet counts as "
            "one), more than an event evaluates (2); the next drift scan judges them",
        }
        assert "EventsDeferred" in on_change.metrics.metric_set
        assert "EventsDropped" not in on_change.metrics.metric_set
        assert world.state() == before and world.findings() == findings
        assert set(world.calls) <= {
            "iam:ListEntitiesForPolicy",
            "iam:ListInstanceProfilesForRole",
            "ec2:DescribeInstances",
        }
    on_change.metrics.clear_metrics()


def test_an_instance_event_over_the_role_limit_still_closes_internet_ssh_at_once(
    world, monkeypatch
):
    """StartInstances of three instances on three profiles (their roles lack the core policy)
    behind a group open to SSH, the limit set to 2: internet SSH needs no IAM read, so it is
    judged and closed within the event; the roles wait for the drift scan (counted, logged as a
    note), and no role or logging finding is written for them."""
    monkeypatch.setattr(reader, "EVENT_ROLE_LIMIT", 2)
    bad = world.group("ops")
    ids = []
    for n in range(3):
        world.app_role(name=f"team-{n}", profile=f"team-{n}", core=False)
        ids += world.launch(groups=[bad], profile=f"team-{n}")
    world.ec2.stop_instances(InstanceIds=ids)
    world.open_ssh(bad)
    world.ec2.start_instances(InstanceIds=ids)
    event = world.event("start_instances")
    for part in ("requestParameters", "responseElements"):
        event["detail"][part]["instancesSet"]["items"] = [{"instanceId": i} for i in ids]
    on_change.metrics.clear_metrics()

    result = world.deliver(event)

    assert "dropped" not in result and result["fixes"] == {"applied": 1}
    assert world.internet_ssh(bad) == [] and all(resolved(world, SSH, i) for i in ids)
    assert {"EventsEvaluated", "EventsDeferred"} <= set(on_change.metrics.metric_set)
    for instance in ids:
        assert CORE not in world.attached(f"team-{ids.index(instance)}")
        for control in (ROLE, LOGGING):
            assert world.finding_id(control, instance) not in world.findings()
    assert "iam:ListAttachedRolePolicies" not in world.calls
    on_change.metrics.clear_metrics()


def test_a_policy_no_role_uses_costs_one_call_and_publishes_nothing(world):
    """The team's policy is attached to no role (an instance with a role runs beside it): the
    one ListEntitiesForPolicy, then nothing to evaluate, no Security Hub call."""
    world.app_role()
    world.launch(profile="app-profile")
    arn = world.iam.create_policy(PolicyName="app-policy", PolicyDocument=TEAM_POLICY)["Policy"][
        "Arn"
    ]
    world.iam.create_policy_version(PolicyArn=arn, PolicyDocument=DENY_DELIVERY, SetAsDefault=True)
    before = world.state()

    result = world.deliver("iam_create_policy_version")

    assert result["event"]["policy_arns"] == [arn]
    assert result["results"] == 0 and not result["fixes"] and world.state() == before
    assert dict(world.calls) == {"iam:ListEntitiesForPolicy": 1}
    assert world.findings() == {}


def by_cloudformation(event: dict[str, Any]) -> dict[str, Any]:
    """The event as CloudTrail records a call CloudFormation made for a stack."""
    detail = event["detail"]
    detail["userIdentity"]["invokedBy"] = "cloudformation.amazonaws.com"
    detail["sourceIPAddress"] = detail["userAgent"] = "cloudformation.amazonaws.com"
    return event


def test_the_guardrails_own_delivery_policy_edited_by_its_stack_is_left_to_the_drift_scan(world):
    """A stack update that changes the guardrail's log-delivery policy makes a new default
    version of it (CloudFormation, for the deploying principal), not the guardrail: forwarded
    to every region, it would read every role the guardrail gave it, in one on-change run each.
    Dropped without a call; the same event about a team's policy is evaluated."""
    world.app_role(delivery_inline=False)
    world.launch(profile="app-profile")
    world.iam.attach_role_policy(RoleName="app-role", PolicyArn=world.delivery_policy)
    team = f"arn:aws:iam::{ACCOUNT}:policy/app-policy"  # the fixture's policy
    event = by_cloudformation(
        world.event("iam_create_policy_version", {team: world.delivery_policy})
    )

    result = world.deliver(event)

    assert result["dropped"] == "irrelevant" and "own log-delivery policy" in result["reason"]
    assert sum(world.calls.values()) == 0
    world.iam.create_policy(PolicyName="app-policy", PolicyDocument=TEAM_POLICY)
    assert "dropped" not in world.deliver(
        by_cloudformation(world.event("iam_create_policy_version"))
    )
    assert world.calls["iam:ListEntitiesForPolicy"] == 1


def test_a_persons_edit_of_the_guardrails_delivery_policy_is_judged_at_once(world):
    """Someone edits the guardrail's own log-delivery policy by hand (a new default version
    without s3:PutObject, from the CLI): not its stack, so not left to the drift scan. Every
    role carrying it is judged within the event: FAILED, the delivery denied named."""
    world.app_role(delivery_inline=False)
    (instance,) = world.launch(profile="app-profile")
    world.iam.attach_role_policy(RoleName="app-role", PolicyArn=world.delivery_policy)
    world.iam.create_policy_version(
        PolicyArn=world.delivery_policy, PolicyDocument=DENY_DELIVERY, SetAsDefault=True
    )
    team = f"arn:aws:iam::{ACCOUNT}:policy/app-policy"
    event = world.event("iam_create_policy_version", {team: world.delivery_policy})
    assert "invokedBy" not in event["detail"]["userIdentity"]

    result = world.deliver(event, mode="report")

    assert "dropped" not in result, result
    assert world.calls["iam:ListEntitiesForPolicy"] == 1
    logging = world.finding("ssm-session-logging", instance)
    assert logging["Compliance"]["Status"] == "FAILED"
    assert "not allowed s3:PutObject" in logging["Description"]


def test_a_boundary_policy_edited_in_place_fails_the_role_it_bounds(world):
    """The policy is app-role's permissions boundary, attached to no role: IAM's
    ListEntitiesForPolicy lists the role when no PolicyUsageFilter narrows the answer to
    attached policies. (moto lists only attached policies' roles: IAM's answer is given here,
    and only to a request that asks for both usages.) The new default version leaves out
    ssm:UpdateInstanceInformation: FAILED within the event, left to a person."""
    instance = role_with_core_and_delivery_passing(world)
    allow_all = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
    )
    boundary = world.iam.create_policy(PolicyName="app-policy", PolicyDocument=allow_all)
    arn = boundary["Policy"]["Arn"]
    world.iam.put_role_permissions_boundary(RoleName="app-role", PermissionsBoundary=arn)
    world.iam.create_policy_version(
        PolicyArn=arn, PolicyDocument=BOUNDARY_WITHOUT_SSM, SetAsDefault=True
    )
    role_id = world.iam.get_role(RoleName="app-role")["Role"]["RoleId"]
    asked: list[dict[str, Any]] = []

    class Response:
        status_code = 200
        headers: dict[str, str] = {}

    def as_iam_answers(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        request = params["body"]  # the query parameters as sent
        asked.append(request)
        boundaries = request.get("PolicyUsageFilter") in (None, "PermissionsBoundary")
        roles = [{"RoleName": "app-role", "RoleId": role_id}] if boundaries else []
        return Response(), {
            "PolicyRoles": roles,
            "PolicyUsers": [],
            "PolicyGroups": [],
            "IsTruncated": False,
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }

    guardrail = world.guardrail(fresh=True)
    guardrail.clients.session.events.register(
        "before-call.iam.ListEntitiesForPolicy", as_iam_answers
    )
    before = world.state()

    result = on_change.handle(
        world.event("iam_create_policy_version"), guardrail, home_account=ACCOUNT
    )

    assert [(a["PolicyArn"], a["EntityFilter"]) for a in asked] == [(arn, "Role")]
    description = agent_refused(world, instance)
    assert "the permissions boundary does not allow ssm:UpdateInstanceInformation" in description
    assert result["fixes"] == {"skipped": 1} and world.state() == before
    assert passed(world, LOGGING, instance)  # the boundary still allows delivery


@pytest.mark.parametrize("scan", [False, True], ids=["event", "drift-scan"])
@pytest.mark.parametrize("held", [True, False], ids=["finding-held", "never-held"])
def test_an_instance_deleted_before_its_profile_is_associated_is_archived_not_fixed(
    world, held, scan
):
    """EC2 answers InvalidInstanceID.NotFound to AssociateIamInstanceProfile: the instance is gone
    since the read. Its role finding went PASSED and RESOLVED, as if fixed, for a deleted
    instance; it is archived as a deleted instance's finding is: archived where Security Hub
    holds it, not imported where it never did. An event and a drift scan alike."""
    instance = world.launch()[0]  # no profile
    if held:
        world.deliver("state_change_running", {I1: instance}, mode="report")
        assert world.finding(ROLE, instance)["Compliance"]["Status"] == "FAILED"
    guardrail = world.guardrail(fresh=True)
    refuse(guardrail, "ec2.AssociateIamInstanceProfile", "InvalidInstanceID.NotFound")
    if scan:
        report = guardrail.run()
        assert [(f.outcome, f.resource_id) for f in report.fixes if f.control == ROLE] == [
            (Outcome.ALREADY_COMPLIANT, instance)
        ]
        assert not report.left_failed and report.published.ok
    else:
        event = world.event("state_change_running", {I1: instance})
        result = on_change.handle(event, guardrail, home_account=ACCOUNT)
        assert result["fixes"] == {"already_compliant": 1} and result["left_failed"] == 0
    findings = world.findings()
    fid = world.finding_id(ROLE, instance)
    if held:
        finding = findings[fid]
        assert (finding["RecordState"], finding["Compliance"]["Status"]) == (
            "ARCHIVED",
            "NOT_AVAILABLE",
        )
        assert finding["ProductFields"]["ssm-guardrail/Reason"] == "instance no longer exists"
    else:
        assert fid not in findings


def test_a_policy_deleted_before_its_event_is_read_ends_quietly(world):
    """ListEntitiesForPolicy answers NoSuchEntity for a policy deleted since its event: no
    role, nothing to evaluate, no retry. (moto answers an empty list instead: IAM's answer is
    given here.)"""
    world.app_role()
    world.launch(profile="app-profile")
    guardrail = world.guardrail(fresh=True)
    refuse(guardrail, "iam.ListEntitiesForPolicy", "NoSuchEntity")
    event = world.event("iam_set_default_policy_version")
    result = on_change.handle(event, guardrail, home_account=ACCOUNT)
    assert "dropped" not in result and result["results"] == 0 and not result["fixes"]
    assert world.findings() == {}


def test_a_policy_version_not_made_the_default_is_dropped_without_a_call(world):
    """The same draft as the fixture's, created without SetAsDefault: the policy still grants
    what v1 grants, so the event is dropped unread and the role stays PASSED."""
    world.app_role(core=False)
    arn = team_policy_on_app_role(world, AGENT_POLICY)
    equivalent = {"equivalent_policy_arns": (arn,)}
    instance = world.launch(profile="app-profile")[0]
    world.guardrail("report", **equivalent).run()
    world.iam.create_policy_version(PolicyArn=arn, PolicyDocument=agent_policy_of_the_fixture())
    before, findings = world.state(), world.findings()
    on_change.metrics.clear_metrics()

    result = world.deliver("iam_create_policy_version_not_default", **equivalent)

    assert result["dropped"] == "irrelevant" and "not set as the default" in result["reason"]
    assert sum(world.calls.values()) == 0 and world.state() == before
    assert "EventsIgnored" in on_change.metrics.metric_set
    assert "EventsDropped" not in on_change.metrics.metric_set
    assert world.findings() == findings and passed(world, ROLE, instance)
    on_change.metrics.clear_metrics()


def test_the_guardrails_own_iam_changes_are_dropped_without_a_call(world):
    """Its AttachRolePolicy (the core policy) and AddRoleToInstanceProfile (its role into an
    empty profile) come back as events: dropped as its own, unread. The same events from a
    person would be evaluated and lead to a fix here (the role lacks the core policy)."""
    world.app_role(core=False)
    instance = world.launch(profile="app-profile")[0]
    before = world.state()
    on_change.metrics.clear_metrics()
    for name in ("own_attach_role_policy", "own_add_role_to_instance_profile"):
        result = world.deliver(name)
        assert result["dropped"] == "own_change", (name, result)
        assert sum(world.calls.values()) == 0 and world.state() == before
    assert "EventsIgnored" in on_change.metrics.metric_set
    assert "EventsDropped" not in on_change.metrics.metric_set
    assert world.finding_id(ROLE, instance) not in world.findings()
    on_change.metrics.clear_metrics()
    # Made by a person instead, the same calls are evaluated (and the role fixed).
    event = world.event("own_add_role_to_instance_profile")
    event["detail"]["userIdentity"] = world.event("iam_detach_role_policy")["detail"][
        "userIdentity"
    ]
    assert world.deliver(event)["fixes"] == {"applied": 1}
    assert CORE in world.attached("app-role") and resolved(world, ROLE, instance)


# --- SSM: the region's Session Manager preferences ------------------------------------------------


def logged_and_encrypted_after_the_drift_scan(world: World) -> None:
    """An event turns logging on but leaves s3EncryptionEnabled as it was: with it on, the SSM
    Agent refuses sessions to instances whose role may not read the bucket's encryption, and
    only a drift scan has judged every role. The finding says so (FAILED, LOW); the scan then
    turns the flag on and the finding is PASSED."""
    region = world.finding(LOGGING, ACCOUNT)
    assert (region["Compliance"]["Status"], region["Severity"]["Label"]) == ("FAILED", "LOW")
    assert "s3EncryptionEnabled is false" in region["Description"]
    assert "s3EncryptionEnabled" not in (world.prefs_inputs() or {})
    world.guardrail().run()  # the drift scan
    assert (world.prefs_inputs() or {})["s3EncryptionEnabled"] is True
    assert passed(world, LOGGING, ACCOUNT)


def test_preferences_created_without_logging_are_fixed(world):
    world.ssm.delete_document(Name=PREFS)
    world.ssm.create_document(
        Name=PREFS,
        Content=prefs_content(idleSessionTimeout="20"),
        DocumentType="Session",
        DocumentFormat="JSON",
    )
    world.deliver("ssm_create_document")
    inputs = world.prefs_inputs()
    assert inputs is not None and inputs["s3BucketName"] == BUCKET
    assert inputs["idleSessionTimeout"] == "20"  # the owner's other preferences are kept
    logged_and_encrypted_after_the_drift_scan(world)


def test_preferences_whose_new_default_stops_logging_are_fixed(world):
    version = world.ssm.update_document(
        Name=PREFS, Content=prefs_content(), DocumentVersion="$LATEST", DocumentFormat="JSON"
    )["DocumentDescription"]["DocumentVersion"]
    world.ssm.update_document_default_version(Name=PREFS, DocumentVersion=version)
    world.deliver("ssm_update_document_default_version")
    assert (world.prefs_inputs() or {}).get("s3BucketName") == BUCKET
    logged_and_encrypted_after_the_drift_scan(world)


def test_update_document_without_a_new_default_is_evaluated_and_passes(world):
    world.ssm.update_document(
        Name=PREFS, Content=prefs_content(), DocumentVersion="$LATEST", DocumentFormat="JSON"
    )
    before = world.state()
    result = world.deliver("ssm_update_document")
    # UpdateDocument does not change the default version, so sessions are still logged.
    assert world.state() == before and not result["fixes"]
    assert passed(world, LOGGING, ACCOUNT)


def test_deleted_preferences_are_recreated(world):
    world.ssm.delete_document(Name=PREFS)
    world.deliver("ssm_delete_document")
    assert (world.prefs_inputs() or {}).get("s3BucketName") == BUCKET
    logged_and_encrypted_after_the_drift_scan(world)


@pytest.mark.parametrize("name", ["ssm_delete_document", "ssm_create_document"])
def test_with_the_stacks_kms_key_the_finding_tells_what_the_event_did(world, name):
    """The stack always names a KMS key. An event writes the preferences without it or the
    encryption flag (only a drift scan, having judged every role, turns them on), and the finding
    says what is now true: logging on, neither yet (FAILED, LOW), not the state before the fix."""
    key = world.client("kms").create_key()["KeyMetadata"]["Arn"]
    world.ssm.delete_document(Name=PREFS)
    if name == "ssm_create_document":
        world.ssm.create_document(
            Name=PREFS,
            Content=prefs_content(idleSessionTimeout="20"),
            DocumentType="Session",
            DocumentFormat="JSON",
        )
    first = world.deliver(name, session_log_kms_key=key)
    inputs = world.prefs_inputs() or {}
    assert inputs["s3BucketName"] == BUCKET and "kmsKeyId" not in inputs
    assert dict(first["fixes"]) == {"applied": 1, "skipped": 2}
    region = world.finding(LOGGING, ACCOUNT)
    assert (region["Compliance"]["Status"], region["Severity"]["Label"]) == ("FAILED", "LOW")
    assert f"s3://{BUCKET}" in region["Description"] and "kmsKeyId unset" in region["Description"]
    assert "s3EncryptionEnabled is false" in region["Description"]
    # Delivered again: nothing left to change, and the finding says the same.
    second = world.deliver(name, session_log_kms_key=key)
    assert "applied" not in second["fixes"]
    again = world.finding(LOGGING, ACCOUNT)
    assert again["Description"].split(".")[0] == region["Description"].split(".")[0]
    assert again["Severity"]["Label"] == "LOW"


# --- what must change nothing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "failed_authorize_ingress",
        "failed_run_instances",
        "failed_detach_role_policy",
        "own_revoke_ingress",
        "own_authorize_ingress",
        "authorize_ingress_group_name_no_rule_set",
        "ssm_update_other_document",
        "schedule_rule",
        "scheduler",
    ],
)
def test_events_that_change_nothing_make_no_call(world, name):
    bad = world.group("ops")
    world.open_ssh(bad)
    world.launch(groups=[bad])
    world.app_role(core=False)
    before = world.state()
    on_change.metrics.clear_metrics()
    result = world.deliver(name, {SG: bad})
    assert "dropped" in result and result["reason"]
    assert world.state() == before and sum(world.calls.values()) == 0
    dropped = on_change.metrics.metric_set
    expected = (
        "EventsDropped" if result["dropped"] in ("unknown", "unresolved") else "EventsIgnored"
    )
    assert expected in dropped
    on_change.metrics.clear_metrics()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (
            lambda d: d.update(requestParameters={"groupId": "sg-!!"}, responseElements=None),
            "no valid security group id (got 'sg-!!')",
        ),
        (lambda d: d.update(eventName=""), "(no eventName)"),
        (lambda d: d.update(eventSource="ec2.example.com"), "expected ec2.amazonaws.com"),
    ],
)
def test_a_malformed_event_is_counted_and_logged_with_its_reason(world, caplog, mutate, reason):
    event = world.event("authorize_ingress_ip_permissions", {SG: world.group("ops")})
    mutate(event["detail"])
    on_change.metrics.clear_metrics()
    with caplog.at_level("WARNING", logger=on_change.logger.name):
        result = world.deliver(event)
    assert result["dropped"] in ("malformed", "unknown") and reason in result["reason"]
    assert "EventsDropped" in on_change.metrics.metric_set
    (logged,) = [r for r in caplog.records if r.getMessage() == "event dropped"]
    assert logged.levelname == "WARNING" and reason in logged.reason
    assert sum(world.calls.values()) == 0
    on_change.metrics.clear_metrics()


def test_the_guardrails_own_revoke_does_not_trigger_a_second_fix(world):
    """The re-add of ports 23-1024 after a fix is the guardrail's own AuthorizeSecurityGroupIngress:
    delivered back, it must not be evaluated (else it would fight itself)."""
    bad = world.group("ops")
    world.launch(groups=[bad])
    world.open_ssh(bad, low=0, high=1024)
    world.deliver("authorize_ingress_flat_cidr", {SG: bad})
    after_fix = world.state()
    for name in ("own_authorize_ingress", "own_revoke_ingress"):
        assert world.deliver(name, {SG: bad})["dropped"] == "own_change"
    assert world.state() == after_fix


def test_delivered_twice_changes_the_account_once(world):
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad, low=0, high=1024)
    event = world.event("authorize_ingress_flat_cidr", {SG: bad})
    first = world.deliver(event)
    after_first = world.state()
    second = world.deliver(event)
    assert first["fixes"] == {"applied": 1} and not second["fixes"]
    assert world.state() == after_first
    assert passed(world, SSH, instance)


def test_a_concurrent_drift_scan_winning_the_race_counts_as_done(world):
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    rule = world.open_ssh(bad)
    guardrail = world.guardrail(fresh=True)

    def drift_scan_revokes_first(**_: Any) -> None:
        # The drift scan revokes the same rule between this invocation's read and its revoke.
        world.ec2.revoke_security_group_ingress(GroupId=bad, SecurityGroupRuleIds=[rule])

    guardrail.clients.session.events.register(
        "before-call.ec2.RevokeSecurityGroupIngress", drift_scan_revokes_first
    )
    result = on_change.handle(
        world.event("authorize_ingress_ip_permissions", {SG: bad}), guardrail, home_account=ACCOUNT
    )
    assert result["fixes"] == {"already_compliant": 1} and result["left_failed"] == 0
    assert world.internet_ssh(bad) == [] and passed(world, SSH, instance)


@pytest.mark.parametrize(
    ("profile", "outcome"),
    [(GUARDRAIL_PROFILE, "already_compliant"), ("app-profile", "skipped")],
)
def test_a_concurrent_association_counts_as_done_only_if_it_is_the_guardrails(
    world, profile, outcome
):
    """A drift scan associating the guardrail's profile first counts as done; a person's profile
    is never replaced, and the finding is left for that association's own event to judge."""
    world.app_role()
    instance = world.launch()[0]
    guardrail = world.guardrail(fresh=True)

    def someone_associates_first(**_: Any) -> None:
        world.ec2.associate_iam_instance_profile(
            IamInstanceProfile={"Name": profile}, InstanceId=instance
        )

    guardrail.clients.session.events.register(
        "before-call.ec2.AssociateIamInstanceProfile", someone_associates_first
    )
    result = on_change.handle(
        world.event("state_change_running", {I1: instance}), guardrail, home_account=ACCOUNT
    )
    assert result["fixes"][outcome] == 1
    assert world.profile_of(instance) == profile  # never replaced
    assert resolved(world, ROLE, instance) is (profile == GUARDRAIL_PROFILE)


# --- resources already deleted ---------------------------------------------------------------------


def test_event_about_a_terminated_instance_archives_its_findings(world):
    bad = world.group("ops")
    world.open_ssh(bad)
    instance = world.launch(groups=[bad])[0]
    world.deliver("state_change_running", {I1: instance}, mode="report")
    assert world.finding(SSH, instance)["RecordState"] == "ACTIVE"
    world.ec2.terminate_instances(InstanceIds=[instance])
    result = world.deliver("run_instances_launch_template", {I1: instance})
    assert result["left_failed"] == 0 and not result["fixes"]
    assert result["archived"] == [instance]
    for control in (SSH, ROLE):
        assert world.finding(control, instance)["RecordState"] == "ARCHIVED"
    assert world.internet_ssh(bad)  # nothing uses the group any more: nothing to fix


def test_a_group_event_imports_no_finding_for_a_terminated_instance_never_held(world):
    """A group's former instance, terminated before any finding of it was stored, is read
    NOT_APPLICABLE with the group: each event about the group imported an ARCHIVED finding for
    it (again on every replay), which a drift scan never does. Security Hub is asked first (one
    GetFindings) and nothing is imported for it; a running one's findings still go in."""
    bad = world.group("ops")
    world.open_ssh(bad)
    running, terminated = world.launch(groups=[bad], count=2)
    world.ec2.terminate_instances(InstanceIds=[terminated])
    for _ in range(2):
        result = world.deliver("authorize_ingress_ip_permissions", {SG: bad}, mode="report")
        assert world.finding_id(SSH, terminated) not in world.findings()
        assert world.calls["securityhub:GetFindings"] == 1
        assert world.finding(SSH, running)["RecordState"] == "ACTIVE"
    assert result["published"]["failed"] == 0


def test_event_about_an_instance_that_no_longer_exists_ends_quietly(world):
    """Never seen, so nothing to archive: Security Hub is asked (one GetFindings) and nothing
    is imported, nor logged as archived."""
    gone = "i-0000000000000dead"
    result = world.deliver("state_change_running", {I1: gone})
    assert result["results"] == 3 and result["left_failed"] == 0 and result["archived"] == []
    assert result["published"]["imported"] == 0 and result["published"]["unchanged"] == 3
    assert not any(world.finding_id(c, gone) in world.findings() for c in (SSH, ROLE, LOGGING))


def test_event_about_a_deleted_group_ends_quietly(world):
    bad = world.group("ops")
    world.open_ssh(bad)
    instance = world.launch(groups=[bad])[0]
    world.deliver("authorize_ingress_ip_permissions", {SG: bad}, mode="report")
    world.ec2.terminate_instances(InstanceIds=[instance])
    world.ec2.delete_security_group(GroupId=bad)
    result = world.deliver("authorize_ingress_ip_permissions", {SG: bad})
    # The group's finding, and its terminated instance's, which Security Hub held.
    assert result["left_failed"] == 0 and result["archived"] == [instance, bad]
    assert world.finding(SSH, bad)["RecordState"] == "ARCHIVED"


def test_event_about_a_fixed_group_deleted_since_keeps_the_fix_resolved(world):
    """The guardrail closed the group (PASSED, RESOLVED); the owner then deletes it, and a late
    event names it. Its finding is archived as Security Hub holds it, PASSED and RESOLVED: an
    archive as NOT_AVAILABLE would make Security Hub reset it to NEW, out of the resolved
    insight."""
    bad = world.group("ops")
    world.open_ssh(bad)
    instance = world.launch(groups=[bad])[0]
    world.deliver("authorize_ingress_ip_permissions", {SG: bad})
    assert resolved(world, SSH, bad)
    world.ec2.terminate_instances(InstanceIds=[instance])
    world.ec2.delete_security_group(GroupId=bad)
    result = world.deliver("authorize_ingress_ip_permissions", {SG: bad})
    assert result["archived"] == [instance, bad]
    finding = world.finding(SSH, bad)
    assert finding["RecordState"] == "ARCHIVED"
    assert (finding["Compliance"]["Status"], finding["Workflow"]["Status"]) == (
        "PASSED",
        "RESOLVED",
    )


def test_iam_event_for_a_role_that_no_longer_exists_ends_quietly(world):
    result = world.deliver("iam_detach_role_policy")
    assert result["results"] == 0 and result["left_failed"] == 0


# --- AWS trouble ----------------------------------------------------------------------------------


def answer_error(
    guardrail: Guardrail, operation: str, code: str, status: int, client: Any = None
) -> None:
    """Make every `operation` call answer the error `code` (after botocore's retries, when it
    retries that code), on the guardrail's clients or on one `client` made before."""
    events = client.meta.events if client is not None else guardrail.clients.session.events
    events.register(f"before-call.{operation}", error_answer(code, status))


def throttle(guardrail: Guardrail, operation: str, client: Any = None) -> None:
    answer_error(guardrail, operation, "Throttling", 400, client)


def refuse(guardrail: Guardrail, operation: str, code: str) -> None:
    answer_error(guardrail, operation, code, 404)


def test_throttled_read_raises_so_eventbridge_retries(world):
    bad = world.group("ops")
    world.launch(groups=[bad])
    guardrail = world.guardrail(fresh=True)
    throttle(guardrail, "ec2.DescribeInstances")
    with pytest.raises(ClientError, match="Throttling"):
        on_change.handle(
            world.event("authorize_ingress_ip_permissions", {SG: bad}),
            guardrail,
            home_account=ACCOUNT,
        )


def test_throttled_fix_raises_after_publishing_and_the_retry_fixes(world):
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad)
    event = world.event("authorize_ingress_ip_permissions", {SG: bad})
    guardrail = world.guardrail(fresh=True)
    throttle(guardrail, "ec2.RevokeSecurityGroupIngress")
    with pytest.raises(RetryableEventError, match="Throttling"):
        on_change.handle(event, guardrail, home_account=ACCOUNT)
    assert world.finding(SSH, instance)["Compliance"]["Status"] == "FAILED"
    world.deliver(event)  # EventBridge's retry
    assert world.internet_ssh(bad) == [] and passed(world, SSH, instance)


def raise_before_sending(error: Exception) -> Any:
    def handler(**_: Any) -> None:
        raise error

    return handler


@pytest.mark.parametrize(
    "outage",
    [
        pytest.param(error_answer("ServiceFailure", 500), id="IAM's HTTP 500"),
        pytest.param(
            raise_before_sending(SSLError(endpoint_url="https://iam.amazonaws.com", error="eof")),
            id="SSLError",
        ),
        pytest.param(
            raise_before_sending(HTTPClientError(error="connection reset")), id="HTTPClientError"
        ),
    ],
)
def test_an_iam_outage_on_a_fix_raises_so_eventbridge_retries(world, outage):
    """Each left the attach FAILED and the event ended as handled: nobody retried it, and the
    role lacked the core policy until the hourly scan."""
    world.app_role()
    instance = world.launch(profile="app-profile")[0]
    world.iam.detach_role_policy(RoleName="app-role", PolicyArn=CORE)
    event = world.event("iam_detach_role_policy")
    guardrail = world.guardrail(fresh=True)
    guardrail.clients.session.events.register("before-call.iam.AttachRolePolicy", outage)
    with pytest.raises(RetryableEventError):
        on_change.handle(event, guardrail, home_account=ACCOUNT)
    world.deliver(event)  # EventBridge's retry
    assert CORE in world.attached("app-role") and passed(world, ROLE, instance)


class _HtmlBody:
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield b"<html><body><b>Http/1.1 Service Unavailable</b></body></html>"


def html_answer(status: int) -> Any:
    """A load balancer's HTML page instead of AWS's answer: botocore retries it, then raises a
    ClientError whose code is the bare status ("503"), as it reads no code in the body."""
    from botocore.awsrequest import AWSResponse

    def send(request: Any, **_: Any) -> Any:
        return AWSResponse(request.url, status, {}, _HtmlBody())

    return send


@pytest.mark.parametrize(
    ("hook", "outage"),
    [
        pytest.param("before-send.iam.AttachRolePolicy", html_answer(502), id="IAM HTML 502"),
        pytest.param("before-send.iam.AttachRolePolicy", html_answer(504), id="IAM HTML 504"),
        pytest.param(
            "before-call.iam.AttachRolePolicy",
            error_answer("ConcurrentModification", 409),
            id="IAM ConcurrentModification",
        ),
    ],
)
def test_an_unparsed_outage_or_a_concurrent_change_on_a_fix_is_retried(
    world, monkeypatch, hook, outage
):
    """Each left the attach FAILED (code "502", "504", ConcurrentModification) and the event
    ended as handled: nobody retried it until the hourly scan."""
    monkeypatch.setattr("time.sleep", lambda _: None)  # botocore's own backoff
    world.app_role()
    instance = world.launch(profile="app-profile")[0]
    world.iam.detach_role_policy(RoleName="app-role", PolicyArn=CORE)
    event = world.event("iam_detach_role_policy")
    guardrail = world.guardrail(fresh=True)
    guardrail.clients.session.events.register(hook, outage)
    with pytest.raises(RetryableEventError):
        on_change.handle(event, guardrail, home_account=ACCOUNT)
    world.deliver(event)  # EventBridge's retry
    assert CORE in world.attached("app-role") and passed(world, ROLE, instance)


def test_an_unparsed_security_hub_outage_on_import_is_retried(world, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda _: None)
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad)
    event = world.event("authorize_ingress_ip_permissions", {SG: bad})
    guardrail = world.guardrail("report", fresh=True)
    guardrail.publisher._client.meta.events.register(
        "before-send.securityhub.BatchImportFindings", html_answer(503)
    )
    with pytest.raises(RetryableEventError, match="503"):
        on_change.handle(event, guardrail, home_account=ACCOUNT)
    world.deliver(event, mode="report")
    assert world.finding(SSH, instance)["Compliance"]["Status"] == "FAILED"


def range_open_to_internet(world: World) -> tuple[str, str]:
    """A group open on tcp 0-1024 to the internet (its fix re-adds 0-21 and 23-1024), and its
    instance (no profile)."""
    bad = world.group("ops")
    world.ec2.authorize_security_group_ingress(
        GroupId=bad, IpProtocol="tcp", FromPort=0, ToPort=1024, CidrIp="0.0.0.0/0"
    )
    return bad, world.launch(groups=[bad])[0]


def ssh_fix_that_stops(world: World) -> tuple[str, str, Guardrail]:
    """range_open_to_internet, and a guardrail whose SSH fix stops there:
    AuthorizeSecurityGroupIngress answers without rule ids (KeyError)."""
    bad, instance = range_open_to_internet(world)
    guardrail = world.guardrail(fresh=True)
    guardrail.clients.session.events.register(
        "after-call.ec2.AuthorizeSecurityGroupIngress", without_rule_ids
    )
    return bad, instance, guardrail


@pytest.mark.parametrize("handler", ["on_change", "drift_scan"])
def test_a_fix_stopped_by_what_is_not_an_aws_error_is_published_then_the_invocation_fails(
    world, handler
):
    """A KeyError in the SSH fix raised out of the run: nothing was published. Caught
    silently, no alarm would tell anyone. Now the other controls' findings are published,
    the SSH finding stays FAILED with the stop recorded, and the invocation fails (Errors
    alarm; an event is retried, then dead-lettered)."""
    from guardrail.runtime import ControlCrashed
    from handlers import drift_scan

    bad, instance, guardrail = ssh_fix_that_stops(world)

    with pytest.raises(ControlCrashed, match="ssh-open-to-internet fix stopped: KeyError"):
        if handler == "on_change":
            event = world.event("state_change_running", {I1: instance})
            on_change.handle(event, guardrail, home_account=ACCOUNT)
        else:
            drift_scan.handle({}, guardrail)

    finding = world.finding(SSH, instance)
    assert finding["Compliance"]["Status"] == "FAILED"
    assert "SecurityGroupRuleId" in json.dumps(finding)
    assert world.internet_ssh(bad)  # the revoke comes after the re-adds: never reached
    assert world.profile_of(instance) and passed(world, ROLE, instance)


def test_a_stopped_fix_beside_a_throttled_one_still_counts_the_retry(world):
    """The SSH fix stops (an answer without rule ids) and the profile association is throttled:
    the invocation fails for the stop, and the retry it brings is counted (EventsRetried)."""
    from guardrail.runtime import ControlCrashed

    _, instance, guardrail = ssh_fix_that_stops(world)
    throttle(guardrail, "ec2.AssociateIamInstanceProfile")
    on_change.metrics.clear_metrics()

    with pytest.raises(ControlCrashed):
        on_change.handle(
            world.event("state_change_running", {I1: instance}), guardrail, home_account=ACCOUNT
        )
    assert "EventsRetried" in on_change.metrics.metric_set
    on_change.metrics.clear_metrics()


@pytest.mark.parametrize("handler", ["on_change", "drift_scan"])
@pytest.mark.parametrize("step", ["check", "finding"])
def test_a_check_that_stops_leaves_its_findings_as_they_are_and_the_others_still_work(
    world, handler, step, monkeypatch
):
    """A defect in one control's check, or in building one of its findings (or a shape nobody
    foresaw), raised out of the run: nothing was judged, fixed or published, at every event
    and scan until someone fixed it. Now the other controls judge, fix and publish; the stopped
    control's stored findings are left as they are (the drift scan does not archive them as
    gone); then the invocation fails (Errors alarm)."""
    from guardrail import engine
    from guardrail.controls.session_logging import SessionLogging
    from guardrail.runtime import ControlCrashed
    from handlers import drift_scan

    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    drift_scan.handle({}, world.guardrail(fresh=True))
    region_before = world.finding(LOGGING, ACCOUNT)
    world.open_ssh(bad)

    if step == "check":

        def stops(*_: object) -> None:
            raise KeyError("inputs")

        monkeypatch.setattr(SessionLogging, "check", stops)
    else:
        build = engine.build_finding

        def stops_on_logging(result, *args, **kwargs):
            if result.control == LOGGING:
                raise KeyError("inputs")
            return build(result, *args, **kwargs)

        monkeypatch.setattr(engine, "build_finding", stops_on_logging)
    with pytest.raises(ControlCrashed, match=f"ssm-session-logging {step} stopped: KeyError"):
        if handler == "on_change":
            event = world.event("state_change_running", {I1: instance})
            on_change.handle(event, world.guardrail(fresh=True), home_account=ACCOUNT)
        else:
            drift_scan.handle({}, world.guardrail(fresh=True))

    assert world.internet_ssh(bad) == [] and resolved(world, SSH, instance)
    assert passed(world, ROLE, instance)
    assert world.finding(LOGGING, ACCOUNT) == region_before


def test_a_fix_whose_resolve_call_is_throttled_is_resolved_by_the_next_drift_scan(world):
    """Retrying the event could never resolve the finding (the retry finds nothing to fix), so
    the event does not raise; the drift scan marks the fixed finding RESOLVED."""
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad)
    guardrail = world.guardrail(fresh=True)
    guardrail.publisher._sleep = lambda _: None  # its backoff, not a test's time
    throttle(guardrail, "securityhub.BatchUpdateFindings", guardrail.publisher._client)
    event = world.event("authorize_ingress_ip_permissions", {SG: bad})
    result = on_change.handle(event, guardrail, home_account=ACCOUNT)  # no RetryableEventError
    assert world.internet_ssh(bad) == [] and result["published"]["resolved"] == 0
    assert passed(world, SSH, instance)
    assert world.finding(SSH, instance)["Workflow"]["Status"] == "NEW"
    world.guardrail("report").run()  # the next drift scan
    assert resolved(world, SSH, instance) and resolved(world, SSH, bad)
    assert world.finding(SSH, bad)["Note"]["Text"].startswith("ssm-guardrail fixed")


def test_event_of_another_account_is_dropped(world):
    event = world.event("state_change_running")
    event["account"] = "210987654321"
    result = world.deliver(event)
    assert result["dropped"] == "other_account" and sum(world.calls.values()) == 0


# --- the composition root ---------------------------------------------------------------------------


class Context:
    function_name = "ssm-guardrail-OnChange"
    memory_limit_in_mb = 256
    invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ssm-guardrail-OnChange"
    aws_request_id = "5b1f0d1e-0000-4000-8000-000000000001"


def test_lambda_handler_builds_once_from_the_environment(world, monkeypatch):
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("GUARDRAIL_MODE", "enforce")
    monkeypatch.setenv("GUARDRAIL_INSTANCE_PROFILE", GUARDRAIL_PROFILE)
    monkeypatch.setenv("GUARDRAIL_ACTOR_ARNS", GUARDRAIL_ACTOR)
    on_change._guardrail.cache_clear()
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad)
    result = on_change.lambda_handler(
        world.event("state_change_running", {I1: instance}), Context()
    )
    assert world.internet_ssh(bad) == [] and result["account"] == ACCOUNT
    own = on_change.lambda_handler(world.event("own_revoke_ingress", {SG: bad}), Context())
    assert own["dropped"] == "own_change"
    assert on_change._guardrail.cache_info().currsize == 1
    on_change._guardrail.cache_clear()


def test_lambda_handler_drops_garbage_without_raising(world, monkeypatch):
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("GUARDRAIL_MODE", "report")
    on_change._guardrail.cache_clear()
    for event in (
        {},
        {"detail-type": "nope"},
        {"detail-type": "AWS API Call via CloudTrail", "detail": {"eventName": 5}},
    ):
        assert "dropped" in on_change.lambda_handler(event, Context())
    on_change._guardrail.cache_clear()


def test_scope_of_an_event_limits_the_controls(world):
    """A security-group event reads nothing of IAM or SSM (fewer calls, no unrelated fixes)."""
    bad = world.group("ops")
    world.open_ssh(bad)
    instance = world.launch(groups=[bad])[0]  # no profile: ssm-instance-role would fail
    world.deliver("authorize_ingress_ip_permissions", {SG: bad})
    assert not any(c.startswith(("iam:", "ssm:")) for c in world.calls)
    assert world.profile_of(instance) is None
    assert not [fid for fid in world.findings() if f"/{ROLE}/" in fid or f"/{LOGGING}/" in fid]
