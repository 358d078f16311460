"""Unblock build: socket.socket and everything built on it (create_connection,
makefile, http.client, urllib.request, socketpair, connected UDP) wait on
nginx's event loop inside python_access / python_content, with the standard
library's results and exceptions; at configuration time they really block;
in python_set / python_log they raise RuntimeError.

Most tests talk to a location of the same nginx, which has one worker: a
socket that blocked the worker would deadlock it (the answer could never be
produced), so every such test also proves the worker keeps serving.

Run: TEST_NGINX_BINARY=build/unblock/objs/nginx python3 t/test_unblock_socket.py
Every test skips in the sync build.
"""

import hashlib
import os
import socket
import threading
import time

import harness

SKIP_REASON = 'needs the unblock build (make module FEATURES=unblock; nginx -V has NGX_PYTHON_SYNC=0)'

APP = r'''
import errno, hashlib, socket, time, http.client, urllib.request, urllib.error

PORT = %(port)s
CLOSED = %(port2)s          # nothing listens there

def reply(r, obj):
    r.send(repr(obj), ngx.SEND_LAST)

# -- backends (same server, same worker) --

def nap(r):
    time.sleep(float(r.arg.get('t', '0.2')))
    r.send('slept', ngx.SEND_LAST)

def count_body(r):
    body = r.var['request_body'].encode('utf-8', 'surrogateescape')
    r.send('%d %s' % (len(body), hashlib.md5(body).hexdigest()), ngx.SEND_LAST)

PIECE = bytes(range(256)) * 256          # 64 KiB

def chunks(r):
    r.ho['Content-Length'] = 64 * len(PIECE)
    for i in range(64):
        r.send(PIECE)
    r.send(None, ngx.SEND_LAST)

# -- handlers under test --

def raw_http(r):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(('127.0.0.1', PORT))
    s.sendall(b'GET /hello HTTP/1.0\r\nHost: t\r\n\r\n')
    data = b''
    while True:
        b = s.recv(7)                     # small reads: several waits
        if not b:
            break
        data += b
    s.close()
    r.send(data, ngx.SEND_LAST)

def recv_into(r):
    s = socket.create_connection(('127.0.0.1', PORT))
    s.sendall(b'GET /hello HTTP/1.0\r\n\r\n')
    buf = bytearray(8192)
    n = 0
    while True:
        k = s.recv_into(memoryview(buf)[n:])
        if not k:
            break
        n += k
    s.close()
    r.send(bytes(buf[:n]), ngx.SEND_LAST)

def refused(r):
    out = {}
    s = socket.socket()
    out['connect_ex'] = s.connect_ex(('127.0.0.1', CLOSED))
    s.close()
    try:
        socket.create_connection(('127.0.0.1', CLOSED), timeout=2)
        out['create_connection'] = 'connected?'
    except ConnectionRefusedError as e:
        out['create_connection'] = ('ConnectionRefusedError', e.errno)
    s = socket.socket()
    try:
        s.connect(('127.0.0.1', CLOSED))
        out['connect'] = 'connected?'
    except OSError as e:
        out['connect'] = (type(e).__name__, e.errno)
    finally:
        s.close()
    s = socket.socket()
    out['connect_ex_ok'] = s.connect_ex(('127.0.0.1', PORT))
    s.close()
    reply(r, out)

def names(r):
    out = {}
    s = socket.create_connection(('127.0.0.1', PORT))
    out['peer'] = s.getpeername()
    out['local'] = s.getsockname()
    out['fileno'] = s.fileno()
    out['family'] = int(s.family)
    out['type'] = int(s.type)
    out['so_type'] = s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\0\0\0\x05\0\0\0')
    out['linger'] = s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out['nodelay'] = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    out['isinstance'] = isinstance(s, socket.socket) and isinstance(s, socket.SocketType)
    out['repr_has_laddr'] = 'laddr=' in repr(s)
    # the socket still works after all this
    s.sendall(b'GET /hello HTTP/1.0\r\n\r\n')
    out['first'] = s.recv(12)
    s.close()
    out['closed_fileno'] = s.fileno()
    reply(r, out)

def recv_timeout(r):
    out = {}
    s = socket.create_connection(('127.0.0.1', PORT))
    s.settimeout(0.1)
    out['gettimeout'] = s.gettimeout()
    out['getblocking'] = s.getblocking()
    s.sendall(b'GET /slow?t=2 HTTP/1.0\r\n\r\n')
    t0 = time.monotonic()
    try:
        s.recv(10)
        out['recv'] = 'returned'
    except socket.timeout as e:
        out['recv'] = (type(e).__name__, str(e), isinstance(e, TimeoutError), isinstance(e, OSError))
    # what the standard library raises (socket.timeout is TimeoutError from 3.10)
    out['std_timeout'] = (socket.timeout.__name__, issubclass(socket.timeout, TimeoutError))
    out['waited'] = time.monotonic() - t0
    # after a timeout the socket is still usable: the answer comes later
    s.settimeout(5)
    out['later'] = s.recv(12)
    s.close()
    reply(r, out)

def nonblocking(r):
    out = {}
    s = socket.create_connection(('127.0.0.1', PORT))
    s.setblocking(False)
    out['gettimeout'] = s.gettimeout()
    out['getblocking'] = s.getblocking()
    s.sendall(b'GET /slow?t=1 HTTP/1.0\r\n\r\n')
    try:
        s.recv(10)
        out['recv'] = 'returned'
    except BlockingIOError as e:
        out['recv'] = ('BlockingIOError', e.errno == errno.EAGAIN)
    s.setblocking(True)
    out['blocking_again'] = (s.gettimeout(), s.getblocking())
    s.close()
    reply(r, out)

def default_timeout(r):
    out = {}
    socket.setdefaulttimeout(0.05)
    try:
        s = socket.socket()
        out['new_socket_timeout'] = s.gettimeout()
        s.connect(('127.0.0.1', PORT))
        s.sendall(b'GET /slow?t=1 HTTP/1.0\r\n\r\n')
        t0 = time.monotonic()
        try:
            s.recv(1)
            out['recv'] = 'returned'
        except socket.timeout as e:
            out['recv'] = str(e)
        out['waited'] = time.monotonic() - t0
        s.close()
    finally:
        socket.setdefaulttimeout(None)
    out['after_reset'] = socket.socket().gettimeout()
    reply(r, out)

def makefile_rwb(r):
    s = socket.create_connection(('127.0.0.1', PORT))
    f = s.makefile('rwb')
    f.write(b'GET /slow?t=0.05 HTTP/1.0\r\nHost: t\r\n\r\n')
    f.flush()
    status = f.readline()
    headers = []
    while True:
        line = f.readline()
        if line in (b'\r\n', b''):
            break
        headers.append(line.split(b':', 1)[0].lower())
    body = f.read()
    f.close()
    s.close()
    reply(r, (status, headers, body))

def makefile_text(r):
    s = socket.create_connection(('127.0.0.1', PORT))
    s.sendall(b'GET /hello HTTP/1.0\r\n\r\n')
    with s.makefile('r', encoding='latin-1', newline='') as f:
        lines = f.readlines()
    s.close()
    reply(r, (lines[0], lines[-1]))

def with_http_client(r):
    out = {}
    c = http.client.HTTPConnection('127.0.0.1', PORT, timeout=5)
    c.request('GET', '/slow?t=0.05')
    resp = c.getresponse()
    out['get'] = (resp.status, resp.read())
    # keep-alive: the same connection again, now a POST
    c.request('POST', '/count', body=b'x' * 100000, headers={'Content-Type': 'application/octet-stream'})
    resp = c.getresponse()
    out['post'] = (resp.status, resp.read().decode())
    c.request('GET', '/missing')
    resp = c.getresponse()
    out['404'] = resp.status
    resp.read()
    c.close()
    reply(r, out)

def with_urllib(r):
    out = {}
    with urllib.request.urlopen('http://127.0.0.1:%d/slow?t=0.05' % PORT, timeout=5) as f:
        out['get'] = (f.status, f.read())
    try:
        urllib.request.urlopen('http://127.0.0.1:%d/missing' % PORT, timeout=5)
    except urllib.error.HTTPError as e:
        out['404'] = e.code
    try:
        urllib.request.urlopen('http://127.0.0.1:%d/' % CLOSED, timeout=5)
    except urllib.error.URLError as e:
        out['refused'] = type(e.reason).__name__
    reply(r, out)

def udp(r):
    out = {}
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(('127.0.0.1', 0))
    v.connect(u.getsockname())
    out['v_peer_is_u'] = v.getpeername() == u.getsockname()
    v.send(b'ping')
    data, addr = u.recvfrom(100)
    out['u_got'] = (data, addr == v.getsockname())
    u.sendto(b'pong', addr)
    out['v_got'] = v.recv(100)
    u.settimeout(0.1)
    t0 = time.monotonic()
    try:
        u.recvfrom(100)
        out['timeout'] = 'returned'
    except socket.timeout as e:
        out['timeout'] = str(e)
    out['waited'] = time.monotonic() - t0
    out['so_type'] = v.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
    u.close()
    v.close()
    reply(r, out)

def udp_wait(r):
    # the datagram arrives 0.2 s later, from another handler of this worker
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(('127.0.0.1', 0))
    c = socket.create_connection(('127.0.0.1', PORT))
    c.sendall(b'GET /udp-later?port=%d HTTP/1.0\r\n\r\n' % u.getsockname()[1])
    data = u.recv(100)
    c.close()
    u.close()
    r.send(data, ngx.SEND_LAST)

def udp_later(r):
    time.sleep(0.2)
    v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v.connect(('127.0.0.1', int(r.arg['port'])))
    v.send(b'late datagram')
    v.close()
    r.send('sent', ngx.SEND_LAST)

def big_upload(r):
    # 4 MiB through sendall: more than the socket buffers hold, read by a
    # handler of this same worker, so sendall must wait for it.
    body = (b'0123456789abcdef' * 65536) * 4
    s = socket.create_connection(('127.0.0.1', PORT))
    s.sendall(b'POST /count HTTP/1.0\r\nContent-Length: %d\r\n\r\n' % len(body))
    s.sendall(body)
    with s.makefile('rb') as f:
        data = f.read()
    s.close()
    r.send(data.split(b'\r\n\r\n', 1)[1] + b' ' + hashlib.md5(body).hexdigest().encode(), ngx.SEND_LAST)

def relay(r):
    c = http.client.HTTPConnection('127.0.0.1', PORT, timeout=10)
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
    r.send(None, ngx.SEND_LAST)
    r.ctx['pieces'] = n
    c.close()

def accept(r):
    out = {}
    ls = socket.socket()
    ls.bind(('127.0.0.1', 0))
    ls.listen(5)
    ls.settimeout(0.1)
    try:
        ls.accept()
        out['nobody'] = 'accepted?'
    except socket.timeout as e:
        out['nobody'] = str(e)
    ls.settimeout(None)
    c = socket.create_connection(ls.getsockname())
    conn, addr = ls.accept()
    out['addr_ok'] = addr == c.getsockname()
    out['conn_is_cooperative'] = isinstance(conn, socket.socket) and conn.gettimeout() is None
    c.sendall(b'over the accepted socket')
    out['got'] = conn.recv(100)
    conn.close()
    out['eof'] = c.recv(10)
    c.close()
    ls.close()
    reply(r, out)

def pair(r):
    out = {}
    a, b = socket.socketpair()
    out['cooperative'] = isinstance(a, socket.socket) and isinstance(b, socket.socket)
    a.sendall(b'hello pair')
    out['got'] = b.recv(100)
    b.settimeout(0.1)
    try:
        b.recv(100)
        out['timeout'] = 'returned'
    except socket.timeout as e:
        out['timeout'] = str(e)
    a.close()
    b.close()
    reply(r, out)

def via_http(r):
    c = http.client.HTTPConnection('127.0.0.1', PORT, timeout=30)
    c.request('GET', '/slow?t=0.5')
    body = c.getresponse().read()
    c.close()
    r.send(body, ngx.SEND_LAST)

def check_auth(r):
    c = http.client.HTTPConnection('127.0.0.1', PORT, timeout=5)
    c.request('GET', '/auth?user=' + r.arg.get('user', ''))
    status = c.getresponse().status
    c.close()
    return None if status == 200 else 403

def unclosed(r):
    # sockets the handler never closes: collected when it returns
    s = socket.create_connection(('127.0.0.1', PORT))
    s.sendall(b'GET /hello HTTP/1.0\r\n\r\n')
    s.recv(5)
    t = socket.socket()
    t.connect_ex(('127.0.0.1', CLOSED))
    r.send('left open', ngx.SEND_LAST)

def set_connects(r):
    socket.create_connection(('127.0.0.1', PORT))
    return 'connected'

def log_connects(r):
    s = socket.socket()
    try:
        s.connect(('127.0.0.1', PORT))
    finally:
        s.close()

def set_socket_without_io(r):
    # creating and closing a socket does not wait: allowed everywhere
    s = socket.socket()
    fam = int(s.family)
    s.close()
    return 'family %d' % fam
'''

