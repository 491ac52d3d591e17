"""ssh-open-to-internet: exactly internet TCP 22 is caught, and the fix plan never widens access."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

import pytest
from guardrail.controls.ssh_open import (
    SSH_OPEN,
    admits_internet_ssh,
    ip_permission,
    remaining_access,
    rule_request,
    ssh_exposed_running,
)
from guardrail.model import (
    AccountSnapshot,
    Instance,
    ResourceType,
    SecurityGroup,
    SecurityGroupRule,
    Status,
)
from guardrail.settings import Settings
from hypothesis import given
from hypothesis import strategies as st


def rule(protocol="tcp", low=22, high=22, v4="0.0.0.0/0", v6=None, **kw) -> SecurityGroupRule:
    return SecurityGroupRule(
        kw.pop("rule_id", "sgr-1"),
        kw.pop("group_id", "sg-1"),
        protocol,
        low,
        high,
        cidr_ipv4=None if v6 else v4,
        cidr_ipv6=v6,
        **kw,
    )


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (rule(), True),
        (rule(v6="::/0"), True),
        (rule("6"), True),  # protocol number for tcp
        (rule("-1", None, None), True),
        (rule("-1", -1, -1, v6="::/0"), True),
        (rule("tcp", 0, 1024), True),  # CIS: a range including 22 counts
        (rule("tcp", 0, 65535, v6="::/0"), True),
        (rule("udp"), False),  # UDP 22 is not SSH
        (rule("udp", 0, 65535), False),
        (rule("icmp", -1, -1), False),
        (rule(v4="10.0.0.0/8"), False),  # private
        (rule(v4="0.0.0.0/1"), False),  # half the internet is not the rule; EC2.13 names /0
        (rule(v4=None, prefix_list_id="pl-123"), False),
        (rule(v4=None, referenced_group_id="sg-9"), False),
        (rule("tcp", 23, 100), False),
        (rule("tcp", 20, 21), False),
        (rule(is_egress=True), False),
        # EC2 keeps a CIDR as written: any /0 is the whole internet, however it is spelled
        (rule(v6="0::/0"), True),
        (rule(v6="0:0:0:0:0:0:0:0/0"), True),
        (rule(v6="2001:db8::1/0"), True),
        (rule(v4="1.2.3.4/0"), True),
        (rule("-1", -1, -1, v6="::0/0"), True),
        # Every global IPv6 address without being ::/0 is the internet too
        (rule(v6="2000::/3"), True),
        (rule(v6="::/1"), True),
        (rule(v6="2000::/4"), False),  # a part of it, like any other range
        (rule(v6="2001:db8::/32"), False),
        (rule(v6="fc00::/7"), False),  # unique local
        (rule(v4="not-a-cidr"), False),
    ],
)
def test_only_internet_tcp22_counts(r, expected):
    assert admits_internet_ssh(r) is expected


def snapshot(instances, groups) -> AccountSnapshot:
    return AccountSnapshot(
        "111122223333",
        "eu-west-1",
        "aws",
        instances={i.instance_id: i for i in instances},
        security_groups={g.group_id: g for g in groups},
    )


def by_resource(results):
    return {(r.resource_type, r.resource_id): r for r in results}


def test_group_on_a_secondary_interface_is_found_and_named():
    bad = SecurityGroup(
        "sg-bad", "ssh-world", "vpc-1", rules=(rule(rule_id="sgr-22", group_id="sg-bad"),)
    )
    good = SecurityGroup(
        "sg-ok", "web", "vpc-1", rules=(rule("tcp", 443, 443, rule_id="sgr-443", group_id="sg-ok"),)
    )
    inst = Instance("i-1", "running", ("sg-ok", "sg-bad"), ("eni-a", "eni-b"), public_ip="3.3.3.3")
    results = by_resource(SSH_OPEN.check(snapshot([inst], [bad, good]), Settings()))
    r = results[(ResourceType.INSTANCE, "i-1")]
    assert r.status is Status.FAILED and r.severity == "CRITICAL"
    assert r.details["rule_ids"] == ["sgr-22"] and "sg-bad" in r.reason
    assert results[(ResourceType.SECURITY_GROUP, "sg-bad")].status is Status.FAILED
    assert results[(ResourceType.SECURITY_GROUP, "sg-ok")].status is Status.PASSED


@pytest.mark.parametrize(
    ("state", "public_ip", "status", "severity"),
    [
        ("running", "3.3.3.3", Status.FAILED, "CRITICAL"),
        ("running", None, Status.FAILED, "HIGH"),
        ("stopped", "3.3.3.3", Status.FAILED, "HIGH"),
        ("pending", None, Status.FAILED, "HIGH"),
        ("terminated", None, Status.NOT_APPLICABLE, "INFORMATIONAL"),
        ("shutting-down", None, Status.NOT_APPLICABLE, "INFORMATIONAL"),
    ],
)
def test_state_and_exposure_set_status_and_severity(state, public_ip, status, severity):
    bad = SecurityGroup("sg-bad", rules=(rule(group_id="sg-bad"),))
    inst = Instance("i-1", state, ("sg-bad",), public_ip=public_ip)
    r = by_resource(SSH_OPEN.check(snapshot([inst], [bad]), Settings()))[
        (ResourceType.INSTANCE, "i-1")
    ]
    assert (r.status, r.severity) == (status, severity)


@pytest.mark.parametrize(
    ("state", "counted"),
    [
        ("pending", True),
        ("running", True),
        ("unknown", True),  # DescribeInstances left State out: someone may be on it
        ("stopping", False),
        ("stopped", False),
        ("shutting-down", False),
        ("terminated", False),
    ],
)
def test_the_lockout_guard_counts_instances_that_may_be_running(state, counted):
    bad = SecurityGroup("sg-bad", rules=(rule(group_id="sg-bad"),))
    inst = Instance("i-1", state, ("sg-bad",))
    exposed = ssh_exposed_running(snapshot([inst], [bad]), "sg-bad")
    assert (exposed == [inst]) is counted


def test_an_ipv6_address_is_exposure_and_never_passes_for_an_ipv4_one():
    from guardrail.findings import instance_details

    bad = SecurityGroup("sg-bad", rules=(rule(v6="::/0", group_id="sg-bad"),))
    inst = Instance(
        "i-1", "running", ("sg-bad",), private_ip="10.0.0.5", ipv6_addresses=("2600:1f18::5",)
    )
    r = by_resource(SSH_OPEN.check(snapshot([inst], [bad]), Settings()))[
        (ResourceType.INSTANCE, "i-1")
    ]
    assert r.severity == "CRITICAL" and r.reason.endswith("running with a global IPv6 address")
    details = instance_details(inst)
    assert details["IpV4Addresses"] == ["10.0.0.5"] and details["IpV6Addresses"] == ["2600:1f18::5"]


def delegated_prefix_instance(prefix_on: str) -> Instance:
    """A running instance as DescribeInstances gives it: eni-1 carries sg-ssh, eni-2 sg-other,
    and only `prefix_on` has an IPv6 prefix delegated (EKS and ECS IPv6 nodes), no address."""
    from guardrail.reader import parse_instance

    def interface(eni: str, group: str, index: int) -> dict[str, Any]:
        return {
            "NetworkInterfaceId": eni,
            "Attachment": {"DeviceIndex": index, "NetworkCardIndex": 0},
            "Groups": [{"GroupId": group, "GroupName": group}],
            "PrivateIpAddresses": [{"Primary": True, "PrivateIpAddress": f"10.0.0.{index + 5}"}],
            "Ipv6Addresses": [],
            "Ipv6Prefixes": [{"Ipv6Prefix": "2600:1f18:abcd:1200:5::/80"}]
            if eni == prefix_on
            else [],
        }

    return parse_instance(
        {
            "InstanceId": "i-1",
            "State": {"Name": "running"},
            "PrivateIpAddress": "10.0.0.5",
            "SecurityGroups": [{"GroupId": "sg-ssh", "GroupName": "sg-ssh"}],
            "NetworkInterfaces": [
                interface("eni-1", "sg-ssh", 0),
                interface("eni-2", "sg-other", 1),
            ],
        }
    )


@pytest.mark.parametrize(("prefix_on", "severity"), [("eni-1", "CRITICAL"), ("eni-2", "HIGH")])
def test_a_delegated_ipv6_prefix_is_ipv6_exposure_on_its_own_interface(prefix_on, severity):
    """Every address of a delegated prefix is the interface's, filtered by its groups: ::/0 on
    22 was HIGH, "it has no IPv6 address", for a node reachable on its whole /80."""
    instance = delegated_prefix_instance(prefix_on)
    groups = [SecurityGroup(g, rules=(rule(v6="::/0", group_id=g),)) for g in ("sg-ssh",)]
    groups.append(SecurityGroup("sg-other"))
    results = by_resource(SSH_OPEN.check(snapshot([instance], groups), Settings()))
    assert results[(ResourceType.INSTANCE, "i-1")].severity == severity
    assert results[(ResourceType.SECURITY_GROUP, "sg-ssh")].severity == severity


@pytest.mark.parametrize(
    ("sources", "public_ip", "ipv6", "severity", "says"),
    [
        (["0.0.0.0/0"], "3.3.3.3", (), "CRITICAL", "running with a public IPv4 address"),
        (["::/0"], None, ("2600:1f18::5",), "CRITICAL", "running with a global IPv6 address"),
        (
            ["0.0.0.0/0", "::/0"],
            "3.3.3.3",
            ("2600:1f18::5",),
            "CRITICAL",
            "running with a public IPv4 address and a global IPv6 address",
        ),
        # An internet rule of one family does not reach an address of the other
        (
            ["0.0.0.0/0"],
            None,
            ("2600:1f18::5",),
            "HIGH",
            "running with no public IPv4 address, and the rules admit IPv4 only (exposed once it gets one)",
        ),
        (
            ["::/0"],
            "3.3.3.3",
            (),
            "HIGH",
            "running with no global IPv6 address, and the rules admit IPv6 only (exposed once it gets one)",
        ),
    ],
)
def test_critical_only_when_reachable_over_the_family_the_rule_admits(
    sources, public_ip, ipv6, severity, says
):
    rules = tuple(
        rule(v4=None if ":" in cidr else cidr, v6=cidr if ":" in cidr else None, rule_id=f"r{n}")
        for n, cidr in enumerate(sources)
    )
    inst = Instance("i-1", "running", ("sg-1",), public_ip=public_ip, ipv6_addresses=ipv6)
    results = by_resource(
        SSH_OPEN.check(snapshot([inst], [SecurityGroup("sg-1", rules=rules)]), Settings())
    )
    instance = results[(ResourceType.INSTANCE, "i-1")]
    assert (instance.severity, instance.reason.split("instance is ")[1]) == (severity, says)
    assert results[(ResourceType.SECURITY_GROUP, "sg-1")].severity == severity


def test_a_public_ip_on_a_secondary_private_ip_makes_internet_ssh_critical():
    from guardrail.reader import parse_instance

    # DescribeInstances: an Elastic IP associated with a secondary private IP of the interface,
    # no public IP on the primary one (moto does not report such associations).
    raw = {
        "InstanceId": "i-1",
        "State": {"Name": "running"},
        "PrivateIpAddress": "10.0.0.5",
        "SecurityGroups": [{"GroupId": "sg-1", "GroupName": "ssh"}],
        "NetworkInterfaces": [
            {
                "NetworkInterfaceId": "eni-1",
                "Groups": [{"GroupId": "sg-1", "GroupName": "ssh"}],
                "PrivateIpAddresses": [
                    {"Primary": True, "PrivateIpAddress": "10.0.0.5"},
                    {
                        "Primary": False,
                        "PrivateIpAddress": "10.0.0.6",
                        "Association": {"PublicIp": "54.1.2.3", "IpOwnerId": "111122223333"},
                    },
                ],
            }
        ],
    }
    inst = parse_instance(raw)
    r = by_resource(
        SSH_OPEN.check(snapshot([inst], [SecurityGroup("sg-1", rules=(rule(),))]), Settings())
    )[(ResourceType.INSTANCE, "i-1")]
    assert inst.public_ip == "54.1.2.3"
    assert r.severity == "CRITICAL" and r.reason.endswith("running with a public IPv4 address")


def test_a_group_only_on_an_interface_without_a_public_address_is_not_critical():
    from guardrail.reader import parse_instance

    # DescribeInstances: the public IP is on the primary interface, whose group admits 443 only;
    # the group admitting internet SSH sits on a second interface with private addresses only.
    def eni(eni_id, index, group, **extra):
        return {
            "NetworkInterfaceId": eni_id,
            "Attachment": {"DeviceIndex": index},
            "Groups": [{"GroupId": group, "GroupName": group}],
            **extra,
        }

    raw = {
        "InstanceId": "i-1",
        "State": {"Name": "running"},
        "PublicIpAddress": "3.3.3.3",
        "SecurityGroups": [{"GroupId": "sg-web", "GroupName": "sg-web"}],
        "NetworkInterfaces": [
            eni("eni-pub", 0, "sg-web", Association={"PublicIp": "3.3.3.3"}),
            eni("eni-priv", 1, "sg-ssh"),
        ],
    }
    web = SecurityGroup("sg-web", rules=(rule("tcp", 443, 443, rule_id="r1", group_id="sg-web"),))
    ssh = SecurityGroup("sg-ssh", rules=(rule(rule_id="r2", group_id="sg-ssh"),))
    results = by_resource(SSH_OPEN.check(snapshot([parse_instance(raw)], [web, ssh]), Settings()))
    instance = results[(ResourceType.INSTANCE, "i-1")]
    assert instance.severity == "HIGH" and instance.reason.endswith(
        "running, but no interface with these groups has a public IPv4 address (exposed once one does)"
    )
    assert results[(ResourceType.SECURITY_GROUP, "sg-ssh")].severity == "HIGH"
    # The same group on the public interface as well: reachable
    raw["NetworkInterfaces"][0]["Groups"].append({"GroupId": "sg-ssh", "GroupName": "sg-ssh"})
    results = by_resource(SSH_OPEN.check(snapshot([parse_instance(raw)], [web, ssh]), Settings()))
    assert results[(ResourceType.INSTANCE, "i-1")].severity == "CRITICAL"
    assert results[(ResourceType.SECURITY_GROUP, "sg-ssh")].severity == "CRITICAL"


def attached(eni_id: str, group: str, card: int = 0, **extra: Any) -> dict[str, Any]:
    """A DescribeInstances NetworkInterfaces item at device index 0 of network card `card`."""
    return {
        "NetworkInterfaceId": eni_id,
        "Attachment": {"DeviceIndex": 0, "NetworkCardIndex": card},
        "Groups": [{"GroupId": group}],
        **extra,
    }


def described(group: str, *interfaces: dict[str, Any], public: str | None = None):
    """A running instance as DescribeInstances gives it, `group` its primary interface's."""
    raw: dict[str, Any] = {
        "InstanceId": "i-1",
        "State": {"Name": "running"},
        "SecurityGroups": [{"GroupId": group}],
        "NetworkInterfaces": list(interfaces),
    }
    return {**raw, "PublicIpAddress": public} if public else raw


