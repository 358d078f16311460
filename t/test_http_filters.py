"""python_header_filter and python_body_filter: every response of their
location, whatever produced it (proxy_pass, static files, return, error
pages, Python); streaming with bounded memory; failures end the response
the way nginx ends a failing filter."""

import http.client
import os
import socket
import time

import harness

UNDER_ASAN = os.environ.get('TEST_NGINX_ASAN', '') not in ('', '0')

APP = r'''
import time

def mark(r):
    r.ho['X-Filtered'] = '%d %s' % (r.status, r.ho.get('Location', '-'))
    r.ctx['seen'] = r.ctx.get('seen', 0) + 1
    r.ho['X-Seen'] = r.ctx['seen']
    if r.status == 404:
        r.ho['X-Missing'] = 'yes'

def teapot(r):
    r.status = 418
    r.ho['Content-Type'] = 'text/x-tea'
    r.ho['X-Added-Later'] = 'X-Drop' in r.ho

def upper(r, chunk, last):
    r.ctx['calls'] = r.ctx.get('calls', 0) + 1
    out = chunk.upper()
    if last:
        out += b'|last'
    return out

def swap(r, chunk, last):
    return chunk.replace(b'a', b'b')

def count(r, chunk, last):
    r.ctx['n'] = r.ctx.get('n', 0) + len(chunk)
    if last:
        r.log('body filter saw %d bytes in %d calls' % (r.ctx['n'], r.ctx.get('c', 0) + 1), ngx.LOG_WARN)
    r.ctx['c'] = r.ctx.get('c', 0) + 1

def fail_header(r):
    raise ValueError('header filter failed on purpose')

def fail_body(r, chunk, last):
    r.ctx['b'] = r.ctx.get('b', 0) + len(chunk)
    if r.ctx['b'] > 100000:
        raise ValueError('body filter failed on purpose')

def sleeper(r):
    time.sleep(0.01)
'''

UPSTREAM = '''
    python_include app.py;
    server {
        listen 127.0.0.1:%(port2)s;
        location / { root %(prefix)shtml; }
        location /py { python_content "r.send('from python a', ngx.SEND_LAST)"; }
        location /stream {
            python_content "[r.send(b'a' * 1000) for _ in range(200)] and None";
        }
    }
'''

SERVER = '''
    python_header_filter "mark(r)";
    location /up/ { proxy_pass http://127.0.0.1:%(port2)s/; }
    location /static/ { alias %(prefix)shtml/; }
    location /redirect { return 302 /elsewhere; }
    location /error { error_page 404 /custom404.html; alias %(prefix)shtml/nothing; }
    location = /custom404.html { root %(prefix)shtml; }
    location /teapot { python_header_filter "teapot(r)"; add_header X-Drop 1 always; return 200 "tea"; }
    location /upper/ {
        python_body_filter "upper(r, chunk, last)";
        proxy_pass http://127.0.0.1:%(port2)s/;
    }
    location /swap/ { python_body_filter "swap(r, chunk, last)"; alias %(prefix)shtml/; }
    location /passthrough/ { python_body_filter "count(r, chunk, last)"; alias %(prefix)shtml/; }
    location /ret { python_body_filter "upper(r, chunk, last)"; return 200 "returned"; }
    location /pyupper { python_body_filter "upper(r, chunk, last)"; python_content "(r.send('abc'), r.send('def', ngx.SEND_LAST)) and None"; }
    location /big/ {
        python_header_filter "None";
        python_body_filter "chunk.replace(b'x', b'y')";
        proxy_pass http://127.0.0.1:%(port2)s/;
    }
    location /failh { python_header_filter "fail_header(r)"; return 200 "never"; }
    location /failh_py { python_header_filter "fail_header(r)"; python_content "r.send('never', ngx.SEND_LAST)"; }
    location /failh_up/ { python_header_filter "fail_header(r)"; proxy_pass http://127.0.0.1:%(port2)s/; }
    location /failh_static/ { python_header_filter "fail_header(r)"; alias %(prefix)shtml/; }
    location /failb/ { python_body_filter "fail_body(r, chunk, last)"; proxy_pass http://127.0.0.1:%(port2)s/; }
    location /sleepy { python_header_filter "sleeper(r)"; return 200 "x"; }
'''

BIG = 64 * 1024 * 1024


def files(big=False):
    f = {'app.py': APP,
         'html/a.txt': 'abc static\n',
         'html/custom404.html': 'custom not found\n',
         'html/large.txt': 'a' * 300000}
    if big:
        f['html/big.bin'] = b'x' * BIG
    return f


