"""AWS clients created once per cold start (or CLI run), with one shared botocore Config."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config

from . import __version__

# Nine tries ride out IAM's throttling in a drift scan. Each waits at most 5 s to connect and
# 10 s for an answer (AWS answers these calls in a second or two): a call that never answers
# gives up within 9 x 15 s plus botocore's backoff (at most 91 s), about 4 minutes, inside the
# on-change Lambda's 5 and the 4.5 the drift scan keeps for publishing. With 30 s it took 5.5.
CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 8},
    user_agent_extra=f"ssm-guardrail/{__version__}",
    connect_timeout=5,
    read_timeout=10,
)
# The publisher paces Security Hub and retries throttling itself (5 attempts, with backoff in the
# caller's clock); stacked on the 9 tries above (max_attempts counts retries), one throttled batch
# took 45 requests and up to 7 minutes of botocore's backoff, past what the drift scan keeps for
# publishing. With 3 tries of its own (standard mode: throttling, 5xx answers, dropped
# connections) a batch throttled without end costs 5 x 3 requests.
SECURITY_HUB_CONFIG = CONFIG.merge(Config(retries={"mode": "standard", "total_max_attempts": 3}))
# STS answers the first call of a CLI scan (the account) and is never throttled in practice: an
# endpoint that cannot be reached shows after two tries, not after the nine above (about 50 s of
# backoff). In a Lambda a failure raises, and the invocation is retried.
STS_CONFIG = CONFIG.merge(Config(retries={"mode": "standard", "total_max_attempts": 2}))


NO_REGION_HINT = "pass --region or set AWS_REGION (or AWS_DEFAULT_REGION, or the profile's region)"


def env_region() -> str | None:
    """AWS_REGION, which the AWS CLI v2, the other SDKs and Lambda set and which wins over
    AWS_DEFAULT_REGION and the profile's region there; boto3 alone does not read it."""
    return os.environ.get("AWS_REGION", "").strip() or None


def region_arg(value: str) -> str:
    """A --region flag's value: blank (`--region "$REGION"` with REGION unset) is refused, not
    read as no region, which would scan the default one."""
    if not value.strip():
        raise argparse.ArgumentTypeError("is empty: name a region, or leave it out")
    return value.strip()


def default_region(profile: str | None = None) -> str | None:
    """The region a command uses without --region: AWS_REGION, else boto3's own choice."""
    return env_region() or boto3.Session(profile_name=profile).region_name


@dataclass
class AwsClients:
    """The clients the guardrail uses, built lazily from one session; tests inject their own."""

    session: Any  # boto3.Session
    region: str

    @classmethod
    def create(cls, region: str | None = None, profile: str | None = None) -> AwsClients:
        session = boto3.Session(profile_name=profile, region_name=region or env_region())
        if not session.region_name:
            raise ValueError(f"no AWS region: {NO_REGION_HINT}")
        return cls(session=session, region=session.region_name)

    def _client(self, service: str, config: Config = CONFIG) -> Any:
        return self.session.client(service, region_name=self.region, config=config)

    @cached_property
    def ec2(self) -> Any:
        return self._client("ec2")

    @cached_property
    def iam(self) -> Any:
        return self._client("iam")

    @cached_property
    def ssm(self) -> Any:
        return self._client("ssm")

    @cached_property
    def kms(self) -> Any:
        return self._client("kms")

    @cached_property
    def securityhub(self) -> Any:
        return self._client("securityhub", SECURITY_HUB_CONFIG)

    @cached_property
    def sts(self) -> Any:
        return self._client("sts", STS_CONFIG)

    @cached_property
    def account_id(self) -> str:
        return str(self.sts.get_caller_identity()["Account"])

    @cached_property
    def partition(self) -> str:
        return str(self.session.get_partition_for_region(self.region))