def test_device_index_0_of_a_second_network_card_is_not_the_primary_interface():
    """Instances with several network cards have a DeviceIndex 0 on each; only card 0's carries
    the instance's PublicIpAddress and SecurityGroups."""
    from guardrail.reader import parse_instance

    raw = described(
        "sg-web",
        attached("eni-card0", "sg-web", Association={"PublicIp": "3.3.3.3"}),
        attached("eni-card1", "sg-ssh", card=1),
        public="3.3.3.3",
    )
    ssh = SecurityGroup("sg-ssh", rules=(rule(group_id="sg-ssh"),))
    r = by_resource(SSH_OPEN.check(snapshot([parse_instance(raw)], [ssh]), Settings()))[
        (ResourceType.INSTANCE, "i-1")
    ]
    assert r.severity == "HIGH"


def test_without_a_per_interface_answer_an_instance_wide_public_ip_counts():
    from guardrail.reader import parse_instance

    # No attachment index and no association on the interfaces: whose is PublicIpAddress?
    raw = {
        "InstanceId": "i-1",
        "State": {"Name": "running"},
        "PublicIpAddress": "3.3.3.3",
        "NetworkInterfaces": [
            {"NetworkInterfaceId": "eni-a", "Groups": [{"GroupId": "sg-web"}]},
            {"NetworkInterfaceId": "eni-b", "Groups": [{"GroupId": "sg-ssh"}]},
        ],
    }
    ssh = SecurityGroup("sg-ssh", rules=(rule(group_id="sg-ssh"),))
    r = by_resource(SSH_OPEN.check(snapshot([parse_instance(raw)], [ssh]), Settings()))[
        (ResourceType.INSTANCE, "i-1")
    ]
    assert r.severity == "CRITICAL"  # never downgraded on a guess


