"""ssm-guardrail: keep EC2 fleets on Session Manager (no internet SSH, SSM role, session logging)."""

__version__ = "0.1.0"
