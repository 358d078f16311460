"""Unblock build, HTTP: blocking Python in access/content handlers waits on
nginx's event loop (time.sleep, sockets, http.client, urllib), requests that
end while their handler waits cancel it, stack overflows and C extensions
calling PyGILState_Ensure inside handlers, streaming with bounded memory."""

import os
import selectors
import socket
import time

import harness

# `make test-asan` (TEST_NGINX_ASAN=1): AddressSanitizer's quarantine and
# shadow memory make RSS bounds meaningless; everything else is checked.
UNDER_ASAN = os.environ.get('TEST_NGINX_ASAN', '') not in ('', '0')


def assert_rss_below(test, growth, limit, msg=None):
    if not UNDER_ASAN:
        test.assertLess(growth, limit, msg)

APP = r'''
import errno, socket, sys, time, http.client, urllib.request

def nap(r):
    time.sleep(float(r.arg.get('t', '0.2')))
    r.send('slept', ngx.SEND_LAST)

def gate(r):
    time.sleep(0.1)
    return 403 if r.arg.get('deny') else None

def sockets(r):
    out = {}
    s = socket.socket()
    out['connect_ex'] = s.connect_ex(('127.0.0.1', %(port3)s))
    s.close()
    try:
        socket.create_connection(('127.0.0.1', %(port3)s), timeout=1)
    except ConnectionRefusedError as e:
        out['refused'] = e.errno
    s = socket.create_connection(('localhost', %(port)s))
    out['peer'] = s.getpeername()
    out['local_is_loopback'] = s.getsockname()[0] == '127.0.0.1'
    out['fileno'] = s.fileno() > 2
    out['so_type'] = s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\0\0\0\0\0\0\0')
    s.settimeout(0.1)
    s.sendall(b'GET /sleep?t=1 HTTP/1.0\r\n\r\n')
    try:
        s.recv(10)
    except socket.timeout as e:
        out['timeout'] = str(e)
    s.close()
    s = socket.create_connection(('127.0.0.1', %(port)s))
    f = s.makefile('rwb')
    f.write(b'GET /sleep?t=0.01 HTTP/1.0\r\n\r\n')
    f.flush()
    out['makefile'] = f.readline().decode()
    f.close()
    s.close()
    socket.setdefaulttimeout(0.05)
    try:
        s = socket.socket()
        s.connect(('127.0.0.1', %(port)s))
        s.sendall(b'GET /sleep?t=1 HTTP/1.0\r\n\r\n')
        s.recv(1)
    except socket.timeout:
        out['default_timeout'] = True
    finally:
        socket.setdefaulttimeout(None)
        s.close()
    u, v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(('127.0.0.1', 0))
    v.connect(u.getsockname())
    v.send(b'ping')
    out['udp'] = u.recvfrom(100)[0].decode()
    u.close()
    v.close()
    c = http.client.HTTPConnection('127.0.0.1', %(port)s, timeout=2)
    c.request('GET', '/sleep?t=0.01')
    out['http.client'] = c.getresponse().read().decode()
    out['urllib'] = urllib.request.urlopen('http://127.0.0.1:%(port)s/sleep?t=0.01').read().decode()
    out['localhost'] = socket.gethostbyname('localhost')
    try:
        socket.gethostbyname('nginx-python.invalid')
    except socket.gaierror as e:
        out['no_resolver'] = str(e)
    r.send(repr(out), ngx.SEND_LAST)

def chunks(r):
    piece = bytes(range(256)) * 256          # 64 KiB
    r.ho['Content-Length'] = 64 * len(piece)
    for i in range(64):
        r.send(piece)
    r.send(None, ngx.SEND_LAST)

def relay(r):
    c = http.client.HTTPConnection('127.0.0.1', %(port)s, timeout=5)
    c.request('GET', '/chunks')
    resp = c.getresponse()
    r.ho['Content-Length'] = resp.getheader('Content-Length')
    n = 0
    while True:
        b = resp.read(65536)
        if not b:
            break
        n += 1
        r.send(b)
    r.ctx['pieces'] = n
    r.send(None, ngx.SEND_LAST)

def big(r):
    piece = b'x' * 65536
    r.ho['Content-Length'] = 1600 * len(piece)
    for i in range(1600):
        r.send(piece)
    r.send(None, ngx.SEND_LAST)

def marker(name):
    with open('%(prefix)s' + name, 'a') as f:
        f.write('finally\n')

def abortable(r):
    try:
        time.sleep(5)
    finally:
        marker('aborted.txt')

def swallow(r):
    try:
        time.sleep(5)
    except ngx.Cancelled:
        marker('swallowed.txt')
    r_sent = None                       # returns normally: the request is gone

def overflow(r):
    # hash() of nested tuples recurses in C with no recursion check on any
    # CPython: it overflows every stack size (a recursion through Python
    # code meets 3.13's C recursion limit before a 4 MiB stack ends)
    t = ()
    for _ in range(150000):
        t = (t,)
    hash(t)

def raise_after_wait(r):
    time.sleep(0.05)
    raise ValueError('raised after waiting')

def extensions(r):
    import ctypes, sqlite3, _ngx_unblock
    time.sleep(0.01)
    db = sqlite3.connect(':memory:')
    db.create_function('twice', 1, lambda x: x * 2)
    v = db.execute('select twice(21)').fetchone()[0]
    cmp = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))(
        lambda a, b: a[0] - b[0])
    arr = (ctypes.c_int * 5)(5, 1, 4, 2, 3)
    ctypes.CDLL(None).qsort(arr, 5, ctypes.sizeof(ctypes.c_int), cmp)
    r.send(repr((v, list(arr), _ngx_unblock.gilstate_supported())), ngx.SEND_LAST)

def set_sleeps(r):
    time.sleep(0.01)
    return 'never'

def log_connects(r):
    socket.create_connection(('127.0.0.1', %(port)s))

CONFIG_TIME = {}
try:
    time.sleep(0.01)
    socket.create_connection(('127.0.0.1', %(port3)s), timeout=1)
except ConnectionRefusedError as e:
    CONFIG_TIME['refused'] = e.errno
'''

