"""The demo flow end to end: seed, report scan, enforce scan, re-scan, Security Hub — on loopback."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import replace

import pytest
from guardrail.model import Outcome, Status

from emulator import bench, demo
from emulator.seed import FAILED
from emulator.server import EmulatedAccount

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def account():
    with EmulatedAccount() as running:
        yield running


@pytest.fixture(scope="module")
def run(account):
    return demo.run_flow(account)


def evaluations(run, scan: str) -> dict:
    return {e.result.key: e for e in run.scan(scan).report.evaluations}


def test_the_run_shows_nothing_wrong(run):
    assert run.problems == []
    assert run.ok


def test_rescan_leaves_failed_only_what_was_skipped_with_a_reason(run):
    enforce = evaluations(run, "enforce scan")
    still = [e for e in run.scan("re-scan").report.evaluations if e.result.status is Status.FAILED]
    for evaluation in still:
        fixes = enforce[evaluation.result.key].fixes
        assert fixes and all(f.outcome is Outcome.SKIPPED and f.reason for f in fixes), (
            evaluation.result
        )
    assert {e.result.resource_id for e in still} == set(run.seeded.instances["profile-deleted"])


def test_every_fixable_seeded_failure_was_found_then_fixed(run):
    first, enforce, rescan = (
        evaluations(run, s) for s in ("report scan", "enforce scan", "re-scan")
    )
    seeded = run.seeded
    checked = 0
    for control in ("ssh-open-to-internet", "ssm-instance-role", "ssm-session-logging"):
        for instance in seeded.expected(control, FAILED):
            key = (control, instance)
            assert first[key].result.status is Status.FAILED, key
            if seeded.case_of(instance).fixable:
                assert enforce[key].remediated, (key, enforce[key].fixes)
                assert rescan[key].result.status is Status.PASSED, (key, rescan[key].result.reason)
                checked += 1
    assert checked > 30  # 22 SSH, 10 role and 7 logging results in the default seed
    # Each fix carries the moment it was made: its finding's UpdatedAt (not the publish time).
    read_at = run.scan("enforce scan").report.read_at
    fixed = [e for e in enforce.values() if e.remediated]
    assert all(e.fixed_at is not None and e.fixed_at >= read_at for e in fixed)
    assert not run.scan("report scan").report.fixes  # report mode changed nothing


def test_security_hub_holds_the_outcome(run):
    counts = run.hub.counts()
    remediated = sum(e.remediated for e in run.scan("enforce scan").report.evaluations)
    assert counts[("FAILED", "NEW")] == 1
    assert counts[("FAILED", "RESOLVED")] == 0
    assert counts[("PASSED", "RESOLVED")] == remediated > 0
    resolved = [f for f in run.hub.findings if f["Workflow"]["Status"] == "RESOLVED"]
    assert all(f["Note"]["Text"].startswith("ssm-guardrail fixed") for f in resolved)
    # One finding per result, except terminated instances the guardrail never saw running:
    # their NOT_APPLICABLE result would only create an archived finding, so none is imported.
    rescan = run.scan("re-scan").report.evaluations
    applicable = [e for e in rescan if e.result.status is not Status.NOT_APPLICABLE]
    assert len(applicable) < len(rescan)  # the seed has such instances
    assert len(run.hub.findings) == len(applicable)
    assert set(run.hub.record_states()) == {"ACTIVE"}


def test_a_report_scan_reads_in_batches(run):
    calls = run.scan("report scan").calls
    aws = {op: n for op, n in calls.items() if not op.startswith("securityhub:")}
    assert calls["ec2:DescribeInstances"] == 1
    assert sum(aws.values()) <= 25, aws  # 60 instances; no call per instance
    assert not any(
        op.split(":")[1].startswith(("Authorize", "Revoke", "Attach", "Associate", "Create"))
        for op in aws
    )


def test_printout_labels_the_emulation_and_tells_the_story(run):
    out = io.StringIO()
    demo.print_run(run, out)
    text = out.getvalue()
    for part in (
        "EMULATED",
        "[emulated]",
        "1. Report scan",
        "2. Enforce scan",
        "3. Re-scan",
        "4. What Security Hub now holds",
        "profile-deleted",
        "left as is because",
        "RESULT: OK",
    ):
        assert part in text, part
    assert "before:" in text and "after:" in text


def test_assess_flags_a_fix_the_rescan_does_not_confirm(run):
    first, enforce, _ = run.scans
    pretend = replace(run, scans=[first, enforce, replace(first, name="re-scan")], problems=[])
    problems = demo.assess(pretend)
    assert any("still FAILED" in p and "although the enforce scan fixed it" in p for p in problems)


def test_assess_flags_a_fixable_case_left_failed_even_with_a_reason(run):
    """An SSH fix that skipped every group with some reason, the re-scan still FAILED: a reason
    does not excuse a case the seed says an enforce run fixes, and the account shows the groups
    still open."""
    from guardrail.model import FixRecord, Outcome

    first, enforce, _ = run.scans
    ssh = "ssh-open-to-internet"
    held = FixRecord(ssh, "sg-0", "revoke internet SSH", Outcome.SKIPPED, reason="held back")
    skipped = replace(
        enforce.report,
        evaluations=[
            replace(e, fixes=(held,)) if e.result.control == ssh else e
            for e in enforce.report.evaluations
        ],
        fixes=[f for f in enforce.report.fixes if f.control != ssh] + [held],
    )
    world = run.seeded.groups["ssh-world"]
    left = [*run.ingress_after, demo.Ingress(world, "0.0.0.0/0", "tcp", 22, 22)]
    pretend = replace(
        run,
        scans=[first, replace(enforce, report=skipped), replace(first, name="re-scan")],
        ingress_after=left,
        problems=[],
    )
    problems = demo.assess(pretend)
    public = run.seeded.instances["ssh-ipv4-public"][0]
    assert any(
        p.startswith(
            f"re-scan: {ssh} still FAILED on {public} (ssh-ipv4-public), seeded as fixable"
        )
        for p in problems
    ), problems
    assert "account: group ssh-world still admits SSH from 0.0.0.0/0 although it was fixable" in (
        problems
    )


def test_the_account_itself_kept_every_other_port_the_fixes_touched(run):
    """Read apart from the engine: the range and all-traffic groups still admit their other
    ports from the internet, and no group the enforce scan closed admits SSH from it."""
    names = {gid: name for name, gid in run.seeded.groups.items()}
    after = run.ingress_after
    for name in ("all-tcp", "admin-range", "all-traffic"):
        gid = run.seeded.groups[name]
        internet = [r for r in after if r.group_id == gid and r.source in demo.INTERNET]
        assert any(r.admits("tcp", 21) for r in internet), name
        assert any(r.admits("tcp", 23) for r in internet), name
        assert not any(r.admits("tcp", 22) for r in internet), name
    udp = [r for r in after if names.get(r.group_id) == "all-traffic" and r.admits("udp", 22)]
    assert udp  # all traffic kept UDP, 22 included
    assert run.destinations  # the region's sessions are logged somewhere


def test_assess_flags_a_fix_that_took_more_than_ssh(run):
    """A fix that revoked a 0-65535 rule and re-added nothing shows, although the engine's own
    re-scan (which judges SSH alone) passes the group."""
    gid = run.seeded.groups["all-tcp"]
    lost = [r for r in run.ingress_after if not (r.group_id == gid and r.protocol == "tcp")]
    problems = demo.assess(replace(run, ingress_after=lost, problems=[]))
    assert any(
        p.startswith("account: group all-tcp no longer admits tcp/0, tcp/21, tcp/23")
        for p in problems
    ), problems


def with_fixes(run, change):
    """The run as if the enforce scan's fix records were `change(record)` (None: unchanged)."""
    first, enforce, rescan = run.scans
    fixes = [change(f) or f for f in enforce.report.fixes]
    pretend = replace(enforce, report=replace(enforce.report, fixes=fixes))
    return replace(run, scans=[first, pretend, rescan], problems=[])


