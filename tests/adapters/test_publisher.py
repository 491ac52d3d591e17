"""FindingPublisher against moto (imports) and botocore Stubber (answers moto cannot give)."""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber
from guardrail.controls.ssh_open import SSH_OPEN
from guardrail.findings import build_finding
from guardrail.model import ResourceType, Result, Status
from guardrail.publisher import FindingPublisher
from moto import mock_aws

ACCOUNT = "123456789012"
REGION = "us-east-1"
NOW = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
NOTE = "ssm-guardrail fixed: revoke internet SSH (sg-1)"


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


class FakeClock:
    """monotonic/sleep pair: sleeping advances the clock, nobody waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def findings(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        build_finding(
            Result(SSH_OPEN.id, ResourceType.INSTANCE, f"i-{n:017x}", Status.FAILED, "HIGH",
                   "TCP 22 open to the internet through sg-1", account_id=ACCOUNT, region=REGION),
            SSH_OPEN,
            generated_at=NOW,
        )
        for n in range(start, start + count)
    ]  # fmt: skip


def ids(batch: list[dict[str, Any]]) -> list[str]:
    return [f["Id"] for f in batch]


def imported(count: int, failed: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """A BatchImportFindings answer; `failed` is (Id, ErrorCode) pairs."""
    return {
        "FailedCount": len(failed),
        "SuccessCount": count - len(failed),
        "FailedFindings": [
            {"Id": i, "ErrorCode": code, "ErrorMessage": f"{code} for {i}"} for i, code in failed
        ],
    }


def identifiers(batch: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"Id": f["Id"], "ProductArn": f["ProductArn"]} for f in batch]


def update_request(batch: list[dict[str, Any]], note: str = NOTE) -> dict[str, Any]:
    return {
        "FindingIdentifiers": identifiers(batch),
        "Workflow": {"Status": "RESOLVED"},
        "Note": {"Text": note, "UpdatedBy": "ssm-guardrail"},
    }


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("securityhub", region_name=REGION)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_250_findings_go_in_three_calls_and_all_are_in_security_hub(clock: FakeClock) -> None:
    with mock_aws():
        client = boto3.client("securityhub", region_name=REGION)
        client.enable_security_hub()
        sent: list[int] = []
        client.meta.events.register(
            "provide-client-params.securityhub.BatchImportFindings",
            lambda params, **_: sent.append(len(params["Findings"])),
        )
        batch = findings(250)

        summary = FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic).publish(
            batch
        )

        stored = [
            f["Id"]
            for page in client.get_paginator("get_findings").paginate(MaxResults=100)
            for f in page["Findings"]
        ]
    assert sent == [100, 100, 50]
    assert summary.ok and summary.imported == 250 and summary.calls == 3
    assert sorted(stored) == sorted(ids(batch))


def test_only_the_rejected_findings_are_retried(stubbed: Any, clock: FakeClock) -> None:
    client, stubber = stubbed
    batch = findings(3)
    stubber.add_response(
        "batch_import_findings", imported(3, [(batch[1]["Id"], "InternalFailure")]),
        {"Findings": batch},
    )  # fmt: skip
    stubber.add_response("batch_import_findings", imported(1), {"Findings": [batch[1]]})

    summary = FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic).publish(batch)

    assert summary.ok and summary.imported == 3 and summary.calls == 2
    assert len(clock.sleeps) == 1 and clock.sleeps[0] > 0  # backed off before the retry


def test_findings_still_rejected_after_max_attempts_are_reported_and_logged(
    stubbed: Any, clock: FakeClock
) -> None:
    client, stubber = stubbed
    batch = findings(3)
    bad = batch[2]["Id"]
    stubber.add_response(
        "batch_import_findings", imported(3, [(bad, "InternalFailure")]), {"Findings": batch}
    )
    for _ in range(2):
        stubber.add_response(
            "batch_import_findings",
            imported(1, [(bad, "InternalFailure")]),
            {"Findings": [batch[2]]},
        )
    publisher = FindingPublisher(
        client, sleep=clock.sleep, monotonic=clock.monotonic, max_attempts=3
    )

    # Read at the publisher's logger: in Lambda the engine's loggers write through the
    # handlers' Powertools logger and do not propagate to the root, where caplog listens.
    captured = logging.handlers.BufferingHandler(100)
    publisher_log = logging.getLogger("guardrail.publisher")
    publisher_log.addHandler(captured)
    try:
        summary = publisher.publish(batch)
    finally:
        publisher_log.removeHandler(captured)

    assert summary.imported == 2 and not summary.ok
    assert summary.failed == [
        {"Id": bad, "ErrorCode": "InternalFailure", "ErrorMessage": f"InternalFailure for {bad}"}
    ]
    logged = [r for r in captured.buffer if r.getMessage() == "findings not imported"]
    assert logged and logged[0].error_codes == {"InternalFailure": 1} and logged[0].ids == [bad]


def test_a_failed_count_the_listed_failures_do_not_explain_is_reported(
    stubbed: Any, clock: FakeClock
) -> None:
    """An answer counting a failure it does not list (FailedCount 1, no FailedFindings): which
    finding was lost cannot be told, but the summary must not claim everything went in, and no
    finding of that batch is marked RESOLVED on the strength of it."""
    client, stubber = stubbed
    batch = findings(3)
    stubber.add_response(
        "batch_import_findings",
        {"FailedCount": 1, "SuccessCount": 2, "FailedFindings": []},
        {"Findings": batch},
    )

    fixed = batch[0]["Id"]

    summary = FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic).publish(
        batch, resolutions={fixed: "fixed"}
    )

    assert not summary.ok and not summary.fatal and summary.calls == 1
    assert summary.errors == [
        "BatchImportFindings reported FailedCount 1 but listed 0 FailedFindings"
    ]
    # The lost one may be the fixed finding's PASSED import: resolving would mark the stored
    # FAILED finding RESOLVED. Not resolved (no BatchUpdateFindings), and said so.
    assert summary.resolved == 0
    assert [(u["Id"], u["ErrorCode"]) for u in summary.unresolved] == [(fixed, "ImportUnconfirmed")]


def test_a_finding_refused_for_what_it_is_is_not_resent(stubbed: Any, clock: FakeClock) -> None:
    """InvalidInput ("Finding does not adhere to Amazon Finding Format") is the same answer
    every time: resending would only wait. At 150 batches of 4 retries and 7.5 s of backoff each,
    one malformed field in every finding would outlast the drift scan's 15 minutes."""
    client, stubber = stubbed
    batch = findings(3)
    bad = batch[0]["Id"]
    stubber.add_response(
        "batch_import_findings", imported(3, [(bad, "InvalidInput")]), {"Findings": batch}
    )

    summary = FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic).publish(batch)

    assert summary.calls == 1 and clock.sleeps == []
    assert summary.imported == 2 and [f["Id"] for f in summary.failed] == [bad]
    assert summary.failed[0]["ErrorCode"] == "InvalidInput"


