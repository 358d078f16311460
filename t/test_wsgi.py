"""python_wsgi: PEP 3333 applications hosted in nginx."""

import hashlib
import io
import json
import re
import socket
import threading
import time

import harness
from harness import unblock_only

APPS = r'''
import json, os, sys, time
from wsgiref.validate import validator

CLOSED = []

def _environ(environ, start_response):
    body = environ['wsgi.input'].read(int(environ.get('CONTENT_LENGTH') or 0))
    keys = ('REQUEST_METHOD', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING', 'CONTENT_TYPE',
            'CONTENT_LENGTH', 'SERVER_PROTOCOL', 'REMOTE_ADDR', 'HTTP_X_TEST', 'HTTP_HOST',
            'wsgi.url_scheme', 'wsgi.multithread', 'wsgi.multiprocess', 'wsgi.run_once')
    out = {k: environ.get(k) for k in keys}
    out['body'] = body.decode('latin-1')
    out['server_port_is_str'] = isinstance(environ['SERVER_PORT'], str)
    environ['wsgi.errors'].write('wsgi.errors line\n')
    data = json.dumps(out).encode()
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', str(len(data)))])
    return [data]

environ_app = validator(_environ)

class Streamed:
    def __init__(self, n):
        self.n = n
    def __iter__(self):
        for i in range(self.n):
            yield b'chunk %d\n' % i
    def close(self):
        CLOSED.append(self.n)

def _stream(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Set-Cookie', 'a=1'), ('Set-Cookie', 'b=2')])
    return Streamed(int(environ['QUERY_STRING'] or 3))

stream_app = validator(_stream)

def closed_app(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [repr(CLOSED).encode()]

def write_app(environ, start_response):
    write = start_response('201 Created', [('Content-Type', 'text/plain')])
    write(b'written ')
    return [b'returned']

def status_app(environ, start_response):
    start_response('404 Not Found', [('Content-Type', 'text/plain')])
    return [b'nothing here']

def empty_app(environ, start_response):
    start_response('204 No Content', [])
    return []

def raise_early(environ, start_response):
    raise ValueError('before start_response')

def raise_late(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    yield b'x' * 100000
    raise ValueError('after the headers')

def bad_status(environ, start_response):
    start_response('OK', [])
    return [b'']

def bad_headers(environ, start_response):
    start_response('200 OK', {'a': 'b'})
    return [b'']

def bad_body(environ, start_response):
    start_response('200 OK', [])
    return ['text, not bytes']

def exc_info_app(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    try:
        raise KeyError('k')
    except KeyError:
        start_response('500 Oops', [('Content-Type', 'text/plain')], sys.exc_info())
    return [b'replaced']

def slow(environ, start_response):
    time.sleep(1)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'slept']

def _input_ops(environ, start_response):
    # The same reads on wsgi.input and on a BytesIO of the same bytes must
    # give the same pieces (lines across nginx's memory/file boundary).
    def ops(f):
        out = [f.readline(), f.readline(3), f.read(10), f.readline(0), f.read(0)]
        out += list(f.readlines(50))
        out += [line for line in f]
        out += [f.read(), f.readline(), f.read(5)]
        return out
    got = ops(environ['wsgi.input'])
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    return [b''.join(got), b'|%d|' % len(got), b'|'.join(got)]

input_ops_app = _input_ops

def _upload_rss(environ, start_response):
    # a large upload read in 64 KiB blocks: the worker's peak RSS must not
    # grow by the body's size
    import hashlib, resource
    h = hashlib.sha256()
    f = environ['wsgi.input']
    n = 0
    while True:
        block = f.read(65536)
        if not block:
            break
        h.update(block)
        n += len(block)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('%s %d %d' % (h.hexdigest(), n, peak)).encode()]

upload_rss_app = validator(_upload_rss)

class Tracked:
    """a binary file whose close() is recorded"""
    def __init__(self, path, skip=0):
        self.f = open(path, 'rb')
        self.f.seek(skip)
    def read(self, n):
        return self.f.read(n)
    def fileno(self):
        return self.f.fileno()
    def tell(self):
        return self.f.tell()
    def close(self):
        CLOSED.append('file')
        self.f.close()

def sendfile_app(environ, start_response):
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    path = os.path.join(os.path.dirname(__file__), 'big.bin')
    skip = int(environ['QUERY_STRING'] or 0)
    return environ['wsgi.file_wrapper'](Tracked(path, skip))

def bytesio_app(environ, start_response):
    import io
    start_response('200 OK', [('Content-Type', 'text/plain')])
    with open(__file__, 'rb') as f:
        return environ['wsgi.file_wrapper'](io.BytesIO(f.read()), 100)

def _headers(environ, start_response):
    keys = ('SERVER_NAME', 'SERVER_PORT', 'REMOTE_PORT', 'REQUEST_URI', 'PATH_INFO',
            'HTTP_X_MULTI', 'wsgi.input_terminated')
    data = json.dumps({k: environ.get(k) for k in keys}).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [data]

headers_app = validator(_headers)

def _lines(environ, start_response):
    import hashlib
    h = hashlib.sha256()
    n = 0
    for line in environ['wsgi.input']:
        if n < 2:
            environ['wsgi.errors'].write('got line %d: %s\n' % (n, line.decode('latin-1').strip()))
        n += 1
        h.update(line)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('%d %s %s' % (n, h.hexdigest(), environ.get('CONTENT_LENGTH'))).encode()]

lines_app = validator(_lines)

def sized(environ, start_response):
    # Content-Length given: the piece that reaches it ends the response;
    # a longer body is the application's error
    n = int(environ['QUERY_STRING'] or 0)
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '10')])
    yield b'12345'
    yield b'67890'
    yield b''
    if n:
        yield b'x' * n

def errors_app(environ, start_response):
    err = environ['wsgi.errors']
    err.write('first\nsec')
    err.writelines(['ond\n', 'bad \udcff byte\n'])
    print('printed', 42, file=err)
    err.write('unterminated')
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']

def file_app(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return environ['wsgi.file_wrapper'](open(__file__, 'rb'), 1000)
'''


