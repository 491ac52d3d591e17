"""The drift scan's role goes without the reads only an event's targeted read makes.

Which reads those are is declared (`Permission.events_only`) and checked twice: on the
synthesized template (which role has what) and at run time, counting the calls a full drift scan
and an IAM event's targeted read make in a seeded emulated account.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import boto3
import pytest
from guardrail.clients import AwsClients
from guardrail.engine import Guardrail
from guardrail.publisher import FindingPublisher
from guardrail.scope import Scope
from guardrail.settings import Settings
from handlers import drift_scan

from emulator.calls import CallCounter
from emulator.seed import LOGGING, ROLE, Seeded, seed_account
from stacks.functions import DRIFT_SCAN, ON_CHANGE

from .conftest import MAIN, Synth
from .policy_walker import granted_by_handler

pytestmark = pytest.mark.infra

REGION = "us-east-1"
EVENT_ONLY_READS = {
    "iam:ListEntitiesForPolicy",
    "iam:ListInstanceProfilesForRole",
    "iam:ListInstanceProfiles",
    # A prefix list an event changed: whether the change completed, which groups use it.
    "ec2:DescribeManagedPrefixLists",
    "ec2:GetManagedPrefixListAssociations",
}


def _grants(synth: Synth) -> tuple[set[str], set[str]]:
    """The actions the drift-scan and the on-change roles are granted (every control enforces)."""
    granted = granted_by_handler(synth.templates[MAIN])
    return granted[DRIFT_SCAN.handler], granted[ON_CHANGE.handler]


def test_only_the_on_change_role_gets_the_event_only_reads(synth: Synth) -> None:
    drift, on_change = _grants(synth)
    assert not drift & EVENT_ONLY_READS
    # What a full scan reads for the same control stays.
    assert {
        "iam:ListAttachedRolePolicies",
        "iam:GetInstanceProfile",
        "iam:SimulatePrincipalPolicy",
        "ec2:GetManagedPrefixListEntries",
    } <= drift
    assert on_change >= EVENT_ONLY_READS
    assert drift - on_change == set()


@pytest.fixture(scope="module")
def seeded() -> Iterator[tuple[boto3.Session, Seeded]]:
    """The demo account (every condition and its twin), in-process."""
    from moto import mock_aws

    from emulator.extension import install

    install()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")  # AmazonSSMManagedInstanceCore
        with mock_aws():
            session = boto3.Session(region_name=REGION)
            yield session, seed_account(session, REGION, instances=64, explicit_deny=True)


def _counted(session: boto3.Session) -> tuple[CallCounter, AwsClients]:
    counter = CallCounter(session)  # before the clients: they copy the session's handlers
    return counter, AwsClients(session=session, region=REGION)


def test_a_drift_scan_calls_only_what_the_drift_scan_role_is_granted(
    synth: Synth, seeded: tuple[boto3.Session, Seeded]
) -> None:
    session, account = seeded
    counter, clients = _counted(session)
    # Enforce, with every optional read on (DHMC, the SSH lockout guard), and publishing.
    settings = replace(
        Settings.from_env(account.settings_env()),
        mode="enforce",
        accept_dhmc=True,
        ssh_require_ssm_online=True,
    )
    guardrail = Guardrail(
        clients,
        settings,
        account_id=account.account_id,
        publisher=FindingPublisher(clients.securityhub),
    )

    result = drift_scan.handle({}, guardrail)

    called = set(counter.by_operation())
    # The scan read and fixed what the seeded account holds: the count is not vacuous.
    assert result["fixes"].get("applied", 0) > 0, result
    assert {
        "ec2:DescribeInstances",
        "iam:GetInstanceProfile",
        "iam:ListAttachedRolePolicies",
        "iam:SimulatePrincipalPolicy",
        "ssm:DescribeInstanceInformation",
        "ec2:AssociateIamInstanceProfile",
        "iam:AttachRolePolicy",
        "securityhub:BatchImportFindings",
    } <= called
    drift, _ = _grants(synth)
    assert called - drift == set(), "the drift scan calls what its role is not granted"


@pytest.mark.parametrize("one_by_one", [10, 0])
def test_an_iam_events_read_makes_the_calls_only_the_on_change_role_has(
    synth: Synth,
    seeded: tuple[boto3.Session, Seeded],
    monkeypatch: pytest.MonkeyPatch,
    one_by_one: int,
) -> None:
    """A new default version of the policy hardened roles use (SetDefaultPolicyVersion): its
    roles, then their profiles one call a role, or (more roles than ROLES_ONE_BY_ONE) the
    account's profiles listed instead."""
    import guardrail.reader

    monkeypatch.setattr(guardrail.reader, "ROLES_ONE_BY_ONE", one_by_one)
    session, account = seeded
    counter, clients = _counted(session)
    scope = Scope(
        policy_arns=frozenset({account.equivalent_policy_arn}),
        controls=frozenset({ROLE, LOGGING}),
    )
    settings = Settings.from_env(account.settings_env())

    report = Guardrail(clients, settings, account_id=account.account_id).run(scope)

    hardened = set(account.instances["twin-role-equivalent"])
    assert hardened <= {e.result.resource_id for e in report.evaluations}
    drift, on_change = _grants(synth)
    called = set(counter.by_operation())
    lists = "iam:ListInstanceProfilesForRole" if one_by_one else "iam:ListInstanceProfiles"
    assert called - drift == {"iam:ListEntitiesForPolicy", lists}
    assert called <= on_change
