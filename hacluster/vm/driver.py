"""VM drivers: what a host daemon uses to start, stop and watch its workloads.

Rules:

* Every exit of a VM that was running is reported exactly once: through the
  ``on_exit`` callback and in ``exits``, a bounded list whose entries carry
  increasing sequence numbers (readers ask for what is after the last one they
  saw). A VM that fails to start is not an exit: ``start`` raises
  :class:`VMStartError` instead.
* An exit is classified by whether we asked for it: ``STOPPED`` if we did
  (``stop``, ``kill_all``), else ``INTERNAL_SHUTDOWN`` for status 0 and
  ``CRASH`` for anything else, a signal included.
* :class:`ProcessDriver` runs real processes in the daemon's own process
  group, so the watchdog that kills the group kills them too, and with
  ``PR_SET_PDEATHSIG = SIGKILL``, so the kernel kills them if the daemon dies.
  A VM counts as started once it has stayed alive for the settle time, or,
  given a ``ready_file``, once that file exists (removed before the start, so
  an old one means nothing): the workload says it is ready; given a
  ``ready_command``, once that command exits 0 (run every
  :data:`CHECK_INTERVAL`, each run killed after :data:`CHECK_TIMEOUT`, with
  the VM's environment). A VM that exits first, or is not ready within
  ``ready_timeout``, did not start (it is killed) and :class:`VMStartError`
  says which, with the readiness command's last failure.
* :class:`SimDriver` runs nothing: it accounts memory for large simulated pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1
SETTLE = 0.2
READY_TIMEOUT = 10.0  # seconds a VM with a ready file has to say it is ready
READY_POLL = 0.05
CHECK_INTERVAL = 0.2  # seconds between two runs of a readiness command
CHECK_TIMEOUT = 2.0  # a readiness command running longer has failed (it is killed)
KEEP_EXITS = 1000
STDERR_TAIL = 2000
DRAIN_GRACE = 1.0


class ExitKind(enum.Enum):
    INTERNAL_SHUTDOWN = "internal-shutdown"
    CRASH = "crash"
    STOPPED = "stopped"


@dataclass(frozen=True)
class VMExit:
    seq: int
    vm: str
    kind: ExitKind
    returncode: int
    time: float


class DriverError(RuntimeError):
    """A request a driver cannot carry out; nothing was changed."""


class VMStartError(DriverError):
    """The VM did not start (or is already running here)."""


class VMNotRunning(DriverError):
    """The VM is not running here."""


def exit_kind(returncode: int, requested: bool) -> ExitKind:
    if requested:
        return ExitKind.STOPPED
    return ExitKind.INTERNAL_SHUTDOWN if returncode == 0 else ExitKind.CRASH


class Driver(ABC):
    """What every driver shares: refusing a second start, and reporting exits."""

    def __init__(self, on_exit: Callable[[VMExit], None] | None = None,
                 keep: int = KEEP_EXITS) -> None:
        self.on_exit = on_exit
        self.exits: deque[VMExit] = deque(maxlen=keep)
        self.last_seq = 0

    @abstractmethod
    def running(self) -> dict[str, int]:
        """Every VM running here, as uuid -> pid."""

    @abstractmethod
    def kill_all(self) -> None:
        """Kill every VM at once (the host is fencing)."""

    def _busy(self, vm: str) -> bool:
        return vm in self.running()

    def _refuse_second_start(self, vm: str) -> None:
        if self._busy(vm):
            raise VMStartError(f"VM {vm} is already running here")

    def exits_since(self, seq: int) -> list[VMExit]:
        """The exits still kept with a sequence number above ``seq``."""
        return [e for e in self.exits if e.seq > seq]

    def _report_exit(self, vm: str, returncode: int, requested: bool) -> VMExit:
        self.last_seq += 1
        reported = VMExit(self.last_seq, vm, exit_kind(returncode, requested), returncode,
                          time.monotonic())
        self.exits.append(reported)
        if self.on_exit is not None:
            self.on_exit(reported)
        return reported


def _die_with_parent() -> Callable[[], None]:
    """A preexec function making the child SIGKILLed when this process dies.

    Prepared in the parent so the forked child only calls into libc. If the
    parent died before ``prctl`` took effect, the child kills itself.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


