"""Every supported CPython (3.9-3.13), both builds: what differs between
versions. Deep C recursion in a handler ends in RecursionError (3.13 lets C
recurse 10,000 levels: the unblock build's default stack must hold that),
nothing a handler sets on its thread state reaches the next handler, and a
worker whose Python start-up dies exits for good instead of being
respawned in a loop."""

import sys
import time

import harness

DEEP = r'''
import json, sys, time

def nested(n, make):
    x = None
    for _ in range(n):
        x = make(x)
    return x

def deep(r):
    kind = r.arg['kind']
    if harness_waits:
        time.sleep(0.01)   # a handler that waited: running as a coroutine
    x = nested(100000, (lambda x: {'k': x}) if kind == 'dict' else (lambda x: [x]))
    try:
        if kind in ('list', 'dict'):
            repr(x)
        elif kind == 'json':
            json.dumps(x)
        elif kind == 'eq':
            x == nested(100000, lambda x: [x])
        r.send('no error', ngx.SEND_LAST)
    except RecursionError:
        r.send('RecursionError', ngx.SEND_LAST)
'''

LEAKS = r'''
import sys, threading, time
LOCAL = threading.local()

def tracer(*a):
    return None

def first(r):
    time.sleep(0.01)
    LOCAL.me = 'first'
    sys.settrace(tracer)
    sys.setprofile(tracer)
    sys.set_asyncgen_hooks(firstiter=tracer, finalizer=tracer)
    sys.set_coroutine_origin_tracking_depth(5)
    r.send('set', ngx.SEND_LAST)

def second(r):
    time.sleep(0.01)
    seen = (getattr(LOCAL, 'me', None), sys.gettrace(), sys.getprofile(),
            tuple(sys.get_asyncgen_hooks()), sys.get_coroutine_origin_tracking_depth())
    r.send(repr(seen), ngx.SEND_LAST)
'''


class DeepRecursionTest(harness.NginxTestCase):

    def test_deep_repr_and_json_raise_recursion_error(self):
        waits = 'True' if harness.unblock_build() else 'False'
        self.start_server('location / { python_content "deep(r)"; }',
                          http='python "harness_waits = %s"; python_include deep.py;' % waits,
                          files={'deep.py': DEEP})
        for kind in ('list', 'dict', 'json', 'eq'):
            with self.subTest(kind=kind):
                self.assertEqual(self.get('/?kind=' + kind)[2], b'RecursionError')
        self.assertNotIn('overflowed', self.error_log())


class RecyclingTest(harness.NginxTestCase):

    def setUp(self):
        if not harness.unblock_build():
            self.skipTest('the unblock build runs each handler in its own thread state')

    def test_nothing_a_handler_set_reaches_the_next(self):
        # One worker, one handler after the other: the second gets the
        # first's recycled thread state (up to 3.12) or a new one (3.13).
        self.start_server('''
            location /first { python_content "first(r)"; }
            location /second { python_content "second(r)"; }
        ''', http='python_include leaks.py;', files={'leaks.py': LEAKS})
        for _ in range(3):
            self.assertEqual(self.get_body('/first'), 'set')
            self.assertEqual(self.get_body('/second'), repr((None, None, None, (None, None), 0)))


class WorkerStartTest(harness.NginxTestCase):

    allow_log = r'exited with fatal code 2 and cannot be respawned'

    def test_worker_dying_in_python_start_is_not_respawned(self):
        # An after-fork hook that aborts: CPython dies inside the worker's
        # PyOS_AfterFork_Child. nginx respawns a worker killed by a signal at
        # once, forever; the worker exits with status 2 instead, for good.
        self.start_server('location / { return 200 "ok"; }',
                          main='python "import os; os.register_at_fork(after_in_child=os.abort)";')
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.error_log().count('fatal code 2') < 1:
            time.sleep(0.1)
        time.sleep(1.0)   # any respawn would show up (and die) by now
        log = self.error_log()
        self.assertEqual(log.count('exited with fatal code 2 and cannot be respawned'), 1, log)
        self.assertEqual(log.count('Python aborted while this worker started'), 1, log)
        self.assertNotIn('exited on signal', log)
        self.assertEqual(self.worker_pids(), set())
        self.assertIsNone(self.proc.poll())     # the master stays


if __name__ == '__main__':
    harness.main()
