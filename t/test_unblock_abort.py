"""Unblock build: requests that end while their handler waits (client gone,
proxy timeout, send_timeout, worker shutdown) make the waiting call raise
ngx.Cancelled in the handler, so its `finally` blocks run and its sockets,
stack and memory are released; stack overflows and large responses do not
take the worker down or make it grow.

Handlers report from `finally` by writing a marker file in the test's
prefix: `r` is detached once its request has ended (r.log raises then).

Run: TEST_NGINX_BINARY=build/unblock/objs/nginx python3 t/test_unblock_abort.py
Every test skips in the sync build.
"""

import os
import signal
import socket
import subprocess
import time

import harness

# `make test-asan` (TEST_NGINX_ASAN=1): AddressSanitizer's quarantine and
# shadow memory make RSS bounds meaningless; everything else is checked.
UNDER_ASAN = os.environ.get('TEST_NGINX_ASAN', '') not in ('', '0')


def assert_rss_below(test, growth, limit, msg=None):
    if not UNDER_ASAN:
        test.assertLess(growth, limit, msg)

SKIP_REASON = 'needs the unblock build (make module FEATURES=unblock; nginx -V has NGX_PYTHON_SYNC=0)'

APP = r'''
import socket, sys, time

def marker(name, text='finally'):
    with open('%(prefix)s' + name, 'a') as f:
        f.write(text + '\n')

def nap(r):
    time.sleep(float(r.arg.get('t', '0.2')))
    r.send('slept', ngx.SEND_LAST)

def content_waits(r):
    try:
        time.sleep(30)
    finally:
        marker('content.txt')

def access_waits(r):
    try:
        time.sleep(30)
    finally:
        marker('access.txt')

def what_is_raised(r):
    try:
        time.sleep(30)
    except Exception as e:                    # must not catch the cancellation
        marker('what.txt', 'Exception %s' % type(e).__name__)
        raise
    except BaseException as e:
        marker('what.txt', '%s BaseException=%s Exception=%s is_ngx_Cancelled=%s' % (
            type(e).__name__, isinstance(e, BaseException), isinstance(e, Exception),
            isinstance(e, ngx.Cancelled)))
        raise

def finally_cannot_wait(r):
    try:
        time.sleep(30)
    finally:
        t0 = time.monotonic()
        try:
            time.sleep(10)
            marker('finally.txt', 'slept again?')
        except ngx.Cancelled:
            waited = time.monotonic() - t0
            marker('finally.txt', 'sleep raised Cancelled ' + ('at once' if waited < 1 else 'after %.1f s' % waited))
        try:
            r.log('request still there?')
            marker('finally.txt', 'r.log worked?')
        except Exception as e:
            marker('finally.txt', 'r.log raised %s' % type(e).__name__)

def swallow_and_continue(r):
    n = 0
    for i in range(1000):                     # bounded: every wait fails at once now
        try:
            time.sleep(5)
        except ngx.Cancelled:
            n += 1
    try:
        r.send('too late', ngx.SEND_LAST)
        marker('swallow.txt', 'sent?')
    except Exception as e:
        marker('swallow.txt', 'cancelled %d times; r.send raised %s' % (n, type(e).__name__))

def waits_on_socket(r):
    with socket.create_connection(('127.0.0.1', %(port)s)) as s:
        try:
            s.sendall(b'GET /backend HTTP/1.0\r\n\r\n')
            s.recv(100)
        finally:
            marker('socket.txt', 'frontend finally')

def backend(r):
    try:
        time.sleep(30)
    finally:
        marker('backend.txt', 'backend finally')

def udp_waits(r):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(('127.0.0.1', 0))
    try:
        u.recv(100)                           # nobody sends: waits, no timer
    finally:
        u.close()
        marker('udp.txt', 'udp finally')

def many(r):
    r.log('handler sleeping')
    time.sleep(60)

def many_socket(r):
    r.log('handler sleeping')
    with socket.create_connection(('127.0.0.1', %(port)s)) as s:
        s.sendall(b'GET /hold HTTP/1.0\r\n\r\n')
        s.recv(100)

def big(r):
    piece = b'0123456789abcdef' * 4096        # 64 KiB
    n = int(r.arg.get('pieces', '3200'))      # 200 MiB by default
    r.ho['Content-Length'] = n * len(piece)
    try:
        for i in range(n):
            r.send(piece)
        r.send(None, ngx.SEND_LAST)
    finally:
        marker('big.txt', 'big finally')

def overflow(r):
    # hash() of nested tuples recurses in C with no recursion check on any
    # CPython: it overflows every stack size (a recursion through Python
    # code meets 3.13's C recursion limit before a 4 MiB stack ends)
    t = ()
    for _ in range(150000):
        t = (t,)
    hash(t)

def overflow_after_sleep(r):
    time.sleep(0.05)
    overflow(r)

def overflow_in_access(r):
    overflow(r)

def overflow_in_access_after_sleep(r):
    time.sleep(0.05)
    overflow(r)
'''

