"""What one evaluation covers: the whole account-region (drift scan) or what an event touched."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    """Resources to evaluate. `full` reads everything; otherwise only the named resources.

    Instances are found by id, by one of their network interfaces, by a security group on any
    of their interfaces, by instance profile name, or by a role that one of their profiles
    carries. `controls` limits
    the evaluation (and so the reads) to those control ids; empty means every enabled control.
    """

    full: bool = False
    instance_ids: frozenset[str] = frozenset()
    interface_ids: frozenset[str] = frozenset()
    group_ids: frozenset[str] = frozenset()
    profile_names: frozenset[str] = frozenset()
    role_names: frozenset[str] = frozenset()
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
            or self.profile_names
            or self.role_names
            or self.preferences
        )

    def __or__(self, other: Scope) -> Scope:
        return Scope(
            full=self.full or other.full,
            instance_ids=self.instance_ids | other.instance_ids,
            interface_ids=self.interface_ids | other.interface_ids,
            group_ids=self.group_ids | other.group_ids,
            profile_names=self.profile_names | other.profile_names,
            role_names=self.role_names | other.role_names,
            preferences=self.preferences or other.preferences,
            controls=frozenset()
            if not (self.controls and other.controls)
            else self.controls | other.controls,
        )