class Wsgi(harness.NginxTestCase):

    def start_apps(self, locations, http='', files=None):
        all_files = {'apps.py': APPS}
        all_files.update(files or {})
        self.start_server(locations, http=http, files=all_files)

    def test_environ_and_validator(self):
        self.start_apps('''
            location /app/ { python_wsgi apps:environ_app; }
        ''')
        status, _, body = self.get('/app/x/y?a=1&b=%20', method='POST', body=b'hello',
                                   headers={'X-Test': 'yes', 'Content-Type': 'text/plain'})
        self.assertEqual(status, 200, self.error_log())
        env = json.loads(body)
        self.assertEqual(env['REQUEST_METHOD'], 'POST')
        self.assertEqual(env['SCRIPT_NAME'], '/app')
        self.assertEqual(env['PATH_INFO'], '/x/y')
        self.assertEqual(env['QUERY_STRING'], 'a=1&b=%20')
        self.assertEqual(env['CONTENT_TYPE'], 'text/plain')
        self.assertEqual(env['CONTENT_LENGTH'], '5')
        self.assertEqual(env['body'], 'hello')
        self.assertEqual(env['HTTP_X_TEST'], 'yes')
        self.assertEqual(env['SERVER_PROTOCOL'], 'HTTP/1.1')
        self.assertEqual(env['REMOTE_ADDR'], '127.0.0.1')
        self.assertEqual(env['wsgi.url_scheme'], 'http')
        self.assertEqual(env['wsgi.multithread'], harness.unblock_build())
        self.assertEqual((env['wsgi.multiprocess'], env['wsgi.run_once']), (True, False))
        self.assertTrue(env['server_port_is_str'])
        self.assertIn('wsgi.errors line', self.error_log())

    def test_large_body_from_temp_file(self):
        self.start_apps('''
            client_body_buffer_size 8k;
            location / { python_wsgi apps:environ_app; }
        ''')
        data = bytes(range(256)) * 4000
        status, _, body = self.get('/', method='POST', body=data)
        self.assertEqual(status, 200, self.error_log())
        self.assertEqual(json.loads(body)['body'].encode('latin-1'), data)
        if not harness.unblock_build():
            # sync: nginx reads it all first; unblock: the app reads it as it arrives
            self.assertIn('a client request body is buffered to a temporary file', self.error_log())

    def test_streaming_cookies_close(self):
        self.start_apps('''
            location /s { python_wsgi apps:stream_app; }
            location /closed { python_wsgi apps:closed_app; }
        ''')
        status, headers, body = self.get('/s?5')
        self.assertEqual(status, 200)
        self.assertEqual(body, b''.join(b'chunk %d\n' % i for i in range(5)))
        self.assertEqual(headers.get_all('Set-Cookie'), ['a=1', 'b=2'])
        self.assertEqual(self.get_body('/closed'), '[5]')

    def test_write_status_empty_file_wrapper(self):
        self.start_apps('''
            location /w { python_wsgi apps:write_app; }
            location /404 { python_wsgi apps:status_app; }
            location /204 { python_wsgi apps:empty_app; }
            location /f { python_wsgi apps:file_app; }
            location /e { python_wsgi apps:exc_info_app; }
        ''')
        self.assertEqual(self.get('/w')[::2], (201, b'written returned'))
        status, headers, body = self.get('/404')
        self.assertEqual((status, body), (404, b'nothing here'))
        self.assertEqual(headers['Content-Length'], '12')   # a list: the whole body is known
        self.assertEqual(self.get('/204')[::2], (204, b''))
        self.assertEqual(self.get('/f')[2], APPS.encode())
        self.assertEqual(self.get('/e')[::2], (500, b'replaced'))

    def test_errors(self):
        self.start_apps('''
            location /early { python_wsgi apps:raise_early; }
            location /late { python_wsgi apps:raise_late; }
            location /status { python_wsgi apps:bad_status; }
            location /headers { python_wsgi apps:bad_headers; }
            location /body { python_wsgi apps:bad_body; }
            location /ok { python_wsgi apps:status_app; }
        ''')
        self.assertEqual(self.get('/early')[0], 500)
        self.assertIn('ValueError: before start_response', self.error_log())
        # headers out, then the app fails: the response is cut short
        raw = self.raw(b'GET /late HTTP/1.1\r\nHost: x\r\n\r\n')
        self.assertTrue(raw.startswith(b'HTTP/1.1 200'), raw)
        self.assertNotIn(b'\r\n0\r\n\r\n', raw)   # no chunked end: cut short
        self.assertIn('ValueError: after the headers', self.error_log())
        for path, message in (('/status', 'WSGI status must be'),
                              ('/headers', 'headers must be a list'),
                              ('/body', 'body data must be bytes')):
            self.assertEqual(self.get(path)[0], 500, path)
            self.assertIn(message, self.error_log())
        self.assertEqual(self.get('/ok')[0], 404)   # the worker is fine

    def test_r_body(self):
        self.start_server('''
            client_body_buffer_size 8k;
            location / { python_content "r.send(repr(r.body)[:40], ngx.SEND_LAST)"; }
        ''')
        self.assertEqual(self.get_body('/'), 'None')
        self.assertEqual(self.get_body('/', method='POST', body=b''), "b''")
        self.assertEqual(self.get_body('/', method='POST', body=b'abc'), "b'abc'")
        big = b'z' * 100000
        self.assertEqual(self.get_body('/', method='POST', body=big), repr(big)[:40])

    def test_input_reads_match_bytesio(self):
        self.start_apps('''
            client_body_buffer_size 8k;
            location / { python_wsgi apps:input_ops_app; }
        ''')
        for data in (b'', b'no newline', b'a\nbb\nccc\n' * 5000 + b'tail'):
            f = io.BytesIO(data)
            want = [f.readline(), f.readline(3), f.read(10), f.readline(0), f.read(0)]
            want += list(f.readlines(50))
            want += [line for line in f]
            want += [f.read(), f.readline(), f.read(5)]
            status, _, body = self.get('/', method='POST', body=data)
            self.assertEqual(status, 200, self.error_log())
            self.assertEqual(body, b''.join(want) + b'|%d|' % len(want) + b'|'.join(want))

    def test_large_upload_read_in_blocks(self):
        self.start_apps('''
            client_body_buffer_size 16k;
            client_max_body_size 64m;
            location / { python_wsgi apps:upload_rss_app; }
        ''')
        small = self.get_body('/', method='POST', body=b'x').split()
        data = bytes(range(256)) * (48 * 4096)      # 48 MiB
        status, _, body = self.get('/', method='POST', body=data)
        self.assertEqual(status, 200, self.error_log())
        digest, n, peak = body.decode().split()
        self.assertEqual((digest, int(n)), (hashlib.sha256(data).hexdigest(), len(data)))
        # the body is not loaded into the worker's memory: its peak RSS grew
        # by much less than 48 MiB
        self.assertLess(int(peak) - int(small[2]), 16 * 1024, (small, peak))

    def test_file_wrapper_sendfile(self):
        big = bytes(range(256)) * (16 * 4096)          # 16 MiB
        self.start_apps('''
            sendfile on;
            location /sf { python_wsgi apps:sendfile_app; error_log logs/sendfile.log debug; }
            location /bytesio { python_wsgi apps:bytesio_app; }
            location /closed { python_wsgi apps:closed_app; }
        ''', files={'big.bin': big})
        status, headers, body = self.get('/sf')
        self.assertEqual(status, 200, self.error_log())
        self.assertEqual(headers['Content-Length'], str(len(big)))
        self.assertTrue(body == big, 'the file, whole')
        # from the file's position: the app read (seeked) past 1000 bytes
        status, headers, body = self.get('/sf?1000')
        self.assertEqual((headers['Content-Length'], body == big[1000:]), (str(len(big) - 1000), True))
        status, headers, body = self.get('/sf', method='HEAD')
        self.assertEqual((status, headers['Content-Length'], body), (200, str(len(big)), b''))
        # close() was called each time (the app's own file: nginx sends
        # from a duplicate of its descriptor, closed with the request)
        self.assertEqual(self.get_body('/closed'), repr(['file'] * 3))
        if '--with-debug' in harness.nginx_v():
            with open(self.prefix + '/logs/sendfile.log', encoding='latin-1') as f:
                self.assertIn('sendfile: @0 ', f.read())
        # a file-like object without a descriptor is read in blocks
        self.assertEqual(self.get('/bytesio')[2], APPS.encode())

    def test_environ_details(self):
        self.start_apps('''
            location /h/ { python_wsgi apps:headers_app; }
        ''')
        status, _, body = self.get('/h/%C3%A9?x=%C3%A9', headers={'X-Multi': 'a'})
        self.assertEqual(status, 200, self.error_log())
        env = json.loads(body)
        self.assertEqual(env['SERVER_PORT'], str(self.port))
        self.assertEqual(env['SERVER_NAME'], '127.0.0.1')
        self.assertTrue(env['REMOTE_PORT'].isdigit())
        self.assertEqual(env['REQUEST_URI'], '/h/%C3%A9?x=%C3%A9')
        self.assertEqual(env['PATH_INFO'], '/\xc3\xa9')          # the bytes as latin-1
        self.assertIs(env['wsgi.input_terminated'], True)
        raw = self.raw(b'GET /h/ HTTP/1.1\r\nHost: x\r\nX-Multi: a\r\nX-Multi: b\r\n'
                       b'Connection: close\r\n\r\n')
        self.assertIn(b'"HTTP_X_MULTI": "a,b"', raw)

    @unblock_only
    def test_input_streams_as_the_body_arrives(self):
        self.start_apps('''
            client_body_buffer_size 16k;
            client_max_body_size 64m;
            location /lines { python_wsgi apps:lines_app; }
            location /fast { return 200 "fast"; }
        ''')
        rest = b''.join(b'line %d\n' % i for i in range(1, 200000))
        body = b'first\n' + rest
        s = socket.create_connection(('127.0.0.1', self.port), timeout=10)
        try:
            s.sendall(b'POST /lines HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nfirst\n' % len(body))
            # the application has the first line while the rest is not sent
            self.wait_log(r'got line 0: first')
            self.assertNotIn('got line 1', self.error_log())
            # and the worker serves others while it waits for more
            self.assertEqual(self.get_body('/fast'), 'fast')
            s.sendall(rest)
            s.shutdown(socket.SHUT_WR)
            response = b''
            while True:
                data = s.recv(65536)
                if not data:
                    break
                response += data
        finally:
            s.close()
        want = '%d %s %d' % (200000, hashlib.sha256(body).hexdigest(), len(body))
        self.assertTrue(response.startswith(b'HTTP/1.1 200'), response)
        self.assertIn(want.encode(), response)
        # chunked, arriving in two parts: no CONTENT_LENGTH, read to the end
        # (wsgi.input_terminated)
        chunks = [b'%x\r\n%s\r\n' % (len(p), p) for p in (b'a\n', b'bb\n' * 5000, b'c')]
        s = socket.create_connection(('127.0.0.1', self.port), timeout=10)
        try:
            s.sendall(b'POST /lines HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n'
                      b'Connection: close\r\n\r\n' + chunks[0])
            self.wait_log(r'got line 0: a')
            s.sendall(b''.join(chunks[1:]) + b'0\r\n\r\n')
            raw = b''
            while True:
                data = s.recv(65536)
                if not data:
                    break
                raw += data
        finally:
            s.close()
        data = b'a\n' + b'bb\n' * 5000 + b'c'
        self.assertIn(('5002 %s None' % hashlib.sha256(data).hexdigest()).encode(), raw)
        # a client that goes away in the middle of its body: the worker goes on
        s = socket.create_connection(('127.0.0.1', self.port), timeout=10)
        s.sendall(b'POST /lines HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nhalf\n')
        self.wait_log(r'got line 0: half')
        s.close()
        self.assertEqual(self.get_body('/fast'), 'fast')
        big = bytes(range(256)) * (32 * 4096)  # 32 MiB through one 16k buffer
        status, _, answer = self.get('/lines', method='POST', body=big)
        self.assertEqual(status, 200, self.error_log())
        self.assertTrue(answer.decode().endswith(' %s %d' % (hashlib.sha256(big).hexdigest(), len(big))), answer)

    def test_content_length_ends_the_response(self):
        self.start_apps('''
            location /sized { python_wsgi apps:sized; }
        ''')
        self.assertEqual(self.get('/sized')[::2], (200, b'1234567890'))
        self.assertNotIn('[error]', self.error_log())
        raw = self.raw(b'GET /sized?3 HTTP/1.1\r\nHost: x\r\n\r\n')
        self.assertTrue(raw.endswith(b'\r\n\r\n1234567890'), raw)    # nothing more
        self.wait_log('longer than its Content-Length')

    def test_body_ignored_by_the_application(self):
        # the application answers without reading the body (in the unblock
        # build, most of it has not arrived yet): nginx discards the rest
        self.start_apps('''
            client_max_body_size 64m;
            location /404 { python_wsgi apps:status_app; }
        ''')
        for _ in range(2):
            status, _, body = self.get('/404', method='POST', body=b'z' * (8 << 20))
            self.assertEqual((status, body), (404, b'nothing here'))
        self.assertEqual(self.get('/404')[0], 404)

    def test_wsgi_errors(self):
        self.start_apps('''
            location /err { python_wsgi apps:errors_app; }
        ''')
        self.assertEqual(self.get('/err')[::2], (200, b'ok'))
        # the unterminated last line is flushed when the application is done,
        # which may be just after the client has the response
        self.wait_log('unterminated')
        got = re.findall(r'\[error\] \d+#\d+: \*\d+ (.*?), client:', self.error_log())
        self.assertEqual(len(got), 5, got)
        # a lone surrogate is replaced, the line is still logged
        self.assertTrue(got[2].startswith('bad ') and got[2].endswith(' byte'), got)
        self.assertEqual(got[:2] + got[3:], ['first', 'second', 'printed 42', 'unterminated'])

    def test_import_error_fails_configuration(self):
        rc, out = self.nginx_t(http='''
            server { listen 127.0.0.1:%(port)s; location / { python_wsgi nosuchmodule:app; } }
        ''')
        self.assertConfError(rc, out, 'python_wsgi nosuchmodule', 'python_wsgi "nosuchmodule:app"',
                             'ModuleNotFoundError')

    def test_reload_picks_up_new_code(self):
        app = 'def app(e, s):\n    s("200 OK", [])\n    return [b"%s"]\n'
        self.start_server('location / { python_wsgi myapp:app; }', files={'myapp.py': app % 'one'})
        self.assertEqual(self.get_body('/'), 'one')
        self.write_file('myapp.py', app % 'two')
        self.reload()
        self.assertEqual(self.get_body('/'), 'two')

    @unblock_only
    def test_ten_slow_requests_together(self):
        self.start_apps('''
            location /slow { python_wsgi apps:slow; }
            location / { return 200 "fast"; }
        ''')
        results = []

        def one():
            results.append(self.get('/slow')[::2])

        threads = [threading.Thread(target=one) for _ in range(10)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.2)
        t1 = time.monotonic()
        self.assertEqual(self.get_body('/'), 'fast')
        self.assertLess(time.monotonic() - t1, 0.1)
        for t in threads:
            t.join(10)
        self.assertLess(time.monotonic() - t0, 2.5)
        self.assertEqual(results, [(200, b'slept')] * 10)