SERVER = '''
python_include app.py;
python_set $connects "set_connects(r)";
python_set $nowait "set_socket_without_io(r)";
server {
    listen 127.0.0.1:%(port)s backlog=1024;

    location /hello     { return 200 "hello\\n"; }
    location /slow      { python_content "nap(r)"; }
    location /count {
        client_max_body_size 16m;
        client_body_buffer_size 16m;
        python_content "count_body(r)";
    }
    location /chunks    { python_content "chunks(r)"; }
    location /auth      { if ($arg_user = alice) { return 200 "ok"; } return 403; }
    location /udp-later { python_content "udp_later(r)"; }

    location /raw       { python_content "raw_http(r)"; }
    location /recv-into { python_content "recv_into(r)"; }
    location /refused   { python_content "refused(r)"; }
    location /names     { python_content "names(r)"; }
    location /timeout   { python_content "recv_timeout(r)"; }
    location /nonblocking { python_content "nonblocking(r)"; }
    location /default-timeout { python_content "default_timeout(r)"; }
    location /makefile  { python_content "makefile_rwb(r)"; }
    location /makefile-text { python_content "makefile_text(r)"; }
    location /http-client { python_content "with_http_client(r)"; }
    location /urllib    { python_content "with_urllib(r)"; }
    location /udp       { python_content "udp(r)"; }
    location /udp-wait  { python_content "udp_wait(r)"; }
    location /upload    { python_content "big_upload(r)"; }
    location /relay     { python_content "relay(r)"; python_log "r.log('pieces=%s' % r.ctx.get('pieces'))"; }
    location /accept    { python_content "accept(r)"; }
    location /pair      { python_content "pair(r)"; }
    location /via-http  { python_content "via_http(r)"; }
    location /guarded   { python_access "check_auth(r)"; python_content "r.send('welcome', ngx.SEND_LAST)"; }
    location /unclosed  { python_content "unclosed(r)"; }
    location /set       { return 200 "[$connects]"; }
    location /set-nowait { return 200 "[$nowait]"; }
    location /log       { python_log "log_connects(r)"; return 200 "logged"; }
}
'''