def test_a_findings_size_is_what_botocore_puts_on_the_wire() -> None:
    """The 6 MB per call and 240 KB per finding limits apply to the body botocore sends: JSON
    with ", " and ": " separators and non-ASCII escaped, 5-8% more than compact JSON."""
    from botocore.serialize import create_serializer
    from guardrail.publisher import finding_size

    client = boto3.client("securityhub", region_name=REGION)
    finding = findings(1)[0] | {"Title": "groupe ouvert à tous, port 22: «ssh»"}
    model = client.meta.service_model.operation_model("BatchImportFindings")
    body = create_serializer("rest-json").serialize_to_request({"Findings": [finding]}, model)
    assert len(body["body"]) == len(b'{"Findings": []}') + finding_size(finding)


@pytest.mark.parametrize(
    "code", ["TooManyRequestsException", "ThrottlingException", "LimitExceededException"]
)
def test_throttled_calls_are_retried_after_sleeping(
    stubbed: Any, clock: FakeClock, code: str
) -> None:
    client, stubber = stubbed
    batch = findings(2)
    stubber.add_client_error("batch_import_findings", code, "slow down", 429)
    stubber.add_client_error("batch_import_findings", code, "slow down", 429)
    stubber.add_response("batch_import_findings", imported(2), {"Findings": batch})

    summary = FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic).publish(batch)

    assert summary.ok and summary.imported == 2 and summary.calls == 3
    assert len(clock.sleeps) == 2 and clock.sleeps[1] > clock.sleeps[0] > 0  # exponential
    assert summary.errors == []