def skip_unless_embedded_has(test, module, package):
    """Skips unless the Python inside nginx can import `module`."""
    rc, _ = test.nginx_t(main='python "import %s";' % module)
    if rc != 0:
        test.skipTest('%s is not installed for the embedded Python' % package)


FLASK = r'''
import json, time
from flask import Flask, Response, jsonify, request, abort

app = Flask(__name__)

@app.route('/')
def index():
    return 'flask index'

@app.route('/user/<name>')
def user(name):
    return jsonify(name=name, q=request.args.get('q'), agent=request.headers.get('User-Agent'))

@app.route('/stream')
def stream():
    def gen():
        for i in range(3):
            yield 'line %d\n' % i
    return Response(gen(), mimetype='text/plain')

@app.route('/upload', methods=['POST'])
def upload():
    f = request.files['file']
    data = f.read()
    return jsonify(filename=f.filename, size=len(data), field=request.form.get('field'))

@app.route('/boom')
def boom():
    abort(418)

@app.errorhandler(418)
def teapot(e):
    return jsonify(error='teapot'), 418

@app.route('/wait')
def wait():
    time.sleep(1)
    return 'waited'

@app.route('/fetch/<int:port>')
def fetch(port):
    # an upstream that takes a second to answer
    import urllib.request
    with urllib.request.urlopen('http://127.0.0.1:%d/upstream' % port, timeout=5) as f:
        return 'upstream said ' + f.read().decode()
'''


