"""What one evaluation covers: the whole account-region (drift scan) or what an event touched."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    """Resources to evaluate. `full` reads everything; otherwise only the named resources.

    Instances are found by id, by one of their network interfaces, by a security group on any
    of their interfaces (or one referencing a named prefix list), by instance profile name, by a role that one of their profiles
    carries, or by a managed policy such a role has attached or as its permissions boundary.
    `controls` limits the evaluation (and so the reads) to those control ids; empty means every
    enabled control.
    """

    full: bool = False
    instance_ids: frozenset[str] = frozenset()
    interface_ids: frozenset[str] = frozenset()
    group_ids: frozenset[str] = frozenset()
    prefix_list_ids: frozenset[str] = frozenset()  # the groups whose rules reference them
    profile_names: frozenset[str] = frozenset()
    # The named profiles were deleted (DeleteInstanceProfile): their instances are found through
    # their associations, which still name them; a profile created under the name since is not
    # theirs. A named profile that exists is read by name, and its ARN finds its instances.
    profiles_deleted: bool = False
    role_names: frozenset[str] = frozenset()
    policy_arns: frozenset[str] = frozenset()  # customer-managed policies: their roles' instances
    preferences: bool = False  # evaluate the region's Session Manager preferences
    controls: frozenset[str] = frozenset()

    @classmethod
    def everything(cls) -> Scope:
        return cls(full=True, preferences=True)

    @property
    def empty(self) -> bool:
        return not (
            self.full
            or self.instance_ids
            or self.interface_ids
            or self.group_ids
            or self.prefix_list_ids
            or self.profile_names
            or self.role_names
            or self.policy_arns
            or self.preferences
        )
