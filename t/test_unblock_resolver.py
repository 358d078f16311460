"""Unblock build: socket.gethostbyname / gethostbyname_ex / getaddrinfo (and
create_connection, http.client, ... that use them) resolve through nginx's
`resolver` of the handler's location, waiting on nginx's event loop.
Numeric addresses and /etc/hosts names need no resolver; without one,
socket.gaierror names the missing directive.

The DNS server is a thread of this test process (a UDP socket on 127.0.0.1,
packets built by hand with struct) that counts the queries it gets, so the
tests can see nginx's cache at work. (t/test_unblock_stream.py also has a
DNS server written as a stream python_content; this one is independent of
stream support and can stay silent or answer late on purpose.)

Run: TEST_NGINX_BINARY=build/unblock/objs/nginx python3 t/test_unblock_resolver.py
Every test skips in the sync build.
"""

import ipaddress
import os
import socket
import struct
import threading
import time

import harness

SKIP_REASON = 'needs the unblock build (make module FEATURES=unblock; nginx -V has NGX_PYTHON_SYNC=0)'

QTYPE_A, QTYPE_AAAA, QTYPE_PTR = 1, 28, 12


def ptr(ip):
    """The reverse (PTR) name of an address: 1.0.0.10.in-addr.arpa, ..."""
    return ipaddress.ip_address(ip).reverse_pointer

RECORDS = {
    'one.test': {QTYPE_A: ['10.0.0.1']},
    'many.test': {QTYPE_A: ['10.0.0.2', '10.0.0.3', '10.0.0.4']},
    'dual.test': {QTYPE_A: ['10.0.0.5'], QTYPE_AAAA: ['fd00::5']},
    'six.test': {QTYPE_AAAA: ['fd00::6']},
    'app.test': {QTYPE_A: ['127.0.0.1']},
    'slow.test': {QTYPE_A: ['10.0.0.7']},
    'xn--bcher-kva.test': {QTYPE_A: ['10.0.0.8']},       # bücher.test
    'cached.test': {QTYPE_A: ['10.0.0.9']},
    'named.test': {QTYPE_A: ['10.0.0.20']},
    ptr('10.0.0.20'): {QTYPE_PTR: ['host20.example.test']},
    ptr('fd00::20'): {QTYPE_PTR: ['six20.example.test']},
    ptr('10.0.0.21'): {},                                # no name (NXDOMAIN)
}
SILENT = {'silent.test', 'silent2.test', ptr('10.0.0.22')}     # never answered
DELAY = {'slow.test': 1.5}                   # answered late (seconds)


class DnsServer:
    """A tiny authoritative DNS server on 127.0.0.1 (UDP), in a thread."""

    def __init__(self, records, silent=(), delay=None):
        self.records = records
        self.silent = set(silent)
        self.delay = dict(delay or {})
        self.queries = []                   # (name, qtype) in arrival order
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def count(self, name, qtype=None):
        with self.lock:
            return sum(1 for n, t in self.queries if n == name and qtype in (None, t))

    def serve(self):
        deadline = time.monotonic() + 300           # bounded
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                data, addr = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self.handle(data, addr)
            except (ValueError, IndexError, struct.error):
                pass                                  # not a query we understand

    def handle(self, q, addr):
        tid, flags, qdcount = struct.unpack('>HHH', q[:6])
        if flags & 0x8000 or qdcount != 1:
            return
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode('ascii'))
            i += 1 + q[i]
        qtype, qclass = struct.unpack('>HH', q[i + 1:i + 5])
        question = q[12:i + 5]
        name = '.'.join(labels).lower()
        with self.lock:
            self.queries.append((name, qtype))
        if name in self.silent:
            return
        rrs = self.records.get(name)
        answers = []
        if rrs == {}:
            rrs = None                                 # listed to say: NXDOMAIN
        if rrs is not None:
            for a in rrs.get(qtype, []):
                if qtype == QTYPE_PTR:
                    rdata = b''.join(bytes([len(l)]) + l.encode() for l in a.split('.')) + b'\0'
                elif qtype == QTYPE_A:
                    rdata = socket.inet_pton(socket.AF_INET, a)
                else:
                    rdata = socket.inet_pton(socket.AF_INET6, a)
                answers.append(b'\xc0\x0c' + struct.pack('>HHIH', qtype, 1, 300, len(rdata)) + rdata)
        rcode = 0 if rrs is not None else 3            # NXDOMAIN
        # QR, AA, RD (copied), RA
        rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        reply = struct.pack('>HHHHHH', tid, rflags, 1, len(answers), 0, 0) + question + b''.join(answers)
        delay = self.delay.get(name)
        if delay:
            t = threading.Timer(delay, self._send, (reply, addr))
            t.daemon = True
            t.start()
        else:
            self._send(reply, addr)

    def _send(self, reply, addr):
        try:
            self.sock.sendto(reply, addr)
        except OSError:
            pass

    def close(self):
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


