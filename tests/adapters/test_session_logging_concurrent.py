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
    assert fix.reason.endswith(
        "there were none (undo: aws ssm delete-document --name SSM-SessionManagerRunShell "
        "--region us-east-1)"
    )
    assert not report.left_failed


def test_an_update_whose_answer_was_lost_is_the_fixs_own_and_made_the_default(account, clients):
    """SSM made version 2 but UpdateDocument's answer never came: botocore's retry, still on top
    of version 1, is refused (InvalidDocumentVersion: only the latest can be updated). Version 2
    holds this run's content: the fix made it, and makes it the default. It was SKIPPED
    "changed meanwhile" with version 2 left at $LATEST, not in force."""
    from guardrail.model import SESSION_DOCUMENT

    from tests.aws_errors import answer_lost_once

    create_preferences(account, {"idleSessionTimeout": "20"})
    answer_lost_once(account, clients, "UpdateDocument", service="ssm")
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.APPLIED, (fix.outcome, fix.reason)
    assert "version 2 is now the default, was 1" in fix.reason
    document = account.ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]
    assert document["DefaultVersion"] == document["LatestVersion"] == "2"
    assert preferences(account)["idleSessionTimeout"] == "20"  # theirs kept
    assert preferences(account)["s3BucketName"] == "guardrail-logs"


def test_an_update_refused_by_someone_elses_newer_version_is_still_left_to_them(account, clients):
    """Not a lost answer: a person saved version 2 between the read and the write. This run's
    content is not in it, so nothing is promoted and their draft stays as they left it."""
    from guardrail.model import SESSION_DOCUMENT

    create_preferences(account, {"idleSessionTimeout": "20"})
    real = clients.ssm.update_document

    def person_first(**kwargs):
        account.ssm.update_document(
            Name=SESSION_DOCUMENT,
            Content=kwargs["Content"].replace('"20"', '"25"'),
            DocumentVersion="$LATEST",
            DocumentFormat="JSON",
        )
        return real(**kwargs)

    clients.ssm.update_document = person_first
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.SKIPPED and "changed meanwhile" in fix.reason
    document = account.ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]
    assert (document["DefaultVersion"], document["LatestVersion"]) == ("1", "2")


def test_preferences_deleted_before_the_write_are_skipped_not_failed(account, clients, monkeypatch):
    """Deleted between the read and the write: nothing to update (SSM: InvalidDocument). The
    record says so, SKIPPED; the DeleteDocument event's own run creates them. It was FAILED
    "preferences not changed" with AWS's error code, as if the guardrail had broken."""
    from guardrail.model import SESSION_DOCUMENT

    create_preferences(account, {"idleSessionTimeout": "20"})
    deleted = []

    def delete_once():
        if not deleted:
            deleted.append(account.ssm.delete_document(Name=SESSION_DOCUMENT))

    after_the_preferences_are_read(monkeypatch, delete_once)
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.SKIPPED and fix.error_code is None
    assert "the preferences were deleted meanwhile" in fix.reason
    assert SESSION_DOCUMENT not in [
        d["Name"]
        for d in account.ssm.list_documents(Filters=[{"Key": "Owner", "Values": ["Self"]}])[
            "DocumentIdentifiers"
        ]
    ]
    # The next run (the event's) creates them.
    account.run(clients, "enforce", [LOGGING], **OURS)
    assert preferences(account)["s3BucketName"] == "guardrail-logs"


def test_a_lost_create_whose_read_back_is_throttled_is_not_called_someone_elses(
    account, clients, monkeypatch
):
    """CreateDocument's answer was lost (SSM created it), the retry is refused
    (DocumentAlreadyExists), and reading the document back is throttled: whose it is, is not
    known. FAILED with the throttling code (an event is retried), not SKIPPED "created
    meanwhile", which left the guardrail's own preferences unclaimed and without their undo."""
    from tests.aws_errors import answer_lost_once, error_answer

    answer_lost_once(account, clients, "CreateDocument", service="ssm")
    after_the_preferences_are_read(
        monkeypatch,
        lambda: clients.ssm.meta.events.register(
            "before-call.ssm.GetDocument", error_answer("ThrottlingException", 400)
        ),
    )
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    assert preferences(account)["s3BucketName"] == "guardrail-logs"  # it was created
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.FAILED and fix.error_code == "ThrottlingException"
    assert "meanwhile" not in fix.reason