def test_a_wavelength_carrier_ip_is_not_a_public_address():
    """EC2 gives a Wavelength instance's carrier IP as its PublicIpAddress too; the interface's
    association names it CarrierIp. Only the carrier's network reaches it: internet SSH there is
    HIGH (still FAILED), as the README says. An Elastic IP beside it still counts."""
    from guardrail.reader import parse_instance

    carrier = {"CarrierIp": "155.146.10.20", "IpOwnerId": "amazon"}
    primary = {"Primary": True, "Association": carrier}
    raw = described(
        "sg-ssh",
        attached("eni-wl", "sg-ssh", Association=carrier, PrivateIpAddresses=[primary]),
        public="155.146.10.20",
    )
    ssh = SecurityGroup("sg-ssh", rules=(rule(group_id="sg-ssh"),))
    instance = parse_instance(raw)
    r = by_resource(SSH_OPEN.check(snapshot([instance], [ssh]), Settings()))[
        (ResourceType.INSTANCE, "i-1")
    ]
    assert instance.public_ip is None
    assert r.status is Status.FAILED and r.severity == "HIGH"
    assert r.reason.endswith(
        "instance is running with no public IPv4 address (exposed once it gets one)"
    )
    raw["NetworkInterfaces"][0]["PrivateIpAddresses"].append(
        {"Primary": False, "Association": {"PublicIp": "3.3.3.3"}}
    )
    r = by_resource(SSH_OPEN.check(snapshot([parse_instance(raw)], [ssh]), Settings()))[
        (ResourceType.INSTANCE, "i-1")
    ]
    assert r.severity == "CRITICAL" and r.reason.endswith("a public IPv4 address")


