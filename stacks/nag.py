"""cdk-nag wiring: AwsSolutionsChecks on every synth, and one acknowledgement per finding.

cdk-nag 3 is a CDK validation plugin: an unacknowledged error makes synth raise ValidationFailed.
Acknowledgements name one finding exactly (e.g. `AwsSolutions-IAM5[Resource::*]`) and say why.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct


def add_checks(app: App) -> None:
    """Run the AWS Solutions rule pack on the whole app at synth."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(scope: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on `scope` (and its children) with a reviewer-facing reason."""
    if not finding.startswith("AwsSolutions-") or len(reason) < 40:
        raise ValueError(f"acknowledge one named finding with a real reason: {finding!r}")
    Validations.of(scope).acknowledge(Acknowledgment(id=finding, reason=reason))