def all_traffic_fix(run):
    gid = run.seeded.groups["all-traffic"]
    return next(f for f in run.scan("enforce scan").report.fixes if f.resource_id == gid)


def test_all_traffic_rules_lost_exactly_what_their_record_says_was_dropped(run):
    """Read apart from the engine: each all-traffic rule still admits tcp, udp and its family's
    ICMP, and no longer the other IP protocols, as its record's note says."""
    gid = run.seeded.groups["all-traffic"]
    before = [r for r in run.ingress_before if r.group_id == gid]
    assert {r.source for r in before} == {"0.0.0.0/0", "::/0"}
    record = all_traffic_fix(run)
    for rule in before:
        assert rule.rule_id in record.reason and "other IP protocols" in record.reason
        assert demo.dropped_with(rule, [record]) == {demo.OTHER_PROTOCOL}
        icmp = "icmpv6" if rule.source == "::/0" else "icmp"
        left = [r for r in run.ingress_after if r.group_id == gid and r.source == rule.source]
        assert any(r.admits(icmp, -1) for r in left), rule.source
        assert not any(r.admits(demo.OTHER_PROTOCOL, -1) for r in left), rule.source


def test_assess_flags_an_all_traffic_rule_that_lost_icmp(run):
    """Had the fix stopped re-adding ICMP, the engine's re-scan (SSH alone) would pass; the
    account shows the loss the record does not name."""
    gid = run.seeded.groups["all-traffic"]
    no_icmp = [
        r for r in run.ingress_after if not (r.group_id == gid and r.protocol in ("icmp", "icmpv6"))
    ]
    problems = demo.assess(replace(run, ingress_after=no_icmp, problems=[]))
    for source, icmp in (("0.0.0.0/0", "icmp"), ("::/0", "icmpv6")):
        assert any(
            p.startswith(f"account: group all-traffic no longer admits {icmp} from {source}")
            for p in problems
        ), problems


