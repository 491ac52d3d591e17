"""What people look at: Security Hub insights over the guardrail's findings, a CloudWatch dashboard
of its Powertools metrics, and alarms (Lambda errors, dead letters) to an SNS topic."""

from __future__ import annotations

import re
from typing import Any

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_securityhub as securityhub
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from guardrail.controls import REGISTRY
from guardrail.insights import finding_insights

from .functions import METRICS_NAMESPACE, SERVICE_NAME

METRIC_PERIOD = Duration.minutes(5)

# The Powertools metrics the Lambdas emit (lambdas/guardrail/runtime.py record_metrics and
# lambdas/handlers/*.py), with the dimension names each carries: Powertools adds `service`
# (POWERTOOLS_SERVICE_NAME) to every metric, record_metrics adds `control` to the per-control
# counts. tests/infra/test_dashboard.py runs that code and holds the dashboard to it.
CONTROL_DIMENSIONS = ("control", "service")
SERVICE_DIMENSIONS = ("service",)
PER_CONTROL_METRICS = (
    "FindingsFailed",
    "FindingsPassed",
    "FixesApplied",
    "FixesFailed",
    "FixesDeferred",
    "StepsStopped",
)
ERROR_METRICS = ("PublishErrors", "EventsDropped")
EVENT_METRICS = (
    "EventsEvaluated",
    "EventsIgnored",
    "EventsDeferred",
    "EventsDropped",
    "EventsRetried",
)


def _cfn_filters(filters: dict[str, list[dict[str, Any]]]) -> Any:
    """Security Hub's API spelling of insight filters as CloudFormation's (CDK's structs)."""
    insight = securityhub.CfnInsight

    def one(condition: dict[str, Any]) -> Any:
        if "DateRange" in condition:
            days = condition["DateRange"]
            return insight.DateFilterProperty(
                date_range=insight.DateRangeProperty(unit=days["Unit"], value=days["Value"])
            )
        return insight.StringFilterProperty(
            comparison=condition["Comparison"], value=condition["Value"]
        )

    return insight.AwsSecurityFindingFiltersProperty(
        **{
            re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower(): [one(c) for c in conditions]
            for name, conditions in filters.items()
        }
    )


