"""The exit protocol in one place: how a step's process ends, and what the job system makes of it.

    from toolkit.outcomes import ExitCode, Reason, decide, shell_status
    return ExitCode.OUT_OF_MEMORY                      # a command: `python -m toolkit train` ran out of memory
    code = shell_status(proc.returncode)               # a launcher: a child killed by SIGTERM -> 143
    outcome = decide(code, tail)                       # the worker: exit code + log tail -> job state and reason

A step (`python -m toolkit train`, `evaluate`, any command a job runs) talks to the worker through its exit
status alone, so both sides read the numbers from here:

- 0 success; 1 a generic failure (an uncaught exception); 2 bad input (one `error: <field>: ...` line);
- 3 out of memory (`error: out_of_memory: ...`): failed, never retried (the same settings would fail again);
- 143 (128 + SIGTERM) interrupted: a SIGTERM / SIGUSR2 (cancel, worker stop, Slurm preemption notice) arrived,
  a checkpoint was saved, and `--resume` continues the run: re-queued, resumable;
- killed by a signal (returncode -N from Popen, or 128 + N from a shell): failed "killed by signal N (NAME)";
  except SIGKILL that nobody here sent (the kernel's OOM killer sends it): re-queued to resume from its last
  checkpoint within the attempt cap, reason `out_of_memory (killed by the kernel)` when the cgroup counted an
  OOM kill, else `killed (SIGKILL)`.

`decide` turns one ended run (its exit code, its last log lines, and what the executor learned from its
engine) into an `Outcome`: the job's next state (`JobState`, queued = run it again from its checkpoint) and
its reason. The reasons are the `Reason` strings that the store records and the app shows.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from toolkit.errors import CmbaError
from toolkit.queue.states import JobState


class ExitCode(IntEnum):
    """Exit statuses of the toolkit's commands and launchers."""

    SUCCESS = 0
    FAILURE = 1
    """an uncaught exception (Python's own status for one)"""
    BAD_INPUT = 2
    """a CmbaError: one `error: ...` line names the field and what is allowed"""
    OUT_OF_MEMORY = 3
    INTERRUPTED = 128 + signal.SIGTERM
    """143: stopped by SIGTERM / SIGUSR2 after saving a checkpoint; `--resume` continues"""
    KEYBOARD_INTERRUPT = 128 + signal.SIGINT
    """130: Ctrl-C"""


class Reason(StrEnum):
    """Why a job ended (or went back to the queue), as the store records it."""

    OUT_OF_MEMORY = "out_of_memory"
    """also the marker a step writes in its log (`error: out_of_memory: ...`)"""
    CANCELLED = "cancelled by user"
    WORKER_STOPPED = "worker stopped"
    WORKER_LOST = "worker lost"
    TERMINATED = "terminated (SIGTERM)"
    LAUNCH_FAILED = "launch failed"
    REQUEUED_BY_ENGINE = "requeued by the engine"
    # what a cluster engine (Slurm) says about a run it ended or put back
    ENGINE_REQUEUED = "requeued by Slurm"
    ENGINE_CANCELLED = "cancelled in Slurm (scancel)"
    ENGINE_INTERRUPTED = "interrupted by Slurm (checkpoint saved)"
    ENGINE_LOST = "lost (Slurm no longer knows the job)"
    PREEMPTED = "preempted"
    NODE_FAILURE = "node failure"
    REVOKED = "revoked by the federation"
    TIME_LIMIT = "time limit"
    DEADLINE = "deadline reached"
    OOM_KILLED = "out_of_memory (killed by the kernel)"
    """SIGKILL while the cgroup's memory.events counted an OOM kill: re-queued (it resumes from its checkpoint)"""
    KILLED = "killed (SIGKILL)"
    """SIGKILL from outside the toolkit, most often the OOM killer where the cgroup cannot be read: re-queued"""


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"


def killed_by(number: int) -> str:
    """The reason of a step ended by signal `number`, e.g. 'killed by signal 9 (SIGKILL)'."""
    return f"killed by signal {number} ({signal_name(number)})"


def exit_reason(code: int) -> str:
    """The reason of a step that exited with a non-zero `code`, e.g. 'exit code 1'."""
    return f"exit code {code}"