SERVER = '''
python_include app.py;
python_set $never "set_sleeps(r)";
server {
    listen 127.0.0.1:%(port)s backlog=2048;
    location /sleep     { python_content "nap(r)"; }
    location /gate      { python_access "gate(r)"; python_content "r.send('in', ngx.SEND_LAST)"; }
    location /sockets   { python_content "sockets(r)"; }
    location /chunks    { python_content "chunks(r)"; }
    location /relay     { python_content "relay(r)"; python_log "r.log('pieces=%s' % r.ctx.get('pieces'))"; }
    location /big       { python_content "big(r)"; }
    location /abort     { python_content "abortable(r)"; }
    location /overflow  { python_content "overflow(r)"; }
    location /swallow   { python_content "swallow(r)"; }
    location /raise     { python_content "raise_after_wait(r)"; }
    location /ext       { python_content "extensions(r)"; }
    location /set       { return 200 "[$never]"; }
    location /logwait   { python_log "log_connects(r)"; return 200 "logged"; }
    location /config    { python_content "r.send(repr(CONFIG_TIME), ngx.SEND_LAST)"; }
    location /timed     { python_content "nap(r)"; python_log "r.log('request_time=' + r.var['request_time'])"; }
    location /proxied   { proxy_pass http://127.0.0.1:%(port)s/sleep?t=1; proxy_read_timeout 100ms; }
}
'''