def test_assess_flags_an_all_traffic_fix_whose_record_names_no_dropped_protocol(run):
    record = all_traffic_fix(run)
    silent = with_fixes(
        run,
        lambda f: replace(f, reason="revoked 2 rule(s)") if f is record else None,
    )
    problems = demo.assess(silent)
    assert any(
        p.startswith("account: group all-traffic no longer admits protocol 47 from 0.0.0.0/0")
        for p in problems
    ), problems


def test_assess_flags_a_severity_other_than_the_seeded_one(run):
    """Public SSH reported INFORMATIONAL, private-only SSH reported CRITICAL: the status is
    right, the severity is not."""
    public = run.seeded.instances["ssh-ipv4-public"][0]
    private = run.seeded.instances["ssh-private-ip-only"][0]
    wrong = {public: "INFORMATIONAL", private: "CRITICAL"}
    first, enforce, rescan = run.scans
    evaluations = [
        replace(e, result=replace(e.result, severity=wrong[e.result.resource_id]))
        if e.result.control == "ssh-open-to-internet" and e.result.resource_id in wrong
        else e
        for e in first.report.evaluations
    ]
    pretend = replace(first, report=replace(first.report, evaluations=evaluations))
    problems = demo.assess(replace(run, scans=[pretend, enforce, rescan], problems=[]))
    assert any(
        f"on {public} (ssh-ipv4-public) is FAILED INFORMATIONAL, seeded as FAILED CRITICAL" in p
        for p in problems
    ), problems
    assert any(
        f"on {private} (ssh-private-ip-only) is FAILED CRITICAL, seeded as FAILED HIGH" in p
        for p in problems
    ), problems


def test_every_applied_fix_prints_how_to_undo_it_in_full(run):
    out = io.StringIO()
    demo.print_run(run, out)
    text = out.getvalue()
    record = all_traffic_fix(run)
    assert len(record.after["new_rule_ids"]) == len(record.after["readded"]) == 8
    assert f"revoke the rules re-added in its place: {', '.join(record.after['new_rule_ids'])}" in (
        text
    )
    for rule in record.before:
        assert f"authorize again (was {rule['SecurityGroupRuleId']}) all traffic" in text
    applied = [f for f in run.scan("enforce scan").report.fixes if f.outcome is Outcome.APPLIED]
    assert text.count("      undo:   ") >= len(applied)
    assert "undo:   ?" not in text


@pytest.mark.parametrize(
    ("action", "emptied", "gap"),
    [
        ("revoke internet SSH", {"before": []}, "before does not hold every revoked rule"),
        (
            "revoke internet SSH",
            {"after": {"readded": [{}], "new_rule_ids": []}},
            "after names 0 new rule id(s)",
        ),
        ("associate instance profile", {"after": None}, "after names no association"),
        (
            "associate instance profile",
            {"after": {"instance_profile": "guardrail-ec2", "association_id": ""}},
            "after names no association",
        ),
        ("add role to instance profile", {"after": []}, "after names no role"),
        ("attach AmazonSSMManagedInstanceCore", {"before": None}, "before does not list"),
        ("attach log-delivery policy", {"after": []}, "after attaches no policy"),
        ("create Session Manager preferences", {"after": {}}, "after names no log destination"),
    ],
)
def test_assess_flags_an_applied_fix_whose_record_cannot_undo_it(run, action, emptied, gap):
    record = next(f for f in run.scan("enforce scan").report.fixes if f.action == action)
    assert record.outcome is Outcome.APPLIED
    problems = demo.assess(
        with_fixes(run, lambda f: replace(f, **emptied) if f is record else None)
    )
    assert (
        f"enforce scan: {record.control} '{action}' on {record.resource_id} was applied, but its "
        f"record does not say how to undo it: {gap}"
    ) in " | ".join(problems), problems


