"""r.send's buffers follow nginx's busy/free discipline (issue 9, item 1):
pieces nginx still holds are never freed or overwritten, and a long stream
of small sends reuses buffers instead of growing the request's pool."""

import hashlib
import os
import socket

import harness

# `make test-asan` (TEST_NGINX_ASAN=1): AddressSanitizer's quarantine keeps
# freed memory resident, so RSS says nothing there; the stream still runs
# (and ASan checks every buffer access).
UNDER_ASAN = os.environ.get('TEST_NGINX_ASAN', '') not in ('', '0')

APP = r'''
import ngx

def rss_kb():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])

def events(r):
    # a server-sent-events stream: many small flushed pieces
    n = int(r.arg['n'])
    r.ho['Content-Type'] = 'text/event-stream'
    piece = b'data: ' + b'x' * 92 + b'\n\n'
    r.send(piece, ngx.SEND_FLUSH)
    before = rss_kb()
    for _ in range(n):
        r.send(piece, ngx.SEND_FLUSH)
    r.send(b'grew %d\n' % (rss_kb() - before), ngx.SEND_LAST)

def pattern(i, size):
    return bytes((i * 7 + j) % 251 for j in range(251)) * (size // 251) + bytes([i % 256]) * (size % 251)

def dated(r):
    # a document with a date, sent in two pieces
    r.ho['Last-Modified'] = 'Tue, 24 Nov 2026 10:00:00 GMT'
    r.ho['Content-Length'] = 10
    r.send(b'01234')
    r.send(b'56789', ngx.SEND_LAST)

def late_header(r):
    r.send(b'body first', ngx.SEND_FLUSH)
    out = []
    for change in (lambda: r.ho.__setitem__('X-Late', '1'), lambda: r.ho.__delitem__('Content-Type')):
        try:
            change()
            out.append('changed')
        except RuntimeError as e:
            out.append(str(e))
    r.send(b'|' + '|'.join(out).encode(), ngx.SEND_LAST)

def large(r):
    # pieces nginx keeps in r->out below postpone_output, no flush
    for i in range(int(r.arg['n'])):
        r.send(pattern(i, int(r.arg['size'])))
    r.send(b'', ngx.SEND_LAST)
'''


def pattern(i, size):
    return bytes((i * 7 + j) % 251 for j in range(251)) * (size // 251) + bytes([i % 256]) * (size % 251)


class SendBuffers(harness.NginxTestCase):

    def start_app(self, server, http=''):
        self.start_server(server, http='python_include app.py;\n' + http, files={'app.py': APP})

    def read_all(self, path):
        s = socket.create_connection(('127.0.0.1', self.port), timeout=60)
        s.sendall(b'GET ' + path.encode() + b' HTTP/1.0\r\nHost: x\r\n\r\n')
        data = bytearray()
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        s.close()
        head, _, body = bytes(data).partition(b'\r\n\r\n')
        return head, body

    def test_long_event_stream_keeps_memory_flat(self):
        # 60,000 pieces of 100 bytes: before, each left its buffer and its
        # bytes in the request's pool (~11 MB); now a few buffers are reused.
        self.start_app('location /events { python_content "events(r)"; }')
        head, body = self.read_all('/events?n=60000')
        self.assertIn(b' 200 ', head.split(b'\r\n')[0])
        tail = body.rsplit(b'\n\n', 1)[-1]
        self.assertTrue(tail.startswith(b'grew '), tail[:100])
        self.assertEqual(body.count(b'data: '), 60001)
        grew = int(tail.split()[1])
        if not UNDER_ASAN:
            self.assertLess(grew, 3000, 'worker RSS grew by %d kB over the stream' % grew)

    def check_large(self, n, size):
        head, body = self.read_all('/large?n=%d&size=%d' % (n, size))
        self.assertIn(b' 200 ', head.split(b'\r\n')[0])
        want = b''.join(pattern(i, size) for i in range(n))
        self.assertEqual(len(body), len(want))
        self.assertEqual(hashlib.sha256(body).hexdigest(), hashlib.sha256(want).hexdigest())

    def test_postpone_output_large_sends_byte_exact(self):
        # Pieces below postpone_output wait in r->out with nothing marking
        # the connection busy: freeing them there put garbage on the wire.
        self.start_app('''
            postpone_output 64k;
            location /large { python_content "large(r)"; }
        ''')
        self.check_large(30, 10000)
        self.check_large(10, 100 * 1024)


class ResponseHeaders(harness.NginxTestCase):
    """What nginx's filters do with the headers a handler sets."""

    def setUp(self):
        self.start_server('location /dated { python_content "dated(r)"; }\n'
                          'location /late { python_content "late_header(r)"; }',
                          http='python_include app.py;', files={'app.py': APP})

    def test_last_modified_answers_if_modified_since(self):
        status, headers, body = self.get('/dated')
        self.assertEqual((status, body), (200, b'0123456789'))
        self.assertEqual(headers['Last-Modified'], 'Tue, 24 Nov 2026 10:00:00 GMT')
        status, _, body = self.get('/dated', headers={'If-Modified-Since': 'Tue, 24 Nov 2026 10:00:00 GMT'})
        self.assertEqual((status, body), (304, b''))
        status, _, body = self.get('/dated', headers={'If-Modified-Since': 'Mon, 23 Nov 2026 10:00:00 GMT'})
        self.assertEqual((status, body), (200, b'0123456789'))

    def test_a_body_of_known_length_answers_one_range(self):
        status, headers, body = self.get('/dated', headers={'Range': 'bytes=3-6'})
        self.assertEqual((status, body), (206, b'3456'))
        self.assertEqual(headers['Content-Range'], 'bytes 3-6/10')
        # If-Range with the date: still the part; with another date: all
        status, _, body = self.get('/dated', headers={'Range': 'bytes=-2', 'If-Range': 'Tue, 24 Nov 2026 10:00:00 GMT'})
        self.assertEqual((status, body), (206, b'89'))
        status, _, body = self.get('/dated', headers={'Range': 'bytes=-2', 'If-Range': 'Mon, 23 Nov 2026 10:00:00 GMT'})
        self.assertEqual((status, body), (200, b'0123456789'))
        # several ranges: the whole body (nginx cuts several only from one buffer)
        status, _, body = self.get('/dated', headers={'Range': 'bytes=0-1,5-6'})
        self.assertEqual((status, body), (200, b'0123456789'))

    def test_changing_headers_after_they_went_out_raises(self):
        status, headers, body = self.get('/late')
        self.assertEqual(status, 200)
        self.assertIsNone(headers['X-Late'])
        parts = body.split(b'|')
        self.assertEqual(parts[0], b'body first')
        self.assertEqual(len(parts), 3)
        for p in parts[1:]:
            self.assertIn(b'r.ho can no longer change', p)


class SendBuffersUnmappedPools(SendBuffers):

    # 64m pools: MALLOC_PERTURB_ would write 128 MB per request
    malloc_perturb = False

    # the inherited tests run once, in SendBuffers
    test_long_event_stream_keeps_memory_flat = None
    test_postpone_output_large_sends_byte_exact = None

    def test_large_sends_with_unmapped_pools(self):
        # freed pool memory is unmapped: a use after free crashes the worker
        self.start_app('''
            postpone_output 64k;
            request_pool_size 64m;
            location /large { python_content "large(r)"; }
        ''', http='connection_pool_size 64m; large_client_header_buffers 4 64m;')
        self.check_large(30, 10000)
        self.assertEqual(self.get('/large?n=1&size=5')[0], 200)
