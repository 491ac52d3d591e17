"""EMULATION: builds a realistic account in the emulator — the guardrail's own resources as the CDK
stack creates them, and EC2 instances covering every condition the guardrail checks, each next to
a compliant twin that differs in the one detail that matters.

`seed_account` is the demo/test account (≥ 60 instances, one named case per condition);
`seed_fleet` is the benchmark fleet (hundreds to thousands of instances over a realistic handful
of security groups and instance profiles). Both launch instances in batches (one RunInstances per
shape), so seeding stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

SSH = "ssh-open-to-internet"
ROLE = "ssm-instance-role"
LOGGING = "ssm-session-logging"
PASSED, FAILED, NA = "PASSED", "FAILED", "NOT_APPLICABLE"
# ASFF severity labels the controls give (README's control table): a PASSED or NOT_APPLICABLE
# result is INFORMATIONAL; a failing role or logging result MEDIUM; internet SSH CRITICAL when
# the instance is reachable over the rule's address family right now, else HIGH.
CRITICAL, HIGH, MEDIUM, INFORMATIONAL = "CRITICAL", "HIGH", "MEDIUM", "INFORMATIONAL"

AMI = "ami-0a1b2c3d4e5f67890"  # the emulator does not validate image ids
CORE_POLICY = "AmazonSSMManagedInstanceCore"
NAME = "ssm-guardrail"
LOG_PREFIX = "session-logs/"
CASE_TAG = "emulator:case"
MAX_PER_CALL = 500  # instances per RunInstances in the emulator (AWS caps by capacity instead)

EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@dataclass(frozen=True)
class Case:
    """One shape of instance: where it runs, what it carries, and what a first scan should say."""

    name: str
    description: str
    count: int
    groups: tuple[str, ...] = ("web",)  # security groups (by seed name) of the primary interface
    subnet: str = "prod-private-a"
    profile: str | None = "guardrail"  # instance profile (by seed name); None: no profile
    state: str = "running"  # running | stopped | terminated
    secondary_groups: tuple[str, ...] = ()  # groups of a second network interface (device 1)
    expect: Mapping[str, str] = field(default_factory=dict)  # control → status on the first scan
    fixable: bool = True  # an enforce run should leave every control PASSED or N/A
    # control → severity on the first scan, where the status alone does not decide it (SSH)
    severity: Mapping[str, str] = field(default_factory=dict)

    def expected(self, control: str) -> str:
        return self.expect.get(control, PASSED if self.state != "terminated" else NA)

    def expected_severity(self, control: str) -> str:
        if self.expected(control) != FAILED:
            return INFORMATIONAL
        return self.severity.get(control, MEDIUM)


def _case(name: str, description: str, count: int, **kwargs: Any) -> Case:
    return Case(name, description, count, **kwargs)


_ROLE_NA = {LOGGING: NA}  # no role on the instance: session logging does not apply to it yet

# The demo account: each failing condition, then its compliant twin(s).
ACCOUNT_CASES: tuple[Case, ...] = (
    _case(
        "ssh-ipv4-public",
        "TCP 22 from 0.0.0.0/0 (with 443), running with a public IP",
        3,
        groups=("ssh-world",),
        subnet="prod-public-a",
        expect={SSH: FAILED},
        severity={SSH: CRITICAL},
    ),
    _case(
        "ssh-ipv6",
        "TCP 22 from ::/0",
        2,
        groups=("ssh-world-v6",),
        expect={SSH: FAILED},
        severity={SSH: HIGH},  # no IPv6 address: not reachable over the rule's family
    ),
    _case(
        "ssh-all-tcp",
        "TCP 0-65535 from 0.0.0.0/0",
        2,
        groups=("all-tcp",),
        expect={SSH: FAILED},
        severity={SSH: HIGH},  # private subnet: no public IPv4
    ),
    _case(
        "ssh-all-traffic",
        "all traffic (protocol -1) from 0.0.0.0/0 and ::/0",
        2,
        groups=("all-traffic",),
        subnet="prod-public-b",
        expect={SSH: FAILED},
        severity={SSH: CRITICAL},
    ),
    _case(
        "ssh-admin-range",
        "TCP 0-1024 from 0.0.0.0/0 (CIS counts ranges that include 22)",
        1,
        groups=("admin-range",),
        expect={SSH: FAILED},
        severity={SSH: HIGH},
    ),
    _case(
        "ssh-secondary-eni",
        "TCP 22 from 0.0.0.0/0 on a group of the second interface only",
        2,
        secondary_groups=("ssh-secondary",),
        expect={SSH: FAILED},
        severity={SSH: HIGH},
    ),
    _case(
        "ssh-stopped",
        "TCP 22 from 0.0.0.0/0, instance stopped",
        2,
        groups=("ssh-world",),
        state="stopped",
        expect={SSH: FAILED},
        severity={SSH: HIGH},  # not running: exposed once it runs with a public address
    ),
    _case(
        "ssh-private-ip-only",
        "TCP 22 from 0.0.0.0/0, running without a public IP",
        2,
        groups=("ssh-world",),
        subnet="prod-private-b",
        expect={SSH: FAILED},
        severity={SSH: HIGH},
    ),
    _case(
        "ssh-staging-shared",
        "one staging group with TCP 22 from 0.0.0.0/0 shared by six",
        6,
        groups=("staging-ssh-world",),
        subnet="staging-public",
        expect={SSH: FAILED},
        severity={SSH: CRITICAL},
    ),
    _case(
        "ssh-terminated",
        "TCP 22 from 0.0.0.0/0, instance terminated",
        2,
        groups=("ssh-world",),
        state="terminated",
        expect={SSH: NA, ROLE: NA, LOGGING: NA},
    ),
    _case("twin-udp-22", "UDP 22 from 0.0.0.0/0 (not SSH)", 2, groups=("udp-22",)),
    _case("twin-ssh-private-cidr", "TCP 22 from 10.0.0.0/8 only", 2, groups=("ssh-private",)),
    _case(
        "twin-ssh-prefix-list",
        "TCP 22 from a managed prefix list of office ranges (no internet entry)",
        2,
        groups=("ssh-prefix-list",),
    ),
    _case(
        "twin-ssh-group-ref",
        "TCP 22 from the bastion security group",
        2,
        groups=("ssh-from-bastion",),
    ),
    _case("twin-web-public", "TCP 443 from 0.0.0.0/0 only, public IP", 2, subnet="prod-public-a"),
    _case(
        "role-no-profile", "no instance profile", 3, profile=None, expect={ROLE: FAILED, **_ROLE_NA}
    ),
    _case(
        "role-no-profile-stopped",
        "no instance profile, stopped",
        1,
        profile=None,
        state="stopped",
        expect={ROLE: FAILED, **_ROLE_NA},
    ),
    _case(
        "role-empty-profile",
        "an instance profile with no role",
        3,
        profile="app-empty",
        expect={ROLE: FAILED, **_ROLE_NA},
    ),
    _case(
        "role-without-core",
        f"a role without {CORE_POLICY} (and no log delivery)",
        3,
        profile="app-legacy",
        expect={ROLE: FAILED, LOGGING: FAILED},
    ),
    _case(
        "role-core-no-delivery",
        f"{CORE_POLICY} but no log-delivery permissions",
        4,
        profile="app-core",
        expect={LOGGING: FAILED},
    ),
    _case(
        "profile-deleted",
        "its instance profile was deleted after launch",
        1,
        profile="app-retired",
        expect={ROLE: FAILED, **_ROLE_NA},
        fixable=False,
    ),
    _case(
        "twin-role-equivalent",
        "a role with an operator-declared equivalent policy",
        3,
        profile="app-hardened",
    ),
    _case("compliant-stopped", "compliant, stopped", 2, state="stopped"),
)
COMPLIANT = _case("compliant", "Session Manager ready: no internet SSH, guardrail role", 0)


@dataclass
class Seeded:
    """What was created: the ids a demo or test needs, and the guardrail settings that fit."""

    account_id: str
    region: str
    partition: str
    vpcs: dict[str, str] = field(default_factory=dict)
    subnets: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)  # seed name → group id
    profiles: dict[str, str] = field(default_factory=dict)  # seed name → profile name
    roles: dict[str, str] = field(default_factory=dict)  # seed name → role name
    prefix_list_id: str = ""
    bucket: str = ""
    log_group: str = ""
    kms_key_arn: str = ""
    log_delivery_policy_arn: str = ""
    equivalent_policy_arn: str = ""
    cases: dict[str, Case] = field(default_factory=dict)
    instances: dict[str, list[str]] = field(default_factory=dict)  # case → instance ids

    @property
    def instance_profile(self) -> str:
        return self.profiles["guardrail"]

    @property
    def instance_role(self) -> str:
        return self.roles["guardrail"]

    @property
    def instance_ids(self) -> list[str]:
        return [i for ids in self.instances.values() for i in ids]

    def case_of(self, instance_id: str) -> Case:
        for name, ids in self.instances.items():
            if instance_id in ids:
                return self.cases[name]
        raise KeyError(instance_id)

    def expected(self, control: str, status: str = FAILED) -> set[str]:
        """Instance ids a first scan should give `status` for `control`."""
        return {
            i
            for name, ids in self.instances.items()
            for i in ids
            if self.cases[name].expected(control) == status
        }

    def settings_env(self) -> dict[str, str]:
        """GUARDRAIL_* values for this account (the CDK stack sets the same on its Lambdas)."""
        return {
            "GUARDRAIL_INSTANCE_PROFILE": self.instance_profile,
            "GUARDRAIL_INSTANCE_ROLE": self.instance_role,
            "GUARDRAIL_SESSION_LOG_BUCKET": self.bucket,
            "GUARDRAIL_SESSION_LOG_PREFIX": LOG_PREFIX,
            "GUARDRAIL_SESSION_LOG_GROUP": self.log_group,
            "GUARDRAIL_SESSION_LOG_KMS_KEY": self.kms_key_arn,
            "GUARDRAIL_LOG_DELIVERY_POLICY_ARN": self.log_delivery_policy_arn,
            "GUARDRAIL_EQUIVALENT_POLICY_ARNS": self.equivalent_policy_arn,
        }


def sample_events(seeded: Seeded, at: str = "2026-01-01T00:00:00Z") -> dict[str, dict[str, Any]]:
    """Two EventBridge events about this account's own resources, for `guardrail replay`: a
    person opening SSH to the world on the ssh-world group (CloudTrail), and an instance without
    a profile starting (EC2 state change). The fixtures under tests/ name another account."""
    account, region = seeded.account_id, seeded.region

    def envelope(number: int, detail_type: str, detail: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": "0",
            "id": f"00000000-0000-4000-8000-{number:012d}",
            "detail-type": detail_type,
            "source": "aws.ec2",
            "account": account,
            "time": at,
            "region": region,
            "resources": [],
            "detail": detail,
        }

    group = seeded.groups["ssh-world"]
    world = {"ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}
    opened = envelope(
        1,
        "AWS API Call via CloudTrail",
        {
            "eventVersion": "1.08",
            "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{account}:user/someone"},
            "eventTime": at,
            "eventSource": "ec2.amazonaws.com",
            "eventName": "AuthorizeSecurityGroupIngress",
            "awsRegion": region,
            "requestParameters": {
                "groupId": group,
                "ipPermissions": {
                    "items": [{"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, **world}]
                },
            },
            "responseElements": {"_return": True},
            "eventID": "00000000-0000-4000-8000-000000000011",
        },
    )
    instance = seeded.instances["role-no-profile"][0]
    started = envelope(2, "EC2 Instance State-change Notification", {
        "instance-id": instance, "state": "running"
    })  # fmt: skip
    started["resources"] = [f"arn:{seeded.partition}:ec2:{region}:{account}:instance/{instance}"]
    return {
        "ssh-opened-on-ssh-world.json": opened,
        "instance-without-profile-running.json": started,
    }


# --------------------------------------------------------------------------------------------


# Opt-in: a role whose explicit Deny blocks log delivery even with the delivery policy attached.
EXPLICIT_DENY_CASE = _case(
    "role-delivery-denied",
    "core and log-delivery policies, but an inline Deny on kms:* blocks delivery",
    2,
    profile="app-denied",
    expect={LOGGING: FAILED},
    fixable=False,
)


def minimum_instances(explicit_deny: bool = False) -> int:
    """Every seeded case's instances, and one compliant instance to top up."""
    extra = [EXPLICIT_DENY_CASE] if explicit_deny else []
    return sum(c.count for c in (*ACCOUNT_CASES, *extra)) + 1


