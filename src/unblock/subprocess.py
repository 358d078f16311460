"""Cooperative subprocess waits (unblock build).

In a handler that can wait, Popen.wait() / communicate() / subprocess.run()
wait on nginx's event loop instead of blocking the worker for the child's
lifetime; the subprocess API and its results are unchanged:

- waiting for the child: a Linux pidfd (os.pidfd_open) becomes readable
  when the child exits; the handler waits for it through nginx (without
  pidfds: waitpid(WNOHANG) polled with cooperative sleeps). The child is
  then reaped with waitpid(pid) as CPython does. Exit statuses are never
  lost to nginx: its SIGCHLD handler is off in workers (children.rs).
- the pipes: communicate() always takes the multiplexing path, with a
  selector whose select() waits for its epoll fd through nginx.

Elsewhere (configuration time, python_set/python_log, real threads) the
original methods run and block as in CPython.
"""

import os
import selectors
import subprocess
import time

import _ngx_unblock as _u

_COROUTINE = 0
_orig_wait = subprocess.Popen._wait
_orig_communicate = subprocess.Popen.communicate
_orig_popen_selector = subprocess._PopenSelector
_pidfd_open = getattr(os, 'pidfd_open', None)


def _in_handler():
    return _u.place() == _COROUTINE


class _Selector(selectors.EpollSelector):
    """EpollSelector whose select() waits for its epoll fd on nginx's loop
    (an epoll fd is readable while any fd registered in it is ready)."""

    def __init__(self):
        super().__init__()
        self._ngx_waiter = None

    def select(self, timeout=None):
        if not _in_handler():
            return super().select(timeout)
        ready = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if self._ngx_waiter is None:
            self._ngx_waiter = _u.Waiter(self.fileno())
        self._ngx_waiter.wait(False, timeout)
        return super().select(0)

    def close(self):
        w, self._ngx_waiter = self._ngx_waiter, None
        if w is not None:
            w.close()
        super().close()


def _popen_selector():
    return _Selector() if _in_handler() else _orig_popen_selector()


def _wait(self, timeout):
    """Popen._wait: waits for the child's pidfd through nginx."""
    if self.returncode is not None or not _in_handler():
        return _orig_wait(self, timeout)
    endtime = None if timeout is None else time.monotonic() + timeout
    pidfd = waiter = None
    if _pidfd_open is not None:
        try:
            pidfd = _pidfd_open(self.pid)
            waiter = _u.Waiter(pidfd)
        except OSError:
            pidfd = None  # already reaped (ESRCH), or no pidfd support
    delay = 0.001
    try:
        while self.returncode is None:
            with self._waitpid_lock:
                if self.returncode is not None:
                    break
                pid, sts = self._try_wait(os.WNOHANG)
                if pid == self.pid:
                    self._handle_exitstatus(sts)
                    break
            remaining = None if endtime is None else endtime - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            if waiter is not None:
                waiter.wait(False, remaining)
            else:
                delay = min(delay * 2, 0.05)
                time.sleep(delay if remaining is None else min(delay, remaining))
    finally:
        if waiter is not None:
            waiter.close()
        if pidfd is not None:
            os.close(pidfd)
    return self.returncode


def communicate(self, input=None, timeout=None):
    """Popen.communicate: in handlers always the multiplexing path (CPython
    reads a single pipe with a blocking read())."""
    if not _in_handler() or self._communication_started and input:
        return _orig_communicate(self, input, timeout)
    # subprocess measures deadlines with time.monotonic (its _time)
    endtime = None if timeout is None else time.monotonic() + timeout
    try:
        stdout, stderr = self._communicate(input, endtime, timeout)
    finally:
        self._communication_started = True
    self.wait(timeout=self._remaining_time(endtime))
    return stdout, stderr


def install():
    subprocess.Popen._wait = _wait
    subprocess.Popen.communicate = communicate
    subprocess._PopenSelector = _popen_selector