class Flask(harness.NginxTestCase):

    def setUp(self):
        skip_unless_embedded_has(self, 'flask', 'python3-flask')

    def test_flask_app(self):
        self.start_server('location /shop/ { python_wsgi shop:app; }', files={'shop.py': FLASK})
        self.assertEqual(self.get('/shop/')[::2], (200, b'flask index'))
        status, headers, body = self.get('/shop/user/ada?q=1', headers={'User-Agent': 'ua/1'})
        self.assertEqual(status, 200, self.error_log())
        self.assertEqual(headers['Content-Type'], 'application/json')
        self.assertEqual(json.loads(body), {'name': 'ada', 'q': '1', 'agent': 'ua/1'})
        self.assertEqual(self.get('/shop/stream')[2], b'line 0\nline 1\nline 2\n')
        boundary = 'XyZ'
        content = b'\x00\x01binary\xff' * 5000
        form = (('--%s\r\nContent-Disposition: form-data; name="field"\r\n\r\nvalue\r\n'
                 '--%s\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
                 'Content-Type: application/octet-stream\r\n\r\n' % (boundary, boundary)).encode()
                + content + ('\r\n--%s--\r\n' % boundary).encode())
        status, _, body = self.get('/shop/upload', method='POST', body=form, headers={
            'Content-Type': 'multipart/form-data; boundary=%s' % boundary})
        self.assertEqual(status, 200, self.error_log())
        self.assertEqual(json.loads(body), {'filename': 'a.bin', 'size': len(content), 'field': 'value'})
        status, _, body = self.get('/shop/boom')
        self.assertEqual((status, json.loads(body)), (418, {'error': 'teapot'}))
        self.assertEqual(self.get('/shop/nope')[0], 404)

    @unblock_only
    def test_flask_concurrent_waits(self):
        """Ten requests to a view that waits a second on its upstream finish
        together, in one worker, while other requests are served."""
        self.start_server('''
            location / { python_wsgi shop:app; }
            location /upstream { python_content "time.sleep(1) or r.send('hi', ngx.SEND_LAST)"; }
        ''', http='python "import time";', files={'shop.py': FLASK})
        results = []
        path = '/fetch/%d' % self.port
        threads = [threading.Thread(target=lambda: results.append(self.get(path)[::2]))
                   for _ in range(10)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.3)
        t1 = time.monotonic()
        self.assertEqual(self.get('/')[::2], (200, b'flask index'))
        self.assertLess(time.monotonic() - t1, 0.1)
        for t in threads:
            t.join(10)
        self.assertLess(time.monotonic() - t0, 2.5)
        self.assertEqual(results, [(200, b'upstream said hi')] * 10)