def test_throttling_that_never_ends_fails_the_findings_without_raising(
    stubbed: Any, clock: FakeClock
) -> None:
    client, stubber = stubbed
    batch = findings(2)
    for _ in range(2):
        stubber.add_client_error("batch_import_findings", "TooManyRequestsException", "slow", 429)
    publisher = FindingPublisher(
        client, sleep=clock.sleep, monotonic=clock.monotonic, max_attempts=2
    )

    summary = publisher.publish(batch)

    assert [f["ErrorCode"] for f in summary.failed] == ["TooManyRequestsException"] * 2
    assert sorted(f["Id"] for f in summary.failed) == sorted(ids(batch))


def test_security_hub_not_enabled_is_reported_clearly_and_nothing_raises(
    stubbed: Any, clock: FakeClock
) -> None:
    client, stubber = stubbed
    batch = findings(150)
    stubber.add_client_error(
        "batch_import_findings",
        "InvalidAccessException",
        f"Account {ACCOUNT} is not subscribed to AWS Security Hub",
        401,
    )  # one call only: the second batch and the resolution are not attempted

    summary = FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic).publish(
        batch, {batch[0]["Id"]: NOTE}
    )

    assert len(summary.errors) == 1
    assert "Security Hub is not enabled in us-east-1" in summary.errors[0]
    assert summary.imported == 0 and summary.calls == 1
    assert len(summary.failed) == 150
    assert {f["ErrorCode"] for f in summary.failed} == {"InvalidAccessException"}
    assert summary.unresolved == [
        {"Id": batch[0]["Id"], "ErrorCode": "ImportFailed",
         "ErrorMessage": "not resolved because its import failed"}
    ]  # fmt: skip


def test_every_entry_refused_for_access_is_as_fatal_as_the_call_refused(
    stubbed: Any, clock: FakeClock
) -> None:
    """Security Hub not enabled can also come back entry by entry (InvalidAccess in
    FailedFindings, HTTP 200): reported as not enabled, the next batch is not sent, and the
    summary is fatal (the CLI exits 2) instead of a warning about rejected findings."""
    client, stubber = stubbed
    batch = findings(150)
    refused = [(f["Id"], "InvalidAccess") for f in batch[:100]]
    stubber.add_response("batch_import_findings", imported(100, refused), {"Findings": batch[:100]})

    summary = FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic).publish(batch)

    assert summary.fatal and summary.imported == 0 and summary.calls == 1
    assert len(summary.errors) == 1 and "Security Hub is not enabled" in summary.errors[0]
    assert len(summary.failed) == 150


