"""The stacks: one GuardrailStack per guarded account-region, plus the us-east-1 IAM event forwarder."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from .config import GuardrailConfig
from .dashboards import AlarmTopic, FindingInsights, OperationsDashboard, dead_letter_alarm
from .functions import GuardrailFunctions
from .instance_access import InstanceAccess
from .session_log_store import SessionLogStore
from .triggers import IamEventForwarder, Triggers, dead_letter_queue


class GuardrailStack(Stack):
    """Everything one account-region needs: session-log store, instance access, Lambdas, triggers,
    insights, dashboard and alarms."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: GuardrailConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.store = SessionLogStore(
            self,
            "SessionLogs",
            prefix=config.session_log_prefix,
            log_group_name=config.session_log_group_name,
            retention_days=config.session_log_retention_days,
        )
        self.access = InstanceAccess(self, "InstanceAccess", store=self.store)
        self.dlq = dead_letter_queue(self, "DeadLetters")
        self.functions = GuardrailFunctions(
            self,
            "Functions",
            config=config,
            store=self.store,
            access=self.access,
            failures=self.dlq,
        )
        self.triggers = Triggers(
            self,
            "Triggers",
            drift_scan=self.functions.drift_scan,
            on_change=self.functions.on_change,
            dlq=self.dlq,
            schedule=config.scan_schedule,
        )
        if config.publish:
            self.insights = FindingInsights(
                self,
                "Insights",
                product_arn=self.functions.product_arn,
                insight_scope=config.insight_scope,
            )
        self.operations = OperationsDashboard(
            self,
            "Operations",
            functions=self.functions.functions,
            dlq=self.dlq,
            notification_email=config.notification_email,
        )
        for name, value in {
            "SessionLogBucket": self.store.bucket.bucket_name,
            "SessionLogGroup": self.store.log_group.log_group_name,
            "InstanceProfile": self.access.profile.instance_profile_name,
            "AlarmTopic": self.operations.topic.topic_arn,
            "DeadLetterQueue": self.dlq.queue_url,
            "DriftScanFunction": self.functions.drift_scan.function_name,
            "OnChangeFunction": self.functions.on_change.function_name,
            # `env $(…) guardrail scan`: the CLI judges and fixes as the Lambdas do (no spaces).
            "CliSettings": " ".join(f"{k}={v}" for k, v in self.functions.cli_settings.items()),
        }.items():
            CfnOutput(self, name, value=value)


class IamEventForwarderStack(Stack):
    """Deployed in the IAM event region (us-east-1) whenever other regions are guarded."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        regions: list[str],
        notification_email: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.dlq = dead_letter_queue(self, "DeadLetters")
        self.forwarder = IamEventForwarder(self, "IamEvents", regions=regions, dlq=self.dlq)
        self.topic = AlarmTopic(self, "Alarms", notification_email=notification_email).topic
        self.alarm = dead_letter_alarm(self, "DeadLetterAlarm", self.dlq, self.topic)
        CfnOutput(self, "DeadLetterQueue", value=self.dlq.queue_url)