def seed_account(
    session: Any,
    region: str,
    *,
    instances: int = 60,
    enable_security_hub: bool = True,
    explicit_deny: bool = False,
) -> Seeded:
    """The demo account: every condition and its twin, topped up with compliant instances.

    Session Manager preferences are left absent, as in a fresh account. `explicit_deny` adds
    `EXPLICIT_DENY_CASE`, which attaching the log-delivery policy cannot fix.
    """
    extra = [EXPLICIT_DENY_CASE] if explicit_deny else []
    least = minimum_instances(explicit_deny)
    if instances < least:
        raise ValueError(f"the account needs at least {least} instances to cover every case")
    seeded = _foundation(session, region, enable_security_hub=enable_security_hub)
    if explicit_deny:
        _denied_role(session.client("iam", region_name=region), seeded)
    cases = [
        *ACCOUNT_CASES,
        *extra,
        _case(
            COMPLIANT.name,
            COMPLIANT.description,
            instances - (least - 1),  # least - 1: the instances of every case above
            subnet="prod-private-b",
        ),
    ]
    _launch_all(session, seeded, cases)
    return seeded


def _denied_role(iam: Any, seeded: Seeded) -> None:
    role = "app-denied-role"
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(EC2_TRUST))
    for arn in (
        f"arn:{seeded.partition}:iam::aws:policy/{CORE_POLICY}",
        seeded.log_delivery_policy_arn,
    ):
        iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    deny = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "kms:*", "Resource": "*"}],
    }
    iam.put_role_policy(RoleName=role, PolicyName="no-kms", PolicyDocument=json.dumps(deny))
    iam.create_instance_profile(InstanceProfileName="app-denied")
    iam.add_role_to_instance_profile(InstanceProfileName="app-denied", RoleName=role)
    seeded.roles["app-denied"] = role
    seeded.profiles["app-denied"] = "app-denied"