SERVER = '''
python_include app.py;
server {
    listen 127.0.0.1:%(port)s backlog=2048;

    location /fast     { return 200 "fast"; }
    location /sleep    { python_content "nap(r)"; }
    location /content  { python_content "content_waits(r)"; }
    location /access   { python_access "access_waits(r)"; python_content "r.send('not reached', ngx.SEND_LAST)"; }
    location /what     { python_content "what_is_raised(r)"; }
    location /finally  { python_content "finally_cannot_wait(r)"; }
    location /swallow  { python_content "swallow_and_continue(r)"; }
    location /socket   { python_content "waits_on_socket(r)"; }
    location /backend  { python_content "backend(r)"; }
    location /proxied  { proxy_pass http://127.0.0.1:%(port)s/backend; proxy_read_timeout 200ms; }
    location /udp-wait { python_content "udp_waits(r)"; }
    location /many     { python_content "many(r)"; }
    location /many-socket { python_content "many_socket(r)"; }
    location /hold     { python_content "time.sleep(60)"; }
    location /big      { python_content "big(r)"; }
    location /big-timeout { send_timeout 300ms; python_content "big(r)"; }
    location /overflow { python_content "overflow(r)"; }
    location /overflow-after-sleep { python_content "overflow_after_sleep(r)"; }
    location /overflow-access-after-sleep {
        python_access "overflow_in_access_after_sleep(r)";
        python_content "r.send('no', ngx.SEND_LAST)";
    }
    location /overflow-access { python_access "overflow_in_access(r)"; python_content "r.send('no', ngx.SEND_LAST)"; }
}
'''


