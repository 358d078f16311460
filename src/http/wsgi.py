"""`python_wsgi MODULE:CALLABLE`: a PEP 3333 application as an nginx
content handler (nginx-python).

`handler(spec, script_name, conf_id)` is called at configuration time: it
imports the application and returns the function nginx calls for each
request with `r`. That function runs the application; the per-request
work is in Rust (functions the module gets when it is created):
`environ(r, script_name, base)` builds `environ` (with `wsgi.input` and
`wsgi.errors`) in one pass over nginx's request,
`respond(r, status, headers, pieces, last, count)` checks and sends the
status line, headers and body pieces in one call (in the unblock build it
waits while the client is slow: backpressure), and
`sendfile(r, status, headers, fd, offset)` serves `wsgi.file_wrapper`
around a real file with nginx's sendfile.
"""

import importlib
import io
import os
import sys


_UNBLOCK = '_ngx_unblock' in sys.modules

# Modules of the user's own code imported by the last configuration's
# applications: dropped before the next configuration imports its apps, so
# that a reload picks up new code (installed packages are kept).
_last_conf = None
_app_modules = set()



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


class FileWrapper:
    """wsgi.file_wrapper: iterates a file in blocks, and closes it. Returned
    as is for a regular file opened in binary mode, nginx sends the file
    itself (sendfile) from its current position."""

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


def _file_fd(wrapper):
    """The descriptor and position of a FileWrapper's file when nginx can
    send it itself (a binary file with a descriptor), else None."""
    f = wrapper.filelike
    if isinstance(f, io.TextIOBase):
        return None
    try:
        return f.fileno(), f.tell()
    except (AttributeError, OSError, ValueError):
        return None


def serve(app, script_name, r):
    env = environ(r, script_name, _BASE)
    errors = env['wsgi.errors']
    status = headers = None
    sent = False
    count = 0       # body bytes sent; -1 once the response is complete

    def write(data):
        nonlocal sent, count
        if status is None:
            raise AssertionError('write() before start_response()')
        count = respond(r, status, None if sent else headers, (data,), False, count)
        sent = True

    def start_response(status_line, response_headers, exc_info=None):
        nonlocal status, headers
        if exc_info is not None:
            try:
                if sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif status is not None:
            raise AssertionError('start_response() called again without exc_info')
        # checked when they are sent (respond)
        status = status_line
        headers = response_headers
        return write

    result = app(env, start_response)
    try:
        kind = type(result)
        if kind is list or kind is tuple:
            # The whole body at once: one call with the headers.
            if status is None:
                raise AssertionError('the application returned without calling start_response()')
            respond(r, status, None if sent else headers, result, True, count)
        else:
            fd = _file_fd(result) if kind is FileWrapper and not sent and status is not None else None
            if fd is None or not sendfile(r, status, headers, fd[0], fd[1]):
                for data in result:
                    write(data)
                if status is None:
                    raise AssertionError('the application returned without calling start_response()')
                if count >= 0:
                    respond(r, status, None if sent else headers, (), True, count)
    finally:
        close = getattr(result, 'close', None)
        if close is not None:
            close()
        errors.flush()


# The keys every environ has; `environ()` copies them and fills in the
# request's. Those set per request are here too (as None), so that the copy
# has room for them and filling them in never resizes it.
_BASE = {
    'REQUEST_METHOD': None, 'SCRIPT_NAME': None, 'PATH_INFO': None,
    'QUERY_STRING': None, 'REQUEST_URI': None, 'SERVER_PROTOCOL': None,
    'SERVER_NAME': None, 'SERVER_PORT': None, 'REMOTE_ADDR': None,
    'REMOTE_PORT': None, 'wsgi.url_scheme': None, 'wsgi.input': None,
    'wsgi.errors': None, 'ngx.request': None,
    'wsgi.version': (1, 0),
    'wsgi.multithread': _UNBLOCK,
    'wsgi.multiprocess': True,
    'wsgi.run_once': False,
    'wsgi.input_terminated': True,
    'wsgi.file_wrapper': FileWrapper,
}