# The benchmark fleet: shares of n per shape (a realistic, mostly compliant estate).
FLEET_SHARES: tuple[tuple[Case, float], ...] = (
    (_case("fleet-compliant-a", "compliant", 0, subnet="prod-private-a"), 0.25),
    (_case("fleet-compliant-b", "compliant", 0, subnet="prod-private-b"), 0.15),
    (
        _case(
            "fleet-compliant-staging",
            "compliant",
            0,
            groups=("staging-web",),
            subnet="staging-private",
        ),
        0.06,
    ),
    (
        _case(
            "fleet-ssh-world",
            "TCP 22 from 0.0.0.0/0",
            0,
            groups=("ssh-world",),
            subnet="prod-public-a",
            expect={SSH: FAILED},
            severity={SSH: CRITICAL},
        ),
        0.06,
    ),
    (
        _case(
            "fleet-ssh-all-traffic",
            "all traffic from the internet",
            0,
            groups=("all-traffic",),
            subnet="prod-public-b",
            expect={SSH: FAILED},
            severity={SSH: CRITICAL},
        ),
        0.03,
    ),
    (
        _case(
            "fleet-ssh-staging",
            "staging group open on 22",
            0,
            groups=("staging-ssh-world",),
            subnet="staging-public",
            expect={SSH: FAILED},
            severity={SSH: CRITICAL},
        ),
        0.05,
    ),
    (
        _case(
            "fleet-no-profile",
            "no instance profile",
            0,
            profile=None,
            expect={ROLE: FAILED, **_ROLE_NA},
        ),
        0.08,
    ),
    (
        _case(
            "fleet-empty-profile",
            "profile without a role",
            0,
            profile="app-empty",
            expect={ROLE: FAILED, **_ROLE_NA},
        ),
        0.04,
    ),
    (
        _case(
            "fleet-no-core",
            "role without the core policy",
            0,
            profile="app-legacy",
            expect={ROLE: FAILED, LOGGING: FAILED},
        ),
        0.08,
    ),
    (
        _case(
            "fleet-core-no-delivery",
            "core policy, no log delivery",
            0,
            profile="app-core",
            expect={LOGGING: FAILED},
        ),
        0.12,
    ),
    (
        _case("fleet-equivalent", "operator-declared equivalent policy", 0, profile="app-hardened"),
        0.04,
    ),
    (_case("fleet-stopped", "compliant, stopped", 0, state="stopped"), 0.03),
    (
        _case(
            "fleet-terminated",
            "terminated",
            0,
            groups=("ssh-world",),
            state="terminated",
            expect={SSH: NA, ROLE: NA, LOGGING: NA},
        ),
        0.01,
    ),
)


