"""A small persistent pool of reward worker processes with a hard time limit per request.

Why processes: sympy can run for minutes on a hostile answer and no Python-level timeout can stop
C code; `signal.alarm` only works in the main thread.  A worker that passes its limit is killed
(SIGKILL) and replaced, and the caller gets "no result" (the reward scores 0), so training never
hangs and the process survives.

Workers are `python _worker.py` subprocesses (not multiprocessing children: they must not import
torch or r1core, only this folder and sympy, so they start in well under a second), talking over
their stdin/stdout with length-prefixed pickle frames.  Each sends a "ready" frame once its imports
are done; a request's time limit starts when a ready worker receives it (start-up is not counted).

  get_pool().call(request, timeout)          one request on one worker -> result, or None on timeout
  get_pool().score_items(names, items, limit) a batch spread over all workers, streamed per item;
                                              an item that passes `limit` comes back as None
Size: R1CORE_REWARD_WORKERS, default min(2, os.cpu_count()).
"""
from __future__ import annotations

import atexit
import collections
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

WORKER_SCRIPT = Path(__file__).resolve().parent / "_worker.py"
STARTUP_TIMEOUT = 120.0
_HEADER = struct.Struct("<I")
# CPU-time limits (call(cpu=True)): the limit counts the worker's CPU seconds, so a loaded machine, where
# a check takes longer in wall time but the same CPU, gets the same verdicts; a request that does not
# use CPU (blocked) is still stopped by the wall-clock backstop WALL_FACTOR * limit + WALL_SLACK_S.
CPU_POLL_S = 0.02
WALL_FACTOR = 10.0
WALL_SLACK_S = 5.0
try:
    _CLK_TCK = float(os.sysconf("SC_CLK_TCK"))
except (AttributeError, ValueError, OSError):
    _CLK_TCK = 100.0
_LOCAL = threading.local()


def cpu_spent() -> float:
    """Worker CPU seconds used so far by this thread's call(cpu=True) requests (accuracy's budget
    adds it to its own thread's CPU time, so the budget does not shrink with machine load)."""
    return getattr(_LOCAL, "cpu", 0.0)


class WorkerError(RuntimeError):
    """A worker could not start or broke the protocol."""


