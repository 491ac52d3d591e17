"""An emulated account with the shapes the fixes meet, built through the real EC2/IAM/SSM APIs."""

from __future__ import annotations

import json

import pytest
from guardrail.engine import Guardrail
from guardrail.scope import Scope
from guardrail.settings import Settings

from emulator.seed import EC2_TRUST

CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"


def trust_also(principal):
    """A trust policy letting EC2 and `principal` (a Principal block) assume the role."""
    return {
        **EC2_TRUST,
        "Statement": [
            *EC2_TRUST["Statement"],
            {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"},
        ],
    }


OPEN_SSH = {
    "IpProtocol": "tcp",
    "FromPort": 22,
    "ToPort": 22,
    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
}


class Account:
    """Builds resources in a moto account and runs the guardrail over it."""

    def __init__(self, session):
        self.session = session
        self.ec2 = session.client("ec2")
        self.iam = session.client("iam")
        self.ssm = session.client("ssm")
        self.vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self.subnet = self.ec2.create_subnet(VpcId=self.vpc, CidrBlock="10.0.1.0/24")["Subnet"][
            "SubnetId"
        ]
        self._n = 0

    def group(self, *permissions):
        self._n += 1
        gid = self.ec2.create_security_group(
            GroupName=f"g{self._n}", Description="t", VpcId=self.vpc
        )["GroupId"]
        if permissions:
            self.ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=list(permissions))
        return gid

    def instance(self, groups=(), profile=None, count=1, imds_tokens=None):
        kwargs = {"IamInstanceProfile": {"Name": profile}} if profile else {}
        if imds_tokens:
            kwargs["MetadataOptions"] = {"HttpTokens": imds_tokens}
        if groups:
            kwargs["SecurityGroupIds"] = list(groups)
        out = self.ec2.run_instances(
            ImageId="ami-12345678", MinCount=count, MaxCount=count, SubnetId=self.subnet, **kwargs
        )
        ids = [i["InstanceId"] for i in out["Instances"]]
        return ids if count > 1 else ids[0]

    def role(self, name, *policies, profile=None, boundary=None, path=None, trust=EC2_TRUST):
        extra = {"PermissionsBoundary": boundary} if boundary else {}
        if path:
            extra["Path"] = path
        self.iam.create_role(
            RoleName=name,
            **extra,
            AssumeRolePolicyDocument=json.dumps(trust),
        )
        for policy in policies:
            self.iam.attach_role_policy(RoleName=name, PolicyArn=policy)
        if profile:
            self.iam.create_instance_profile(InstanceProfileName=profile)
            self.iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=name)
        return name

    def move(self, instance, groups):
        """Give the instance (and its primary interface, which DescribeInstances reads) new
        groups: moto keeps both views."""
        (eni,) = self.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0][
            "Instances"
        ][0]["NetworkInterfaces"]
        self.ec2.modify_network_interface_attribute(
            NetworkInterfaceId=eni["NetworkInterfaceId"], Groups=groups
        )
        self.ec2.modify_instance_attribute(InstanceId=instance, Groups=groups)

    def ingress(self, gid):
        rules = self.ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [gid]}]
        )["SecurityGroupRules"]
        return sorted(
            (
                r["IpProtocol"],
                r.get("FromPort"),
                r.get("ToPort"),
                r.get("CidrIpv4") or r.get("CidrIpv6"),
                r.get("Description"),
            )
            for r in rules
            if not r["IsEgress"]
        )

    def run(self, clients, mode="report", controls=(), scope=None, **settings):
        s = Settings(mode=mode, controls=tuple(controls), **settings)
        return Guardrail(clients, s).run(scope or Scope.everything())


@pytest.fixture
def account(aws):
    return Account(aws)


@pytest.fixture
def managed_policies(monkeypatch):
    """AWS managed policies exist in moto only when loaded (slower start: only where needed)."""
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")


def answer_simulations(monkeypatch, prefix: str, decision: str, **fields) -> None:
    """The emulated SimulatePrincipalPolicy answers `decision` for the actions starting with
    `prefix`, with the result fields AWS adds and moto cannot (OrganizationsDecisionDetail
    under an SCP, MissingContextValues for a Deny that needs context keys)."""
    import emulator.extension as extension

    simulate = extension.simulate

    def answered(*args, **kwargs):
        results = simulate(*args, **kwargs)
        for result in results:
            if result["EvalActionName"].startswith(prefix):
                result.update(EvalDecision=decision, **fields)
                for specific in result.get("ResourceSpecificResults", []):
                    specific["EvalResourceDecision"] = decision
                    # Each resource carries its own missing keys; SCPs are the action's only.
                    if "MissingContextValues" in fields:
                        specific["MissingContextValues"] = fields["MissingContextValues"]
        return results

    monkeypatch.setattr(extension, "simulate", answered)
