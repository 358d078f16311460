"""Cooperative select.select, select.poll, select.epoll and the selectors
built on them (unblock build).

In a handler that can wait (python_access, python_preread, python_content)
a wait goes through nginx's event loop (_ngx_unblock.wait_fds: the fds in a
private epoll instance that nginx watches) and other handlers run
meanwhile; a zero timeout never waits. Anywhere else — configuration time,
python_set, python_log — the originals run unchanged (they block there, as
they would without nginx: nothing else could run meanwhile).
"""

import math as _math
import select as _select
import selectors as _selectors
from time import monotonic as _monotonic

import _ngx_unblock as _u

_orig_select = _select.select
_orig_poll = _select.poll
_orig_epoll = _select.epoll

POLLIN, POLLOUT, POLLPRI = _select.POLLIN, _select.POLLOUT, _select.POLLPRI
POLLERR, POLLHUP, POLLNVAL = _select.POLLERR, _select.POLLHUP, _select.POLLNVAL
# What select(2) reports as readable / writable / exceptional (the kernel's
# POLLIN_SET, POLLOUT_SET, POLLEX_SET).
_READABLE = POLLIN | POLLHUP | POLLERR
_WRITABLE = POLLOUT | POLLERR
_EXCEPTIONAL = POLLPRI


def _fileno(obj):
    if isinstance(obj, int):
        fd = obj
    else:
        try:
            fd = obj.fileno()
        except AttributeError:
            raise TypeError('argument must be an int, or have a fileno() method.') from None
        if not isinstance(fd, int):
            raise TypeError('fileno() returned a non-integer')
    if fd < 0:
        raise ValueError('file descriptor cannot be a negative integer (%d)' % fd)
    return fd


def _seconds(timeout, what):
    """select()'s timeout (seconds, None = forever) checked as CPython does."""
    if timeout is None:
        return None
    try:
        t = float(timeout)
    except (TypeError, ValueError):
        raise TypeError('%s: timeout must be a float or None' % what) from None
    if t != t:
        raise ValueError('Invalid value NaN (not a number)')
    if t < 0:
        raise ValueError('timeout must be non-negative')
    return t


def select(rlist, wlist, xlist, timeout=None):
    """select.select: waits on nginx's event loop inside handlers."""
    if not _u.can_wait():
        return _orig_select(rlist, wlist, xlist, timeout)
    timeout = _seconds(timeout, 'select')
    rlist, wlist, xlist = list(rlist), list(wlist), list(xlist)
    events = {}
    for objs, bits in ((rlist, POLLIN), (wlist, POLLOUT), (xlist, POLLPRI)):
        for o in objs:
            fd = _fileno(o)
            events[fd] = events.get(fd, 0) | bits
    ready = dict(_u.wait_fds(list(events.items()), timeout))
    if any(rev & POLLNVAL for rev in ready.values()):
        raise OSError(9, 'Bad file descriptor')
    return ([o for o in rlist if ready.get(_fileno(o), 0) & _READABLE],
            [o for o in wlist if ready.get(_fileno(o), 0) & _WRITABLE],
            [o for o in xlist if ready.get(_fileno(o), 0) & _EXCEPTIONAL])


def _poll_seconds(ms):
    """poll.poll's timeout (milliseconds; None or negative = forever)."""
    if ms is None:
        return None
    try:
        ms = float(ms)
    except (TypeError, ValueError):
        raise TypeError('timeout must be an integer or None') from None
    return None if ms < 0 else _math.ceil(ms) / 1000.0


class poll:
    """select.poll(): the real poll object keeps the registrations (and
    their checks); poll() waits on nginx's event loop inside handlers."""

    def __init__(self):
        self._real = _orig_poll()
        self._events = {}

    def register(self, fd, eventmask=POLLIN | POLLPRI | POLLOUT):
        self._real.register(fd, eventmask)
        self._events[_fileno(fd)] = eventmask

    def modify(self, fd, eventmask):
        self._real.modify(fd, eventmask)
        self._events[_fileno(fd)] = eventmask

    def unregister(self, fd):
        self._real.unregister(fd)
        del self._events[_fileno(fd)]

    def poll(self, timeout=None):
        if not _u.can_wait():
            return self._real.poll(timeout)
        return _u.wait_fds(list(self._events.items()), _poll_seconds(timeout))


class epoll:
    """select.epoll(): a real epoll object; poll() waits for the epoll fd
    itself to become readable on nginx's event loop inside handlers."""

    def __init__(self, sizehint=-1, flags=0, _real=None):
        self._real = _real if _real is not None else _orig_epoll(sizehint, flags)

    @classmethod
    def fromfd(cls, fd):
        return cls(_real=_orig_epoll.fromfd(fd))

    closed = property(lambda self: self._real.closed)

    def close(self):
        self._real.close()

    def fileno(self):
        return self._real.fileno()

    def register(self, fd, eventmask=_select.EPOLLIN | _select.EPOLLPRI | _select.EPOLLOUT):
        self._real.register(fd, eventmask)

    def modify(self, fd, eventmask):
        self._real.modify(fd, eventmask)

    def unregister(self, fd):
        self._real.unregister(fd)

    def poll(self, timeout=None, maxevents=-1):
        if not _u.can_wait():
            return self._real.poll(timeout, maxevents)
        if timeout is not None:
            timeout = float(timeout)
            if timeout < 0:
                timeout = None
        got = self._real.poll(0, maxevents)
        if got or timeout == 0:
            return got
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - _monotonic())
            if not _u.wait_fds([(self._real.fileno(), POLLIN)], left):
                return []
            got = self._real.poll(0, maxevents)
            if got or (deadline is not None and _monotonic() >= deadline):
                return got

    def __enter__(self):
        if self._real.closed:
            raise ValueError('I/O operation on closed epoll object')
        return self

    def __exit__(self, *exc):
        self.close()


def install():
    _select.select = select
    _select.poll = poll
    _select.epoll = epoll
    # selectors took these at import time.
    _selectors.SelectSelector._select = staticmethod(select)
    _selectors.PollSelector._selector_cls = poll
    if hasattr(_selectors, 'EpollSelector'):
        _selectors.EpollSelector._selector_cls = epoll
