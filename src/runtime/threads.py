"""Counts the Python threads a worker starts, so that nginx's event wait
releases the GIL while any of them runs (see gil.rs)."""

import _thread
import threading

import _ngx_threads as _n


def _counted(start):
    def start_new_thread(function, *args, **kwargs):
        def run(*a, **kw):
            try:
                return function(*a, **kw)
            finally:
                _n.thread_ended()
        _n.thread_started()
        try:
            return start(run, *args, **kwargs)
        except BaseException:
            _n.thread_ended()
            raise
    start_new_thread.__doc__ = start.__doc__
    return start_new_thread


def install():
    # threading keeps its own reference (3.13: _start_joinable_thread).
    for module, name in ((_thread, 'start_new_thread'), (_thread, 'start_new'),
                         (_thread, 'start_joinable_thread'),
                         (threading, '_start_new_thread'),
                         (threading, '_start_joinable_thread')):
        start = getattr(module, name, None)
        if start is not None:
            setattr(module, name, _counted(start))