def test_assess_flags_profile_and_role_fixes_the_account_does_not_show(run):
    """Read apart from the engine (associations, profiles' roles, roles' policies): a record
    claiming what the account does not hold is a problem, whatever the re-scan says."""
    fixes = {f.action: f for f in run.scan("enforce scan").report.fixes}
    associated = fixes["associate instance profile"]
    added = fixes["add role to instance profile"]
    attached = fixes["attach AmazonSSMManagedInstanceCore"]
    view = run.iam_after
    assert view.associated[associated.resource_id] == run.seeded.instance_profile
    assert view.profile_roles[added.resource_id] == [run.seeded.instance_role]
    assert set(attached.after) <= view.role_policies[attached.resource_id]
    broken = demo.IamView(
        associated={k: v for k, v in view.associated.items() if k != associated.resource_id},
        profile_roles={**view.profile_roles, added.resource_id: []},
        role_policies={**view.role_policies, attached.resource_id: set()},
    )
    problems = demo.assess(replace(run, iam_after=broken, problems=[]))
    for record, shown in (
        (associated, "the instance's profile is none"),
        (added, "the profile holds []"),
        (attached, "the role lacks arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"),
    ):
        assert any(
            p.startswith(f"account: {record.control} '{record.action}' on {record.resource_id}: ")
            and shown in p
            for p in problems
        ), (shown, problems)


def test_assess_flags_internet_ssh_left_on_a_group_the_enforce_scan_closed(run):
    gid = run.seeded.groups["ssh-world"]
    left = [*run.ingress_after, demo.Ingress(gid, "::/0", "tcp", 22, 22)]
    problems = demo.assess(replace(run, ingress_after=left, problems=[]))
    assert "account: group ssh-world still admits SSH from ::/0" in " ".join(problems)


def test_assess_flags_preferences_not_judged_or_logging_nowhere(run):
    first, enforce, rescan = run.scans
    blind = replace(
        first.report,
        evaluations=[
            e for e in first.report.evaluations if e.result.resource_type.value != "AwsAccount"
        ],
    )
    pretend = replace(
        run, scans=[replace(first, report=blind), enforce, rescan], destinations={}, problems=[]
    )
    problems = demo.assess(pretend)
    assert any("preferences (seeded absent) are judged not at all" in p for p in problems)
    assert "account: the region's Session Manager preferences log nowhere" in problems


def test_assess_flags_security_hub_resolving_more_than_was_fixed(run):
    passed = [f for f in run.hub.findings if f["Compliance"]["Status"] == "PASSED"]
    assert any(f["Workflow"]["Status"] == "NEW" for f in passed)  # never failed: not resolved
    everything = [
        {**f, "Workflow": {"Status": "RESOLVED"}} if f in passed else f for f in run.hub.findings
    ]
    problems = demo.assess(replace(run, hub=demo.HubState(everything), problems=[]))
    assert any(
        p.startswith("Security Hub:") and "RESOLVED finding(s), not one per" in p for p in problems
    )


def test_the_insights_show_what_is_left_failing_and_what_was_fixed(run):
    """The stack's four insights (guardrail.insights), applied to the emulated Security Hub:
    the failing ones show the one instance the guardrail may not fix, the resolved one every
    fixed result, by control."""
    fixed = [e for e in run.scan("enforce scan").report.evaluations if e.remediated]
    resolved = run.hub.insights["ssm-guardrail: resolved in the last 7 days"]
    assert resolved == Counter(f"ssm-guardrail/{e.result.control}" for e in fixed)
    (left,) = run.seeded.instances["profile-deleted"]
    assert run.hub.insights["ssm-guardrail: failing resources"] == Counter(
        {f"arn:aws:ec2:{run.seeded.region}:{run.seeded.account_id}:instance/{left}": 1}
    )
    assert run.hub.insights["ssm-guardrail: failing resources by severity"] == {"MEDIUM": 1}
    out = io.StringIO()
    demo.print_run(run, out)
    assert "5. Security Hub insights" in out.getvalue()
    assert f"ssm-guardrail: resolved in the last 7 days: {len(fixed)}" in out.getvalue()


def test_assess_flags_insights_that_disagree_with_the_scans(run):
    hub = replace(run.hub, insights={})
    problems = demo.assess(replace(run, hub=hub, problems=[]))
    fixed = sum(e.remediated for e in run.scan("enforce scan").report.evaluations)
    assert (
        f"Security Hub insight 'ssm-guardrail: resolved in the last 7 days' shows 0, not {fixed}"
        in problems
    )


