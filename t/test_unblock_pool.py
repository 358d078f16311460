"""Unblock build: sockets that outlive the request that opened them (a
connection pool), shared by concurrent requests.

A kept socket waits on nginx's event loop with the log, timers and events
of the handler that waits on it now, never of the request that opened it:
with `connection_pool_size 64m` a freed client connection's pool is
unmapped, so any use of the first request's memory crashes the worker
(the harness fails every test on "exited on signal"). Between requests a
kept socket holds no worker_connections slot, and a reload or quit with
kept sockets logs no "[alert] open socket ... left in connection".

Run: TEST_NGINX_BINARY=build/unblock/objs/nginx python3 t test_unblock_pool
Every test skips in the sync build.
"""

import socket
import threading
import time

import harness

APP = r'''
import socket, time

PORT = %(port)s
SILENT = %(port2)s          # the test's listener that never answers
POOL = []                   # idle sockets to /ka (keep-alive) of this nginx
KEPT = []                   # sockets kept for good
SHARED = {}

def fetch(s, path):
    """One keep-alive HTTP/1.1 exchange on `s` (the reply has a known length)."""
    s.sendall(('GET %s HTTP/1.1\r\nHost: t\r\n\r\n' % path).encode())
    data = b''
    while b'\r\n\r\n' not in data:
        b = s.recv(1)          # one byte at a time: many waits
        if not b:
            raise ConnectionError('backend closed')
        data += b
    head, _, body = data.partition(b'\r\n\r\n')
    length = int([l for l in head.split(b'\r\n') if l.lower().startswith(b'content-length:')][0].split(b':')[1])
    while len(body) < length:
        body += s.recv(length - len(body))
    return body

def pooled(r):
    s = POOL.pop() if POOL else socket.create_connection(('127.0.0.1', PORT))
    reused = s.fileno()
    body = fetch(s, '/nap?t=' + r.arg.get('t', '0'))
    POOL.append(s)
    r.send('%s %d %d' % (body.decode(), reused, len(POOL)), ngx.SEND_LAST)

def nap(r):
    time.sleep(float(r.arg.get('t', '0')))
    r.ho['Content-Length'] = '6'
    r.send('napped', ngx.SEND_LAST)

def keep(r):
    """Opens a socket that waits once, and keeps it for good."""
    s = socket.create_connection(('127.0.0.1', PORT))
    fetch(s, '/nap?t=0.01')
    KEPT.append(s)
    r.send(str(len(KEPT)), ngx.SEND_LAST)

def shared_reader(r):
    """Waits to read from one socket shared by two handlers."""
    if 'sock' not in SHARED:
        SHARED['sock'] = socket.create_connection(('127.0.0.1', SILENT))
    s = SHARED['sock']
    s.settimeout(float(r.arg.get('t', '2')))
    try:
        s.recv(10)
        r.send('read', ngx.SEND_LAST)
    except RuntimeError as e:
        r.send('RuntimeError: %s' % e, ngx.SEND_LAST)
    except socket.timeout as e:
        # socket.timeout is TimeoutError from 3.10; its own class on 3.9
        r.send('timeout: %s' % e, ngx.SEND_LAST)
    except OSError as e:
        r.send('%s: %s' % (type(e).__name__, e), ngx.SEND_LAST)

def shared_close(r):
    SHARED.pop('sock').close()
    r.send('closed', ngx.SEND_LAST)
'''

CONF = r'''
connection_pool_size 64m;
large_client_header_buffers 4 64m;
request_pool_size 64m;
python_include app.py;
keepalive_requests 100000;
keepalive_timeout 60s;
'''

SERVER = r'''
location = /pooled { python_content "pooled(r)"; }
location = /nap { python_content "nap(r)"; }
location = /keep { python_content "keep(r)"; }
location = /shared_reader { python_content "shared_reader(r)"; }
location = /shared_close { python_content "shared_close(r)"; }
location = / { return 200 "root"; }
'''