class UnblockHttpTest(harness.NginxTestCase):

    def setUp(self):
        if not harness.unblock_build():
            self.skipTest('needs the unblock build (make module FEATURES=unblock)')
        self.start(http=SERVER, files={'app.py': APP},
                   events='worker_connections 4096;')

    def test_sleep_in_content_and_access(self):
        t = time.monotonic()
        self.assertEqual(self.get_body('/sleep?t=0.2'), 'slept')
        self.assertGreaterEqual(time.monotonic() - t, 0.2)
        self.assertEqual(self.get_body('/gate'), 'in')
        self.assertEqual(self.get('/gate?deny=1')[0], 403)

    def test_request_time_covers_the_sleep(self):
        self.assertEqual(self.get_body('/timed?t=0.3'), 'slept')
        m = self.wait_log(r'request_time=(\d+\.\d+)')
        self.assertGreaterEqual(float(m.group(1)), 0.29)

    def test_worker_not_blocked_proxy_times_out(self):
        # The same single worker runs the sleeping backend and the proxy.
        t = time.monotonic()
        status, _, _ = self.get('/proxied')
        took = time.monotonic() - t
        self.assertEqual(status, 504)
        self.assertLess(took, 0.8, 'the proxy timeout fired late: the worker was blocked')

    def test_thousand_concurrent_sleeps_take_about_one_sleep(self):
        n = 1000
        sel = selectors.DefaultSelector()
        socks = []
        t = time.monotonic()
        for _ in range(n):
            s = socket.create_connection(('127.0.0.1', self.port))
            s.sendall(b'GET /sleep?t=0.5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, [])
            socks.append(s)
        done = 0
        deadline = time.monotonic() + 30
        while done < n and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                try:
                    data = key.fileobj.recv(4096)
                except ConnectionError:
                    data = b''
                if data:
                    key.data.append(data)
                else:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
                    done += 1
                    self.assertTrue(b''.join(key.data).startswith(b'HTTP/1.1 200'), key.data[:1])
        took = time.monotonic() - t
        for s in socks:
            s.close()
        self.assertEqual(done, n)
        # Serialized they would take 500 s; concurrently about 0.5 s.
        self.assertLess(took, 10, 'took %.1f s' % took)

    def test_sockets(self):
        out = eval(self.get_body('/sockets'))
        self.assertEqual(out['connect_ex'], 111)
        self.assertEqual(out['refused'], 111)
        self.assertEqual(out['peer'], ('127.0.0.1', self.port))
        self.assertTrue(out['local_is_loopback'])
        self.assertTrue(out['fileno'])
        self.assertEqual(out['so_type'], socket.SOCK_STREAM)
        self.assertEqual(out['timeout'], 'timed out')
        self.assertEqual(out['makefile'], 'HTTP/1.1 200 OK\r\n')
        self.assertTrue(out['default_timeout'])
        self.assertEqual(out['udp'], 'ping')
        self.assertEqual(out['http.client'], 'slept')
        self.assertEqual(out['urllib'], 'slept')
        self.assertEqual(out['localhost'], '127.0.0.1')
        self.assertIn('resolver', out['no_resolver'])

    def test_relay_4mib_chunk_by_chunk(self):
        status, headers, body = self.get('/relay')
        self.assertEqual(status, 200)
        self.assertEqual(len(body), 4 * 1024 * 1024)
        self.assertEqual(body, (bytes(range(256)) * 256) * 64)
        m = self.wait_log(r'pieces=(\d+)')
        self.assertGreater(int(m.group(1)), 1)

    def test_config_time_blocking_functions_are_real(self):
        self.assertEqual(eval(self.get_body('/config')), {'refused': 111})

    def test_set_and_log_refuse_to_wait(self):
        self.assertEqual(self.get_body('/set'), '[]')
        self.assertEqual(self.get_body('/logwait'), 'logged')
        log = self.wait_log(r'socket I/O would block').string
        self.assertIn('time.sleep() would block the nginx worker', log)
        self.assertIn('RuntimeError', log)

    def test_client_abort_runs_finally_and_frees(self):
        s = socket.create_connection(('127.0.0.1', self.port))
        s.sendall(b'GET /abort HTTP/1.1\r\nHost: x\r\n\r\n')
        time.sleep(0.2)
        s.close()
        self.wait_log(r'stopped waiting')
        with open(self.prefix + 'aborted.txt') as f:
            self.assertEqual(f.read(), 'finally\n')
        self.assertEqual(self.get_body('/sleep?t=0.01'), 'slept')

    def test_handler_that_swallows_cancellation(self):
        s = socket.create_connection(('127.0.0.1', self.port))
        s.sendall(b'GET /swallow HTTP/1.1\r\nHost: x\r\n\r\n')
        time.sleep(0.2)
        s.close()
        deadline = time.monotonic() + 5
        while not os.path.exists(self.prefix + 'swallowed.txt'):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        self.assertEqual(self.get_body('/sleep?t=0.01'), 'slept')

    def test_many_aborts_leave_rss_flat(self):
        def abort_batch(count):
            socks = []
            for _ in range(count):
                s = socket.create_connection(('127.0.0.1', self.port))
                s.sendall(b'GET /abort HTTP/1.1\r\nHost: x\r\n\r\n')
                socks.append(s)
            time.sleep(0.3)
            for s in socks:
                s.close()
            deadline = time.monotonic() + 10
            while self.error_log().count('stopped waiting') < expected[0] + count:
                self.assertLess(time.monotonic(), deadline, 'aborted handlers did not unwind')
                time.sleep(0.05)
            expected[0] += count

        expected = [0]
        worker = sorted(self.worker_pids())[0]
        abort_batch(500)                          # warm-up: pools, caches
        before = harness.rss_kb(worker)
        for _ in range(20):                       # 10,000 aborted requests
            abort_batch(500)
        after = harness.rss_kb(worker)
        assert_rss_below(self, after - before, 5 * 1024, 'RSS %d -> %d kB' % (before, after))

    def test_stack_overflow_is_a_clean_500(self):
        self.assertEqual(self.get('/overflow')[0], 500)
        self.assertIn('overflowed its', self.error_log())
        self.assertEqual(self.get_body('/sleep?t=0.01'), 'slept')

    def test_exception_after_waiting(self):
        self.assertEqual(self.get('/raise')[0], 500)
        entry = self.log_entries('error')[-1]
        self.assertIn('Traceback (most recent call last)', entry)
        self.assertIn('ValueError: raised after waiting', entry)

    def test_c_extensions_calling_pygilstate_inside_handlers(self):
        self.assertEqual(self.get_body('/ext'), '(42, [1, 2, 3, 4, 5], True)')

    def test_large_body_memory_bounded_and_others_served(self):
        worker = sorted(self.worker_pids())[0]
        before = harness.rss_kb(worker)
        s = socket.create_connection(('127.0.0.1', self.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b'GET /big HTTP/1.0\r\n\r\n')
        got = 0
        peak = before
        t = time.monotonic()
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += len(b)
            if got % (8 * 1024 * 1024) < 65536:
                peak = max(peak, harness.rss_kb(worker))
                # another request is served while the big one streams
                self.assertEqual(self.get_body('/sleep?t=0.01'), 'slept')
                time.sleep(0.01)
            self.assertLess(time.monotonic() - t, 60)
        s.close()
        self.assertGreater(got, 100 * 1024 * 1024)
        assert_rss_below(self, peak - before, 20 * 1024, 'RSS %d -> %d kB' % (before, peak))


DEEP = r'''
def deep(r):
    def g(k):
        return 0 if k == 0 else sum(map(g, [k - 1]))   # C-level recursion
    try:
        g(int(r.arg['n']))
        r.send('ok', ngx.SEND_LAST)
    except RecursionError:   # 3.9, 3.10, 3.12 count two levels per g: limit 1000
        r.send('RecursionError', ngx.SEND_LAST)
'''


class StackSizeTest(harness.NginxTestCase):

    def setUp(self):
        if not harness.unblock_build():
            self.skipTest('needs the unblock build')

    def test_python_stack_size_sizes_handler_stacks(self):
        # ~680 bytes a level: 200 levels need ~136 KB
        self.start_server('location / { python_content "deep(r)"; }',
                          main='python_stack_size 64k;',
                          http='python_include deep.py;', files={'deep.py': DEEP})
        self.assertEqual(self.get_body('/?n=20'), 'ok')
        self.assertEqual(self.get('/?n=200')[0], 500)
        self.assertIn('overflowed its 65536-byte C stack', self.error_log())
        self.assertEqual(self.get_body('/?n=20'), 'ok')

    def test_default_stack_takes_deep_c_recursion(self):
        self.start_server('location / { python_content "deep(r)"; }',
                          http='python_include deep.py;', files={'deep.py': DEEP})
        # the stack holds C-level recursion up to Python's recursion limit
        self.assertIn(self.get_body('/?n=900'), ('ok', 'RecursionError'))
        self.assertNotIn('overflowed', self.error_log())


class ShutdownTest(harness.NginxTestCase):

    def setUp(self):
        if not harness.unblock_build():
            self.skipTest('needs the unblock build')

    def test_fast_stop_cancels_waiting_handlers(self):
        self.start(http=SERVER, files={'app.py': APP})
        s = socket.create_connection(('127.0.0.1', self.port))
        s.sendall(b'GET /abort HTTP/1.1\r\nHost: x\r\n\r\n')
        time.sleep(0.2)
        self.proc.terminate()                       # SIGTERM: fast shutdown
        self.proc.wait(timeout=10)
        s.close()
        with open(self.prefix + 'aborted.txt') as f:
            self.assertEqual(f.read(), 'finally\n')
        self.assertIn('stopped waiting', self.error_log())

    def test_graceful_quit_lets_sleeping_requests_finish(self):
        self.start(http=SERVER, files={'app.py': APP})
        s = socket.create_connection(('127.0.0.1', self.port), timeout=5)
        s.sendall(b'GET /sleep?t=0.5 HTTP/1.0\r\n\r\n')
        time.sleep(0.1)
        os.kill(self.proc.pid, 3)                   # SIGQUIT: graceful
        data = b''
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
        self.assertTrue(data.startswith(b'HTTP/1.1 200'), data[:40])
        self.assertTrue(data.endswith(b'slept'))
        self.proc.wait(timeout=10)


if __name__ == '__main__':
    harness.main()