DJANGO = {
    'proj/__init__.py': '',
    'proj/settings.py': r'''
import os
BASE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET_KEY = 'test-only'
DEBUG = False
ALLOWED_HOSTS = ['*']
INSTALLED_APPS = ['django.contrib.admin', 'django.contrib.auth', 'django.contrib.contenttypes',
                  'django.contrib.sessions', 'django.contrib.messages', 'django.contrib.staticfiles',
                  'shop']
MIDDLEWARE = ['django.contrib.sessions.middleware.SessionMiddleware',
              'django.middleware.common.CommonMiddleware',
              'django.middleware.csrf.CsrfViewMiddleware',
              'django.contrib.auth.middleware.AuthenticationMiddleware',
              'django.contrib.messages.middleware.MessageMiddleware']
ROOT_URLCONF = 'proj.urls'
TEMPLATES = [{'BACKEND': 'django.template.backends.django.DjangoTemplates', 'APP_DIRS': True,
              'OPTIONS': {'context_processors': ['django.template.context_processors.request',
                                                 'django.contrib.auth.context_processors.auth',
                                                 'django.contrib.messages.context_processors.messages']}}]
DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': os.path.join(BASE, 'db.sqlite3')}}
STATIC_URL = '/static/'
STATIC_ROOT = os.path.join(BASE, 'static')
DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'
USE_TZ = True
''',
    'proj/urls.py': r'''
from django.contrib import admin
from django.urls import path
from shop import views
urlpatterns = [path('admin/', admin.site.urls), path('add', views.add), path('form', views.form),
               path('visit', views.visit)]
''',
    'proj/wsgi.py': r'''
import os
os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'proj.settings')
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
''',
    'shop/__init__.py': '',
    'shop/models.py': r'''
from django.db import models
class Item(models.Model):
    name = models.CharField(max_length=100)
''',
    'shop/views.py': r'''
from django.http import HttpResponse
from django.template import Template, RequestContext
from .models import Item

def add(request):
    Item.objects.create(name=request.GET['name'])
    return HttpResponse('%d %s' % (Item.objects.count(), ','.join(i.name for i in Item.objects.order_by('id'))))

FORM = Template('<form method="post">{% csrf_token %}<input name="v"></form>')

def form(request):
    if request.method == 'POST':
        return HttpResponse('posted ' + request.POST['v'])
    return HttpResponse(FORM.render(RequestContext(request)))

def visit(request):
    request.session['n'] = request.session.get('n', 0) + 1
    return HttpResponse(str(request.session['n']))
''',
    'setup_django.py': r'''
import os
os.environ['DJANGO_SETTINGS_MODULE'] = 'proj.settings'
import django
django.setup()
from django.core.management import call_command
call_command('migrate', run_syncdb=True, verbosity=0)
call_command('collectstatic', interactive=False, verbosity=0)
''',
}


