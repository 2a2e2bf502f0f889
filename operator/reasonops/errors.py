"""Errors that end a workload with a condition reason a user can act on."""

from __future__ import annotations


class WorkloadError(Exception):
    """A workload cannot go on. `reason` is a CamelCase condition reason, `message` says what to fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message}
