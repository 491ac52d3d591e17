#!/usr/bin/env python3
"""CDK entry point: read context, build one GuardrailStack per region (+ the IAM event forwarder).

No AWS or git calls: the account and region come from the CLI's CDK_DEFAULT_* variables (absent
offline, which gives an environment-agnostic stack), everything else from cdk.json / `-c` context.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(ROOT / "lambdas"), str(ROOT)) if p not in sys.path]

from aws_cdk import App, Environment, Tags  # noqa: E402

from stacks import GuardrailConfig, GuardrailStack, IamEventForwarderStack  # noqa: E402
from stacks.nag import add_checks  # noqa: E402

STACK_PREFIX = "SsmGuardrail"


@dataclass(frozen=True)
class StackPlan:
    stack_id: str
    region: str | None  # None: environment-agnostic (region chosen at deploy time)
    kind: str  # "guardrail" | "iam-forwarder"
    forward_to: tuple[str, ...] = ()


def plan(config: GuardrailConfig, default_region: str | None) -> list[StackPlan]:
    """Which stacks to build: one per guarded region, and a forwarder in the IAM event region
    whenever a guarded region is not that region (IAM's events reach only us-east-1).

    With `regions` the forwarder serves them all. Without, the app knows only the CLI's region,
    so its forwarder is named after it: deploying region by region adds one forwarder per
    region instead of replacing the last region's (which would cut the others off IAM's events).
    """
    regions = list(config.regions) or ([default_region] if default_region else [])
    if not regions:
        return [StackPlan(STACK_PREFIX, None, "guardrail")]
    stacks = [StackPlan(f"{STACK_PREFIX}-{r}", r, "guardrail") for r in regions]
    elsewhere = tuple(r for r in regions if r != config.iam_event_region)
    if elsewhere:
        name = f"{STACK_PREFIX}-IamEvents" + ("" if config.regions else f"-{elsewhere[0]}")
        stacks.append(StackPlan(name, config.iam_event_region, "iam-forwarder", elsewhere))
    return stacks


def build_app(context: dict[str, Any] | None = None, outdir: str | None = None) -> App:
    """The whole app, with cdk-nag's AwsSolutions checks run on every synth."""
    app = App(context=context, outdir=outdir)
    GuardrailConfig.check_keys(app.node.get_all_context())
    config = GuardrailConfig.from_context(app.node.try_get_context)
    # `-c account=` targets another account through its trusted CDK bootstrap roles (Organizations).
    account = config.account or os.environ.get("CDK_DEFAULT_ACCOUNT")
    for item in plan(config, os.environ.get("CDK_DEFAULT_REGION")):
        env = Environment(account=account, region=item.region)
        if item.kind == "guardrail":
            GuardrailStack(
                app,
                item.stack_id,
                config=config,
                env=env,
                description="ssm-guardrail: keeps EC2 instances on Session Manager (no internet SSH, "
                "SSM role, session logging) and reports to Security Hub",
            )
        else:
            IamEventForwarderStack(
                app,
                item.stack_id,
                regions=list(item.forward_to),
                notification_email=config.notification_email,
                env=env,
                description="ssm-guardrail: forwards IAM's global CloudTrail events to the guarded regions",
            )
    Tags.of(app).add("project", "ssm-guardrail")
    add_checks(app)
    return app


def file_context() -> dict[str, Any]:
    """cdk.json's context (its feature flags included), as defaults: the CDK CLI passes it on
    (CDK_CONTEXT_JSON, which wins over these), a direct `python app.py` would go without it."""
    return dict(json.loads((ROOT / "cdk.json").read_text()).get("context", {}))


if __name__ == "__main__":
    build_app(file_context()).synth()
