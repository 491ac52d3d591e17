"""The Security Hub insights over the guardrail's own findings, in Security Hub's API spelling
(AwsSecurityFindingFilters, as GetFindings takes them): the stack deploys them, the demo applies
them to the emulated Security Hub."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .findings import GENERATOR_PREFIX

# The one insight showing what the guardrail fixed (the others show what is left failing).
RESOLVED_INSIGHT = "ResolvedLast7Days"


@dataclass(frozen=True)
class Insight:
    name: str
    filters: dict[str, list[dict[str, Any]]]
    group_by: str  # GroupByAttribute


def _eq(*values: str) -> list[dict[str, Any]]:
    return [{"Comparison": "EQUALS", "Value": v} for v in values]  # several EQUALS are ORed


def finding_insights(product_arn: str | None) -> dict[str, Insight]:
    """By construct id. `product_arn`: only this account-region's findings (the ProductArn of its
    default product); None for any account's and linked region's (a delegated administrator's
    aggregation region, where ProductArn differs per account and region)."""
    ours: dict[str, list[dict[str, Any]]] = {
        "GeneratorId": [{"Comparison": "PREFIX", "Value": GENERATOR_PREFIX}],
        **({"ProductArn": _eq(product_arn)} if product_arn else {}),
    }
    failing = {
        **ours,
        "ComplianceStatus": _eq("FAILED"),
        "RecordState": _eq("ACTIVE"),
        "WorkflowStatus": _eq("NEW", "NOTIFIED"),
    }
    # Resolved when the note was written (BatchUpdateFindings, with the RESOLVED mark): not
    # UpdatedAt, which the weekly refresh re-import moves on every finding, resolved or not.
    # Passing too: a person's RESOLVED on a finding still failing (a risk accepted) is no fix.
    resolved = {
        **ours,
        "ComplianceStatus": _eq("PASSED"),
        "WorkflowStatus": _eq("RESOLVED"),
        "NoteUpdatedAt": [{"DateRange": {"Unit": "DAYS", "Value": 7}}],
    }
    return {
        "FailingByControl": Insight(
            "ssm-guardrail: failing resources by control", failing, "GeneratorId"
        ),
        "FailingBySeverity": Insight(
            "ssm-guardrail: failing resources by severity", failing, "SeverityLabel"
        ),
        "FailingByResource": Insight("ssm-guardrail: failing resources", failing, "ResourceId"),
        RESOLVED_INSIGHT: Insight(
            "ssm-guardrail: resolved in the last 7 days", resolved, "GeneratorId"
        ),
    }


def group_key(finding: dict[str, Any], attribute: str) -> str:
    """The value of a GroupByAttribute the insights use, for one finding."""
    if attribute == "SeverityLabel":
        return str((finding.get("Severity") or {}).get("Label", "-"))
    if attribute == "ResourceId":
        return str(((finding.get("Resources") or [{}])[0]).get("Id", "-"))
    return str(finding.get(attribute, "-"))
