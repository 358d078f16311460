"""Unblock build: a handler overflowing its C stack fails its own request
(one logged error), the worker serves its other in-flight requests to the
end and exits, and nginx's master starts a fresh worker. Nothing of the
overflowed handler is reused, nothing it registered outlives it, and each
coroutine stack has a PROT_NONE reservation below it large enough that no C
frame can step over it into a neighbouring stack.

Run: TEST_NGINX_BINARY=build/unblock/objs/nginx python3 t test_unblock_overflow
Every test skips in the sync build.
"""

import socket
import threading
import time

import harness

SKIP_REASON = 'needs the unblock build (make module FEATURES=unblock; nginx -V has NGX_PYTHON_SYNC=0)'

APP = r'''
import socket, sys, time, traceback

def overflow(r=None):
    sys.setrecursionlimit(10 ** 6)
    def f(n):
        return list(map(f, [n + 1]))
    f(0)

def nap(r):
    time.sleep(float(r.arg.get('t', '0.2')))
    r.send('slept', ngx.SEND_LAST)

def nap_twice(r):
    # The second wait needs the NO_SUSPEND depth back at zero.
    time.sleep(float(r.arg.get('t', '0.4')))
    time.sleep(0.01)
    # Every thread state, the abandoned one included, can still be walked
    # (its C stack stays mapped).
    for frame in sys._current_frames().values():
        traceback.extract_stack(frame)
    r.send('slept twice', ngx.SEND_LAST)

def overflow_after_sleep(r):
    time.sleep(0.05)
    overflow(r)

def overflow_in_python_set(r):
    r.send(r.var['deep'], ngx.SEND_LAST)

def overflow_with_socket(r):
    s = socket.create_connection(('127.0.0.1', int(r.arg['port'])))
    s.sendall(b'hello')
    overflow(r)

def slow_access(s):
    time.sleep(0.4)

def greet(s):
    s.sock.sendall(b'passed access\n')

def stacks(r):
    time.sleep(float(r.arg.get('t', '0.5')))
    r.send('ok', ngx.SEND_LAST)
'''

SERVER = '''
python_include app.py;
python_stack_size 1000k;
python_set $deep "overflow()";
server {
    listen 127.0.0.1:%(port)s;

    location /fast     { return 200 "fast"; }
    location /nap      { python_content "nap(r)"; }
    location /nap2     { python_content "nap_twice(r)"; }
    location /stacks   { python_content "stacks(r)"; }
    location /content  { python_content "overflow(r)"; }
    location /content-after-wait { python_content "overflow_after_sleep(r)"; }
    location /access   { python_access "overflow(r)"; python_content "r.send('no', ngx.SEND_LAST)"; }
    location /access-after-wait {
        python_access "overflow_after_sleep(r)";
        python_content "r.send('no', ngx.SEND_LAST)";
    }
    location /python-set { python_content "overflow_in_python_set(r)"; }
    location /socket   { python_content "overflow_with_socket(r)"; }
}
'''


STREAM = '''
server { listen 127.0.0.1:%(port2)s; python_access "slow_access(s)"; python_content "greet(s)"; }
server { listen 127.0.0.1:%(port3)s; python_content "overflow(s)"; }
'''


