"""Reverse name resolution in handlers (unblock build).

socket.gethostbyaddr and socket.getnameinfo (and so socket.getfqdn, which
smtplib.SMTP() calls) look the address up in /etc/hosts first, as the C
library does, then ask nginx's `resolver` for a PTR record, waiting on
nginx's event loop. At configuration time the C library's blocking
functions run; in python_set / python_log a lookup raises RuntimeError.
Numeric-only requests (NI_NUMERICHOST) never wait anywhere.
"""

import socket as _socket_module

import _socket
import _ngx_unblock as _u
from _ngx_cooperative import _numeric

_orig_gethostbyaddr = _socket_module.gethostbyaddr
_orig_getnameinfo = _socket_module.getnameinfo


def _hosts_names(ip, path='/etc/hosts'):
    """[hostname, *aliases] of the first /etc/hosts line for `ip`."""
    family = _numeric(ip)
    want = _socket.inet_pton(family, ip)
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            for line in f:
                fields = line.split('#', 1)[0].split()
                if len(fields) < 2:
                    continue
                try:
                    if _socket.inet_pton(family, fields[0]) == want:
                        return fields[1:]
                except (OSError, ValueError):
                    continue
    except OSError:
        pass
    return []


def _names(ip):
    """[hostname, *aliases] for a numeric address; [] when it has none."""
    names = _hosts_names(ip)
    if names:
        return names
    name = _u.resolve_address(ip.split('%', 1)[0])
    return [name.rstrip('.')] if name else []


def gethostbyaddr(ip_address):
    if not _u.cooperative('socket.gethostbyaddr()'):
        return _orig_gethostbyaddr(ip_address)
    if isinstance(ip_address, bytes):
        ip_address = ip_address.decode('idna')
    ip = ip_address
    if not _numeric(ip):
        # a name: its address first (as the C library does), cooperatively
        ip = _socket_module.getaddrinfo(ip, None, 0, _socket.SOCK_STREAM)[0][4][0]
    names = _names(ip)
    if not names:
        raise _socket.herror(1, 'Unknown host')
    return names[0], names[1:], [ip]


def getnameinfo(sockaddr, flags):
    if flags & _socket.NI_NUMERICHOST or not _u.cooperative('socket.getnameinfo()'):
        return _orig_getnameinfo(sockaddr, flags)
    host = sockaddr[0] if isinstance(sockaddr, tuple) and sockaddr else None
    if not isinstance(host, str) or not _numeric(host):
        # CPython resolves a name here with the C library: do it cooperatively
        if not isinstance(host, str):
            return _orig_getnameinfo(sockaddr, flags)
        host = _socket_module.getaddrinfo(host, None, 0, _socket.SOCK_DGRAM)[0][4][0]
        sockaddr = (host,) + tuple(sockaddr[1:])
    # the service part (and argument checks) from the C library, no lookup
    numeric_host, service = _orig_getnameinfo(sockaddr, flags | _socket.NI_NUMERICHOST)
    names = _names(host)
    if not names:
        if flags & _socket.NI_NAMEREQD:
            raise _socket.gaierror(_socket.EAI_NONAME, 'Name or service not known')
        return numeric_host, service
    name = names[0]
    if flags & _socket.NI_NOFQDN:
        name = name.split('.', 1)[0]
    return name, service


def install():
    _socket_module.gethostbyaddr = gethostbyaddr
    _socket_module.getnameinfo = getnameinfo