APP = r'''
import socket, time, http.client, urllib.request

PORT = %(port)s

def reply(r, obj):
    r.send(repr(obj), ngx.SEND_LAST)

def err(e):
    return (type(e).__name__, e.errno, e.strerror if e.strerror is not None else str(e))

def byname(r):
    try:
        out = socket.gethostbyname(r.arg['name'])
    except socket.gaierror as e:
        out = err(e)
    reply(r, out)

def byname_ex(r):
    try:
        name, aliases, addrs = socket.gethostbyname_ex(r.arg['name'])
        out = (name, aliases, sorted(addrs))
    except socket.gaierror as e:
        out = err(e)
    reply(r, out)

def addrinfo(r):
    family = {'any': 0, '4': socket.AF_INET, '6': socket.AF_INET6}[r.arg.get('family', 'any')]
    port = r.arg.get('port', '80')
    port = int(port) if port.isdigit() else port
    try:
        infos = socket.getaddrinfo(r.arg['name'], port, family, socket.SOCK_STREAM)
        # enums as the standard library returns them, sent back as ints
        assert all(isinstance(f, socket.AddressFamily) and isinstance(t, socket.SocketKind)
                   for f, t, _, _, _ in infos), infos
        out = sorted((int(f), int(t), p, c, a) for f, t, p, c, a in infos)
    except socket.gaierror as e:
        out = err(e)
    reply(r, out)

def twice(r):
    a = socket.gethostbyname('cached.test')
    b = socket.gethostbyname('cached.test')
    reply(r, (a, b))

def connect_by_name(r):
    out = {}
    c = socket.create_connection(('app.test', PORT), timeout=5)
    out['peer'] = c.getpeername()
    c.sendall(b'GET /hello HTTP/1.0\r\n\r\n')
    out['raw'] = c.recv(15)
    c.close()
    s = socket.socket()
    s.connect(('app.test', PORT))             # socket.connect resolves too
    out['connect_peer'] = s.getpeername()
    s.close()
    h = http.client.HTTPConnection('app.test', PORT, timeout=5)
    h.request('GET', '/hello')
    out['http.client'] = h.getresponse().read()
    h.close()
    out['urllib'] = urllib.request.urlopen('http://app.test:%d/hello' % PORT, timeout=5).read()
    reply(r, out)

def no_lookup(r):
    # numeric addresses and /etc/hosts names never reach the resolver
    out = [socket.gethostbyname('127.0.0.1'),
           socket.gethostbyname('localhost'),
           socket.gethostbyname('LOCALHOST'),
           socket.gethostbyname_ex('localhost')[2],
           sorted(set(a[4] for a in socket.getaddrinfo('localhost', 80, socket.AF_INET))),
           sorted(set(a[4] for a in socket.getaddrinfo('127.0.0.1', 'http', socket.AF_INET)))]
    reply(r, out)

def slow_then_fast(r):
    t0 = time.monotonic()
    a = socket.gethostbyname('slow.test')
    reply(r, (a, time.monotonic() - t0))

def abortable(r):
    try:
        socket.gethostbyname('silent2.test')
    finally:
        with open('%(prefix)sresolve-aborted.txt', 'a') as f:
            f.write('finally\n')

def byaddr(r):
    try:
        out = socket.gethostbyaddr(r.arg['addr'])
    except (socket.herror, socket.gaierror) as e:
        out = err(e)
    reply(r, out)

def nameinfo(r):
    try:
        out = socket.getnameinfo((r.arg['addr'], int(r.arg.get('port', '80'))), int(r.arg.get('flags', '0')))
    except socket.gaierror as e:
        out = err(e)
    reply(r, out)

def fqdn(r):
    import smtplib
    t0 = time.monotonic()
    out = (socket.getfqdn(r.arg['name']), bool(smtplib.SMTP().local_hostname))
    reply(r, out + (round(time.monotonic() - t0, 1),))

def udp_by_name(r):
    # bind and sendto with host names: resolved through nginx's resolver
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(('app.test', 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.sendto(b'ping', ('app.test', rx.getsockname()[1]))
    tx.sendto(b'pong', 0, ('app.test', rx.getsockname()[1]))
    rx.settimeout(2)
    out = (rx.getsockname()[0], rx.recvfrom(10)[0], rx.recvfrom(10)[0])
    rx.close()
    tx.close()
    reply(r, out)

def config_connect():
    # at configuration time names go to the C library: a name it cannot
    # resolve is its own error (not "nginx resolver used outside a handler")
    out = []
    c = socket.create_connection(('localhost', PORT2), timeout=5)
    out.append(c.getpeername()[0])
    c.close()
    s = socket.socket()
    try:
        s.connect(('no-such-name.invalid', PORT2))
    except OSError as e:
        out.append(str(e))
    s.close()
    return out

PORT2 = %(port3)s
import threading
_listener = socket.socket()
_listener.bind(('127.0.0.1', PORT2))
_listener.listen(1)
CONFIG_CONNECT = config_connect()
_listener.close()

def set_resolves(r):
    return socket.gethostbyname('one.test')
'''