def seed_fleet(session: Any, region: str, n: int, *, enable_security_hub: bool = True) -> Seeded:
    """`n` instances over ~8 security groups and 5 instance profiles, with a mix of conditions."""
    seeded = _foundation(session, region, enable_security_hub=enable_security_hub)
    counts = [max(1, int(n * share)) for _, share in FLEET_SHARES]
    counts[0] += n - sum(counts)  # rounding goes to the largest, compliant shape
    cases = [replace(c, count=k) for (c, _), k in zip(FLEET_SHARES, counts, strict=True)]
    _launch_all(session, seeded, cases)
    return seeded


# --------------------------------------------------------------------------------------------


def _foundation(session: Any, region: str, *, enable_security_hub: bool) -> Seeded:
    """Network, the guardrail's own resources, the application roles and profiles, Security Hub."""
    sts = session.client("sts", region_name=region)
    account = sts.get_caller_identity()["Account"]
    partition = session.get_partition_for_region(region)
    seeded = Seeded(account, region, partition)
    _network(session.client("ec2", region_name=region), seeded)
    _guardrail_resources(session, seeded)
    _application_iam(session.client("iam", region_name=region), seeded)
    if enable_security_hub:
        session.client("securityhub", region_name=region).enable_security_hub(
            EnableDefaultStandards=False
        )
    return seeded


