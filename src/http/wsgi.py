"""`python_wsgi MODULE:CALLABLE`: a PEP 3333 application as an nginx
content handler (nginx-python).

`handler(spec, script_name, conf_id)` is called at configuration time: it
imports the application and returns the function nginx calls for each
request with `r`. That function builds `environ` from `r`, runs the
application and sends what it returns with `r.send` (which, in the unblock
build, waits while the client is slow: backpressure).
"""

import importlib
import io
import os
import sys

import ngx

_UNBLOCK = '_ngx_unblock' in sys.modules

# Modules of the user's own code imported by the last configuration's
# applications: dropped before the next configuration imports its apps, so
# that a reload picks up new code (installed packages are kept).
_last_conf = None
_app_modules = set()

_HOP_BY_HOP = frozenset((
    'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization',
    'te', 'trailers', 'transfer-encoding', 'upgrade',
))


def _installed(path):
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return any(path.startswith(p + os.sep) for p in prefixes if p)


def _user_module(mod):
    path = getattr(mod, '__file__', None)
    return bool(path) and not _installed(os.path.abspath(path))


def load(spec):
    """The callable named by 'module.path:name' (default name: application)."""
    module_name, _, attr = spec.partition(':')
    if not module_name:
        raise ValueError('python_wsgi wants MODULE:CALLABLE, not %r' % spec)
    obj = importlib.import_module(module_name)
    for part in (attr or 'application').split('.'):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError('%s is not callable' % spec)
    return obj


def handler(spec, script_name, conf_id):
    global _last_conf
    if conf_id != _last_conf:
        _last_conf = conf_id
        for name in _app_modules:
            mod = sys.modules.get(name)
            if mod is not None and _user_module(mod):
                del sys.modules[name]
        _app_modules.clear()
    before = set(sys.modules)
    app = load(spec)
    _app_modules.update(set(sys.modules) - before)
    return lambda r: serve(app, script_name, r)


class Errors:
    """wsgi.errors: lines into nginx's error log (level error)."""

    def __init__(self, r):
        self._r = r
        self._buf = ''

    def write(self, s):
        self._buf += s
        while '\n' in self._buf:
            line, self._buf = self._buf.split('\n', 1)
            self._r.log(line, ngx.LOG_ERR)
        return len(s)

    def writelines(self, lines):
        for s in lines:
            self.write(s)

    def flush(self):
        if self._buf:
            self._r.log(self._buf, ngx.LOG_ERR)
            self._buf = ''


class FileWrapper:
    """wsgi.file_wrapper: iterates a file in blocks, and closes it."""

    def __init__(self, filelike, blksize=65536):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, 'close'):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


def _latin1(s):
    """nginx's text (UTF-8 with surrogateescape) as PEP 3333 wants it: the
    raw bytes decoded as latin-1."""
    return s.encode('utf-8', 'surrogateescape').decode('latin-1')


def environ_of(r, script_name):
    v = r.var
    uri = _latin1(v['uri'])
    if script_name and (uri == script_name or uri.startswith(script_name + '/')):
        path_info = uri[len(script_name):]
    else:
        path_info = uri
    body = r.body
    env = {
        'REQUEST_METHOD': v['request_method'],
        'SCRIPT_NAME': script_name,
        'PATH_INFO': path_info,
        'QUERY_STRING': _latin1(v.get('args') or ''),
        'SERVER_NAME': v.get('server_name') or v['server_addr'],
        'SERVER_PORT': v['server_port'],
        'SERVER_PROTOCOL': v.get('server_protocol') or 'HTTP/1.0',
        'REMOTE_ADDR': v['remote_addr'],
        'REMOTE_PORT': v.get('remote_port') or '',
        'REQUEST_URI': _latin1(v['request_uri']),
        'wsgi.version': (1, 0),
        'wsgi.url_scheme': v['scheme'],
        'wsgi.input': io.BytesIO(body or b''),
        'wsgi.errors': Errors(r),
        'wsgi.multithread': _UNBLOCK,
        'wsgi.multiprocess': True,
        'wsgi.run_once': False,
        'wsgi.file_wrapper': FileWrapper,
        'ngx.request': r,
    }
    hi = r.hi
    for name in hi:
        key = name.upper().replace('-', '_')
        value = ','.join(_latin1(x) for x in hi.get_all(name))
        if key == 'CONTENT_TYPE':
            env['CONTENT_TYPE'] = value
        elif key == 'CONTENT_LENGTH':
            pass
        elif key not in ('PROXY',):  # httpoxy
            env['HTTP_' + key] = value
    if body is not None:
        env['CONTENT_LENGTH'] = str(len(body))
    return env


def _check_headers(status, headers):
    if not isinstance(status, str):
        raise TypeError('WSGI status must be a str, not %s' % type(status).__name__)
    code = status.split(' ', 1)[0]
    if len(code) != 3 or not code.isdigit() or ' ' not in status:
        raise ValueError('WSGI status must be "NNN Reason", not %r' % status)
    if type(headers) is not list:
        raise TypeError('WSGI response headers must be a list, not %s' % type(headers).__name__)
    for h in headers:
        if type(h) is not tuple or len(h) != 2 or not all(type(x) is str for x in h):
            raise TypeError('WSGI response headers must be (str, str) tuples, not %r' % (h,))
        if h[0].lower() in _HOP_BY_HOP:
            raise ValueError('WSGI applications must not set the hop-by-hop header %r' % h[0])
    return int(code)


def serve(app, script_name, r):
    environ = environ_of(r, script_name)
    state = {'status': None, 'headers': None, 'sent': False}

    def send_headers():
        r.status = state['status']
        for name, value in state['headers']:
            r.ho.add(name, value.encode('latin-1'))
        state['sent'] = True

    def write(data):
        if state['status'] is None:
            raise AssertionError('write() before start_response()')
        if type(data) is not bytes:
            raise TypeError('WSGI body data must be bytes, not %s' % type(data).__name__)
        if not state['sent']:
            send_headers()
        if data:
            r.send(data)

    def start_response(status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if state['sent']:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif state['status'] is not None:
            raise AssertionError('start_response() called again without exc_info')
        state['status'] = _check_headers(status, headers)
        state['headers'] = headers
        return write

    result = app(environ, start_response)
    try:
        for data in result:
            write(data)
        if state['status'] is None:
            raise AssertionError('the application returned without calling start_response()')
        if not state['sent']:
            if not any(n.lower() == 'content-length' for n, _ in state['headers']):
                r.ho['Content-Length'] = 0
            send_headers()
        r.send(None, ngx.SEND_LAST)
    finally:
        close = getattr(result, 'close', None)
        if close is not None:
            close()
        environ['wsgi.errors'].flush()
