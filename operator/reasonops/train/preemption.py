"""Stop on SIGTERM without losing work: a checkpoint of the current step, then an exit that restarts the group.

Kubernetes asks a pod to stop with SIGTERM (Kueue's or the scheduler's preemption, a node drain, `kubectl
delete pod`) and kills it with SIGKILL when its grace period (terminationGracePeriodSeconds) runs out. In a
pod of several processes the launcher passes the signal to torchrun, which passes it to every worker and
waits for them (`run_group` sets its TORCH_ELASTIC_SHUTDOWN_TIMEOUT; the kubelet's SIGKILL is the real limit).

In each process `StopSignal` only records the first signal. At every step boundary the training loop asks
whether any rank was signalled: an all-reduce (MAX) of the flag, so that every rank of every pod, signalled or
not, sees the same answer at the same step. ZeRO-3 needs that: each rank holds a shard, and every rank must take part in the
save. The trainer then writes the current step's checkpoint the usual way (checkpoints.save_checkpoint: into
`.tmp-step-N`, renamed, `_COMPLETE` last) and raises errors.Stopped; the pod exits with
contract.STOPPED_EXIT_CODE, which the Job's pod failure policy ignores, and the Job starts the pod again. The
restarted group resumes from that checkpoint: one loss curve, no step done twice or skipped.

A second signal ends the process at once, with the signal's default action: the checkpoint being written
stays a `.tmp-` directory, is never resumed from and is removed on the next start, so the previous complete
checkpoint is the one resumed from. So does the grace period running out (SIGKILL).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Optional

log = logging.getLogger("reasonops.train")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Fault injection for tests, like trainer.CRASH_AFTER_CHECKPOINT. The pause makes the moment a test stops or
# kills a run deterministic: after the step PAUSE_AT_STEP names (and its checkpoint, if one is due) the process of
# rank PAUSE_RANK (default 0) stands still until it gets a stop signal or is killed (at most PAUSE_LIMIT_S); its
# peers wait for it in the next collective, so the whole group stands still at that step. Only a step the process
# trained pauses: a run resumed from that step's checkpoint goes on. SIGNAL_DURING_STOP_CHECKPOINT sends the
# process a second signal while its stop checkpoint is being written.
PAUSE_AT_STEP = "REASONOPS_TEST_PAUSE_AT_STEP"
PAUSE_RANK = "REASONOPS_TEST_PAUSE_RANK"
PAUSE_LIMIT_S = 600.0
SIGNAL_DURING_STOP_CHECKPOINT = "REASONOPS_SIGNAL_DURING_STOP_CHECKPOINT"


class StopSignal:
    """The handler of SIGTERM and SIGINT while training: the first one asks for a stop at the next step
    boundary; a second one ends the process at once (the signal's default action)."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is not threading.main_thread():
            log.warning("training outside the main thread: SIGTERM stops it without a checkpoint")
            return self
        self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *_exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, _frame: Optional[FrameType]) -> None:
        if self.received is None:
            self.received = signum
            return
        os.write(2, f"second signal {signal.Signals(signum).name}: stopping now, without a checkpoint\n".encode())
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    @property
    def requested(self) -> bool:
        """Whether this process was asked to stop; the trainer asks every rank at once at each step boundary."""
        return self.received is not None

    def pause_for_test(self, step: int, rank: int) -> None:
        """PAUSE_AT_STEP: after `step`, the process of rank PAUSE_RANK waits here until it gets a stop signal or is
        killed (at most PAUSE_LIMIT_S)."""
        if os.environ.get(PAUSE_AT_STEP) != str(step) or os.environ.get(PAUSE_RANK, "0") != str(rank):
            return
        log.warning("%s=%d: rank %d paused after its step until it is signalled or killed (at most %.0f s)",
                    PAUSE_AT_STEP, step, rank, PAUSE_LIMIT_S)
        deadline = time.monotonic() + PAUSE_LIMIT_S
        while self.received is None and time.monotonic() < deadline:
            time.sleep(0.05)


def stop_checkpoint_export(export: Optional[Callable[[Path], Any]]) -> Optional[Callable[[Path], Any]]:
    """The export step of the stop checkpoint (run before its marker), with SIGNAL_DURING_STOP_CHECKPOINT's
    second signal after it: the moment a second `kubectl delete` or the grace period would interrupt it."""
    if not os.environ.get(SIGNAL_DURING_STOP_CHECKPOINT):
        return export

    def export_then_signal(directory: Path) -> None:
        if export is not None:
            export(directory)
        log.warning("%s: a second SIGTERM while %s is written", SIGNAL_DURING_STOP_CHECKPOINT, directory)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs between bytecodes: the process ends here

    return export_then_signal