@pytest.mark.parametrize(
    ("field", "value", "severity"),
    [
        # VPC IPAM's private IPv6: unique-local, no internet host reaches it
        ("Ipv6Addresses", {"Ipv6Address": "fd12:3456:789a:1::5"}, "HIGH"),
        ("Ipv6Prefixes", {"Ipv6Prefix": "fd12:3456:789a:1:5::/80"}, "HIGH"),
        ("Ipv6Addresses", {"Ipv6Address": "2600:1f18:abcd:1::5"}, "CRITICAL"),
        ("Ipv6Prefixes", {"Ipv6Prefix": "2600:1f18:abcd:1:5::/80"}, "CRITICAL"),
    ],
)
def test_only_a_global_ipv6_address_makes_ipv6_ssh_critical(field, value, severity):
    """A ::/0 rule reaches an instance over IPv6 only through a global unicast address
    (2000::/3); a unique-local one is private, as a private IPv4 address is."""
    from guardrail.reader import parse_instance

    raw = described("sg-ssh", attached("eni-1", "sg-ssh", **{field: [value]}))
    ssh = SecurityGroup("sg-ssh", rules=(rule(v4=None, v6="::/0", group_id="sg-ssh"),))
    results = by_resource(SSH_OPEN.check(snapshot([parse_instance(raw)], [ssh]), Settings()))
    instance = results[(ResourceType.INSTANCE, "i-1")]
    assert instance.status is Status.FAILED
    assert instance.severity == results[(ResourceType.SECURITY_GROUP, "sg-ssh")].severity
    assert instance.severity == severity
    if severity == "HIGH":
        assert instance.reason.endswith(
            "instance is running with no global IPv6 address (exposed once it gets one)"
        )
    # Known only instance-wide (no interfaces read): the same judgment
    known = {"Ipv6Addresses": "ipv6_addresses", "Ipv6Prefixes": "ipv6_prefixes"}[field]
    wide = Instance("i-1", "running", ("sg-ssh",), **{known: tuple(value.values())})
    assert SSH_OPEN.check(snapshot([wide], [ssh]), Settings())[0].severity == severity


