"""Cooperative replacements installed by nginx-python's unblock build.

Inside a handler that may wait (python_access, python_preread,
python_content) these wait on nginx's event loop instead of blocking the
worker; at configuration time they block like the originals; in python_set
and python_log they raise RuntimeError. Same signatures, results and
exceptions as CPython's.

The socket is gevent's idea: the standard socket API over a real
non-blocking fd, plus one primitive, "wait until readable/writable"
(_ngx_unblock.Waiter, an nginx connection on the fd).
"""

import errno as _errno
import os as _os
import socket as _socket_module
import time as _time

import _socket
import _ngx_unblock as _u

_stdsocket = _socket_module.socket
_orig = {
    name: getattr(_socket_module, name)
    for name in ('getaddrinfo', 'gethostbyname', 'gethostbyname_ex', 'create_connection')
}
_orig_sleep = _time.sleep
_timeout_error = _socket_module.timeout


class socket(_stdsocket):
    """socket.socket whose blocking calls wait on nginx's event loop."""

    __slots__ = ('_ngx_timeout', '_ngx_waiter')

    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        super().__init__(family, type, proto, fileno)
        self._ngx_waiter = None
        self._ngx_timeout = _socket_module.getdefaulttimeout()
        super().setblocking(False)

    # -- timeouts: what the user set; the fd itself stays non-blocking --
    def settimeout(self, value):
        if value is not None:
            value = float(value)
            if value < 0.0:
                raise ValueError('Timeout value out of range')
        self._ngx_timeout = value

    def gettimeout(self):
        return self._ngx_timeout

    def setblocking(self, flag):
        self._ngx_timeout = None if flag else 0.0

    def getblocking(self):
        return self._ngx_timeout != 0.0

    @property
    def timeout(self):
        return self._ngx_timeout

    # -- the one primitive --
    def _wait(self, write, deadline):
        if self._ngx_waiter is None:
            self._ngx_waiter = _u.Waiter(self.fileno())
        timeout = None if deadline is None else max(0.0, deadline - _time.monotonic())
        if not self._ngx_waiter.wait(write, timeout):
            raise _timeout_error('timed out')

    def _deadline(self):
        t = self._ngx_timeout
        return None if t is None else _time.monotonic() + t

    def _io(self, write, op, *args):
        """Retries a non-blocking `op` until it does not raise EAGAIN."""
        deadline = None
        while True:
            try:
                return op(*args)
            except BlockingIOError:
                if self._ngx_timeout == 0.0:
                    raise
            if deadline is None:
                deadline = self._deadline()
            self._wait(write, deadline)

    # -- I/O --
    def recv(self, *args):
        return self._io(False, super().recv, *args)

    def recv_into(self, *args):
        return self._io(False, super().recv_into, *args)

    def recvfrom(self, *args):
        return self._io(False, super().recvfrom, *args)

    def recvfrom_into(self, *args):
        return self._io(False, super().recvfrom_into, *args)

    def send(self, *args):
        return self._io(True, super().send, *args)

    def sendto(self, data, *args):
        if args:  # (flags,) address: a host name goes through _lookup
            args = args[:-1] + (_resolve_address(self.family, args[-1]),)
        return self._io(True, super().sendto, data, *args)

    def bind(self, address):
        return super().bind(_resolve_address(self.family, address))

    def sendall(self, data, flags=0):
        deadline = self._deadline()
        with memoryview(data) as view, view.cast('B') as b:
            sent = 0
            while sent < len(b):
                try:
                    sent += super().send(b[sent:], flags)
                    continue
                except BlockingIOError:
                    if self._ngx_timeout == 0.0:
                        raise
                self._wait(True, deadline)

    def _accept(self):
        return self._io(False, super()._accept)

    def connect(self, address):
        address = _resolve_address(self.family, address)
        try:
            return super().connect(address)
        except BlockingIOError:
            if self._ngx_timeout == 0.0:
                raise
        self._wait(True, self._deadline())
        err = self.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if err:
            raise OSError(err, _os.strerror(err))

    def connect_ex(self, address):
        try:
            self.connect(address)
            return 0
        except _timeout_error:
            return _errno.EAGAIN
        except _socket.gaierror:
            raise
        except OSError as e:
            return e.errno or _errno.EIO

    # -- closing: release the nginx connection before the fd closes --
    def _ngx_release(self):
        w, self._ngx_waiter = self._ngx_waiter, None
        if w is not None:
            w.close()

    def _real_close(self, _ss=_stdsocket):
        self._ngx_release()
        super()._real_close()

    def detach(self):
        self._ngx_release()
        return super().detach()


def _ssl_socket_class():
    """ssl.SSLSocket over the cooperative socket: the TLS calls that would
    block (SSLWantRead/WriteError on the non-blocking fd) wait and retry."""
    import ssl

    class SSLSocket(ssl.SSLSocket, socket):
        __slots__ = ()

        def _ssl_retry(self, op, *args):
            deadline = None
            while True:
                try:
                    return op(*args)
                except ssl.SSLWantReadError:
                    write = False
                except ssl.SSLWantWriteError:
                    write = True
                if self._ngx_timeout == 0.0:
                    raise
                if deadline is None:
                    deadline = self._deadline()
                self._wait(write, deadline)

        def do_handshake(self, block=False):
            return self._ssl_retry(super().do_handshake, block)

        def read(self, len=1024, buffer=None):
            return self._ssl_retry(super().read, len, buffer)

        def write(self, data):
            return self._ssl_retry(super().write, data)

        def send(self, data, flags=0):
            return self._ssl_retry(super().send, data, flags)

        def unwrap(self):
            return self._ssl_retry(super().unwrap)

    return ssl, SSLSocket