SERVERS = '''
python_include app.py;
python_set $resolved "set_resolves(r)";
server {
    listen 127.0.0.1:%(port)s backlog=1024;
    resolver 127.0.0.1:@DNS@ valid=30s;
    resolver_timeout 1s;

    location /hello      { return 200 "hello\\n"; }
    location /fast       { return 200 "fast"; }
    location /byname     { python_content "byname(r)"; }
    location /byname-ex  { python_content "byname_ex(r)"; }
    location /addrinfo   { python_content "addrinfo(r)"; }
    location /twice      { python_content "twice(r)"; }
    location /connect    { python_content "connect_by_name(r)"; }
    location /no-lookup  { python_content "no_lookup(r)"; }
    location /slow       { resolver_timeout 10s; python_content "slow_then_fast(r)"; }
    location /abort {
        resolver_timeout 30s;
        python_content "abortable(r)";
    }
    location /access {
        python_access "None if socket.gethostbyname(r.arg['name']) == '127.0.0.1' else 403";
        python_content "r.send('resolved in access', ngx.SEND_LAST)";
    }
    location /set        { return 200 "[$resolved]"; }
    location /byaddr     { python_content "byaddr(r)"; }
    location /nameinfo   { python_content "nameinfo(r)"; }
    location /fqdn       { python_content "fqdn(r)"; }
    location /udp        { python_content "udp_by_name(r)"; }
    location /config-connect { python_content "reply(r, CONFIG_CONNECT)"; }
}
server {
    listen 127.0.0.1:%(port2)s;
    location /byname     { python_content "byname(r)"; }
    location /no-lookup  { python_content "no_lookup(r)"; }
}
'''