def shell_status(returncode: int) -> int:
    """Popen's returncode as a shell reports it: a child killed by signal N (returncode -N) -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def is_interrupted(code: int | None) -> bool:
    """The step stopped on SIGTERM: exit 143 (it saved a checkpoint) or killed by SIGTERM itself."""
    return code in (ExitCode.INTERRUPTED, -signal.SIGTERM)


def mentions_out_of_memory(lines) -> bool:
    return any(Reason.OUT_OF_MEMORY in line for line in lines)


def error_line(tail: list[str]) -> str | None:
    """The last `error: ...` line of a step's log tail (the one-line message of a CmbaError)."""
    return next((line.strip() for line in reversed(tail) if line.strip().startswith("error:")), None)


def describe_exit(code: int | None, tail: list[str]) -> tuple[str | None, str | None]:
    """(reason, last 'error:' line) of a step that ended with `code` (reason None = success)."""
    message = error_line(tail)
    if code == ExitCode.SUCCESS:
        return None, None
    if code == ExitCode.OUT_OF_MEMORY or mentions_out_of_memory(tail):
        return Reason.OUT_OF_MEMORY, message
    if code is not None and code < 0:
        return killed_by(-code), message
    return exit_reason(code), message


def is_sigkill(code: int | None) -> bool:
    return code in (-signal.SIGKILL, 128 + signal.SIGKILL)


def retryable(reason: str | None) -> bool:
    """Whether running the job again could end differently: not after running out of memory."""
    return reason != Reason.OUT_OF_MEMORY


@dataclass(frozen=True)
class Outcome:
    """What the worker records for a run that ended."""

    state: JobState
    """SUCCEEDED, FAILED, CANCELLED, or QUEUED: run it again, resuming from its last checkpoint"""
    reason: str | None = None
    message: str | None = None
    """the step's last `error:` line"""
    exit_code: int | None = None
    count_attempt: bool = True
    """(QUEUED) the rerun spends an attempt; not when the worker itself stopped"""

    @property
    def requeue(self) -> bool:
        return self.state is JobState.QUEUED


def decide(code: int | None, tail: list[str], *, shutdown: bool = False, cancelling: bool = False,
           engine_reason: str | None = None, engine_resume: bool = False,
           engine_cancelled: bool = False) -> Outcome:
    """The outcome of a run whose last step ended with `code` and logged `tail`.

    `shutdown`: our worker stopped it (re-queued, no attempt spent); `cancelling`: the user cancelled it;
    `engine_*`: the executor's account (RunStatus.reason / resume / cancelled), e.g. Slurm preempted it.

        >>> decide(3, ["error: out_of_memory: step 4"]).reason
        <Reason.OUT_OF_MEMORY: 'out_of_memory'>
        >>> decide(143, []).state
        <JobState.QUEUED: 'queued'>
    """
    reason, message = describe_exit(code, tail)
    if engine_reason == Reason.OUT_OF_MEMORY:
        reason = Reason.OUT_OF_MEMORY
    if shutdown:
        return Outcome(JobState.QUEUED, Reason.WORKER_STOPPED, exit_code=code, count_attempt=False)
    if cancelling:
        return Outcome(JobState.CANCELLED, Reason.CANCELLED, exit_code=code)
    if engine_resume and retryable(reason):
        return Outcome(JobState.QUEUED, engine_reason or Reason.REQUEUED_BY_ENGINE, message, code)
    if engine_cancelled:
        return Outcome(JobState.CANCELLED, engine_reason, message, code)
    if is_sigkill(code) and engine_reason in (None, Reason.OOM_KILLED):  # not ours: probably the OOM killer
        why = engine_reason or Reason.KILLED
        return Outcome(JobState.QUEUED, why, message or f"error: {why}; resuming from the last checkpoint", code)
    if reason is None and engine_reason:  # exit 0, yet the engine says otherwise
        return Outcome(JobState.FAILED, engine_reason, message, code)
    if reason is None:
        return Outcome(JobState.SUCCEEDED, exit_code=ExitCode.SUCCESS)
    if is_interrupted(code) and retryable(reason):
        return Outcome(JobState.QUEUED, Reason.TERMINATED, message, code)
    return Outcome(JobState.FAILED, reason, message, code)


class OutOfMemory(CmbaError):
    """Training ran out of (GPU) memory; the command exits `ExitCode.OUT_OF_MEMORY`, the job fails with
    reason out_of_memory (not retried)."""

    exit_code = ExitCode.OUT_OF_MEMORY


class Interrupted(CmbaError):
    """A termination signal arrived and a checkpoint was saved; the command exits `ExitCode.INTERRUPTED`."""

    exit_code = ExitCode.INTERRUPTED
