"""The benchmark fleet: many instances over a realistic handful of groups and profiles."""

from __future__ import annotations

from emulator.seed import FAILED, LOGGING, ROLE, SSH, seed_fleet
from tests.e2e.conftest import REGION


def test_fleet_spreads_over_a_handful_of_profiles_and_groups(managed_policies, emulated):
    seeded = seed_fleet(emulated, REGION, 200)
    instances = {
        i["InstanceId"]: i
        for page in emulated.client("ec2").get_paginator("describe_instances").paginate()
        for r in page["Reservations"]
        for i in r["Instances"]
    }
    assert len(instances) == 200 == len(seeded.instance_ids)
    profiles = {
        i.get("IamInstanceProfile", {}).get("Arn", "").rsplit("/", 1)[-1]
        for i in instances.values()
    }
    assert profiles - {""} == {
        "ssm-guardrail-instance",
        "app-core",
        "app-legacy",
        "app-hardened",
        "app-empty",
    }
    groups = {g["GroupId"] for i in instances.values() for g in i["SecurityGroups"]}
    assert 5 <= len(groups) <= 10
    assert (
        seeded.expected(SSH, FAILED)
        and seeded.expected(ROLE, FAILED)
        and seeded.expected(LOGGING, FAILED)
    )