class UnblockResolverTest(harness.NginxTestCase):

    def setUp(self):
        if not harness.unblock_build():
            self.skipTest(SKIP_REASON)
        self.dns = DnsServer(RECORDS, SILENT, DELAY)
        self.addCleanup(self.dns.close)
        # configuration time uses the C library's resolver (one name it cannot
        # resolve, see config_connect): bound its wait where DNS is unreachable
        saved = os.environ.get('RES_OPTIONS')
        os.environ['RES_OPTIONS'] = 'timeout:1 attempts:1'
        self.addCleanup(lambda: os.environ.pop('RES_OPTIONS') if saved is None
                        else os.environ.__setitem__('RES_OPTIONS', saved))
        self.start(http=SERVERS.replace('@DNS@', str(self.dns.port)), files={'app.py': APP},
                   events='worker_connections 1024;', wait_ports=['port', 'port2'])

    def result(self, path, port=None):
        return eval(self.get_body(path, port=port))

    def test_gethostbyname_one_address(self):
        self.assertEqual(self.result('/byname?name=one.test'), '10.0.0.1')
        self.assertEqual(self.dns.count('one.test', QTYPE_A), 1)

    def test_gethostbyname_idna_name(self):
        self.assertEqual(self.result('/byname?name=b%C3%BCcher.test'), '10.0.0.8')
        self.assertEqual(self.dns.count('xn--bcher-kva.test', QTYPE_A), 1)

    def test_gethostbyname_ex_several_addresses(self):
        self.assertEqual(self.result('/byname-ex?name=many.test'),
                         ('many.test', [], ['10.0.0.2', '10.0.0.3', '10.0.0.4']))

    def test_getaddrinfo_port_and_family(self):
        stream, tcp = socket.SOCK_STREAM, socket.IPPROTO_TCP
        self.assertEqual(self.result('/addrinfo?name=one.test&port=8080'),
                         [(socket.AF_INET, stream, tcp, '', ('10.0.0.1', 8080))])
        self.assertEqual(self.result('/addrinfo?name=one.test&port=http'),
                         [(socket.AF_INET, stream, tcp, '', ('10.0.0.1', 80))])
        both = self.result('/addrinfo?name=dual.test&port=443')
        self.assertEqual(sorted(both), sorted([
            (socket.AF_INET, stream, tcp, '', ('10.0.0.5', 443)),
            (socket.AF_INET6, stream, tcp, '', ('fd00::5', 443, 0, 0)),
        ]))
        self.assertEqual(self.result('/addrinfo?name=dual.test&port=443&family=4'),
                         [(socket.AF_INET, stream, tcp, '', ('10.0.0.5', 443))])
        self.assertEqual(self.result('/addrinfo?name=dual.test&port=443&family=6'),
                         [(socket.AF_INET6, stream, tcp, '', ('fd00::5', 443, 0, 0))])
        # an IPv4-only name asked for IPv6 (and the reverse): gaierror
        self.assertEqual(self.result('/addrinfo?name=one.test&family=6')[0], 'gaierror')
        self.assertEqual(self.result('/addrinfo?name=six.test&family=4')[0], 'gaierror')
        self.assertEqual(self.result('/addrinfo?name=many.test&port=1')[0][4], ('10.0.0.2', 1))
        self.assertEqual(len(self.result('/addrinfo?name=many.test&port=1')), 3)

    def test_ipv6_only_name_with_gethostbyname(self):
        # gethostbyname is IPv4 only: an AAAA-only name is an error
        out = self.result('/byname?name=six.test')
        self.assertEqual(out[0], 'gaierror')

    def test_answers_are_cached(self):
        self.assertEqual(self.result('/twice'), ('10.0.0.9', '10.0.0.9'))
        queries = self.dns.count('cached.test')
        self.assertGreaterEqual(queries, 1)
        self.assertEqual(self.dns.count('cached.test', QTYPE_A), 1)
        # another request, another lookup: still from nginx's cache
        self.assertEqual(self.result('/byname?name=cached.test'), '10.0.0.9')
        self.assertEqual(self.result('/byname-ex?name=cached.test'), ('cached.test', [], ['10.0.0.9']))
        self.assertEqual(self.dns.count('cached.test'), queries, self.dns.queries)

    def test_nxdomain_is_gaierror(self):
        out = self.result('/byname?name=nope.test')
        self.assertEqual(out, ('gaierror', socket.EAI_NONAME, 'Name or service not known'))
        out = self.result('/addrinfo?name=nope.test')
        self.assertEqual(out, ('gaierror', socket.EAI_NONAME, 'Name or service not known'))
        self.assertGreaterEqual(self.dns.count('nope.test'), 1)
        self.assertEqual(self.get_body('/fast'), 'fast')

    def test_resolver_timeout_is_gaierror(self):
        t0 = time.monotonic()
        out = self.result('/byname?name=silent.test')
        took = time.monotonic() - t0
        self.assertEqual(out, ('gaierror', socket.EAI_AGAIN, 'Temporary failure in name resolution'))
        self.assertGreaterEqual(took, 0.9)              # resolver_timeout 1s
        self.assertLess(took, 8)
        self.assertGreaterEqual(self.dns.count('silent.test'), 1)

    def test_create_connection_and_clients_by_name(self):
        out = self.result('/connect')
        self.assertEqual(out['peer'], ('127.0.0.1', self.port))
        self.assertEqual(out['raw'], b'HTTP/1.1 200 OK')
        self.assertEqual(out['connect_peer'], ('127.0.0.1', self.port))
        self.assertEqual(out['http.client'], b'hello\n')
        self.assertEqual(out['urllib'], b'hello\n')
        self.assertEqual(self.dns.count('app.test', QTYPE_A), 1, self.dns.queries)

    def test_resolve_in_access_handler(self):
        self.assertEqual(self.get_body('/access?name=app.test'), 'resolved in access')
        self.assertEqual(self.get('/access?name=one.test')[0], 403)
        self.assertEqual(self.get('/access?name=nope.test')[0], 500)   # gaierror: 500
        self.assertIn('socket.gaierror', self.error_log())

    def test_hosts_and_numeric_names_need_no_query(self):
        expected = ['127.0.0.1', '127.0.0.1', '127.0.0.1', ['127.0.0.1'],
                    [('127.0.0.1', 80)], [('127.0.0.1', 80)]]
        self.assertEqual(self.result('/no-lookup'), expected)
        # also where no resolver is configured
        self.assertEqual(self.result('/no-lookup', port=self.port2), expected)
        with self.dns.lock:
            self.assertEqual(self.dns.queries, [])

    def test_without_resolver_gaierror_names_the_directive(self):
        out = self.result('/byname?name=one.test', port=self.port2)
        self.assertEqual(out[0], 'gaierror')
        self.assertEqual(out[1], socket.EAI_NONAME)
        self.assertIn('"resolver"', out[2])
        self.assertIn('one.test', out[2])
        self.assertEqual(self.dns.count('one.test'), 0)

    def test_worker_serves_while_a_lookup_is_pending(self):
        # slow.test is answered after 1.5 s; 20 concurrent lookups of it
        # share one query and finish together, and others are served meanwhile.
        results = []
        threads = [threading.Thread(target=lambda: results.append(self.result('/slow')))
                   for _ in range(20)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.1)
        t1 = time.monotonic()
        self.assertEqual(self.get_body('/fast'), 'fast')
        self.assertLess(time.monotonic() - t1, 1.0, 'the worker was blocked by the lookup')
        for t in threads:
            t.join(30)
        took = time.monotonic() - t0
        self.assertEqual(len(results), 20)
        for addr, waited in results:
            self.assertEqual(addr, '10.0.0.7')
        self.assertGreaterEqual(max(w for _, w in results), 1.0)
        self.assertLess(took, 10, 'serialized lookups would take 30 s')
        self.assertLessEqual(self.dns.count('slow.test', QTYPE_A), 2, self.dns.queries)

    def test_client_abort_during_lookup(self):
        s = socket.create_connection(('127.0.0.1', self.port))
        s.sendall(b'GET /abort HTTP/1.1\r\nHost: t\r\n\r\n')
        deadline = time.monotonic() + 5
        while self.dns.count('silent2.test') == 0:
            self.assertLess(time.monotonic(), deadline, 'no query for silent2.test')
            time.sleep(0.02)
        s.close()
        self.wait_log(r'stopped waiting')
        with open(self.prefix + 'resolve-aborted.txt') as f:
            self.assertEqual(f.read(), 'finally\n')
        # the resolver and the worker still work
        self.assertEqual(self.result('/byname?name=one.test'), '10.0.0.1')
        self.assertEqual(self.get_body('/fast'), 'fast')

    def test_lookup_in_python_set_raises_runtime_error(self):
        self.assertEqual(self.get_body('/set'), '[]')
        entry = [e for e in self.log_entries('error') if 'set_resolves' in e]
        self.assertTrue(entry, self.error_log())
        self.assertIn('RuntimeError: socket.gethostbyname() would block the nginx worker', entry[-1])
        self.assertEqual(self.dns.count('one.test'), 0)

    # -- reverse lookups ---------------------------------------------------

    def test_gethostbyaddr_ptr(self):
        self.assertEqual(self.result('/byaddr?addr=10.0.0.20'),
                         ('host20.example.test', [], ['10.0.0.20']))
        self.assertEqual(self.result('/byaddr?addr=fd00::20'),
                         ('six20.example.test', [], ['fd00::20']))
        self.assertEqual(self.result('/byaddr?addr=10.0.0.21'), ('herror', 1, 'Unknown host'))
        # a name: its address first, then the PTR (both through nginx)
        self.assertEqual(self.result('/byaddr?addr=named.test'),
                         ('host20.example.test', [], ['10.0.0.20']))
        self.assertEqual(self.dns.count(ptr('10.0.0.20'), QTYPE_PTR), 1)   # cached
        self.assertEqual(self.dns.count('named.test', QTYPE_A), 1)

    def test_reverse_lookup_in_etc_hosts_needs_no_query(self):
        self.assertEqual(self.result('/byaddr?addr=127.0.0.1')[0], 'localhost')
        self.assertEqual(self.dns.count(ptr('127.0.0.1')), 0)

    def test_getnameinfo(self):
        self.assertEqual(self.result('/nameinfo?addr=10.0.0.20&port=80'), ('host20.example.test', 'http'))
        self.assertEqual(self.result('/nameinfo?addr=10.0.0.20&port=80&flags=%d' % socket.NI_NOFQDN),
                         ('host20', 'http'))
        self.assertEqual(self.result('/nameinfo?addr=10.0.0.21&port=25'), ('10.0.0.21', 'smtp'))
        self.assertEqual(self.result('/nameinfo?addr=10.0.0.21&flags=%d' % socket.NI_NAMEREQD)[0],
                         'gaierror')
        self.assertEqual(self.result('/nameinfo?addr=10.0.0.23&port=81&flags=%d'
                                     % (socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)),
                         ('10.0.0.23', '81'))
        self.assertEqual(self.dns.count(ptr('10.0.0.23')), 0)

    def test_getfqdn_and_smtplib(self):
        name, same, took = self.result('/fqdn?name=10.0.0.20')
        self.assertEqual((name, same), ('host20.example.test', True))

    def test_worker_serves_while_a_reverse_lookup_is_pending(self):
        results = []
        t = threading.Thread(target=lambda: results.append(self.result('/byaddr?addr=10.0.0.22')))
        t.start()
        deadline = time.monotonic() + 5
        while self.dns.count(ptr('10.0.0.22')) == 0:
            self.assertLess(time.monotonic(), deadline, 'no PTR query')
            time.sleep(0.02)
        t1 = time.monotonic()
        self.assertEqual(self.get_body('/fast'), 'fast')
        self.assertLess(time.monotonic() - t1, 0.5, 'the worker was blocked by the lookup')
        t.join(10)
        self.assertEqual(results, [('herror', 2, 'Host name lookup failure')])   # resolver_timeout 1s

    # -- bind / sendto with names, names at configuration time ---------------

    def test_bind_and_sendto_by_name(self):
        self.assertEqual(self.result('/udp'), ('127.0.0.1', b'ping', b'pong'))
        self.assertEqual(self.dns.count('app.test', QTYPE_A), 1)

    def test_connect_by_name_at_configuration_time(self):
        peer, error = self.result('/config-connect')
        self.assertEqual(peer, '127.0.0.1')
        self.assertNotIn('outside a handler', error)
        self.assertIn('Name or service not known', error)


if __name__ == '__main__':
    harness.main()
