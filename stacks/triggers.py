"""When the Lambdas run: the drift-scan schedule, the change rules, the dead-letter queue, and the
us-east-1 forwarder that carries IAM's global events to the other regions' default buses."""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from .events import CLOUDTRAIL_EVENTS, cloudtrail_pattern, state_change_pattern
from .nag import acknowledge

# EventBridge allows five targets per rule.
MAX_TARGETS_PER_RULE = 5


def dead_letter_queue(scope: Construct, construct_id: str) -> sqs.Queue:
    """An encrypted, TLS-only queue for events EventBridge or Lambda could not deliver or process."""
    queue = sqs.Queue(
        scope,
        construct_id,
        # SSE-SQS: EventBridge can write to it without a key policy; KMS would add cost, not control.
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=Duration.days(14),
    )
    acknowledge(
        queue,
        "AwsSolutions-SQS3",
        "This queue is itself the dead-letter queue of the guardrail's EventBridge targets and "
        "Lambda async invocations; a DLQ of a DLQ would only move the same messages.",
    )
    return queue


def _pattern(raw: dict[str, object]) -> events.EventPattern:
    return events.EventPattern(
        source=raw["source"],  # type: ignore[arg-type]
        detail_type=raw["detail_type"],  # type: ignore[arg-type]
        detail=raw["detail"],  # type: ignore[arg-type]
    )


class Triggers(Construct):
    """Schedule -> drift scan; CloudTrail and state-change rules -> on-change; failures -> the DLQ."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        drift_scan: lambda_.IFunction,
        on_change: lambda_.IFunction,
        dlq: sqs.IQueue,
        schedule: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.rules: dict[str, events.Rule] = {}

        self.rules["Schedule"] = events.Rule(
            self,
            "Schedule",
            description="ssm-guardrail: periodic drift scan of the whole account-region",
            schedule=events.Schedule.expression(schedule),
            targets=[self._target(drift_scan, dlq, retries=2)],
        )
        for source in CLOUDTRAIL_EVENTS:
            name = source.split(".", 1)[1].capitalize() + "Changes"
            self.rules[name] = events.Rule(
                self,
                name,
                description=f"ssm-guardrail: {source} calls that can change a control's outcome",
                event_pattern=_pattern(cloudtrail_pattern(source)),
                targets=[self._target(on_change, dlq, retries=8)],
            )
        self.rules["InstanceStateChanges"] = events.Rule(
            self,
            "InstanceStateChanges",
            description="ssm-guardrail: instances entering pending/running",
            event_pattern=_pattern(state_change_pattern()),
            targets=[self._target(on_change, dlq, retries=8)],
        )

    @staticmethod
    def _target(
        function: lambda_.IFunction, dlq: sqs.IQueue, *, retries: int
    ) -> targets.LambdaFunction:
        # EventBridge retries only delivery failures (throttling, Lambda unavailable); the function's
        # own errors are retried by Lambda's async invocation and then sent to the same queue.
        return targets.LambdaFunction(
            function,
            dead_letter_queue=dlq,
            retry_attempts=retries,
            max_event_age=Duration.hours(6),
        )


class IamEventForwarder(Construct):
    """In the IAM event region (us-east-1): forward IAM's CloudTrail events to other regions.

    IAM is global and CloudTrail delivers its management events to us-east-1 only. Forwarding them
    to each guarded region's default bus lets that region's own on-change rule and Lambda react,
    with the region-scoped permissions and the regional Security Hub it already has.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, regions: list[str], dlq: sqs.IQueue
    ) -> None:
        super().__init__(scope, construct_id)
        self.rules: list[events.Rule] = []
        buses = [
            events.EventBus.from_event_bus_arn(
                self,
                f"Bus-{region}",
                f"arn:{Aws.PARTITION}:events:{region}:{Aws.ACCOUNT_ID}:event-bus/default",
            )
            for region in regions
        ]
        for index in range(0, len(buses), MAX_TARGETS_PER_RULE):
            chunk = buses[index : index + MAX_TARGETS_PER_RULE]
            rule = events.Rule(
                self,
                f"ForwardIamChanges{index // MAX_TARGETS_PER_RULE or ''}",
                description="ssm-guardrail: forward IAM role/profile changes to the guarded regions",
                event_pattern=_pattern(cloudtrail_pattern("aws.iam")),
                targets=[targets.EventBus(bus, dead_letter_queue=dlq) for bus in chunk],
            )
            self.rules.append(rule)