def test_bench_measures_calls_at_two_sizes(
    account, run
):  # `run` first: the bench resets the account
    small, large = bench.measure_size(account, 40), bench.measure_size(account, 120)
    for size in (small, large):
        assert size.report.calls["ec2:DescribeInstances"] == 1
        assert size.report.fixes == 0 and size.enforce.fixes > 0
        assert size.report.hub > 0
    # Reads do not grow with the fleet at these sizes: batched, per distinct profile and role.
    assert large.report.aws == small.report.aws
    # Nothing changed between the two report scans: Security Hub is read, nothing re-imported.
    for size in (small, large):
        assert "securityhub:BatchImportFindings" not in size.repeat.calls
        assert size.repeat.calls["securityhub:GetFindings"] >= 1
        assert size.repeat.aws == size.report.aws
    out = io.StringIO()
    bench.print_size(large, out)
    assert "Security Hub:" in out.getvalue() and "ec2:DescribeInstances" in out.getvalue()
    assert bench.comparison(small, large).startswith("40 → 120 instances (x3)")


@pytest.fixture(scope="module")
def denied(account, run):  # `run` first: this resets the account
    account.reset()
    return demo.run_flow(account, explicit_deny=True)


def test_an_explicit_deny_on_the_key_keeps_the_key_out_of_the_preferences(denied):
    ids = denied.seeded.instances["role-delivery-denied"]
    keys = [("ssm-session-logging", i) for i in ids]
    enforce, rescan = evaluations(denied, "enforce scan"), evaluations(denied, "re-scan")
    assert not any(enforce[k].remediated for k in keys)  # attaching cannot beat a Deny
    # Naming the KMS key would stop every session on these instances (their role may not use
    # it): the preferences log without it, and the record says why.
    fixes = {f.action: f for f in denied.scan("enforce scan").report.fixes}
    assert fixes["create Session Manager preferences"].outcome is Outcome.APPLIED
    held = fixes["name the guardrail's KMS key"]
    assert held.outcome is Outcome.SKIPPED and "cannot use the key" in held.reason
    # The re-scan still reports both, honestly: the key is missing, these roles cannot use it.
    account = denied.seeded.account_id
    assert rescan[("ssm-session-logging", account)].result.status is Status.FAILED
    assert all(rescan[k].result.status is Status.FAILED for k in keys)


def test_an_explicit_deny_on_delivery_is_skipped_with_a_reason(denied):
    ids = denied.seeded.instances["role-delivery-denied"]
    enforce = evaluations(denied, "enforce scan")
    assert all(demo.explained(enforce[("ssm-session-logging", i)]) for i in ids)
    assert denied.problems == []


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--instances", "10"], "--instances: at least"),
        (["--region", "xx-nowhere-1"], "not an AWS region"),
    ],
)
def test_the_demo_refuses_bad_flags_in_one_line(argv, said, capsys):
    """Before any emulator starts: exit 2 and a usage line, not a traceback."""
    with pytest.raises(SystemExit) as exited:
        demo.main(argv)
    assert exited.value.code == 2 and said in capsys.readouterr().err


@pytest.mark.parametrize("during", ["seeding", "the enforce scan"])
def test_ctrl_c_stops_the_demo_with_130_and_says_what_the_scan_had_changed(
    monkeypatch, capsys, during
):
    """It printed a traceback and, interrupted in a scan (engine.Interrupted), exited 1: the
    code the README gives a demo that found a problem."""
    from guardrail.engine import Interrupted, ScanReport
    from guardrail.model import FixRecord

    def interrupted(account, **_):
        if during == "seeding":
            raise KeyboardInterrupt
        report = ScanReport(account.account_id, "us-east-1")
        report.fixes.append(FixRecord("ssh-open-to-internet", "sg-1", "revoke internet SSH",
                                      Outcome.APPLIED, before=[{"CidrIpv4": "0.0.0.0/0"}]))  # fmt: skip
        raise Interrupted(report)

    monkeypatch.setattr(demo, "run_flow", interrupted)
    try:
        code = demo.main([], out=io.StringIO())
    except KeyboardInterrupt as escaped:  # caught here: pytest would stop the whole session
        pytest.fail(f"Ctrl-C escaped the demo as {type(escaped).__name__} (a traceback)")
    assert code == 130
    err = capsys.readouterr().err
    assert "demo interrupted: the emulated account is stopped" in err and "Traceback" not in err
    assert ("APPLIED            revoke internet SSH sg-1" in err) is (during != "seeding")