@pytest.mark.parametrize(
    ("instance", "severity"),
    [
        # an address that cannot be read errs towards CRITICAL
        (Instance("i-1", "running", ("sg-ssh",), ipv6_addresses=("not-an-address",)), "CRITICAL"),
        # starting: not reachable yet, whatever its addresses
        (Instance("i-1", "pending", ("sg-ssh",), public_ip="3.3.3.3"), "HIGH"),
        (Instance("i-1", "pending", ("sg-ssh",), ipv6_addresses=("2600::1",)), "HIGH"),
    ],
)
def test_severity_of_an_unreadable_address_and_of_a_starting_instance(instance, severity):
    ssh = SecurityGroup(
        "sg-ssh",
        rules=(rule(group_id="sg-ssh"), rule(v4=None, v6="::/0", rule_id="r6", group_id="sg-ssh")),
    )
    r = by_resource(SSH_OPEN.check(snapshot([instance], [ssh]), Settings()))[
        (ResourceType.INSTANCE, "i-1")
    ]
    assert r.status is Status.FAILED and r.severity == severity


@pytest.mark.parametrize(
    ("instance", "says"),
    [
        (
            Instance("i-1", "stopped", ("sg-ssh",), public_ip="3.3.3.3"),
            "stopped (exposed once it runs with a public IPv4 address or a global IPv6 address)",
        ),
        (
            Instance("i-1", "running", ("sg-ssh",)),
            "running with no public IPv4 address and no global IPv6 address (exposed once it "
            "gets one)",
        ),
    ],
)
def test_a_high_finding_says_what_would_expose_the_instance_not_that_it_is_unreachable(
    instance, says
):
    """HIGH is open SSH not reachable this minute: the finding says what would expose it (it
    said "not reachable right now", which reads as safe, and people discounted it)."""
    ssh = SecurityGroup(
        "sg-ssh",
        rules=(rule(group_id="sg-ssh"), rule(v4=None, v6="::/0", rule_id="r6", group_id="sg-ssh")),
    )
    r = by_resource(SSH_OPEN.check(snapshot([instance], [ssh]), Settings()))[
        (ResourceType.INSTANCE, "i-1")
    ]
    assert r.severity == "HIGH" and r.reason.endswith(f"instance is {says}")


def test_group_used_only_by_terminated_instances_is_not_reported():
    bad = SecurityGroup("sg-bad", rules=(rule(group_id="sg-bad"),))
    inst = Instance("i-1", "terminated", ("sg-bad",))
    results = by_resource(SSH_OPEN.check(snapshot([inst], [bad]), Settings()))
    assert (ResourceType.SECURITY_GROUP, "sg-bad") not in results


def test_private_udp_private_prefix_list_and_reference_rules_pass():
    rules = (
        rule("udp", rule_id="a", group_id="sg-1"),
        rule(v4="10.0.0.0/8", rule_id="b", group_id="sg-1"),
        rule(v4=None, prefix_list_id="pl-private", rule_id="c", group_id="sg-1"),
        rule(v4=None, referenced_group_id="sg-2", rule_id="d", group_id="sg-1"),
        # UDP 22 and TCP 443 through a list that holds the internet are not internet SSH either
        rule("udp", v4=None, prefix_list_id="pl-world", rule_id="e", group_id="sg-1"),
        rule("tcp", 443, 443, v4=None, prefix_list_id="pl-world", rule_id="f", group_id="sg-1"),
    )
    inst = Instance("i-1", "running", ("sg-1",), public_ip="3.3.3.3")
    read = replace(
        snapshot([inst], [SecurityGroup("sg-1", rules=rules)]),
        prefix_lists={"pl-private": (), "pl-world": ("0.0.0.0/0",)},
    )
    assert {r.status for r in SSH_OPEN.check(read, Settings())} == {Status.PASSED}


def listed_snapshot(entries, *, public_ip="3.3.3.3", ipv6=()) -> AccountSnapshot:
    """An instance behind a group whose TCP 22 rule references prefix list pl-1, and a CIDR rule
    for TCP 443; the list holds `entries` (its internet CIDRs, as the reader keeps them)."""
    group = SecurityGroup(
        "sg-1",
        rules=(
            rule(v4=None, prefix_list_id="pl-1", rule_id="sgr-pl", group_id="sg-1"),
            rule("tcp", 443, 443, rule_id="sgr-web", group_id="sg-1"),
        ),
    )
    inst = Instance("i-1", "running", ("sg-1",), public_ip=public_ip, ipv6_addresses=ipv6)
    return replace(snapshot([inst], [group]), prefix_lists={"pl-1": entries})


def test_a_prefix_list_holding_the_internet_opens_ssh_through_its_rule():
    results = by_resource(SSH_OPEN.check(listed_snapshot(("0.0.0.0/0", "::/0")), Settings()))
    inst, group = (
        results[(ResourceType.INSTANCE, "i-1")],
        results[(ResourceType.SECURITY_GROUP, "sg-1")],
    )
    assert (inst.status, inst.severity) == (Status.FAILED, "CRITICAL")
    assert (group.status, group.severity) == (Status.FAILED, "CRITICAL")
    # The rule once, however many internet entries its list holds; the list named beside them.
    assert inst.details["rule_ids"] == group.details["rule_ids"] == ["sgr-pl"]
    assert "0.0.0.0/0 (in prefix list pl-1)" in group.reason
    assert "::/0 (in prefix list pl-1)" in group.reason