def fd_count(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


class UnblockSocketTest(harness.NginxTestCase):

    def setUp(self):
        if not harness.unblock_build():
            self.skipTest(SKIP_REASON)
        self.start(http=SERVER, files={'app.py': APP}, events='worker_connections 1024;')

    def result(self, path):
        return eval(self.get_body(path))

    # -- TCP basics ------------------------------------------------------------

    def test_raw_http_over_socket(self):
        body = self.get_body('/raw')
        self.assertTrue(body.startswith('HTTP/1.1 200 OK\r\n'), body)
        self.assertTrue(body.endswith('\r\n\r\nhello\n'), body)

    def test_recv_into(self):
        body = self.get_body('/recv-into')
        self.assertTrue(body.startswith('HTTP/1.1 200 OK\r\n'), body)
        self.assertTrue(body.endswith('hello\n'), body)

    def test_connection_refused(self):
        out = self.result('/refused')
        self.assertEqual(out['connect_ex'], 111)          # ECONNREFUSED
        self.assertEqual(out['create_connection'], ('ConnectionRefusedError', 111))
        self.assertEqual(out['connect'], ('ConnectionRefusedError', 111))
        self.assertEqual(out['connect_ex_ok'], 0)

    def test_socket_names_options_and_fileno(self):
        out = self.result('/names')
        self.assertEqual(out['peer'], ('127.0.0.1', self.port))
        self.assertEqual(out['local'][0], '127.0.0.1')
        self.assertGreater(out['local'][1], 0)
        self.assertGreater(out['fileno'], 0)
        self.assertEqual(out['family'], socket.AF_INET)
        self.assertEqual(out['type'], socket.SOCK_STREAM)
        self.assertEqual(out['so_type'], socket.SOCK_STREAM)
        self.assertEqual(out['linger'], b'\x01\0\0\0\x05\0\0\0')
        self.assertTrue(out['nodelay'])
        self.assertTrue(out['isinstance'])
        self.assertTrue(out['repr_has_laddr'])
        self.assertEqual(out['first'], b'HTTP/1.1 200')
        self.assertEqual(out['closed_fileno'], -1)

    # -- timeouts ----------------------------------------------------------------

    def test_settimeout_then_recv_times_out(self):
        out = self.result('/timeout')
        self.assertEqual(out['gettimeout'], 0.1)
        self.assertTrue(out['getblocking'])
        name, is_timeout_error = out['std_timeout']
        self.assertEqual(out['recv'], (name, 'timed out', is_timeout_error, True))
        self.assertGreaterEqual(out['waited'], 0.09)
        self.assertLess(out['waited'], 1.5)
        self.assertEqual(out['later'], b'HTTP/1.1 200')

    def test_nonblocking_socket_raises_blocking_io_error(self):
        out = self.result('/nonblocking')
        self.assertEqual(out['gettimeout'], 0.0)
        self.assertFalse(out['getblocking'])
        self.assertEqual(out['recv'], ('BlockingIOError', True))
        self.assertEqual(out['blocking_again'], (None, True))

    def test_setdefaulttimeout_applies_to_new_sockets(self):
        out = self.result('/default-timeout')
        self.assertEqual(out['new_socket_timeout'], 0.05)
        self.assertEqual(out['recv'], 'timed out')
        self.assertGreaterEqual(out['waited'], 0.04)
        self.assertLess(out['waited'], 0.9)
        self.assertIsNone(out['after_reset'])

    # -- file objects and HTTP clients -------------------------------------------

    def test_makefile_rwb_readline(self):
        status, headers, body = self.result('/makefile')
        self.assertEqual(status, b'HTTP/1.1 200 OK\r\n')
        self.assertIn(b'server', headers)
        self.assertEqual(body, b'slept')

    def test_makefile_text_mode(self):
        first, last = self.result('/makefile-text')
        self.assertEqual(first, 'HTTP/1.1 200 OK\r\n')
        self.assertEqual(last, 'hello\n')

    def test_http_client(self):
        out = self.result('/http-client')
        self.assertEqual(out['get'], (200, b'slept'))
        self.assertEqual(out['post'], (200, '100000 %s' % hashlib.md5(b'x' * 100000).hexdigest()))
        self.assertEqual(out['404'], 404)

    def test_urllib_request(self):
        out = self.result('/urllib')
        self.assertEqual(out['get'], (200, b'slept'))
        self.assertEqual(out['404'], 404)
        self.assertEqual(out['refused'], 'ConnectionRefusedError')

    def test_socket_in_access_handler(self):
        self.assertEqual(self.get_body('/guarded?user=alice'), 'welcome')
        self.assertEqual(self.get('/guarded?user=mallory')[0], 403)

    # -- UDP -------------------------------------------------------------------------

    def test_connected_udp(self):
        out = self.result('/udp')
        self.assertTrue(out['v_peer_is_u'])
        self.assertEqual(out['u_got'], (b'ping', True))
        self.assertEqual(out['v_got'], b'pong')
        self.assertEqual(out['timeout'], 'timed out')
        self.assertGreaterEqual(out['waited'], 0.09)
        self.assertLess(out['waited'], 1.5)
        self.assertEqual(out['so_type'], socket.SOCK_DGRAM)

    def test_udp_recv_waits_for_a_datagram_sent_by_another_handler(self):
        t0 = time.monotonic()
        self.assertEqual(self.get_body('/udp-wait'), 'late datagram')
        self.assertGreaterEqual(time.monotonic() - t0, 0.19)

    # -- bulk data -------------------------------------------------------------------

    def test_sendall_4mib_to_the_same_worker(self):
        count, md5_seen, md5_sent = self.get_body('/upload').split()
        self.assertEqual(int(count), 4 * 1024 * 1024)
        self.assertEqual(md5_seen, md5_sent)

    def test_relay_4mib_chunk_by_chunk(self):
        status, headers, body = self.get('/relay', timeout=30)
        self.assertEqual(status, 200)
        self.assertEqual(headers['Content-Length'], str(4 * 1024 * 1024))
        self.assertEqual(len(body), 4 * 1024 * 1024)
        self.assertEqual(body, (bytes(range(256)) * 256) * 64)
        m = self.wait_log(r'pieces=(\d+)')
        self.assertGreater(int(m.group(1)), 8, 'the body should pass through in many pieces')

    # -- other socket kinds -------------------------------------------------------

    def test_listen_and_accept(self):
        out = self.result('/accept')
        self.assertEqual(out['nobody'], 'timed out')
        self.assertTrue(out['addr_ok'])
        self.assertTrue(out['conn_is_cooperative'])
        self.assertEqual(out['got'], b'over the accepted socket')
        self.assertEqual(out['eof'], b'')

    def test_socketpair(self):
        out = self.result('/pair')
        self.assertTrue(out['cooperative'])
        self.assertEqual(out['got'], b'hello pair')
        self.assertEqual(out['timeout'], 'timed out')

    # -- concurrency and resources ----------------------------------------------------

    def test_fifty_handlers_waiting_on_http_client_at_once(self):
        # Each handler asks this same worker for /slow?t=0.5 and waits for it.
        results = []
        errors = []

        def one():
            try:
                results.append(self.get('/via-http', timeout=30))
            except Exception as e:          # noqa: BLE001 -- reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=one) for _ in range(50)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        took = time.monotonic() - t0
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 50)
        for status, _, body in results:
            self.assertEqual((status, body), (200, b'slept'))
        self.assertLess(took, 10, 'serialized they would take 25 s; took %.1f s' % took)

    def test_sockets_left_open_by_handlers_are_released(self):
        worker = sorted(self.worker_pids())[0]
        for _ in range(10):
            self.assertEqual(self.get_body('/unclosed'), 'left open')
        before = fd_count(worker)
        for _ in range(200):
            self.assertEqual(self.get_body('/unclosed'), 'left open')
        time.sleep(0.2)
        after = fd_count(worker)
        self.assertLess(after - before, 10, 'worker fds %d -> %d' % (before, after))

    # -- where waiting is impossible ------------------------------------------------

    def test_socket_io_in_python_set_raises_runtime_error(self):
        self.assertEqual(self.get_body('/set'), '[]')
        entry = [e for e in self.log_entries('error') if 'set_connects' in e]
        self.assertTrue(entry, self.error_log())
        self.assertIn('RuntimeError: socket I/O would block the nginx worker', entry[-1])
        # a socket that does no I/O is fine there
        self.assertEqual(self.get_body('/set-nowait'), '[family %d]' % socket.AF_INET)

    def test_socket_io_in_python_log_raises_runtime_error(self):
        self.assertEqual(self.get_body('/log'), 'logged')
        m = self.wait_log(r'python_log: Traceback[^\n]*(\n[^\n]*)*?\nRuntimeError: socket I/O would block')
        self.assertIn('log_connects', m.group(0))
        self.assertEqual(self.get_body('/raw').split('\r\n')[0], 'HTTP/1.1 200 OK')


