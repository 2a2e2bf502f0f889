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


class Stopped(Exception):
    """A workload asked to stop (SIGTERM: preemption, a drain, a deleted pod) that saved its state first: the
    pod exits with contract.STOPPED_EXIT_CODE and the run continues from `checkpoint` when it starts again."""

    def __init__(self, step: int, checkpoint: str | None) -> None:
        saved = f"checkpoint {checkpoint} is complete" if checkpoint else "no step had been done"
        super().__init__(f"stopped on a signal at step {step}; {saved} and the next start resumes from there")
        self.step = step
        self.checkpoint = checkpoint