@pytest.mark.parametrize("others", ["accepted", "InvalidInput"])
def test_some_entries_refused_for_access_do_not_stop_the_next_batches(
    stubbed: Any, clock: FakeClock, others: str
) -> None:
    """InvalidAccess on some entries only is those findings' failure, not proof that Security
    Hub is off (which refuses every entry of every batch): the next batch is still imported and
    the run is not fatal."""
    client, stubber = stubbed
    batch = findings(150)
    bad = batch[0]["Id"]
    refused = [(bad, "InvalidAccess")]
    if others != "accepted":
        refused += [(f["Id"], others) for f in batch[1:100]]
    stubber.add_response("batch_import_findings", imported(100, refused), {"Findings": batch[:100]})
    stubber.add_response("batch_import_findings", imported(50), {"Findings": batch[100:]})

    summary = FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic).publish(batch)

    assert not summary.fatal and summary.errors == [] and summary.calls == 2
    assert summary.imported == 150 - len(refused)
    assert summary.failed[0] == {
        "Id": bad, "ErrorCode": "InvalidAccess", "ErrorMessage": f"InvalidAccess for {bad}"
    }  # fmt: skip
    assert len(summary.failed) == len(refused)


def test_access_denied_is_recorded_not_raised(stubbed: Any, clock: FakeClock) -> None:
    client, stubber = stubbed
    stubber.add_client_error("batch_import_findings", "AccessDeniedException", "no", 403)

    summary = FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic).publish(
        findings(1)
    )

    assert "AccessDeniedException" in summary.errors[0] and not summary.ok


def test_an_unreachable_endpoint_is_recorded_not_raised(clock: FakeClock) -> None:
    class Unreachable:
        calls = 0

        def batch_import_findings(self, **_: Any) -> dict[str, Any]:
            Unreachable.calls += 1
            raise EndpointConnectionError(
                endpoint_url="https://securityhub.us-east-1.amazonaws.com"
            )

    summary = FindingPublisher(Unreachable(), sleep=clock.sleep, monotonic=clock.monotonic).publish(
        findings(150)
    )

    assert Unreachable.calls == 1
    assert "cannot reach Security Hub" in summary.errors[0]
    assert len(summary.failed) == 150


def test_fixed_findings_are_resolved_in_calls_of_at_most_100_with_the_note(
    stubbed: Any, clock: FakeClock
) -> None:
    client, stubber = stubbed
    batch = findings(150)
    fixed = batch[:130]
    stubber.add_response("batch_import_findings", imported(100), {"Findings": batch[:100]})
    stubber.add_response("batch_import_findings", imported(50), {"Findings": batch[100:]})
    stubber.add_response(
        "batch_update_findings",
        {
            "ProcessedFindings": identifiers(fixed[1:100]),
            "UnprocessedFindings": [
                {"FindingIdentifier": identifiers(fixed[:1])[0], "ErrorCode": "FindingNotFound",
                 "ErrorMessage": "not yet visible"}
            ],
        },
        update_request(fixed[:100]),
    )  # fmt: skip
    stubber.add_response(  # the unprocessed one, alone
        "batch_update_findings",
        {"ProcessedFindings": identifiers(fixed[:1]), "UnprocessedFindings": []},
        update_request(fixed[:1]),
    )
    stubber.add_response(
        "batch_update_findings",
        {"ProcessedFindings": identifiers(fixed[100:]), "UnprocessedFindings": []},
        update_request(fixed[100:]),
    )

    summary = FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic).publish(
        batch, {f["Id"]: NOTE for f in fixed}
    )

    assert summary.ok and summary.imported == 150 and summary.resolved == 130
    assert summary.calls == 5


def test_resolutions_still_unprocessed_after_max_attempts_are_reported(
    stubbed: Any, clock: FakeClock
) -> None:
    client, stubber = stubbed
    batch = findings(1)
    stubber.add_response("batch_import_findings", imported(1), {"Findings": batch})
    for _ in range(2):
        stubber.add_response(
            "batch_update_findings",
            {"ProcessedFindings": [], "UnprocessedFindings": [
                {"FindingIdentifier": identifiers(batch)[0], "ErrorCode": "FindingNotFound",
                 "ErrorMessage": "gone"}]},
            update_request(batch),
        )  # fmt: skip
    publisher = FindingPublisher(
        client, sleep=clock.sleep, monotonic=clock.monotonic, max_attempts=2
    )

    summary = publisher.publish(batch, {batch[0]["Id"]: NOTE})

    assert summary.resolved == 0
    assert summary.unresolved == [
        {"Id": batch[0]["Id"], "ErrorCode": "FindingNotFound", "ErrorMessage": "gone"}
    ]