@pytest.mark.parametrize(
    ("entries", "public_ip", "ipv6", "severity"),
    [
        (("::/0",), "3.3.3.3", (), "HIGH"),  # the list admits IPv6 only; no IPv6 address
        (("::/0",), None, ("2600:1f18::1",), "CRITICAL"),
        (("0.0.0.0/0",), None, ("2600:1f18::1",), "HIGH"),
        (("2000::/3",), None, ("2600:1f18::1",), "CRITICAL"),  # every global IPv6 address
    ],
)
def test_a_prefix_lists_entry_is_exposure_over_its_own_address_family(
    entries, public_ip, ipv6, severity
):
    read = listed_snapshot(entries, public_ip=public_ip, ipv6=ipv6)
    r = by_resource(SSH_OPEN.check(read, Settings()))[(ResourceType.INSTANCE, "i-1")]
    assert (r.status, r.severity) == (Status.FAILED, severity)


@pytest.mark.parametrize("lists", [{"pl-1": ()}, {}], ids=["holds-no-internet", "not-read"])
def test_a_prefix_list_without_an_internet_entry_passes(lists):
    read = replace(listed_snapshot(()), prefix_lists=lists)
    assert {r.status for r in SSH_OPEN.check(read, Settings())} == {Status.PASSED}


@pytest.mark.parametrize(
    ("r", "kept", "note"),
    [
        (rule("tcp", 22, 22), [], ""),
        (rule("tcp", 0, 65535), [("tcp", 0, 21), ("tcp", 23, 65535)], ""),
        (rule("tcp", 22, 80), [("tcp", 23, 80)], ""),
        (rule("tcp", 20, 22), [("tcp", 20, 21)], ""),
        # one port either side of 22: each is kept (telnet, FTP)
        (rule("tcp", 22, 23), [("tcp", 23, 23)], ""),
        (rule("tcp", 21, 22), [("tcp", 21, 21)], ""),
        (rule("tcp", 21, 23), [("tcp", 21, 21), ("tcp", 23, 23)], ""),
        (rule("tcp", 0, 22), [("tcp", 0, 21)], ""),
        (
            rule("-1", -1, -1),
            [("tcp", 0, 21), ("tcp", 23, 65535), ("udp", 0, 65535), ("icmp", -1, -1)],
            "other IP protocols",
        ),
        (
            rule("-1", None, None, v6="::/0"),
            [("tcp", 0, 21), ("tcp", 23, 65535), ("udp", 0, 65535), ("icmpv6", -1, -1)],
            "other IP protocols",
        ),
    ],
)
def test_fix_plan_keeps_every_other_port(r, kept, note):
    ranges, why = remaining_access(r)
    assert [(p.protocol, p.from_port, p.to_port) for p in ranges] == kept
    assert (note in why) if note else why == ""


def test_rule_tags_are_read_and_carried_to_the_readded_rules_within_ec2s_limit():
    from guardrail.controls.ssh_open import GUARDRAIL_TAG, RUN_TAG, describe_rule, readd_tags

    raw = {
        "SecurityGroupRuleId": "sgr-1",
        "GroupId": "sg-1",
        "IpProtocol": "tcp",
        "FromPort": 0,
        "ToPort": 65535,
        "CidrIpv4": "0.0.0.0/0",
        "Tags": [
            {"Key": "owner", "Value": "team-a"},
            {"Key": "aws:cloudformation:stack-name", "Value": "s"},
        ],
    }
    r = SecurityGroupRule.from_api(raw)
    assert describe_rule(r)["Tags"] == {"owner": "team-a", "aws:cloudformation:stack-name": "s"}
    tags, dropped = readd_tags(r, "run1")
    # aws: keys are EC2's own (they cannot be set); ours name the rule replaced and the run
    assert tags == [
        {"Key": "owner", "Value": "team-a"},
        {"Key": GUARDRAIL_TAG, "Value": "sgr-1"},
        {"Key": RUN_TAG, "Value": "run1"},
    ]
    assert dropped == []
    many = rule(tags=tuple((f"k{n:02}", "v") for n in range(50)))
    tags, dropped = readd_tags(many, "run1")
    # Room is left for runs' relied-on marks (5): 43 of the owner's 50, plus our two
    assert len(tags) == 45 and [t["Key"] for t in tags[-2:]] == [GUARDRAIL_TAG, RUN_TAG]
    assert dropped == [f"k{n}" for n in range(43, 50)]


def test_readded_rule_keeps_source_and_description():
    r = rule("tcp", 0, 65535, v6="::/0", description="legacy admin range")
    ports, _ = remaining_access(r)
    permission = ip_permission(r, ports[0])
    assert permission["Ipv6Ranges"] == [{"CidrIpv6": "::/0", "Description": "legacy admin range"}]
    assert "IpRanges" not in permission


