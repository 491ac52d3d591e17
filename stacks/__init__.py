"""Infrastructure of ssm-guardrail: one GuardrailStack per account-region, built from small constructs."""

from .config import ConfigError, GuardrailConfig
from .guardrail_stack import GuardrailStack, IamEventForwarderStack

__all__ = ["ConfigError", "GuardrailConfig", "GuardrailStack", "IamEventForwarderStack"]
