"""The control registry: each control lives in its own module; order is evaluation order.

The SSM role comes first and SSH last, so in one enforce run an instance gains Session Manager
access before its internet SSH is closed.
"""

from __future__ import annotations

from .base import Control, FixContext, Permission
from .session_logging import SESSION_LOGGING
from .ssh_open import SSH_OPEN
from .ssm_role import SSM_ROLE

REGISTRY: dict[str, Control] = {c.id: c for c in (SSM_ROLE, SESSION_LOGGING, SSH_OPEN)}

__all__ = ["REGISTRY", "Control", "FixContext", "Permission"]