class _Worker:
    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-u", str(WORKER_SCRIPT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True, env=env)
        self.fd = self.proc.stdout.fileno()
        self.buf = bytearray()
        self.ready = False

    # -- frames --------------------------------------------------------------------------------
    def send(self, obj: Any) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.write(_HEADER.pack(len(data)) + data)
        self.proc.stdin.flush()

    def frame(self) -> Any:
        """A complete frame from the buffer, or None."""
        if len(self.buf) < 4:
            return None
        (n,) = _HEADER.unpack_from(self.buf)
        if len(self.buf) < 4 + n:
            return None
        data = bytes(self.buf[4:4 + n])
        del self.buf[:4 + n]
        return pickle.loads(data)

    def fill(self) -> bool:
        """Read what the pipe holds (call when select says readable); False at end of file."""
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def recv(self, deadline: float, *, cpu_limit: float | None = None, cpu_start: float = 0.0) -> Any:
        """The next frame, or raise TimeoutError at `deadline` (or once the worker has used more than
        `cpu_limit` CPU seconds since `cpu_start`) / EOFError when the worker died."""
        while True:
            f = self.frame()
            if f is not None:
                return f
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if select.select([self.fd], [], [], left if cpu_limit is None else min(left, CPU_POLL_S))[0]:
                if not self.fill():
                    raise EOFError
            elif cpu_limit is not None and self.cpu_seconds() - cpu_start > cpu_limit:
                raise TimeoutError

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the worker has used, from /proc; 0.0 where that cannot be read
        (then only the wall-clock backstop limits a request)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLK_TCK
        except (OSError, IndexError, ValueError):
            return 0.0

    def poll_ready(self) -> None:
        """Notice, without waiting, a "ready" frame that has already arrived."""
        if self.ready or self.buf or not select.select([self.fd], [], [], 0)[0]:
            return
        if self.fill() and self.frame() == ("ready",):
            self.ready = True

    def wait_ready(self) -> None:
        if self.ready:
            return
        try:
            msg = self.recv(time.monotonic() + STARTUP_TIMEOUT)
        except (TimeoutError, EOFError):
            self.kill()
            raise WorkerError(f"reward worker did not start (python {WORKER_SCRIPT}); is sympy installed?") from None
        if msg != ("ready",):
            self.kill()
            raise WorkerError(f"reward worker sent {msg!r} instead of ready")
        self.ready = True

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class WorkerPool:
    """`size` persistent workers, started lazily, each used by one caller at a time."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size: expected >= 1 worker, got {size}")
        self.size = size
        self.idle: list[_Worker] = []
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.started = 0
        self.closed = False
        self.restarts = 0
        self.pid = os.getpid()  # a forked child must not share its parent's workers

    # -- check-out / in -------------------------------------------------------------------------
    def _checkout(self, block: bool = True) -> _Worker | None:
        """An idle worker, preferring one that is ready (a replacement may still be starting)."""
        with self.cond:
            while True:
                if self.closed:
                    raise WorkerError("the reward worker pool is closed")
                if self.idle:
                    for w in self.idle:
                        w.poll_ready()
                    ready = [i for i, w in enumerate(self.idle) if w.ready]
                    w = self.idle.pop(ready[-1] if ready else -1)
                    break
                if self.started < self.size:
                    self.started += 1
                    w = _Worker()
                    break
                if not block:
                    return None
                self.cond.wait()
        if w.proc.poll() is not None:  # died while idle (killed from outside): start another
            w = self._replace(w)
        return w

    def _checkin(self, w: _Worker) -> None:
        with self.cond:
            self.idle.append(w)
            self.cond.notify()

    def _replace(self, w: _Worker) -> _Worker:
        """Kill a worker that ran out of time or died; its replacement starts at once."""
        w.kill()
        self.restarts += 1
        return _Worker()

    def warm(self) -> None:
        """Start every worker and wait until each is ready (tests and benches call this first)."""
        ws = [self._checkout() for _ in range(self.size)]
        try:
            for w in ws:
                w.wait_ready()
        finally:
            for w in ws:
                self._checkin(w)

    # -- one request ----------------------------------------------------------------------------
    def call(self, request: tuple, *, timeout: float, cpu: bool = False) -> Any:
        """Run `request` on one worker; None when it takes longer than `timeout` seconds or fails.
        With cpu=True the limit is `timeout` seconds of the worker's CPU time (load-independent; the
        wall-clock backstop is WALL_FACTOR * timeout + WALL_SLACK_S), else wall-clock seconds.
        A worker found dead before it answered (killed from outside) is replaced and the request
        tried once more."""
        for attempt in range(2):
            w = self._checkout()
            start = 0.0
            try:
                w.wait_ready()
                if cpu:
                    start = w.cpu_seconds()
                    wall = time.monotonic() + WALL_FACTOR * timeout + WALL_SLACK_S
                w.send(request)
                if cpu:
                    try:
                        reply = w.recv(wall, cpu_limit=timeout, cpu_start=start)
                    finally:
                        _LOCAL.cpu = cpu_spent() + max(0.0, w.cpu_seconds() - start)
                else:
                    reply = w.recv(time.monotonic() + timeout)
            except TimeoutError:
                w = self._replace(w)
                return None
            except (EOFError, OSError):
                w = self._replace(w)
                if attempt:
                    return None
                continue
            except WorkerError as e:
                warn_once(f"r1core.rewards: {e}; symbolic checks count as not equivalent")
                w = self._replace(w)
                return None
            finally:
                self._checkin(w)
            return reply[1] if reply[0] == "ok" else None
        return None

    # -- a batch, streamed per item -------------------------------------------------------------
    def score_items(self, names: list[str], items: list[tuple[str, dict]], *, limit: float,
                    chunk: int = 64) -> list[list[float] | None]:
        """Each item is (completion, {reward name: its keyword columns}); the result per item is the
        rewards in `names` order, or None for an item that passed `limit` seconds.  Its worker is
        killed and the rest of its chunk re-queued; the replacement joins once it is ready, while
        the other workers keep going."""
        results: list[list[float] | None] = [None] * len(items)
        todo = collections.deque((s, min(s + chunk, len(items))) for s in range(0, len(items), chunk))
        workers = [self._checkout()]
        while len(workers) < self.size:
            w = self._checkout(block=False)
            if w is None:
                break
            workers.append(w)
        free = [w for w in workers if w.ready]
        starting = {w.fd: w for w in workers if not w.ready}
        busy: dict[int, list] = {}  # fd -> [worker, next index, end, deadline]
        dropped = 0
        startup_deadline = time.monotonic() + STARTUP_TIMEOUT
        try:
            while todo or busy:
                while free and todo:
                    w = free.pop()
                    start, end = todo.popleft()
                    w.send(("score", names, items[start:end]))
                    busy[w.fd] = [w, start, end, time.monotonic() + limit]
                if not busy and not starting:
                    break  # no worker left: the remaining items stay None
                now = time.monotonic()
                wait = min([b[3] for b in busy.values()] + [startup_deadline]) - now
                readable = select.select(list(busy) + list(starting), [], [], max(0.0, wait))[0]
                for fd in readable:
                    if fd in starting:
                        w = starting[fd]
                        alive = w.fill()
                        msg = w.frame()
                        if msg == ("ready",):
                            w.ready = True
                            free.append(starting.pop(fd))
                        elif not alive or msg is not None:  # could not start: drop it
                            w.kill()
                            workers.remove(starting.pop(fd))
                            dropped += 1
                        continue
                    b = busy[fd]
                    w = b[0]
                    alive = w.fill()
                    while True:
                        msg = w.frame()
                        if msg is None:
                            break
                        if msg[0] == "item":
                            results[b[1]] = msg[1]
                            b[1] += 1
                            b[3] = time.monotonic() + limit
                        elif msg[0] == "done":
                            del busy[fd]
                            free.append(w)
                            break
                    if not alive and fd in busy:
                        b[3] = 0.0  # died: handled as an overrun below
                now = time.monotonic()
                for fd in [fd for fd, b in busy.items() if b[3] <= now]:
                    w, nxt, end, _ = busy.pop(fd)
                    if nxt + 1 < end:
                        todo.appendleft((nxt + 1, end))
                    nw = self._replace(w)
                    workers[workers.index(w)] = nw
                    starting[nw.fd] = nw
                    startup_deadline = time.monotonic() + STARTUP_TIMEOUT
                if starting and now > startup_deadline:
                    for fd in list(starting):
                        starting[fd].kill()
                        workers.remove(starting.pop(fd))
                        dropped += 1
        except (OSError, EOFError):
            pass  # a broken pipe: what was busy is replaced below, its items stay None
        finally:
            for b in busy.values():
                workers[workers.index(b[0])] = self._replace(b[0])
            for w in workers:
                self._checkin(w)
            if dropped:
                with self.lock:  # workers that failed to start are started again on demand
                    self.started -= dropped
        return results

    def close(self) -> None:
        with self.cond:
            self.closed = True
            idle, self.idle = self.idle, []
            self.cond.notify_all()
        for w in idle:
            w.kill()


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()
_WARNED = False


def default_size() -> int:
    env = os.environ.get("R1CORE_REWARD_WORKERS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"R1CORE_REWARD_WORKERS: expected an int, got {env!r}") from None
        if n < 1:
            raise ValueError(f"R1CORE_REWARD_WORKERS: expected >= 1, got {n}")
        return n
    return max(1, min(2, os.cpu_count() or 1))


def get_pool() -> WorkerPool:
    """The process-wide pool (created on first use, closed at exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.closed or _POOL.pid != os.getpid():
            _POOL = WorkerPool(default_size())
            atexit.register(_POOL.close)
        return _POOL


def warn_once(msg: str) -> None:
    global _WARNED
    if not _WARNED:
        _WARNED = True
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