async def _keep_tail(stream: asyncio.StreamReader, tail: bytearray) -> None:
    """Drain a VM's stderr so it never blocks, keeping only its last bytes."""
    while chunk := await stream.read(65536):
        tail += chunk
        del tail[:-STDERR_TAIL]


@dataclass
class _Child:
    process: asyncio.subprocess.Process
    exited: asyncio.Task[int]
    stderr: bytearray
    drain: asyncio.Task[None]
    watch: asyncio.Task[VMExit] | None = None
    stopping: bool = False

    async def stderr_tail(self) -> str:
        """The last of its stderr, once the pipe closes (or after a grace time)."""
        await asyncio.wait({self.drain}, timeout=DRAIN_GRACE)
        self.drain.cancel()
        return self.stderr.decode(errors="replace").strip()

    def kill(self) -> None:
        self.stopping = True
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


async def _ready(child: _Child, ready_file: str, timeout: float) -> str | None:
    """Wait until ``ready_file`` exists (None), the child exits, or ``timeout`` passes
    (why it is not ready)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not os.path.exists(ready_file):
        left = deadline - asyncio.get_running_loop().time()
        if child.exited.done() or left <= 0:
            return f"no {ready_file}"
        await asyncio.wait({child.exited}, timeout=min(READY_POLL, left))
    return None


async def _checked(child: _Child, check: list[str], env: dict[str, str] | None,
                   timeout: float) -> str | None:
    """Run ``check`` until it exits 0 (None), the child exits, or ``timeout`` passes
    (its last failure)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    failed: str | None = "it never ran"
    while True:
        left = deadline - loop.time()
        if child.exited.done() or left <= 0:
            return f"its readiness command did not pass: {failed}"
        failed = await _run_check(check, env, min(CHECK_TIMEOUT, left))
        if failed is None:
            return None
        await asyncio.wait({child.exited}, timeout=min(CHECK_INTERVAL, left))


async def _run_check(check: list[str], env: dict[str, str] | None,
                     timeout: float) -> str | None:
    """One run of a readiness command: None if it exited 0, else why not."""
    try:
        process = await asyncio.create_subprocess_exec(
            *check, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=None if env is None else {**os.environ, **env}, preexec_fn=_die_with_parent())
    except (OSError, ValueError, subprocess.SubprocessError) as error:
        return f"cannot run {check[0]!r}: {error}"
    try:
        code = await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return f"still running after {timeout:g} s"
    return None if code == 0 else f"exit status {code}"


