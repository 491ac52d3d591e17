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


def test_a_create_retried_after_a_lost_answer_counts_as_done(account, clients):
    """CreateDocument reached SSM but its answer was lost; botocore's retry is refused with
    DocumentAlreadyExists. The document holds exactly the guardrail's content."""
    real = clients.ssm.create_document

    def lost_answer_then_retry(**kwargs):
        real(**kwargs)  # first try: carried out, answer lost
        return real(**kwargs)  # the retry: DocumentAlreadyExists

    clients.ssm.create_document = lost_answer_then_retry
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    assert preferences(account)["s3BucketName"] == "guardrail-logs"
    (fix,) = region_fix(report)
    # Was SKIPPED "created meanwhile", the finding left FAILED.
    assert fix.outcome is Outcome.ALREADY_COMPLIANT, (fix.outcome, fix.reason)
    assert not report.left_failed