def fd_count(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


class AbortBase(harness.NginxTestCase):

    def setUp(self):
        if not harness.unblock_build():
            self.skipTest(SKIP_REASON)

    def start_app(self, events='worker_connections 4096;'):
        self.start(http=SERVER, files={'app.py': APP}, events=events)

    def read_marker(self, name, lines=1, timeout=10.0):
        """The marker file's lines once it has `lines` of them (waits)."""
        path = self.prefix + name
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(path) as f:
                    got = f.read().splitlines()
                if len(got) >= lines:
                    return got
            except OSError:
                got = None
            if time.monotonic() > deadline:
                self.fail('marker %s: %r after %ss\n%s' % (name, got, timeout, self.error_log()))
            time.sleep(0.02)

    def send_and_close(self, path, wait_for=None, delay=0.2):
        """Send a request, give its handler time to start waiting, hang up."""
        s = socket.create_connection(('127.0.0.1', self.port))
        s.sendall(('GET %s HTTP/1.1\r\nHost: t\r\n\r\n' % path).encode())
        if wait_for:
            self.wait_log(wait_for)
        else:
            time.sleep(delay)
        s.close()

    def worker(self):
        return sorted(self.worker_pids())[0]


class ClientAbortTest(AbortBase):

    def test_abort_while_content_sleeps(self):
        self.start_app()
        self.send_and_close('/content')
        self.assertEqual(self.read_marker('content.txt'), ['finally'])
        m = self.wait_log(r'\[info\][^\n]*python_content: stopped waiting')
        self.assertIn('client prematurely closed connection', self.error_log())
        self.assertNotIn('[error]', self.error_log(), m.group(0))
        self.assertEqual(self.get_body('/sleep?t=0.01'), 'slept')

    def test_abort_while_access_sleeps(self):
        self.start_app()
        self.send_and_close('/access')
        self.assertEqual(self.read_marker('access.txt'), ['finally'])
        self.wait_log(r'\[info\][^\n]*python_access: stopped waiting')
        self.assertNotIn('not reached', self.error_log())
        self.assertEqual(self.get_body('/sleep?t=0.01'), 'slept')

    def test_cancellation_is_ngx_cancelled_a_base_exception(self):
        self.start_app()
        self.send_and_close('/what')
        self.assertEqual(self.read_marker('what.txt'),
                         ['Cancelled BaseException=True Exception=False is_ngx_Cancelled=True'])
        self.wait_log(r'stopped waiting')

    def test_finally_cannot_wait_and_r_is_detached(self):
        self.start_app()
        self.send_and_close('/finally')
        self.assertEqual(self.read_marker('finally.txt', 2),
                         ['sleep raised Cancelled at once', 'r.log raised RuntimeError'])
        self.assertEqual(self.get_body('/fast'), 'fast')

    def test_handler_that_swallows_cancellation(self):
        self.start_app()
        self.send_and_close('/swallow')
        self.assertEqual(self.read_marker('swallow.txt'),
                         ['cancelled 1000 times; r.send raised RuntimeError'])
        self.assertEqual(self.get_body('/sleep?t=0.01'), 'slept')
        self.assertEqual(self.get_body('/fast'), 'fast')

    def test_abort_while_waiting_on_a_socket(self):
        # The frontend handler waits on a socket to /backend (same worker),
        # whose handler sleeps: hanging up cancels the frontend, whose socket
        # closes, which in turn ends the backend request and cancels it too.
        self.start_app()
        self.send_and_close('/socket', delay=0.3)
        self.assertEqual(self.read_marker('socket.txt'), ['frontend finally'])
        self.assertEqual(self.read_marker('backend.txt'), ['backend finally'])
        deadline = time.monotonic() + 5
        while self.error_log().count('stopped waiting') < 2:
            self.assertLess(time.monotonic(), deadline, self.error_log())
            time.sleep(0.02)
        self.assertEqual(self.get_body('/fast'), 'fast')

    def test_proxy_timeout_cancels_the_sleeping_backend(self):
        self.start_app()
        t0 = time.monotonic()
        self.assertEqual(self.get('/proxied')[0], 504)
        self.assertLess(time.monotonic() - t0, 2)
        self.assertEqual(self.read_marker('backend.txt'), ['backend finally'])
        self.wait_log(r'python_content: stopped waiting')

    def test_send_timeout_cancels_a_handler_waiting_in_r_send(self):
        # The client never reads: r.send waits for the socket until
        # send_timeout (300 ms) ends the request.
        self.start_app()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(('127.0.0.1', self.port))
        try:
            s.sendall(b'GET /big-timeout HTTP/1.0\r\n\r\n')
            self.assertEqual(self.read_marker('big.txt', timeout=15), ['big finally'])
            self.wait_log(r'client timed out')
            self.wait_log(r'stopped waiting')
        finally:
            s.close()
        self.assertEqual(self.get_body('/fast'), 'fast')


class ResourceTest(AbortBase):

    def abort_batch(self, path, count, started):
        """count requests to path; close them once all handlers started."""
        socks = []
        try:
            for _ in range(count):
                s = socket.create_connection(('127.0.0.1', self.port))
                s.sendall(('GET %s HTTP/1.1\r\nHost: t\r\n\r\n' % path).encode())
                socks.append(s)
            deadline = time.monotonic() + 30
            while self.error_log().count('handler sleeping') < started + count:
                self.assertLess(time.monotonic(), deadline, 'handlers did not start')
                time.sleep(0.05)
        finally:
            for s in socks:
                s.close()
        deadline = time.monotonic() + 30
        while self.error_log().count('stopped waiting') < started + count:
            self.assertLess(time.monotonic(), deadline, 'aborted handlers did not unwind')
            time.sleep(0.05)
        return started + count

    def test_2000_aborted_requests_leave_rss_and_fds_flat(self):
        self.start_app()
        worker = self.worker()
        done = self.abort_batch('/many', 500, 0)          # warm-up: pools, caches
        rss_before, fds_before = harness.rss_kb(worker), fd_count(worker)
        for _ in range(4):
            done = self.abort_batch('/many', 500, done)
        rss_after, fds_after = harness.rss_kb(worker), fd_count(worker)
        assert_rss_below(self, rss_after - rss_before, 5 * 1024, 'RSS %d -> %d kB' % (rss_before, rss_after))
        self.assertLessEqual(fds_after, fds_before + 5, 'fds %d -> %d' % (fds_before, fds_after))
        self.assertEqual(self.get_body('/sleep?t=0.01'), 'slept')

    def test_aborted_socket_waits_release_sockets(self):
        # handlers waiting in recv on a socket to /hold: aborting them must
        # close their sockets (and so end the /hold requests too)
        self.start_app()
        worker = self.worker()
        fds_start = fd_count(worker)
        done = self.abort_batch('/many-socket', 100, 0)
        deadline = time.monotonic() + 10
        while fd_count(worker) > fds_start + 5:
            self.assertLess(time.monotonic(), deadline,
                            'fds %d -> %d' % (fds_start, fd_count(worker)))
            time.sleep(0.05)
        rss_before = harness.rss_kb(worker)
        for _ in range(3):
            done = self.abort_batch('/many-socket', 100, done)
        deadline = time.monotonic() + 10
        while fd_count(worker) > fds_start + 5:
            self.assertLess(time.monotonic(), deadline,
                            'fds %d -> %d' % (fds_start, fd_count(worker)))
            time.sleep(0.05)
        assert_rss_below(self, harness.rss_kb(worker) - rss_before, 5 * 1024)
        self.assertEqual(self.get_body('/fast'), 'fast')

    def test_200mb_response_to_a_slow_client_keeps_rss_bounded(self):
        self.start_app()
        worker = self.worker()
        self.assertEqual(self.get_body('/fast'), 'fast')
        before = harness.rss_kb(worker)
        total = 3200 * 65536
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.settimeout(30)
        s.connect(('127.0.0.1', self.port))
        got, peak, served, head = 0, before, 0, b''
        t0 = time.monotonic()
        try:
            s.sendall(b'GET /big HTTP/1.0\r\n\r\n')
            next_pause = 4 * 1024 * 1024
            while True:
                b = s.recv(65536)
                if not b:
                    break
                if len(head) < 4096:
                    head += b[:4096]
                got += len(b)
                if got >= next_pause:
                    next_pause += 8 * 1024 * 1024
                    time.sleep(0.05)                      # a slow client
                    peak = max(peak, harness.rss_kb(worker))
                    # another request is served while the big one streams
                    self.assertEqual(self.get_body('/fast'), 'fast')
                    served += 1
                self.assertLess(time.monotonic() - t0, 180, 'too slow')
        finally:
            s.close()
        header_len = head.index(b'\r\n\r\n') + 4
        self.assertIn(b'Content-Length: %d' % total, head[:header_len])
        self.assertEqual(got - header_len, total)
        self.assertGreater(served, 10)
        assert_rss_below(self, peak - before, 20 * 1024, 'RSS %d -> %d kB' % (before, peak))
        self.assertEqual(self.read_marker('big.txt'), ['big finally'])


class StackOverflowTest(AbortBase):

    def assert_overflow(self, path):
        offset = self.error_log_size()
        try:
            status = self.get(path, timeout=5)[0]
        except socket.timeout:
            status = 'no response within 5 s'
        self.assertEqual(status, 500, self.error_log(offset))
        entries = [e for e in self.log_entries('error', offset) if 'overflowed' in e]
        self.assertEqual(len(entries), 1, self.error_log(offset))
        self.assertRegex(entries[0], r'python: the handler overflowed its \d+-byte C stack')
        self.assertEqual(self.get_body('/sleep?t=0.01'), 'slept')
        self.assertEqual(self.get_body('/fast'), 'fast')
        self.assertNotIn('exited on signal', self.error_log())

    def test_stack_overflow_in_content(self):
        self.start_app()
        self.assert_overflow('/overflow')
        self.assert_overflow('/overflow')     # and again

    def test_stack_overflow_after_the_handler_waited(self):
        self.start_app()
        self.assert_overflow('/overflow-after-sleep')

    def test_stack_overflow_in_access(self):
        self.start_app()
        self.assert_overflow('/overflow-access')

    def test_stack_overflow_in_access_after_the_handler_waited(self):
        self.start_app()
        self.assert_overflow('/overflow-access-after-sleep')


class ShutdownTest(AbortBase):

    def test_graceful_quit_lets_sleeping_requests_finish(self):
        self.start_app()
        socks = []
        for _ in range(5):
            s = socket.create_connection(('127.0.0.1', self.port), timeout=10)
            s.sendall(b'GET /sleep?t=0.8 HTTP/1.0\r\n\r\n')
            socks.append(s)
        time.sleep(0.2)
        t0 = time.monotonic()
        os.kill(self.proc.pid, signal.SIGQUIT)
        for s in socks:
            data = b''
            while True:
                b = s.recv(4096)
                if not b:
                    break
                data += b
            s.close()
            self.assertTrue(data.startswith(b'HTTP/1.1 200'), data[:60])
            self.assertTrue(data.endswith(b'slept'), data[-60:])
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)
        self.proc.wait(timeout=10)
        self.assertNotIn('stopped waiting', self.error_log())

    def test_fast_stop_cancels_waiting_handlers(self):
        self.start_app()
        socks = []
        for _ in range(10):
            s = socket.create_connection(('127.0.0.1', self.port))
            s.sendall(b'GET /content HTTP/1.1\r\nHost: t\r\n\r\n')
            socks.append(s)
        time.sleep(0.3)
        self.proc.terminate()                                # SIGTERM: fast shutdown
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.fail('nginx did not exit on SIGTERM:\n' + self.error_log())
        for s in socks:
            s.close()
        self.assertEqual(self.read_marker('content.txt', 10), ['finally'] * 10)
        self.assertEqual(self.error_log().count('stopped waiting'), 10)

    def test_graceful_quit_with_a_handler_waiting_without_timer(self):
        # A handler waiting on a socket with no timeout: no timer keeps the
        # worker, so the exiting worker cancels the handler and exits.
        self.start_app()
        s = socket.create_connection(('127.0.0.1', self.port), timeout=15)
        s.sendall(b'GET /udp-wait HTTP/1.0\r\n\r\n')
        time.sleep(0.3)
        os.kill(self.proc.pid, signal.SIGQUIT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.fail('nginx did not exit on SIGQUIT:\n' + self.error_log())
        s.close()
        self.assertEqual(self.read_marker('udp.txt'), ['udp finally'])
        self.assertIn('stopped waiting', self.error_log())

if __name__ == '__main__':
    harness.main()
