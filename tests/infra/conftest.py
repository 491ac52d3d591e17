"""One synth of the CDK app per test session, shared by every infra test.

The app is synthesized in-process exactly as `cdk synth` would (cdk.json context, cdk-nag on),
for two guarded regions (so the IAM event forwarder stack is built too) with every control in
enforce mode (so every fix permission is in the template). test_nag_and_lint.py adds one more
synth of the plain cdk.json defaults (report mode, no region).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

ROOT = Path(__file__).resolve().parents[2]
REGIONS = ["us-east-1", "eu-west-1"]
EMAIL = "secops@example.com"
MAIN = "SsmGuardrail-us-east-1"
OTHER = "SsmGuardrail-eu-west-1"
FORWARDER = "SsmGuardrail-IamEvents"


# Values for CloudFormation pseudo parameters when a test renders an ARN the template builds.
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": "111122223333"}


def render(value: Any) -> str:
    """A template string value (Fn::Join of literals and pseudo-parameter Refs) as AWS sees it."""
    if isinstance(value, str):
        return value
    if "Ref" in value and value["Ref"] in PSEUDO:
        return PSEUDO[value["Ref"]]
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(render(p) for p in parts)
    raise ValueError(f"not a pseudo-parameter expression: {value!r}")


def cdk_json_context() -> dict[str, Any]:
    return json.loads((ROOT / "cdk.json").read_text())["context"]


@contextmanager
def without_cli_environment() -> Iterator[None]:
    """Synth as offline `cdk synth` with no credentials: no CDK_DEFAULT_ACCOUNT/REGION."""
    saved = {
        k: os.environ.pop(k)
        for k in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION")
        if k in os.environ
    }
    try:
        yield
    finally:
        os.environ.update(saved)


@dataclass
class Synth:
    outdir: Path
    templates: dict[str, dict[str, Any]]
    template_files: list[Path]
    seconds: float
    _assertions: dict[str, Any] = field(default_factory=dict)

    def assertion(self, stack: str) -> Any:
        """aws_cdk.assertions.Template of one stack (built once)."""
        from aws_cdk.assertions import Template

        if stack not in self._assertions:
            self._assertions[stack] = Template.from_json(self.templates[stack])
        return self._assertions[stack]

    def resources(self, stack: str, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.templates[stack]["Resources"].items() if v["Type"] == kind}


def enforce_context() -> dict[str, Any]:
    """Every control in enforce mode: the Lambdas then carry every permission the engine
    declares. Every region, and an alarm e-mail."""
    from guardrail.controls import REGISTRY

    return {
        **cdk_json_context(),
        "regions": REGIONS,
        "notificationEmail": EMAIL,
        "controlModes": {cid: "enforce" for cid in REGISTRY},
    }


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    from app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out")
    started = time.monotonic()
    with without_cli_environment():
        assembly = build_app(context=enforce_context(), outdir=str(outdir)).synth()  # cdk-nag runs
    seconds = time.monotonic() - started
    stacks = list(assembly.stacks)
    return Synth(
        outdir=outdir,
        templates={s.stack_name: s.template for s in stacks},
        template_files=[Path(s.template_full_path) for s in stacks],
        seconds=seconds,
    )