# -- name resolution --------------------------------------------------------

def _numeric(host):
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, host.split('%', 1)[0])
            return family
        except (OSError, ValueError):
            pass
    return None


def _hosts_file(host, path='/etc/hosts'):
    """Addresses for `host` in /etc/hosts, as the C library would find them."""
    found = []
    want = host.lower().rstrip('.')
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            for line in f:
                fields = line.split('#', 1)[0].split()
                if len(fields) >= 2 and want in (n.lower() for n in fields[1:]):
                    if fields[0] not in found:
                        found.append(fields[0])
    except OSError:
        pass
    return found


def _lookup(host):
    """All addresses for `host`: numeric, /etc/hosts, then nginx's resolver."""
    if isinstance(host, bytes):
        host = host.decode('idna')
    if _numeric(host):
        return [host]
    found = _hosts_file(host)
    if found:
        return found
    if not _u.cooperative('name resolution'):
        # configuration time: the C library's (blocking) resolver
        infos = _orig['getaddrinfo'](host, None, 0, _socket.SOCK_STREAM)
        return list(dict.fromkeys(info[4][0] for info in infos))
    return _u.resolve(host.encode('idna').decode('ascii'))


def _resolve_address(family, address):
    """(host, port[, ...]) with host resolved, for connect()."""
    if family not in (_socket.AF_INET, _socket.AF_INET6) or not isinstance(address, tuple):
        return address
    host = address[0]
    if host in ('<broadcast>', b'<broadcast>'):  # the C library knows this one
        return address
    if isinstance(host, (str, bytes)) and host and not _numeric(host if isinstance(host, str) else host.decode()):
        want = 4 if family == _socket.AF_INET else 6
        addrs = [a for a in _lookup(host) if (':' in a) == (want == 6)]
        if not addrs:
            raise _socket.gaierror(_socket.EAI_ADDRFAMILY if hasattr(_socket, 'EAI_ADDRFAMILY') else -9,
                                   'Address family for hostname not supported')
        return (addrs[0],) + tuple(address[1:])
    return address


def gethostbyname(hostname):
    if _numeric(hostname) or not _u.cooperative('socket.gethostbyname()'):
        return _orig['gethostbyname'](hostname)
    v4 = [a for a in _lookup(hostname) if ':' not in a]
    if not v4:
        raise _socket.gaierror(_socket.EAI_NONAME, 'Name or service not known')
    return v4[0]


def gethostbyname_ex(hostname):
    if not _u.cooperative('socket.gethostbyname_ex()'):
        return _orig['gethostbyname_ex'](hostname)
    v4 = [a for a in _lookup(hostname) if ':' not in a]
    if not v4:
        raise _socket.gaierror(_socket.EAI_NONAME, 'Name or service not known')
    return (hostname, [], v4)


def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    orig = _orig['getaddrinfo']
    name = host.decode('idna') if isinstance(host, bytes) else host
    # No name to look up: the C library answers without waiting.
    if name is None or _numeric(name) or not _u.cooperative('socket.getaddrinfo()'):
        return orig(host, port, family, type, proto, flags)
    result = []
    for addr in _lookup(name):
        fam = _socket.AF_INET6 if ':' in addr else _socket.AF_INET
        if family not in (0, fam):
            continue
        result.extend(orig(addr, port, fam, type, proto, flags | _socket.AI_NUMERICHOST))
    if not result:
        raise _socket.gaierror(_socket.EAI_NONAME, 'Name or service not known')
    return result


def makefile(sock, mode='r', buffering=None, encoding=None, errors=None, newline=None):
    """socket.makefile for objects that only have the socket I/O methods
    (the stream session's s.sock)."""
    import io
    if not set(mode) <= {'r', 'w', 'b'}:
        raise ValueError('invalid mode %r (only r, w, b allowed)' % (mode,))
    writing, reading, binary = 'w' in mode, 'r' in mode or 'w' not in mode, 'b' in mode
    rawmode = ('r' if reading else '') + ('w' if writing else '')
    raw = _socket_module.SocketIO(sock, rawmode)
    if buffering is None:
        buffering = -1
    if buffering < 0:
        buffering = io.DEFAULT_BUFFER_SIZE
    if buffering == 0:
        if not binary:
            raise ValueError('unbuffered streams must be binary')
        return raw
    if reading and writing:
        buffer = io.BufferedRWPair(raw, raw, buffering)
    elif reading:
        buffer = io.BufferedReader(raw, buffering)
    else:
        buffer = io.BufferedWriter(raw, buffering)
    if binary:
        return buffer
    text = io.TextIOWrapper(buffer, encoding, errors, newline)
    text.mode = mode
    return text


def install():
    """Replaces the blocking functions; done once when Python starts."""
    _socket_module.socket = socket
    _socket_module.SocketType = socket
    _socket_module.getaddrinfo = getaddrinfo
    _socket_module.gethostbyname = gethostbyname
    _socket_module.gethostbyname_ex = gethostbyname_ex
    _time.sleep = _u.sleep
    ssl, ssl_socket = _ssl_socket_class()
    ssl.SSLContext.sslsocket_class = ssl_socket
    _u.load('select').install()
    _u.load('drivers').install()
    import ngx
    ngx.wait_fd = _u.wait_fd
