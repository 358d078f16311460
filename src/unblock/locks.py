"""Cooperative locks and per-handler thread identity (unblock build).

Handlers are coroutines on nginx's one thread. A real lock held by a
suspended handler would freeze the worker when a second handler blocks on
it, and threading.get_ident() would be the same for all of them (an RLock
re-entrant across handlers). As gevent does for greenlets, this replaces
what threading, queue and most libraries build on:

- _thread.allocate_lock / threading.Lock: a real lock underneath, so real
  threads keep real locking semantics with handlers. A handler that finds
  it taken parks (nginx serves others) until the handler releasing it
  unparks it; while real threads exist, it also polls (1 ms doubling to
  50 ms), since a real thread cannot reach nginx's event loop to wake it.
- get_ident(): a handler's own number (1 << 48 + its coroutine id) inside
  handlers, so threading.RLock (made the pure-Python RLock, built on the
  two above), Condition, current_thread() and ownership checks tell
  handlers apart. threading.local was already per handler (each handler has
  its own Python thread state).
- Thread.join() of a real thread waits the same way (polled).

Outside handlers (configuration time, real threads) acquire blocks as
before. In python_set / python_log a lock that is taken raises
RuntimeError instead of blocking (it may be held by a suspended handler,
which cannot run before the caller returns: waiting would never end).
"""

import _thread
import collections
import threading
import time as _time

import _ngx_unblock as _u
import _ngx_threads as _threads

_real_allocate_lock = _thread.allocate_lock
_real_get_ident = _thread.get_ident
_monotonic = _time.monotonic
_place = _u.place
_handler_id = _u.handler_id
_park = _u.park
_unpark = _u.unpark
_COROUTINE, _NOSUSPEND = 0, 1
_HANDLER_IDENT = 1 << 48
_POLL_FIRST, _POLL_MAX = 0.001, 0.05


def get_ident():
    """The handler's own identity inside a handler, else the thread's."""
    h = _handler_id()
    return _real_get_ident() if h is None else _HANDLER_IDENT + h


def _park_for(deadline, poll):
    """Parks until unparked, the deadline, or (real threads exist) `poll`."""
    timeout = None if deadline is None else max(0.0, deadline - _monotonic())
    if _threads.threads() > 0:
        timeout = poll if timeout is None else min(timeout, poll)
    _park(timeout)


def _check_args(blocking, timeout):
    if not blocking:
        if timeout != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
    elif timeout < 0 and timeout != -1:
        raise ValueError('timeout value must be positive')


class LockType:
    """_thread.lock whose contended acquire waits cooperatively in handlers."""

    __slots__ = ('_lock', '_waiters', '__weakref__')

    def __init__(self):
        self._lock = _real_allocate_lock()
        self._waiters = None  # handler ids parked here, first come first

    def acquire(self, blocking=True, timeout=-1):
        if not blocking or timeout != -1:
            _check_args(blocking, timeout)
        if self._lock.acquire(False):
            return True
        if not blocking:
            return False
        place = _place()
        if place == _COROUTINE:
            return self._acquire_parked(timeout)
        if place == _NOSUSPEND:
            raise RuntimeError(
                'a lock taken elsewhere would block the nginx worker: python_set and '
                'python_log handlers cannot wait (do it in python_access or python_content)')
        return self._lock.acquire(True, timeout)

    def _acquire_parked(self, timeout):
        deadline = None if timeout == -1 else _monotonic() + timeout
        me = _handler_id()
        if self._waiters is None:
            self._waiters = collections.deque()
        waiters = self._waiters
        poll = _POLL_FIRST
        got = False
        try:
            while True:
                if deadline is not None and _monotonic() >= deadline:
                    got = self._lock.acquire(False)
                    return got
                waiters.append(me)
                try:
                    _park_for(deadline, poll)
                finally:
                    try:
                        waiters.remove(me)
                    except ValueError:
                        pass
                poll = min(poll * 2, _POLL_MAX)
                if self._lock.acquire(False):
                    got = True
                    return True
        finally:
            # Woken but leaving without it (timeout, cancelled): pass the
            # turn on, or the next waiter sleeps although the lock is free.
            if not got and waiters and not self._lock.locked():
                _unpark(waiters[0])

    def release(self):
        self._lock.release()
        waiters = self._waiters
        if waiters:
            _unpark(waiters[0])

    def locked(self):
        return self._lock.locked()

    def _at_fork_reinit(self):
        self._lock._at_fork_reinit()
        self._waiters = None

    acquire_lock = acquire
    release_lock = release
    locked_lock = locked
    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()

    def __repr__(self):
        return '<%s %s object at %#x>' % (
            'locked' if self.locked() else 'unlocked', type(self).__name__, id(self))


# The class itself, not a function: code that keeps `threading.Lock` as a
# class attribute (werkzeug's `lock_class = threading.Lock`) calls it through
# an instance, which would bind a plain function as a method.
allocate_lock = LockType


class _HandlerThread(threading._DummyThread):
    """current_thread() inside a handler: one per handler, forgotten when
    the handler ends (threading's own _DummyThread would stay in
    threading._active for good)."""

    def __init__(self):
        threading.Thread.__init__(self, name='nginx-handler-%d' % _handler_id(), daemon=True)
        self._started.set()
        self._set_ident()


_handler_threads = {}
_real_current_thread = threading.current_thread


def current_thread():
    h = _handler_id()
    if h is None:
        return _real_current_thread()
    t = _handler_threads.get(h)
    if t is None:
        t = _handler_threads[h] = _HandlerThread()
        _u.at_handler_end(lambda: _handler_threads.pop(h, None))
    return t


_real_join = threading.Thread.join


def join(self, timeout=None):
    """Thread.join(): in a handler, wait for the thread's end cooperatively
    (polled: the thread cannot wake the handler), then let CPython finish."""
    if _place() != _COROUTINE or not self._started.is_set() or self is current_thread():
        return _real_join(self, timeout)
    deadline = None if timeout is None else _monotonic() + max(0.0, timeout)
    poll = _POLL_FIRST
    while self.is_alive():
        if deadline is not None and _monotonic() >= deadline:
            return None
        _park(poll if deadline is None else min(poll, max(0.0, deadline - _monotonic())))
        poll = min(poll * 2, _POLL_MAX)
    return _real_join(self, timeout)


def install():
    _thread.allocate_lock = _thread.allocate = allocate_lock
    _thread.get_ident = get_ident
    _thread.RLock = threading._PyRLock
    threading.Lock = threading._allocate_lock = allocate_lock
    threading.get_ident = get_ident
    threading._CRLock = None  # threading.RLock() -> _PyRLock, on the above
    threading.current_thread = threading.currentThread = current_thread
    threading.Thread.join = join