# --- property: applying the fix plan never widens what a group admits --------------------------

PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6", "-1", "6", "17", "50")
SOURCES = ("0.0.0.0/0", "::/0", "10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32")


def _admits(r: SecurityGroupRule, protocol: str, port: int, source: str) -> bool:
    """Reference semantics of one ingress rule for a probe (protocol name, port, source address)."""
    names = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}
    rp = names.get(r.protocol, r.protocol)
    cidr = r.cidr_ipv4 or r.cidr_ipv6
    if cidr is None:
        return False
    net = ipaddress.ip_network(cidr)
    addr = ipaddress.ip_address(source)
    if addr.version != net.version or addr not in net:
        return False
    if rp == "-1":
        return True
    if rp != protocol:
        return False
    if rp in ("tcp", "udp"):
        low = 0 if r.from_port is None or r.from_port < 0 else r.from_port
        high = 65535 if r.to_port is None or r.to_port < 0 else r.to_port
        return low <= port <= high
    return rp in ("icmp", "icmpv6")


@st.composite
def rules(draw):
    protocol = draw(st.sampled_from(PROTOCOLS))
    # The edges around 22 as often as anywhere else: a uniform draw never starts at 21 or 23.
    edges = st.sampled_from([0, 1, 21, 22, 23, 65535])
    low = draw(edges | st.integers(0, 65535))
    high = draw(edges.filter(lambda p: p >= low) | st.integers(low, 65535))
    if protocol not in ("tcp", "udp", "6", "17"):
        low = high = -1
    source = draw(st.sampled_from(SOURCES))
    v6 = source if ":" in source else None
    return rule(
        protocol,
        low,
        high,
        v4=None if v6 else source,
        v6=v6,
        rule_id=f"sgr-{draw(st.integers(0, 10**6))}",
    )


PROBES = [
    (p, port, src)
    for p in ("tcp", "udp", "icmp", "icmpv6", "esp")
    for port in (0, 1, 21, 22, 23, 80, 443, 1024, 65535)
    for src in ("8.8.8.8", "10.1.2.3", "192.168.1.9", "2001:db8::1", "2600::1")
]


@given(st.lists(rules(), min_size=1, max_size=6))
def test_fix_never_widens_and_closes_internet_ssh(group_rules):
    after = []
    for r in group_rules:
        if not admits_internet_ssh(r):
            after.append(r)
            continue
        ports, _ = remaining_access(r)
        after += [
            rule(p.protocol, p.from_port, p.to_port, v4=r.cidr_ipv4, v6=r.cidr_ipv6) for p in ports
        ]
    for probe in PROBES:
        if any(_admits(r, *probe) for r in after):
            assert any(_admits(r, *probe) for r in group_rules), f"fix widened access to {probe}"
    assert not any(admits_internet_ssh(r) for r in after)
    # and nothing but internet tcp/22 (and exotic protocols of all-traffic rules) is lost
    for probe in PROBES:
        protocol, port, source = probe
        v6 = ":" in source
        if protocol == "esp" or (protocol == "tcp" and port == 22):
            continue
        if (protocol == "icmpv6" and not v6) or (protocol == "icmp" and v6):
            continue  # no such flow: ICMPv6 rides IPv6 only, ICMP IPv4 only
        if any(_admits(r, *probe) for r in group_rules):
            assert any(_admits(r, *probe) for r in after), f"fix broke {probe}"


def test_the_lockout_guard_counts_starting_instances():
    from guardrail.controls.ssh_open import ssh_exposed_running

    bad = SecurityGroup("sg-bad", rules=(rule(group_id="sg-bad"),))
    instances = [
        Instance("i-new", "pending", ("sg-bad",)),  # RunInstances arrives while pending
        Instance("i-up", "running", ("sg-bad",)),
        Instance("i-off", "stopped", ("sg-bad",)),
    ]
    exposed = ssh_exposed_running(snapshot(instances, [bad]), "sg-bad")
    assert sorted(i.instance_id for i in exposed) == ["i-new", "i-up"]


def test_which_rules_a_revoke_missed_is_decided_by_the_revoked_ids_when_ec2_lists_them():
    """Default VPC: EC2 revokes what matches, lists the rest as UnknownIpPermissions (in its own
    spelling) and the revoked rules by id. Two spellings of one source (0.0.0.0/0 and 1.2.3.4/0)
    must not make the revoked rule count as missed: its re-adds would be undone, closing ports."""
    from guardrail.controls.ssh_open import SSH_OPEN

    revoked = SecurityGroupRule("sgr-a", "sg-1", "tcp", 0, 65535, cidr_ipv4="0.0.0.0/0")
    changed = SecurityGroupRule("sgr-b", "sg-1", "tcp", 0, 65535, cidr_ipv4="1.2.3.4/0")

    class Ec2:
        def revoke_security_group_ingress(self, GroupId, IpPermissions):
            return {
                "Return": True,
                "UnknownIpPermissions": [IpPermissions[1]],
                "RevokedSecurityGroupRules": [{"SecurityGroupRuleId": "sgr-a"}],
            }

    assert SSH_OPEN._revoke(Ec2(), "sg-1", [revoked, changed]) == ([changed], [])