CONFIG_APP = r'''
import socket

CONFIG = {}
try:
    socket.create_connection(('127.0.0.1', %(port2)s), timeout=2)
    CONFIG['refused'] = 'connected?'
except ConnectionRefusedError as e:
    CONFIG['refused'] = e.errno

s = socket.create_connection(('127.0.0.1', %(port3)s), timeout=5)
f = s.makefile('rwb')
f.write(b'hello from config time\n')
f.flush()
CONFIG['reply'] = f.readline()
f.close()
s.close()
CONFIG['localhost'] = socket.gethostbyname('localhost')
'''


class ConfigTimeSocketTest(harness.NginxTestCase):

    def setUp(self):
        if not harness.unblock_build():
            self.skipTest(SKIP_REASON)

    def test_config_time_sockets_really_block(self):
        # A server in this test process answers the configuration-time code.
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        port3 = harness.free_port()
        ls.bind(('127.0.0.1', port3))
        ls.listen(5)
        ls.settimeout(0.2)
        stop = threading.Event()

        def serve():
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    c, _ = ls.accept()
                except socket.timeout:
                    continue
                except OSError:
                    return
                with c:
                    c.settimeout(5)
                    line = c.makefile('rb').readline()
                    c.sendall(b'echo: ' + line)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        self.addCleanup(ls.close)         # cleanups run last first: stop, join, close
        self.addCleanup(t.join, 5)
        self.addCleanup(stop.set)
        self.start(http='''
            python_include config_app.py;
            server {
                listen 127.0.0.1:%(port)s;
                location / { python_content "r.send(repr(CONFIG), ngx.SEND_LAST)"; }
            }
            ''', files={'config_app.py': CONFIG_APP.replace('%(port3)s', str(port3))})
        out = eval(self.get_body('/'))
        self.assertEqual(out, {'refused': 111, 'reply': b'echo: hello from config time\n',
                               'localhost': '127.0.0.1'})


if __name__ == '__main__':
    harness.main()