def hwm_kb(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    raise RuntimeError('no VmHWM')


class HeaderFilter(harness.NginxTestCase):

    def test_every_producer(self):
        self.start_server(SERVER, http=UPSTREAM, files=files(), wait_ports=['port', 'port2'])
        # proxied
        status, h, body = self.get('/up/a.txt')
        self.assertEqual((status, body, h['X-Filtered']), (200, b'abc static\n', '200 -'))
        # static
        status, h, body = self.get('/static/a.txt')
        self.assertEqual((status, h['X-Filtered'], h['Content-Length']), (200, '200 -', '11'))
        # Python content behind proxy_pass
        status, h, body = self.get('/up/py')
        self.assertEqual((status, h['X-Filtered']), (200, '200 -'))
        # a redirect by `return`
        status, h, body = self.get('/redirect')
        self.assertEqual(status, 302)
        # (nginx's header filter, below, makes the Location absolute)
        self.assertEqual(h['X-Filtered'], '302 /elsewhere')
        self.assertTrue(h['Location'].endswith('/elsewhere'), h['Location'])
        # nginx's own error page
        status, h, body = self.get('/static/missing.txt')
        self.assertEqual((status, h['X-Filtered'], h['X-Missing']), (404, '404 -', 'yes'))
        self.assertIn(b'404 Not Found', body)
        # error_page to another location: the filter of the page's location
        # runs once, with the error status and the same r.ctx
        status, h, body = self.get('/error/x')
        self.assertEqual((status, body, h['X-Filtered'], h['X-Seen']), (404, b'custom not found\n', '404 -', '1'))

    def test_change_status_and_headers(self):
        self.start_server(SERVER, http=UPSTREAM, files=files(), wait_ports=['port', 'port2'])
        status, h, body = self.get('/teapot')
        self.assertEqual((status, body, h['Content-Type']), (418, b'tea', 'text/x-tea'))
        # add_header runs below the Python filter: X-Drop is added after it
        self.assertEqual((h['X-Added-Later'], h['X-Drop']), ('False', '1'))
        # the location's own filter replaces the server's
        self.assertIsNone(h['X-Filtered'])

    def test_failure_is_500(self):
        self.start_server(SERVER, http=UPSTREAM, files=files(), wait_ports=['port', 'port2'])
        for path in ('/failh', '/failh_py', '/failh_up/py', '/failh_static/a.txt', '/failh_static/missing'):
            status, h, body = self.get(path)
            self.assertEqual(status, 500, path)
            self.assertIn(b'500 Internal Server Error', body)
            self.assertNotIn(b'never', body)
            self.assertNotIn(b'from python', body)
            self.assertNotIn(b'abc static', body)
        self.wait_log(r'(?s)python_header_filter: Traceback.*ValueError: header filter failed on purpose')
        self.assertEqual(self.get_body('/static/a.txt'), 'abc static\n')

    @harness.unblock_only
    def test_never_waits(self):
        self.start_server(SERVER, http=UPSTREAM, files=files(), wait_ports=['port', 'port2'])
        status, _, _ = self.get('/sleepy')
        self.assertEqual(status, 500)
        self.wait_log(r'(?s)python_header_filter: Traceback.*RuntimeError')


class BodyFilter(harness.NginxTestCase):

    def test_rewrite_proxied_static_return_python(self):
        self.start_server(SERVER, http=UPSTREAM, files=files(), wait_ports=['port', 'port2'])
        status, h, body = self.get('/upper/a.txt')
        self.assertEqual((status, body), (200, b'ABC STATIC\n|last'))
        # the length changed: Content-Length is gone, the body is chunked
        self.assertIsNone(h['Content-Length'])
        self.assertEqual(h['Transfer-Encoding'], 'chunked')
        status, h, body = self.get('/swap/large.txt')
        self.assertEqual((status, body), (200, b'b' * 300000))
        self.assertEqual(self.get('/ret')[2], b'RETURNED|last')
        self.assertEqual(self.get('/pyupper')[2], b'ABCDEF|last')
        # streamed by a Python upstream in 200 pieces
        status, h, body = self.get('/upper/stream')
        self.assertEqual((status, body), (200, b'A' * 200000 + b'|last'))

    def test_none_passes_chunks_unchanged(self):
        self.start_server(SERVER, http=UPSTREAM, files=files(), wait_ports=['port', 'port2'])
        status, h, body = self.get('/passthrough/large.txt')
        self.assertEqual((status, body), (200, b'a' * 300000))
        self.wait_log(r'body filter saw 300000 bytes in \d+ calls')

    def test_failure_closes_connection(self):
        self.start_server(SERVER, http=UPSTREAM, files=files(), wait_ports=['port', 'port2'])
        data = self.raw(b'GET /failb/large.txt HTTP/1.1\r\nHost: x\r\n\r\n')
        # the response is cut: far less than the 300000 bytes
        self.assertLess(len(data), 300000)
        self.wait_log(r'(?s)python_body_filter: Traceback.*ValueError: body filter failed on purpose')
        self.assertEqual(self.get_body('/static/a.txt'), 'abc static\n')

    def test_large_streamed_response_bounded_memory(self):
        self.start_server(SERVER, http=UPSTREAM, files=files(big=True), wait_ports=['port', 'port2'])
        self.assertEqual(self.get('/upper/a.txt')[0], 200)   # warm up
        worker = next(iter(self.worker_pids()))
        before = hwm_kb(worker)
        conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=30)
        conn.request('GET', '/big/big.bin')
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        total, bad = 0, 0
        while True:
            piece = resp.read(1 << 20)
            if not piece:
                break
            total += len(piece)
            bad += len(piece) - piece.count(b'y')
        conn.close()
        self.assertEqual((total, bad), (BIG, 0))
        grown = hwm_kb(worker) - before
        # The whole response is 64 MiB: the worker's peak grew by far less.
        if not UNDER_ASAN:
            self.assertLess(grown, 16 * 1024, 'peak RSS grew by %d kB' % grown)

        # A client that does not read for a while: the filter holds the
        # producer's buffers until its replacements are written, so
        # proxy_pass spools to its temp file instead of the filter queueing
        # the response in memory.
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.settimeout(30)
        s.connect(('127.0.0.1', self.port))
        s.sendall(b'GET /big/big.bin HTTP/1.0\r\n\r\n')
        time.sleep(1.5)
        received = 0
        while True:
            piece = s.recv(1 << 20)
            if not piece:
                break
            received += len(piece)
        s.close()
        self.assertGreater(received, BIG)
        grown = hwm_kb(worker) - before
        if not UNDER_ASAN:
            self.assertLess(grown, 16 * 1024, 'slow client: peak RSS grew by %d kB' % grown)