class Django(harness.NginxTestCase):

    def setUp(self):
        skip_unless_embedded_has(self, 'django', 'python3-django')

    def test_django_project(self):
        self.start_server('''
            location / { python_wsgi proj.wsgi:application; }
            location /static/ { alias %(prefix)sstatic/; types { text/css css; } }
        ''', http='python_include setup_django.py;', files=DJANGO)
        self.assertEqual(self.get_body('/add?name=a'), '1 a')
        self.assertEqual(self.get_body('/add?name=b'), '2 a,b')
        # sessions: the cookie brings the count back
        status, headers, body = self.get('/visit')
        self.assertEqual((status, body), (200, b'1'), self.error_log())
        cookie = headers['Set-Cookie'].split(';', 1)[0]
        self.assertEqual(self.get_body('/visit', headers={'Cookie': cookie}), '2')
        # CSRF: the form's token and cookie make the POST pass; without: 403
        status, headers, body = self.get('/form')
        self.assertEqual(status, 200)
        token = body.decode().split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
        csrf_cookie = headers['Set-Cookie'].split(';', 1)[0]
        post = ('csrfmiddlewaretoken=%s&v=hello' % token).encode()
        form_headers = {'Cookie': csrf_cookie, 'Content-Type': 'application/x-www-form-urlencoded'}
        status, _, body = self.get('/form', method='POST', body=post, headers=form_headers)
        self.assertEqual((status, body), (200, b'posted hello'), self.error_log())
        status, _, _ = self.get('/form', method='POST', body=b'v=x',
                                headers={'Content-Type': 'application/x-www-form-urlencoded'})
        self.assertEqual(status, 403)
        status, _, body = self.get('/admin/login/')
        self.assertEqual(status, 200)
        self.assertIn(b'Django administration', body)
        # static files come from nginx itself
        status, headers, body = self.get('/static/admin/css/base.css')
        self.assertEqual(status, 200)
        self.assertEqual(headers['Content-Type'], 'text/css')
        self.assertGreater(len(body), 1000)