class FindingInsights(Construct):
    """Security Hub custom insights over the guardrail's own findings (GeneratorId ssm-guardrail/*,
    guardrail.insights).

    scope "account": only this account-region's findings (ProductArn of its default product).
    scope "organization": any account's and linked region's ssm-guardrail findings, for the
    delegated administrator's aggregation region (ProductArn differs per account and region there).
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, product_arn: str, insight_scope: str
    ) -> None:
        super().__init__(scope, construct_id)
        definitions = finding_insights(product_arn if insight_scope == "account" else None)
        self.insights = {
            cid: securityhub.CfnInsight(
                self,
                cid,
                name=insight.name,
                group_by_attribute=insight.group_by,
                filters=_cfn_filters(insight.filters),
            )
            for cid, insight in definitions.items()
        }


def _search(metric: str, dimensions: tuple[str, ...], label: str) -> cw.MathExpression:
    """Every series of one Powertools metric with exactly these dimension names (a schema-bound
    CloudWatch SEARCH), limited to this service; one line per `control` where it has one."""
    schema = ",".join((METRICS_NAMESPACE, *dimensions))
    return cw.MathExpression(
        expression=f'SEARCH(\'{{{schema}}} service="{SERVICE_NAME}" MetricName="{metric}"\', '
        f"'Sum', {int(METRIC_PERIOD.to_seconds())})",
        label=label,
        using_metrics={},
        period=METRIC_PERIOD,
    )


def _guardrail_metric(metric: str, **dimensions: str) -> cw.Metric:
    """One Powertools metric of this service, by its exact dimensions (alarms cannot SEARCH)."""
    return cw.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=metric,
        dimensions_map={**dimensions, "service": SERVICE_NAME},
        statistic="Sum",
        period=METRIC_PERIOD,
    )


def _per_control(metric: str) -> cw.MathExpression:
    # Dynamic label: the control id of each series the search returns.
    return _search(metric, CONTROL_DIMENSIONS, "${PROP('Dim.control')}")


def _per_service(metric: str) -> cw.MathExpression:
    return _search(metric, SERVICE_DIMENSIONS, metric)


class OperationsDashboard(Construct):
    """CloudWatch dashboard + alarms; alarm notifications go to an encrypted SNS topic."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: dict[str, lambda_.Function],
        dlq: sqs.IQueue,
        notification_email: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = AlarmTopic(self, "Alarms", notification_email=notification_email).topic

        self.alarms: list[cw.Alarm] = []
        for name, function in functions.items():
            self.alarms.append(
                self._alarm(
                    f"{name}Errors",
                    function.metric_errors(period=METRIC_PERIOD, statistic="Sum"),
                    f"ssm-guardrail {name} Lambda failed (see its log group)",
                )
            )
        self.alarms.append(dead_letter_alarm(self, "DeadLetters", dlq, self.topic))
        # What ends an invocation normally yet needs a person: a fix that failed (internet SSH
        # left open, say), findings Security Hub refused, an event nobody could read. Alarms
        # name their metric exactly (no SEARCH): one per control for the fixes.
        for control in REGISTRY:
            self.alarms.append(
                self._alarm(
                    f"FixesFailed-{control}",
                    _guardrail_metric("FixesFailed", control=control),
                    f'ssm-guardrail: a {control} fix failed (the Lambdas\' logs, message "fix")',
                )
            )
        for metric, why in (
            ("PublishErrors", "findings were not imported into Security Hub or not resolved"),
            ("EventsDropped", "an event could not be read (routing or a new event shape)"),
        ):
            self.alarms.append(
                self._alarm(metric, _guardrail_metric(metric), f"ssm-guardrail: {why}")
            )

        self.dashboard = cw.Dashboard(self, "Dashboard", period_override=cw.PeriodOverride.AUTO)
        controls = ", ".join(REGISTRY)
        self.dashboard.add_widgets(
            cw.TextWidget(
                markdown=f"# ssm-guardrail\nControls: {controls}. Metric series are per `control` "
                "dimension; findings are in Security Hub (insights named ssm-guardrail: ...).",
                width=24,
                height=2,
            )
        )
        titles = {
            "FindingsFailed": "Findings failed (per control)",
            "FindingsPassed": "Findings passed (per control)",
            "FixesApplied": "Fixes applied (per control)",
            "FixesFailed": "Fixes failed (per control)",
            "FixesDeferred": "Fixes left to the next scan: out of time (per control)",
            "StepsStopped": "Checks, fixes or findings stopped by a defect (per control)",
        }
        graphs = [
            cw.GraphWidget(title=titles[m], left=[_per_control(m)], width=12)
            for m in PER_CONTROL_METRICS
        ]
        for pair in range(0, len(graphs), 2):
            self.dashboard.add_widgets(*graphs[pair : pair + 2])
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Lambda errors and guardrail errors",
                left=[
                    f.metric_errors(label=f"{n} errors", period=METRIC_PERIOD)
                    for n, f in functions.items()
                ]
                + [_per_service(m) for m in ERROR_METRICS],
                width=12,
            ),
            cw.GraphWidget(
                title="Lambda duration (p99)",
                left=[
                    f.metric_duration(label=f"{n} p99", statistic="p99", period=METRIC_PERIOD)
                    for n, f in functions.items()
                ],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Invocations, completed drift scans and throttles",
                left=[
                    f.metric_invocations(label=f"{n} invocations", period=METRIC_PERIOD)
                    for n, f in functions.items()
                ]
                + [_per_service("ScansCompleted")],
                right=[
                    f.metric_throttles(label=f"{n} throttles", period=METRIC_PERIOD)
                    for n, f in functions.items()
                ],
                width=12,
            ),
            cw.GraphWidget(
                title="On-change events (evaluated, ignored, dropped, retried)",
                left=[_per_service(m) for m in EVENT_METRICS],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24)
        )

    def _alarm(self, construct_id: str, metric: cw.IMetric, description: str) -> cw.Alarm:
        alarm = cw.Alarm(
            self,
            construct_id,
            alarm_description=description,
            metric=metric,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        return alarm


class AlarmTopic(Construct):
    """An SNS topic for alarms, encrypted with a key CloudWatch may use; email it if configured."""

    def __init__(self, scope: Construct, construct_id: str, *, notification_email: str) -> None:
        super().__init__(scope, construct_id)
        # CloudWatch alarms can publish to an encrypted topic only with a customer managed key
        # whose policy lets cloudwatch.amazonaws.com use it (the aws/sns key does not).
        self.key = kms.Key(
            self,
            "Key",
            description="ssm-guardrail: encrypts the alarm topic",
            enable_key_rotation=True,
            # It protects messages in flight only: nothing outlives the topic, so a destroy
            # schedules its deletion (the shortest wait) instead of leaving it billed.
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            )
        )
        self.topic = sns.Topic(
            self,
            "Topic",
            display_name="ssm-guardrail alarms",
            master_key=self.key,
            enforce_ssl=True,
        )
        # enforce_ssl gives the topic its own policy, which replaces SNS's default one (the
        # account-wide Publish grant): without this statement CloudWatch cannot deliver an alarm.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{Aws.PARTITION}:cloudwatch:{Aws.REGION}:"
                        f"{Aws.ACCOUNT_ID}:alarm:*"
                    },
                },
            )
        )
        if notification_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(notification_email))


def dead_letter_alarm(
    scope: Construct, construct_id: str, dlq: sqs.IQueue, topic: sns.ITopic
) -> cw.Alarm:
    """Alarm as soon as one message sits in the dead-letter queue."""
    alarm = cw.Alarm(
        scope,
        construct_id,
        alarm_description="ssm-guardrail events could not be delivered or processed "
        "(dead-letter queue not empty)",
        metric=dlq.metric_approximate_number_of_messages_visible(
            period=METRIC_PERIOD, statistic="Maximum"
        ),
        threshold=1,
        evaluation_periods=1,
        comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
    )
    alarm.add_alarm_action(cw_actions.SnsAction(topic))
    return alarm