def _network(ec2: Any, seeded: Seeded) -> None:
    region = seeded.region
    layout = {
        "prod": (
            "10.0.0.0/16",
            {
                "prod-public-a": ("10.0.0.0/18", "a", True),
                "prod-private-a": ("10.0.64.0/18", "a", False),
                "prod-public-b": ("10.0.128.0/18", "b", True),
                "prod-private-b": ("10.0.192.0/18", "b", False),
            },
        ),
        "staging": (
            "10.1.0.0/16",
            {
                "staging-public": ("10.1.0.0/17", "a", True),
                "staging-private": ("10.1.128.0/17", "b", False),
            },
        ),
    }
    for vpc_name, (cidr, subnets) in layout.items():
        vpc = ec2.create_vpc(CidrBlock=cidr, TagSpecifications=_tags("vpc", vpc_name))["Vpc"][
            "VpcId"
        ]
        seeded.vpcs[vpc_name] = vpc
        for name, (block, zone, public) in subnets.items():
            subnet = ec2.create_subnet(
                VpcId=vpc,
                CidrBlock=block,
                AvailabilityZone=f"{region}{zone}",
                TagSpecifications=_tags("subnet", name),
            )["Subnet"]["SubnetId"]
            if public:
                ec2.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
            seeded.subnets[name] = subnet

    seeded.prefix_list_id = ec2.create_managed_prefix_list(
        PrefixListName="office-networks",
        MaxEntries=5,
        AddressFamily="IPv4",
        Entries=[
            {"Cidr": "203.0.113.0/24", "Description": "head office"},
            {"Cidr": "198.51.100.0/24", "Description": "branch"},
        ],
    )["PrefixList"]["PrefixListId"]

    world4, world6 = [{"CidrIp": "0.0.0.0/0"}], [{"CidrIpv6": "::/0"}]
    https = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": world4}

    def tcp(low: int, high: int, **source: Any) -> dict[str, Any]:
        return {"IpProtocol": "tcp", "FromPort": low, "ToPort": high, **source}

    prod = {
        "web": [https, tcp(80, 80, IpRanges=world4)],
        "bastion": [tcp(22, 22, PrefixListIds=[{"PrefixListId": seeded.prefix_list_id}])],
        "ssh-world": [
            tcp(22, 22, IpRanges=[{"CidrIp": "0.0.0.0/0", "Description": "temporary"}]),
            https,
        ],
        "ssh-world-v6": [tcp(22, 22, Ipv6Ranges=world6)],
        "all-tcp": [tcp(0, 65535, IpRanges=world4)],
        "all-traffic": [{"IpProtocol": "-1", "IpRanges": world4, "Ipv6Ranges": world6}],
        "admin-range": [tcp(0, 1024, IpRanges=world4)],
        "udp-22": [{"IpProtocol": "udp", "FromPort": 22, "ToPort": 22, "IpRanges": world4}],
        "ssh-private": [tcp(22, 22, IpRanges=[{"CidrIp": "10.0.0.0/8"}])],
        "ssh-prefix-list": [tcp(22, 22, PrefixListIds=[{"PrefixListId": seeded.prefix_list_id}])],
        "ssh-from-bastion": [],  # filled below: needs the bastion group's id
        "ssh-secondary": [tcp(22, 22, IpRanges=world4)],
    }
    staging = {
        "staging-web": [https],
        "staging-ssh-world": [tcp(22, 22, IpRanges=world4), https],
    }
    for vpc_name, groups in (("prod", prod), ("staging", staging)):
        for name in groups:
            seeded.groups[name] = ec2.create_security_group(
                GroupName=name,
                Description=f"{name} (emulated)",
                VpcId=seeded.vpcs[vpc_name],
                TagSpecifications=_tags("security-group", name),
            )["GroupId"]
    prod["ssh-from-bastion"] = [
        tcp(22, 22, UserIdGroupPairs=[{"GroupId": seeded.groups["bastion"]}])
    ]
    for name, permissions in {**prod, **staging}.items():
        if permissions:
            ec2.authorize_security_group_ingress(
                GroupId=seeded.groups[name], IpPermissions=permissions
            )