class ProcessDriver(Driver):
    """Runs each VM as a child process of this (asyncio) host daemon."""

    def __init__(self, on_exit: Callable[[VMExit], None] | None = None,
                 keep: int = KEEP_EXITS, settle: float = SETTLE) -> None:
        super().__init__(on_exit, keep)
        self.settle = settle
        self._starting: dict[str, _Child] = {}
        self._running: dict[str, _Child] = {}

    def running(self) -> dict[str, int]:
        return {vm: child.process.pid for vm, child in self._running.items()}

    def _busy(self, vm: str) -> bool:
        return vm in self._running or vm in self._starting

    async def start(self, vm: str, command: list[str], env: dict[str, str] | None = None,
                    ready_file: str | None = None, ready_timeout: float = READY_TIMEOUT,
                    ready_command: list[str] | None = None) -> int:
        """Run ``command`` as VM ``vm`` (``env`` adds to the daemon's environment).

        Returns its pid once it has stayed alive for the settle time, once
        ``ready_file`` exists, or once ``ready_command`` exits 0.
        """
        self._refuse_second_start(vm)
        if not command or ready_command == []:
            raise VMStartError(f"VM {vm}: empty command")
        if ready_file is not None:
            try:
                os.unlink(ready_file)  # a file left by an earlier run says nothing
            except FileNotFoundError:
                pass
            except OSError as error:
                raise VMStartError(f"VM {vm}: cannot clear its ready file {ready_file}: "
                                   f"{error.strerror or error}") from None
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env=None if env is None else {**os.environ, **env},
                preexec_fn=_die_with_parent())
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            raise VMStartError(f"VM {vm}: cannot run {command[0]!r}: {error}") from None
        assert process.stderr is not None
        tail = bytearray()
        child = _Child(process, asyncio.create_task(process.wait()), tail,
                       asyncio.create_task(_keep_tail(process.stderr, tail)))
        self._starting[vm] = child
        try:
            if ready_command is not None:
                not_ready = await _checked(child, ready_command, env, ready_timeout)
            elif ready_file is not None:
                not_ready = await _ready(child, ready_file, ready_timeout)
            else:
                await self._settled(child)
                not_ready = None
        except BaseException:
            child.kill()
            raise
        finally:
            del self._starting[vm]
        if child.exited.done():
            said = await child.stderr_tail() or "(nothing on stderr)"
            raise VMStartError(f"VM {vm} exited with status {process.returncode} while "
                               f"starting: {said}")
        if not_ready is not None:
            child.kill()
            await child.exited
            raise VMStartError(f"VM {vm} was not ready within {ready_timeout:g} s "
                               f"({not_ready}); it was killed")
        self._running[vm] = child
        child.watch = asyncio.create_task(self._watch(vm, child))
        return process.pid

    async def _settled(self, child: _Child) -> None:
        await asyncio.wait({child.exited}, timeout=self.settle)

    async def _watch(self, vm: str, child: _Child) -> VMExit:
        returncode = await child.exited
        await child.stderr_tail()
        del self._running[vm]
        return self._report_exit(vm, returncode, requested=child.stopping)

    async def stop(self, vm: str, timeout: float = 5.0) -> VMExit:
        """SIGTERM the VM, SIGKILL it after ``timeout``; return its exit."""
        child = self._running.get(vm)
        if child is None or child.watch is None:
            starting = " (it is still starting)" if vm in self._starting else ""
            raise VMNotRunning(f"VM {vm} is not running here{starting}")
        child.stopping = True
        with contextlib.suppress(ProcessLookupError):
            child.process.terminate()
        try:
            return await asyncio.wait_for(asyncio.shield(child.watch), timeout)
        except TimeoutError:
            child.kill()
            return await child.watch

    def kill_all(self) -> None:
        """SIGKILL every VM, starting or running, without waiting for anything."""
        for child in [*self._starting.values(), *self._running.values()]:
            child.kill()


class SimDriver(Driver):
    """Runs nothing: keeps the VMs' memory within the host's, for simulated pools."""

    def __init__(self, memory: int, on_exit: Callable[[VMExit], None] | None = None,
                 keep: int = KEEP_EXITS) -> None:
        super().__init__(on_exit, keep)
        self.memory = memory
        self._vms: dict[str, tuple[int, int]] = {}  # uuid -> (fake pid, memory in MiB)
        self._next_pid = 1

    def running(self) -> dict[str, int]:
        return {vm: pid for vm, (pid, _) in self._vms.items()}

    def free(self) -> int:
        """Memory in MiB not taken by running VMs."""
        return self.memory - sum(memory for _, memory in self._vms.values())

    def start(self, vm: str, memory: int) -> int:
        self._refuse_second_start(vm)
        if memory <= 0:
            raise VMStartError(f"VM {vm}: memory must be positive, not {memory} MiB")
        if memory > self.free():
            raise VMStartError(f"VM {vm} needs {memory} MiB, this host has {self.free()} "
                               f"of {self.memory} MiB free")
        pid, self._next_pid = self._next_pid, self._next_pid + 1
        self._vms[vm] = (pid, memory)
        return pid

    def _end(self, vm: str, returncode: int, requested: bool) -> VMExit:
        if vm not in self._vms:
            raise VMNotRunning(f"VM {vm} is not running here")
        del self._vms[vm]
        return self._report_exit(vm, returncode, requested)

    def stop(self, vm: str) -> VMExit:
        return self._end(vm, 0, requested=True)

    def guest_exit(self, vm: str, code: int) -> VMExit:
        """The guest ended by itself with status ``code`` (0: shut down, else crashed)."""
        return self._end(vm, code, requested=False)

    def kill_all(self) -> None:
        for vm in list(self._vms):
            self._end(vm, -signal.SIGKILL, requested=True)