class OverflowTest(harness.NginxTestCase):

    def setUp(self):
        if not harness.unblock_build():
            self.skipTest(SKIP_REASON)

    def start_app(self):
        self.start(http=SERVER, files={'app.py': APP})

    def only_worker(self):
        pids = self.worker_pids()
        self.assertEqual(len(pids), 1, pids)
        return pids.pop()

    def wait_new_worker(self, old, timeout=10.0):
        """The pid of the worker that replaced `old` (which must be gone)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            if old not in pids and len(pids) == 1:
                return pids.pop()
            time.sleep(0.01)
        self.fail('worker %d not replaced within %ss: %s\n%s' % (
            old, timeout, self.worker_pids(), self.error_log()))

    def in_flight(self, path):
        """Starts GET path in a thread; returns a function giving (status, body)."""
        result = {}

        def run():
            try:
                status, _, body = self.get(path, timeout=10)
                result['r'] = (status, body.decode())
            except Exception as e:          # reported by the caller
                result['r'] = ('error', repr(e))
        t = threading.Thread(target=run)
        t.start()

        def join():
            t.join(15)
            return result.get('r', ('no answer', ''))
        return join

    def assert_overflow_retires_worker(self, path, in_flight='/nap2?t=0.4'):
        self.start_app()
        self.assertEqual(self.get_body('/fast'), 'fast')
        old = self.only_worker()
        offset = self.error_log_size()
        other = self.in_flight(in_flight)
        time.sleep(0.1)                        # it is waiting in the worker now
        status = self.get(path, timeout=5)[0]
        self.assertEqual(status, 500, self.error_log(offset))
        # The other request of that worker completes normally...
        self.assertEqual(other(), (200, 'slept twice' if '/nap2' in in_flight else 'slept'),
                         self.error_log(offset))
        # ...then the worker exits by itself and the master starts a new one.
        new = self.wait_new_worker(old)
        self.assertNotEqual(new, old)
        self.assertEqual(self.get_body('/fast'), 'fast')
        self.assertEqual(self.get_body('/nap?t=0.01'), 'slept')
        errors = [e for e in self.log_entries('error', offset) if 'overflowed' in e]
        self.assertEqual(len(errors), 1, self.error_log(offset))
        self.assertRegex(errors[0], r'python: the handler overflowed its 1024000-byte C stack')
        self.assertIn('exits', errors[0])
        log = self.error_log(offset)
        self.assertNotRegex(log, r'\[alert\]|\[crit\]|exited on signal')
        self.assertRegex(log, r'worker process %d exited with code 0' % old)
        return new

    def test_overflow_in_content(self):
        self.assert_overflow_retires_worker('/content')

    def test_overflow_in_content_after_a_wait(self):
        self.assert_overflow_retires_worker('/content-after-wait')

    def test_overflow_in_access(self):
        self.assert_overflow_retires_worker('/access')

    def test_overflow_in_access_after_a_wait(self):
        self.assert_overflow_retires_worker('/access-after-wait')

    def test_overflow_inside_python_set_evaluated_by_a_handler(self):
        # The in-flight request waits twice: its second wait fails if the
        # overflow left the no-suspend depth of python_set raised.
        self.assert_overflow_retires_worker('/python-set', in_flight='/nap2?t=0.4')

    def test_overflow_with_an_open_socket_withdraws_its_connection(self):
        # A socket the overflowed handler opened (its Python object stays
        # referenced by the abandoned frames) must not be left in nginx's
        # connections when the worker exits ([alert] open socket left).
        listener = socket.socket()
        listener.bind(('127.0.0.1', 0))
        listener.listen(5)
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        self.assert_overflow_retires_worker('/socket?port=%d' % port)

    def test_stream_sessions_in_flight_complete_and_stream_overflow(self):
        # A stream access handler waiting when another handler of the worker
        # overflows goes on to the content phase (graceful quit, not exit);
        # an overflow in a stream handler closes its session and retires
        # the worker as well.
        self.start(main='python_include app.py;', files={'app.py': APP}, http=SERVER,
                   stream=STREAM)
        old = self.only_worker()
        c = socket.create_connection(('127.0.0.1', self.port2), timeout=5)
        time.sleep(0.1)
        self.assertEqual(self.get('/content', timeout=5)[0], 500)
        self.assertEqual(c.recv(100), b'passed access\n')
        c.close()
        pid = self.wait_new_worker(old)
        s = socket.create_connection(('127.0.0.1', self.port3), timeout=5)
        self.assertEqual(s.recv(100), b'')          # closed
        s.close()
        self.wait_new_worker(pid)
        self.assertEqual(self.error_log().count('overflowed its'), 2)

    def test_worker_of_a_reloaded_configuration_is_replaced_too(self):
        # Workers started by a reload are respawned like the first ones.
        self.start_app()
        self.reload()
        old = self.only_worker()
        self.assertEqual(self.get('/content', timeout=5)[0], 500)
        new = self.wait_new_worker(old)
        self.assertEqual(self.get_body('/fast'), 'fast')
        self.assertEqual(self.only_worker(), new)

    def test_100_overflows_do_not_accumulate(self):
        # Each overflowing worker exits: memory and processes stay bounded.
        self.start_app()
        self.assertEqual(self.get_body('/fast'), 'fast')
        first = self.only_worker()
        rss_first = harness.rss_kb(first)
        pid = first
        for i in range(100):
            self.assertEqual(self.get('/content', timeout=5)[0], 500)
            pid = self.wait_new_worker(pid)
        self.assertEqual(self.get_body('/fast'), 'fast')
        self.assertEqual(len(self.worker_pids()), 1)
        rss_last = harness.rss_kb(pid)
        self.assertLess(rss_last - rss_first, 5 * 1024, 'RSS %d -> %d kB' % (rss_first, rss_last))
        self.assertEqual(self.error_log().count('overflowed its'), 100)

    def test_each_stack_has_a_large_prot_none_guard(self):
        # A C frame larger than the guard (CPython has no stack-clash
        # protection) would jump over it into the next mapping: another
        # coroutine's stack. Several stacks exist while requests wait.
        self.start_app()
        waiting = [self.in_flight('/stacks?t=0.6') for _ in range(4)]
        time.sleep(0.3)
        worker = self.only_worker()
        maps = []
        with open('/proc/%d/maps' % worker) as f:
            for line in f:
                addr, perms = line.split()[:2]
                lo, hi = (int(x, 16) for x in addr.split('-'))
                maps.append((lo, hi, perms))
        stacks = [i for i, (lo, hi, perms) in enumerate(maps)
                  if perms.startswith('rw') and hi - lo == 1000 * 1024]
        self.assertGreaterEqual(len(stacks), 4, maps)
        for i in stacks:
            below = maps[i - 1]
            self.assertEqual(below[1], maps[i][0], 'no mapping right below the stack')
            self.assertTrue(below[2].startswith('---'), below)
            self.assertGreaterEqual(below[1] - below[0], 256 * 1024, 'guard of %d bytes' % (below[1] - below[0]))
        for join in waiting:
            self.assertEqual(join(), (200, 'ok'))


if __name__ == '__main__':
    harness.main()