def test_a_finding_whose_import_failed_is_not_resolved(stubbed: Any, clock: FakeClock) -> None:
    client, stubber = stubbed
    batch = findings(2)
    lost, kept = batch
    stubber.add_response(
        "batch_import_findings", imported(2, [(lost["Id"], "InvalidInput")]), {"Findings": batch}
    )
    stubber.add_response(  # only the finding that made it is resolved
        "batch_update_findings",
        {"ProcessedFindings": identifiers([kept]), "UnprocessedFindings": []},
        update_request([kept]),
    )
    publisher = FindingPublisher(
        client, sleep=clock.sleep, monotonic=clock.monotonic, max_attempts=1
    )

    summary = publisher.publish(batch, {lost["Id"]: NOTE, kept["Id"]: NOTE})

    assert summary.resolved == 1
    assert [(u["Id"], u["ErrorCode"]) for u in summary.unresolved] == [(lost["Id"], "ImportFailed")]
    assert [f["Id"] for f in summary.failed] == [lost["Id"]]


def test_a_resolution_for_an_unknown_finding_is_reported_not_sent(
    stubbed: Any, clock: FakeClock
) -> None:
    client, stubber = stubbed
    batch = findings(1)
    stubber.add_response("batch_import_findings", imported(1), {"Findings": batch})

    summary = FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic).publish(
        batch, {"ssm-guardrail/elsewhere": NOTE}
    )

    assert summary.unresolved[0]["ErrorCode"] == "UnknownFinding" and summary.calls == 1


def test_a_finding_over_240_kb_is_reported_failed_and_not_sent(
    stubbed: Any, clock: FakeClock
) -> None:
    client, stubber = stubbed
    small, huge = findings(2)
    huge["ProductFields"] = {f"k{n}": "x" * 2048 for n in range(50)}
    huge["Description"] = "y" * 1024
    huge["Resources"][0]["Details"] = {
        "AwsEc2SecurityGroup": {
            "IpPermissions": [
                {"IpProtocol": "tcp", "IpRanges": [{"CidrIp": f"10.{n // 256}.{n % 256}.0/24"}]}
                for n in range(3000)
            ]
        }
    }
    stubber.add_response("batch_import_findings", imported(1), {"Findings": [small]})

    summary = FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic).publish(
        [small, huge]
    )

    assert summary.imported == 1
    assert [(f["Id"], f["ErrorCode"]) for f in summary.failed] == [(huge["Id"], "FindingTooLarge")]