def _guardrail_resources(session: Any, seeded: Seeded) -> None:
    """What the CDK stack's SessionLogStore and instance-role constructs create."""
    region, account, partition = seeded.region, seeded.account_id, seeded.partition
    kms = session.client("kms", region_name=region)
    key = kms.create_key(
        Description="ssm-guardrail session logs",
        KeyUsage="ENCRYPT_DECRYPT",
        Tags=[{"TagKey": "app", "TagValue": NAME}],
    )["KeyMetadata"]
    kms.create_alias(AliasName=f"alias/{NAME}/session-logs", TargetKeyId=key["KeyId"])
    seeded.kms_key_arn = key["Arn"]

    s3 = session.client("s3", region_name=region)
    seeded.bucket = f"{NAME}-session-logs-{account}-{region}"
    create: dict[str, Any] = {"Bucket": seeded.bucket}
    if region != "us-east-1":
        create["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**create)
    s3.put_bucket_encryption(
        Bucket=seeded.bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": seeded.kms_key_arn,
                    },
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    s3.put_public_access_block(
        Bucket=seeded.bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )

    logs = session.client("logs", region_name=region)
    seeded.log_group = f"/{NAME}/session-logs"
    logs.create_log_group(logGroupName=seeded.log_group, kmsKeyId=seeded.kms_key_arn)
    logs.put_retention_policy(logGroupName=seeded.log_group, retentionInDays=365)

    iam = session.client("iam", region_name=region)
    group_arn = f"arn:{partition}:logs:{region}:{account}:log-group:{seeded.log_group}"
    delivery = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PutSessionLogs",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": f"arn:{partition}:s3:::{seeded.bucket}/{LOG_PREFIX}*",
            },
            {
                "Sid": "ReadBucketEncryption",
                "Effect": "Allow",
                "Action": "s3:GetEncryptionConfiguration",
                "Resource": f"arn:{partition}:s3:::{seeded.bucket}",
            },
            {
                "Sid": "StreamSessionLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                "Resource": f"{group_arn}:*",
            },
            {
                "Sid": "FindLogGroup",
                "Effect": "Allow",
                "Action": "logs:DescribeLogGroups",
                "Resource": "*",
            },
            {
                "Sid": "EncryptSessionLogs",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": seeded.kms_key_arn,
            },
        ],
    }
    seeded.log_delivery_policy_arn = iam.create_policy(
        PolicyName=f"{NAME}-session-log-delivery",
        PolicyDocument=json.dumps(delivery),
        Description="lets instance roles deliver Session Manager logs (ssm-guardrail)",
    )["Policy"]["Arn"]
    role = f"{NAME}-instance"
    iam.create_role(
        RoleName=role,
        AssumeRolePolicyDocument=json.dumps(EC2_TRUST),
        Description="Session Manager instance role (ssm-guardrail)",
    )
    iam.attach_role_policy(
        RoleName=role, PolicyArn=f"arn:{partition}:iam::aws:policy/{CORE_POLICY}"
    )
    iam.attach_role_policy(RoleName=role, PolicyArn=seeded.log_delivery_policy_arn)
    iam.create_instance_profile(InstanceProfileName=role)
    iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)
    seeded.roles["guardrail"] = role
    seeded.profiles["guardrail"] = role