@pytest.mark.parametrize(
    ("now", "bucket"),
    [
        (rule(v4=None, prefix_list_id="pl-1"), "still_open"),  # its list is not read here
        (rule("udp", v4=None, prefix_list_id="pl-1"), "closed"),
        (rule(v4="10.0.0.0/8"), "closed"),
        (rule(v6="::/0"), "still_open"),
        (None, "gone"),
    ],
)
def test_a_rule_changed_meanwhile_counts_closed_only_when_it_surely_is(now, bucket):
    """A rule the revoke missed because it changed: changed to a prefix-list source, it may
    admit the internet through the list, so it is never counted closed (which would mark the
    findings PASSED and RESOLVED while SSH may still be open)."""
    gone, closed, still_open = SSH_OPEN._classify([rule()], [now] if now else [])
    found = {"gone": gone, "closed": closed, "still_open": still_open}
    assert found[bucket] == ["sgr-1"] and sum(map(len, found.values())) == 1


def test_ec2s_revoked_rules_count_by_id_or_by_content_exactly_as_written():
    """EC2 lists each revoked rule with its content. A rule deleted and added again as it was
    (a new id) between the read and the revoke went with it: not missed. Another spelling of
    the same source (1.2.3.4/0 for 0.0.0.0/0) is another rule: still missed."""
    from guardrail.controls.ssh_open import SSH_OPEN

    read = SecurityGroupRule("sgr-old", "sg-1", "tcp", 0, 65535, cidr_ipv4="0.0.0.0/0")
    other = SecurityGroupRule("sgr-b", "sg-1", "tcp", 0, 65535, cidr_ipv4="1.2.3.4/0")

    class Ec2:
        def revoke_security_group_ingress(self, GroupId, IpPermissions):
            return {
                "Return": True,
                "UnknownIpPermissions": [IpPermissions[1]],
                "RevokedSecurityGroupRules": [
                    {
                        "SecurityGroupRuleId": "sgr-new",  # the same rule, added again
                        "GroupId": "sg-1",
                        "IsEgress": False,
                        "IpProtocol": "tcp",
                        "FromPort": 0,
                        "ToPort": 65535,
                        "CidrIpv4": "0.0.0.0/0",
                    }
                ],
            }

    assert SSH_OPEN._revoke(Ec2(), "sg-1", [read, other]) == ([other], [])


def test_a_default_vpcs_answer_to_a_retried_revoke_counts_the_lost_try_as_the_fixs():
    """Default VPC: a retry after a read timeout finds nothing to revoke and says so in
    UnknownIpPermissions, not as an error. The timed-out try revoked the rule (it is gone from
    the group): the fix's own revoke, not a missed rule whose re-adds must go again."""
    from botocore.exceptions import ReadTimeoutError
    from guardrail.controls.ssh_open import SSH_OPEN

    read = SecurityGroupRule("sgr-a", "sg-1", "tcp", 0, 65535, cidr_ipv4="0.0.0.0/0")

    class Events:
        handlers: list = []

        def register(self, event, handler):
            self.handlers.append(handler)

        def unregister(self, event, handler):
            self.handlers.remove(handler)

    class Ec2:
        meta = type("Meta", (), {"events": Events()})()

        def revoke_security_group_ingress(self, GroupId, IpPermissions):
            for handler in self.meta.events.handlers:  # botocore's view of the first try
                handler(caught_exception=ReadTimeoutError(endpoint_url="https://ec2"))
            return {"Return": True, "UnknownIpPermissions": IpPermissions}

        def get_paginator(self, operation):
            assert operation == "describe_security_group_rules"
            return type("Rules", (), {"paginate": lambda _, **__: [{"SecurityGroupRules": []}]})()

    assert SSH_OPEN._revoke(Ec2(), "sg-1", [read]) == ([], [read])
    assert Ec2.meta.events.handlers == []  # the watch ends with the call


@pytest.mark.parametrize(("v6", "cidr"), [(False, "0.0.0.0/0"), (True, "::/0")])
def test_narrowing_in_place_sends_the_rules_description(v6, cidr):
    """ModifySecurityGroupRules replaces the whole rule: a request without Description clears
    the owner's (moto keeps it, so only the request shows this)."""
    ranges = "Ipv6Ranges" if v6 else "IpRanges"
    key = "CidrIpv6" if v6 else "CidrIp"
    permission = {
        "IpProtocol": "tcp",
        "FromPort": 23,
        "ToPort": 65535,
        ranges: [{key: cidr, "Description": "web"}],
    }
    assert rule_request(permission) == {
        "IpProtocol": "tcp",
        "FromPort": 23,
        "ToPort": 65535,
        ("CidrIpv6" if v6 else "CidrIpv4"): cidr,
        "Description": "web",
    }


def test_setting_an_every_protocol_rule_back_gives_its_ports_as_minus_1():
    """ModifySecurityGroupRules needs FromPort and ToPort even for protocol -1 (an IpPermission
    of it has none): the undo of a rule narrowed in place from -1 sets it back as -1/-1."""
    permission = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    assert rule_request(permission) == {
        "IpProtocol": "-1",
        "FromPort": -1,
        "ToPort": -1,
        "CidrIpv4": "0.0.0.0/0",
    }