class PoolTest(harness.NginxTestCase):

    # 64m pools, unmapped when freed: MALLOC_PERTURB_ would write 128 MB per
    # request (the timing assertions would measure that)
    malloc_perturb = False

    def setUp(self):
        if not harness.unblock_build():
            self.skipTest('needs the unblock build (make module FEATURES=unblock)')
        # A listener that accepts (in the kernel's backlog) but never answers.
        self.silent = socket.socket()
        self.silent.bind(('127.0.0.1', 0))
        self.silent.listen(16)
        self.addCleanup(self.silent.close)

    def start_app(self, events=''):
        self.ports = {}
        self.start_server(SERVER, http=CONF, events=events,
                          files={'app.py': APP.replace('%(port2)s', str(self.silent.getsockname()[1]))})

    def close_get(self, path):
        """A request on its own client connection, which nginx closes after
        it (its 64m pool unmapped before the next request starts)."""
        return self.get_body(path, headers={'Connection': 'close'})

    def test_pooled_socket_reused_by_later_requests(self):
        self.start_app()
        first = self.close_get('/pooled').split()
        self.assertEqual(first[0], 'napped')
        for _ in range(5):
            again = self.close_get('/pooled?t=0.01').split()
            # the same socket (same fd) serves the later requests
            self.assertEqual(again, ['napped', first[1], '1'])
        self.assertEqual(self.get_body('/'), 'root')
        self.assertNotRegex(self.error_log(), r'exited on signal|\[alert\]')

    def test_pool_shared_by_concurrent_requests(self):
        self.start_app()
        results = []

        def one():
            results.append(self.close_get('/pooled?t=0.2').split())

        for _round in range(3):
            threads = [threading.Thread(target=one) for _ in range(8)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            # concurrent: 8 x 0.2 s in about 0.2 s, not 1.6 s
            self.assertLess(time.monotonic() - t0, 1.2)
        self.assertEqual(len(results), 24)
        self.assertTrue(all(r[0] == 'napped' for r in results))
        # later rounds reuse the sockets the first round opened
        fds = {r[1] for r in results}
        self.assertLessEqual(len(fds), 8, results)

    def test_kept_sockets_hold_no_worker_connection(self):
        # 40 kept sockets with 32 worker_connections: each holds an nginx
        # connection only while its handler waits on it.
        self.start_app(events='worker_connections 32;')
        for i in range(40):
            self.assertEqual(self.close_get('/keep'), str(i + 1))
        self.assertEqual(self.close_get('/pooled'), self.close_get('/pooled'))

    def test_reload_and_quit_with_kept_sockets(self):
        self.start_app()
        for _ in range(3):
            self.close_get('/keep')
        self.close_get('/pooled')
        self.reload()
        self.close_get('/keep')
        self.close_get('/pooled')
        log = self.error_log()
        self.assertNotIn('left in connection', log)
        self.stop()
        self.assertNotIn('left in connection', self.error_log())
        self.assertNotRegex(self.error_log(), r'\[alert\]|exited on signal')

    def test_two_handlers_waiting_to_read_one_socket(self):
        self.start_app()
        out = {}

        def first():
            out['first'] = self.close_get('/shared_reader?t=1')

        t = threading.Thread(target=first)
        t.start()
        time.sleep(0.3)
        second = self.close_get('/shared_reader?t=1')
        t.join()
        self.assertRegex(second, r'^RuntimeError: socket fd \d+: another handler is already waiting to read from it')
        self.assertEqual(out['first'], 'timeout: timed out')

    def test_socket_closed_while_another_handler_waits(self):
        self.start_app()
        out = {}

        def reader():
            t0 = time.monotonic()
            out['reader'] = self.close_get('/shared_reader?t=5')
            out['took'] = time.monotonic() - t0

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.3)
        self.assertEqual(self.close_get('/shared_close'), 'closed')
        t.join()
        # woken at once, with the error a closed socket gives
        self.assertRegex(out['reader'], r'^OSError: .*Bad file descriptor')
        self.assertLess(out['took'], 2.0)
        self.assertEqual(self.get_body('/'), 'root')


if __name__ == '__main__':
    harness.main()
