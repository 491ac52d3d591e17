"""Preferences another writer set, between the read and the write, to exactly what this run
would write count as done: a concurrent run, or a retried create whose first answer was lost."""

from guardrail.model import Outcome

from .test_session_logging_fix import (
    LOGGING,
    OURS,
    after_the_preferences_are_read,
    create_preferences,
    preferences,
    region_fix,
)


def test_a_concurrent_run_writing_the_same_content_counts_as_done(account, clients, monkeypatch):
    """An event and the drift scan both judge v1; the other run writes and promotes v2 first.
    Its content is exactly ours: README says identical content counts as done."""
    create_preferences(account, {"idleSessionTimeout": "20"})
    done = []

    def other_run():
        if not done:
            done.append(True)  # the other run's own read does not start a third
            account.run(clients, "enforce", [LOGGING], **OURS)

    after_the_preferences_are_read(monkeypatch, other_run)
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    assert preferences(account)["s3BucketName"] == "guardrail-logs"  # logging is on
    (fix,) = region_fix(report)
    # Was SKIPPED "changed meanwhile", the finding left FAILED.
    assert fix.outcome is Outcome.ALREADY_COMPLIANT, (fix.outcome, fix.reason)
    assert not report.left_failed  # was published FAILED again


def test_a_create_of_exactly_ours_by_another_run_counts_as_done(account, clients):
    """Another run (an event beside the drift scan) created the document with exactly the
    guardrail's content just before this run's CreateDocument, refused DocumentAlreadyExists."""
    real = clients.ssm.create_document

    def another_run_first(**kwargs):
        real(**kwargs)  # the other run's
        return real(**kwargs)  # this run's: DocumentAlreadyExists

    clients.ssm.create_document = another_run_first
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    assert preferences(account)["s3BucketName"] == "guardrail-logs"
    (fix,) = region_fix(report)
    # Was SKIPPED "created meanwhile", the finding left FAILED.
    assert fix.outcome is Outcome.ALREADY_COMPLIANT, (fix.outcome, fix.reason)
    assert not report.left_failed


def test_a_create_whose_answer_was_lost_is_the_fixs_own_with_its_undo(account, clients):
    """SSM created the document but the answer never came (a read timeout): botocore's retry is
    refused with DocumentAlreadyExists. Its content is this run's: the fix made it."""
    from tests.aws_errors import answer_lost_once

    answer_lost_once(account, clients, "CreateDocument", service="ssm")
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    assert preferences(account)["s3BucketName"] == "guardrail-logs"
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.APPLIED and fix.at is not None, (fix.outcome, fix.reason)
    assert "deleting SSM-SessionManagerRunShell undoes this" in fix.reason
    assert not report.left_failed