class RecordingClient:
    """Accepts everything; remembers when (fake clock) and how much each call sent."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.times: list[float] = []
        self.batches: list[list[dict[str, Any]]] = []

    def batch_import_findings(self, Findings: list[dict[str, Any]]) -> dict[str, Any]:
        self.times.append(self.clock.now)
        self.batches.append(Findings)
        return imported(len(Findings))


def test_calls_are_paced_to_at_most_10_in_any_second(clock: FakeClock) -> None:
    client = RecordingClient(clock)
    batch = [{"Id": f"f-{n}", "ProductArn": "arn"} for n in range(3500)]

    summary = FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic).publish(batch)

    assert summary.calls == 35 and summary.imported == 3500
    busiest = max(
        sum(1 for t in client.times if start <= t < start + 1.0) for start in client.times
    )
    assert busiest == 10  # a burst of 10 is fine, an 11th within the same second is not
    assert client.times[-1] - client.times[0] >= 3.0


def test_batches_stay_under_6_mb(clock: FakeClock) -> None:
    client = RecordingClient(clock)
    batch = [{"Id": f"f-{n}", "ProductArn": "arn", "Description": "z" * 200_000} for n in range(70)]

    summary = FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic).publish(batch)

    sizes = [sum(len(f["Description"]) for f in sent) for sent in client.batches]
    assert summary.imported == 70 and len(client.batches) == 3
    assert all(size < 6 * 1024 * 1024 for size in sizes)


class SecurityHubAnswers:
    """A loopback Security Hub endpoint answering from a script of (status, error code) pairs,
    the last one repeated; it counts the requests that reach it."""

    def __init__(self, *script: tuple[int, str | None]) -> None:
        import http.server
        import json
        import threading

        self.requests = 0
        answers = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, code = script[min(answers.requests, len(script) - 1)]
                answers.requests += 1
                body = json.dumps({"message": code} if code else imported(1)).encode()
                self.send_response(status)
                if code:
                    self.send_header("x-amzn-ErrorType", code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def client(self) -> Any:
        from guardrail.clients import AwsClients

        session = boto3.Session(region_name=REGION)
        clients = AwsClients(session=session, region=REGION)
        endpoint = f"http://127.0.0.1:{self.server.server_port}"
        clients.__dict__["securityhub"] = session.client(
            "securityhub", endpoint_url=endpoint, config=clients.securityhub.meta.config
        )
        return clients.securityhub

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def botocore_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """botocore's own retry delays (it sleeps with time.sleep), recorded instead of slept."""
    import time

    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    return sleeps


def test_endless_throttling_costs_a_bounded_number_of_requests(clock, botocore_sleeps):
    """The publisher retries throttling itself (5 attempts); the Security Hub client adds only
    3 tries of its own per attempt: 15 requests and at most 15 s of botocore's waiting for one
    batch, where the shared adaptive config (9 tries) made it 45 requests and up to 7 minutes,
    past what the drift scan keeps for publishing."""
    answers = SecurityHubAnswers((429, "TooManyRequestsException"))
    try:
        publisher = FindingPublisher(answers.client(), sleep=clock.sleep, monotonic=clock.monotonic)
        summary = publisher.publish(findings(1))
    finally:
        answers.close()
    assert [f["ErrorCode"] for f in summary.failed] == ["TooManyRequestsException"]
    assert answers.requests == 15
    assert len(botocore_sleeps) == 10 and sum(botocore_sleeps) <= 15


def test_a_passing_server_error_is_still_retried_by_the_client(clock, botocore_sleeps):
    """A 503 the next try cures never reaches the publisher: the finding is imported at once."""
    answers = SecurityHubAnswers((503, "ServiceUnavailableException"), (200, None))
    try:
        publisher = FindingPublisher(answers.client(), sleep=clock.sleep, monotonic=clock.monotonic)
        summary = publisher.publish(findings(1))
    finally:
        answers.close()
    assert summary.ok and summary.imported == 1 and summary.calls == 1
    assert answers.requests == 2 and len(botocore_sleeps) == 1


def test_import_batches_stay_within_100_findings_and_the_6_mb_request():
    """BatchImportFindings refuses a request over 6 MB: two findings near 4 MB go in two calls,
    a hundred small ones in one, the 101st in the next."""
    from guardrail.publisher import MAX_CALL_BYTES, batches

    big = [({"Id": str(i)}, 4_000_000) for i in range(2)]
    assert [len(b) for b in batches(big)] == [1, 1]
    exact = [({"Id": "a"}, MAX_CALL_BYTES // 2 - 1), ({"Id": "b"}, MAX_CALL_BYTES // 2 - 1)]
    assert [len(b) for b in batches(exact)] == [2]  # each counted with its separating comma
    over = [({"Id": "a"}, MAX_CALL_BYTES // 2), ({"Id": "b"}, MAX_CALL_BYTES // 2)]
    assert [len(b) for b in batches(over)] == [1, 1]
    small = [({"Id": str(i)}, 1_000) for i in range(101)]
    assert [len(b) for b in batches(small)] == [100, 1]