def _application_iam(iam: Any, seeded: Seeded) -> None:
    """The workloads' own roles and profiles: the conditions the ssm-instance-role check meets."""
    partition = seeded.partition
    equivalent = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "SsmAgent",
                "Effect": "Allow",
                "Resource": "*",
                "Action": [
                    "ssm:DescribeAssociation",
                    "ssm:GetDocument",
                    "ssm:DescribeDocument",
                    "ssm:ListAssociations",
                    "ssm:ListInstanceAssociations",
                    "ssm:UpdateInstanceInformation",
                    "ssm:UpdateAssociationStatus",
                    "ssm:UpdateInstanceAssociationStatus",
                    "ssm:PutInventory",
                    "ssm:GetParameter",
                    "ssm:GetParameters",
                ],
            },
            {
                "Sid": "SessionChannels",
                "Effect": "Allow",
                "Resource": "*",
                "Action": [
                    "ssmmessages:CreateControlChannel",
                    "ssmmessages:CreateDataChannel",
                    "ssmmessages:OpenControlChannel",
                    "ssmmessages:OpenDataChannel",
                ],
            },
            {"Sid": "Messages", "Effect": "Allow", "Resource": "*", "Action": "ec2messages:*"},
        ],
    }
    seeded.equivalent_policy_arn = iam.create_policy(
        PolicyName="platform-ssm-core-hardened",
        PolicyDocument=json.dumps(equivalent),
        Description="the platform team's narrowed copy of AmazonSSMManagedInstanceCore",
    )["Policy"]["Arn"]
    read_config = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": [
                    f"arn:{partition}:s3:::app-config-{seeded.account_id}",
                    f"arn:{partition}:s3:::app-config-{seeded.account_id}/*",
                ],
            }
        ],
    }
    core = f"arn:{partition}:iam::aws:policy/{CORE_POLICY}"
    roles: dict[str, list[str]] = {
        "app-legacy": [],  # inline policy only: no Systems Manager at all
        "app-core": [core],  # managed, but cannot deliver session logs
        "app-hardened": [seeded.equivalent_policy_arn, seeded.log_delivery_policy_arn],
    }
    for name, policies in roles.items():
        role = f"{name}-role"
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(EC2_TRUST))
        iam.put_role_policy(
            RoleName=role, PolicyName="read-app-config", PolicyDocument=json.dumps(read_config)
        )
        for arn in policies:
            iam.attach_role_policy(RoleName=role, PolicyArn=arn)
        iam.create_instance_profile(InstanceProfileName=name)
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)
        seeded.roles[name] = role
        seeded.profiles[name] = name
    for name in ("app-empty", "app-retired"):  # no role; app-retired is deleted after launch
        iam.create_instance_profile(InstanceProfileName=name)
        seeded.profiles[name] = name


