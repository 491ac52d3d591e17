"""The CloudTrail event names AWS-NOTES.md "Events" lists, by event source: one list for the
parser's tests and the stack's."""

from __future__ import annotations

# AWS-NOTES.md "Events": every CloudTrail event name that can change a control's outcome.
AWS_NOTES_EVENTS: dict[str, frozenset[str]] = {
    "aws.ec2": frozenset(
        {
            "AuthorizeSecurityGroupIngress",
            "ModifySecurityGroupRules",
            "RevokeSecurityGroupIngress",
            "RunInstances",
            "StartInstances",
            "ModifyInstanceAttribute",
            "ModifyNetworkInterfaceAttribute",
            # Not in AWS-NOTES.md's list: an attached interface brings its groups to the instance.
            "AttachNetworkInterface",
            # Nor this: an Elastic IP makes internet SSH through the instance's groups CRITICAL.
            "AssociateAddress",
            # And an IPv6 address for a ::/0 rule (and back to HIGH without it).
            "AssignIpv6Addresses",
            "UnassignIpv6Addresses",
            # Nor these: a prefix list's entries are the source of every rule referencing it.
            "ModifyManagedPrefixList",
            "RestoreManagedPrefixListVersion",
            "AssociateIamInstanceProfile",
            "DisassociateIamInstanceProfile",
            "ReplaceIamInstanceProfileAssociation",
        }
    ),
    "aws.iam": frozenset(
        {
            "DetachRolePolicy",
            "DeleteRolePolicy",
            "RemoveRoleFromInstanceProfile",
            "DeleteInstanceProfile",
            # Not in AWS-NOTES.md's list: the SSM role check simulates the SSM Agent's actions
            # and the logging check log delivery, each over the role's managed and inline
            # policies and its permissions boundary; a role joining a profile reaches its
            # instances.
            "AttachRolePolicy",
            "PutRolePolicy",
            "PutRolePermissionsBoundary",
            "DeleteRolePermissionsBoundary",
            "AddRoleToInstanceProfile",
            # Not in AWS-NOTES.md's list either: a customer-managed policy given a new default
            # version changes every role using it (an equivalent of the core policy, a Deny, a
            # boundary, a delivery grant) without any role event.
            "CreatePolicyVersion",
            "SetDefaultPolicyVersion",
            # Nor this: a role's trust decides whether EC2 may assume it (its instances'
            # credentials) and whom else a policy attached for them reaches.
            "UpdateAssumeRolePolicy",
        }
    ),
    "aws.ssm": frozenset(
        {
            "CreateDocument",
            "UpdateDocument",
            "UpdateDocumentDefaultVersion",
            "DeleteDocument",
        }
    ),
}