def _launch_all(session: Any, seeded: Seeded, cases: list[Case]) -> None:
    ec2 = session.client("ec2", region_name=seeded.region)
    stop, terminate = [], []
    for case in cases:
        seeded.cases[case.name] = case
        ids = _launch(ec2, seeded, case)
        seeded.instances[case.name] = ids
        if case.state == "stopped":
            stop += ids
        elif case.state == "terminated":
            terminate += ids
    for batch in _batches(stop, 1000):
        ec2.stop_instances(InstanceIds=batch)
    for batch in _batches(terminate, 1000):
        ec2.terminate_instances(InstanceIds=batch)
    if "app-retired" in {c.profile for c in cases if c.count}:
        # Deleted while instances still name it: a profile the guardrail must not replace.
        session.client("iam", region_name=seeded.region).delete_instance_profile(
            InstanceProfileName=seeded.profiles["app-retired"]
        )


def _launch(ec2: Any, seeded: Seeded, case: Case) -> list[str]:
    ids: list[str] = []
    remaining = case.count
    while remaining > 0:
        count = min(remaining, MAX_PER_CALL)
        request: dict[str, Any] = {
            "ImageId": AMI,
            "InstanceType": "t3.micro" if case.name.endswith("staging") else "m6i.large",
            "MinCount": count,
            "MaxCount": count,
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": _tags("instance", case.name, **{CASE_TAG: case.name}),
        }
        groups = [seeded.groups[g] for g in case.groups]
        subnet = seeded.subnets[case.subnet]
        if case.secondary_groups:
            request["NetworkInterfaces"] = [
                {"DeviceIndex": 0, "SubnetId": subnet, "Groups": groups},
                {
                    "DeviceIndex": 1,
                    "SubnetId": subnet,
                    "Groups": [seeded.groups[g] for g in case.secondary_groups],
                },
            ]
        else:
            request.update(SubnetId=subnet, SecurityGroupIds=groups)
        if case.profile:
            request["IamInstanceProfile"] = {"Name": seeded.profiles[case.profile]}
        ids += [i["InstanceId"] for i in ec2.run_instances(**request)["Instances"]]
        remaining -= count
    return ids


def _tags(resource_type: str, name: str, **extra: str) -> list[dict[str, Any]]:
    tags = [{"Key": "Name", "Value": name}, *({"Key": k, "Value": v} for k, v in extra.items())]
    return [{"ResourceType": resource_type, "Tags": tags}]


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
