"""A seeded, replayable fuzzer of every entry from nginx into the module.

Client threads open connections and play random cases (t/fuzzgen.py): odd
bytes, %-escapes, long and repeated headers, pipelining, Content-Length and
chunked bodies, clients vanishing mid-request and mid-response; stream
sessions get random bytes and vanish. The server runs python_access,
python_set (in `add_header ... always` and in `access_log`), python_log and
python_content handlers that read r.arg, r.hi, r.var, r.body, set r.ho,
send pieces, keep r in r.ctx, raise, and (unblock build) sleep a little:
the request's X-Op header says which.

Fails on a worker death, `[alert]`/`[crit]` in error.log (the harness), a
valid request that gets no answer, or a connection that neither answers
nor closes.

    FUZZ_SEED=N      replay run N (printed on failure, and with -v)
    FUZZ_SECONDS=S   play S seconds per test instead of the default
    FUZZ_CASE=N/W/I  play only that case (from a failure report), once

Timing differs between runs; what every case sends does not.
"""

import os
import random
import signal
import socket
import struct
import sys
import threading
import time

import fuzzgen
import harness

SECONDS = float(os.environ.get('FUZZ_SECONDS', '6'))
SEED = int(os.environ['FUZZ_SEED']) if os.environ.get('FUZZ_SEED') else random.randrange(10 ** 9)
CLIENTS = 6
ANSWER_TIMEOUT = 10.0   # nginx's own timeouts below are 2-3 s
STALL = 3.5             # a stalled client outwaits send_timeout (3 s)

APP = r'''
import random
import socket
import time
import ngx

SLEEP = False       # the unblock build sets it: handlers wait on nginx's loop


def _ops(r):
    try:
        return r.hi.get('X-Op', '')
    except KeyError:
        return ''


def nap():
    if SLEEP:
        time.sleep(random.choice((0, 0.0005, 0.002, 0.01)))


def access(r):
    ops = _ops(r)
    r.ctx['phases'] = ['access']
    for c in ops[:3]:
        if c == 's':
            nap()
        elif c == 'a':
            list(r.arg.items())
        elif c == 'h':
            list(r.hi.items())
        elif c == 'v':
            [r.var.get('arg_' + k) for k in r.arg]
        elif c == 'd':
            return 403
        elif c == 'k':
            return ngx.OK
        elif c == 'x' and 'xx' in ops:
            raise RuntimeError('fuzz: access raised')
    return None


def content(r):
    ops = _ops(r)
    sent = False
    for i, c in enumerate(ops):
        if c == 's':
            nap()
        elif c == 'a':
            r.ctx['a'] = dict(r.arg)
        elif c == 'h':
            r.ctx['h'] = list(r.hi.items())
        elif c == 'w':
            # variables named after what the client sent (odd names too)
            r.ctx['w'] = [r.var.get(p + k.lower().replace('-', '_'))
                          for k in r.hi for p in ('http_', 'cookie_', 'sent_http_', 'arg_')]
        elif c == 'v':
            r.ctx['v'] = [r.var.get(n) for n in ('uri', 'args', 'request_uri', 'http_x_a',
                                                 'request_body', 'arg_a', 'content_length')]
            r.ctx['va'] = [r.var.get('arg_' + k) for k in r.arg]
        elif c == 'b':
            r.ctx['b'] = len(r.body or b'') + len(r.var.get('request_body') or '')
        elif c == 'o' and not sent:
            r.ho['X-Out'] = 'o%d' % i
            r.ho['Content-Type'] = 'text/plain'
            r.ho['ETag'] = '"fz"'
            r.ho['Last-Modified'] = 'Thu, 01 Jan 1970 00:00:01 GMT'
        elif c == 'g':
            r.ctx['g'] = r.var.get('pyv')
        elif c == 'e' and not sent:
            r.sendHeader()
            sent = True
        elif c == 'c':
            r.ctx['self'] = r
            r.ctx['hi'] = r.hi
        elif c == 'p':
            r.send(b'p' * (7 ** (i % 7)), ngx.SEND_FLUSH)
            sent = True
        elif c == 'P':
            r.send(b'P' * 1000000)
            sent = True
        elif c == 'x':
            raise RuntimeError('fuzz: content raised')
        elif c == 'n' and not sent:
            return 404
    r.ctx.setdefault('phases', []).append('content')
    r.send(('%s\n' % sorted(r.ctx)).encode(), ngx.SEND_LAST)


def ssi_page(r):
    nap()
    ops = _ops(r)
    r.ho['Content-Type'] = 'text/html'
    for i, c in enumerate(ops or 'p'):
        r.send(('<!--# include virtual="/c/%d?%s" -->|' % (i, c)).encode(), ngx.SEND_FLUSH)
        if c == 'x':
            r.send(b'<!--# include virtual="/echo" -->')
    r.send(b'end', ngx.SEND_LAST)


def echo(r):
    nap()
    body = r.body or b''
    r.ho['X-Len'] = len(body)
    r.send(body, ngx.SEND_LAST)


def pyset(r):
    ops = _ops(r)
    out = [r.var.get('uri', '-')]
    if 'a' in ops:
        out.append(str(len(r.arg)))
    if 'h' in ops:
        out.append(str(len(r.hi)))
    if 'v' in ops:
        out.append(str([r.var.get('arg_' + k) for k in r.arg])[:50])
    if 'c' in ops:
        out.append(','.join(r.ctx.get('phases', [])))
    return ' '.join(out).encode('ascii', 'backslashreplace').replace(b'\n', b' ')


def pylog(r):
    ops = _ops(r)
    r.ctx.setdefault('phases', []).append('log')
    n = [r.var.get('status'), r.var.get('request_length'), len(r.arg)]
    if 'x' in ops and 'p' in ops:
        raise RuntimeError('fuzz: log raised')
    if 'h' in ops:
        n.append(len(list(r.hi.items())))
    return n


# stream

def pre(s):
    nap()
    s.ctx['reads'] = s.ctx.get('reads', 0) + 1
    if b'\x00\x00' in s.buf:
        return ngx.ABORT
    if b'\n' not in s.buf and len(s.buf) < 300 and s.ctx['reads'] < 20:
        return ngx.AGAIN
    return None


def sacc(s):
    nap()
    if s.buf[:1] == b'\xff':
        return ngx.ERROR
    if s.buf[:1] == b'\xfe':
        raise RuntimeError('fuzz: stream access raised')
    return None


def sset(s):
    return repr(s.buf[:40])


def slog(s):
    s.ctx['log'] = [s.var.get('status'), s.var.get('bytes_received'), s.var.get('sv'), len(s.buf)]
    if s.buf[:1] == b'\xfc':
        raise RuntimeError('fuzz: stream log raised')


def secho(s):
    if not SLEEP:
        return None if s.buf[:1] != b'\xfd' else ngx.ERROR
    s.sock.settimeout(0.5)
    got = b''
    try:
        while len(got) < 20000:
            b = s.sock.recv(4096)
            if not b:
                break
            got += b
            if b'\n' in b:
                s.sock.sendall(got)
    except (socket.timeout, OSError):
        pass
    return None
'''

HTTP = '''
    python_include app.py;
    python 'SLEEP = %(sleep)s';
    python_set $pyv 'pyset(r)';
    log_format fuzz '$status $pyv';
    access_log logs/access.log fuzz;
    client_header_timeout 2s;
    client_body_timeout 2s;
    keepalive_timeout 3s;
    send_timeout 3s;
    lingering_timeout 1s;
    client_max_body_size 64k;
    %(pools)s
'''

SERVER = '''
    ignore_invalid_headers off;
    underscores_in_headers on;
    python_access 'access(r)';
    python_log 'pylog(r)';
    add_header X-V $pyv always;
    location /c { python_content 'content(r)'; }
    location /echo { python_content 'echo(r)'; }
    location /a { return 200 "a\\n"; }
    location /log { python_access 'None'; return 204; }
    location /ret { return 200 "$pyv\\n"; }
    # subrequests into Python: SSI includes and a mirror of the request
    location /ssi { ssi on; python_content 'ssi_page(r)'; }
    location /m { mirror /mirror; python_content 'content(r)'; }
    location = /mirror { internal; python_content 'content(r)'; }
'''

STREAM = '''
    python_include app.py;
    python 'SLEEP = %(sleep)s';
    python_set $sv 'sset(s)';
    python_log 'slog(s)';
    log_format fuzz '$status $sv';
    access_log logs/stream.log fuzz;
    preread_timeout 1s;
    server { listen 127.0.0.1:%%(port2)s; return "up\\n"; }
    server {
        listen 127.0.0.1:%%(port3)s;
        python_preread 'pre(s)';
        python_access 'sacc(s)';
        return "$sv\\n";
    }
    server {
        listen 127.0.0.1:%%(port4)s;
        python_access 'sacc(s)';
        python_content 'secho(s)';
    }
'''


class Vanished(Exception):
    pass


class Reader:
    """HTTP responses from a socket: (status, headers dict, body, complete)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b''
        self.eof = False

    def _more(self):
        try:
            b = self.sock.recv(65536)
        except ConnectionResetError:
            b = b''
        if not b:
            self.eof = True
        self.buf += b

    def _line(self):
        while b'\n' not in self.buf:
            if self.eof:
                return None
            self._more()
        line, self.buf = self.buf.split(b'\n', 1)
        return line.rstrip(b'\r')

    def _exactly(self, n):
        while len(self.buf) < n and not self.eof:
            self._more()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data, len(data) == n

    def response(self, head):
        """None at EOF before a status line; socket.timeout if nothing comes.
        Interim 1xx responses (100 Continue) are skipped."""
        while True:
            resp = self._response(head)
            if resp is None or not 100 <= resp[0] < 200:
                return resp

    def _response(self, head):
        line = self._line()
        if line is None:
            return None
        parts = line.split(b' ', 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        headers = {}
        while True:
            h = self._line()
            if h is None:
                return status, headers, b'', False
            if not h:
                break
            k, _, v = h.partition(b':')
            headers[k.strip().lower()] = v.strip()
        if head or status in (204, 304) or 100 <= status < 200:
            return status, headers, b'', True
        if headers.get(b'transfer-encoding', b'').lower() == b'chunked':
            body = b''
            while True:
                size = self._line()
                if size is None:
                    return status, headers, body, False
                try:
                    n = int(size.split(b';')[0], 16)
                except ValueError:
                    return status, headers, body, False
                data, ok = self._exactly(n + 2)
                body += data[:n]
                if not ok:
                    return status, headers, body, False
                if n == 0:
                    return status, headers, body, True
        if b'content-length' in headers:
            data, ok = self._exactly(int(headers[b'content-length']))
            return status, headers, data, ok
        while not self.eof:
            self._more()
        data, self.buf = self.buf, b''
        return status, headers, data, True


def linger_reset(sock):
    """Closing now sends a reset instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))


def send_split(sock, data, case):
    """Send data in the case's piece sizes, with its pauses."""
    i, k = 0, 0
    while i < len(data):
        n = case['split'][k % len(case['split'])] * (1 + (k % 3) * 50)
        sock.sendall(data[i:i + n])
        i += n
        k += 1
        if case['pause']:
            time.sleep(case['pause'])


def play_http(port, case, reloading=False):
    """Plays one case; returns a failure description or None. While nginx
    reloads, a close without an answer is no finding (an exiting worker
    closes idle keep-alive connections): only hangs and crashes are."""
    reqs = case['requests']
    all_valid = all(r[1] for r in reqs)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if case['mode'] == 'stall':
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(ANSWER_TIMEOUT)
    sock.connect(('127.0.0.1', port))
    try:
        data = b''.join(r[0] for r in reqs)
        if case['mode'] == 'vanish_req':
            if case['reset']:
                linger_reset(sock)
            try:
                send_split(sock, data[:case['cut']], case)
            except OSError:
                pass      # the server refused an odd request already
            return None
        if case['mode'] == 'stall':
            try:
                send_split(sock, data, case)
            except OSError:
                pass
            time.sleep(STALL)
            return None
        if case['mode'] == 'vanish_resp':
            try:
                send_split(sock, data, case)
                if case['read_bytes']:
                    sock.recv(case['read_bytes'])
            except OSError:
                pass
            if case['reset']:
                linger_reset(sock)
            return None
        reader = Reader(sock)
        may_close = False
        for i, (raw, valid, method, closing) in enumerate(reqs):
            if case['pipelined']:
                if i == 0:
                    try:
                        send_split(sock, data, case)
                    except OSError:
                        pass      # the server closed (answered an odd request)
            else:
                try:
                    send_split(sock, raw, case)
                except OSError:
                    break
            try:
                resp = reader.response(method == 'HEAD')
            except socket.timeout:
                if all_valid:
                    return 'request %d of %d got no answer within %ss' % (i + 1, len(reqs), ANSWER_TIMEOUT)
                return 'the connection neither answered nor closed within %ss' % ANSWER_TIMEOUT
            if resp is None:
                # a handler that raised after sending the header (even when
                # nothing of it left the buffers yet) closes the connection
                if all_valid and not (may_close or closing or reloading):
                    return 'the connection closed before answering request %d of %d' % (i + 1, len(reqs))
                return None
            may_close = closing
            status, headers, body, complete = resp
            if not all_valid:
                continue
            if status < 200:
                return 'request %d: bad status line' % (i + 1)
            if not complete:
                return None   # a handler failed after sending (it raised): closed
            if headers.get(b'connection', b'').lower() == b'close':
                return None   # e.g. a 400 for a URI nginx refuses: no more answers
        if not all_valid:
            # whatever was answered, the connection must end
            try:
                while not reader.eof:
                    reader._more()
            except socket.timeout:
                return 'the connection neither answered nor closed within %ss' % ANSWER_TIMEOUT
        return None
    except socket.timeout:
        return 'timed out'
    finally:
        sock.close()


def play_stream(port, case):
    sock = socket.create_connection(('127.0.0.1', port), timeout=ANSWER_TIMEOUT)
    try:
        if case['reset']:
            linger_reset(sock)
        for p in case['pieces']:
            try:
                sock.sendall(p)
            except OSError:
                return None   # closed by the server already
            if case['pause']:
                time.sleep(case['pause'])
        if case['mode'] == 'vanish':
            return None
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            return 'the session neither answered nor closed within %ss' % ANSWER_TIMEOUT
        return None
    finally:
        sock.close()


def describe(case, cut=300):
    out = dict(case)
    if 'requests' in case:
        out['requests'] = [(r[0][:cut] + (b'...' if len(r[0]) > cut else b''),) + r[1:]
                           for r in case['requests']]
    if 'pieces' in case:
        out['pieces'] = [p[:60] for p in case['pieces']]
    return repr(out)


class Fuzz(harness.NginxTestCase):

    def run_clients(self, play, make_case, ports):
        """CLIENTS threads play cases for SECONDS; fails with the seed."""
        deadline = time.monotonic() + SECONDS
        failures = []
        counts = [0] * CLIENTS
        if os.environ.get('FUZZ_CASE'):
            seed, w, i = map(int, os.environ['FUZZ_CASE'].split('/'))
            rng = fuzzgen.case_rng(seed, w, i)
            case = make_case(rng)
            port = rng.choice(ports)
            sys.stderr.write('\n%s\n' % describe(case, 100000))
            why = play(port, case)
            return ['case %s: %s' % (os.environ['FUZZ_CASE'], why)] if why else []

        def client(w):
            i = 0
            while time.monotonic() < deadline and len(failures) < 5:
                rng = fuzzgen.case_rng(SEED, w, i)
                case = make_case(rng)
                port = rng.choice(ports)
                try:
                    why = play(port, case)
                except Exception as e:     # a client-side error is a finding too
                    why = 'client error %r' % e
                if why:
                    failures.append('case %d/%d/%d on port %d: %s\n    %s'
                                    % (SEED, w, i, port, why, describe(case)))
                i += 1
            counts[w] = i

        threads = [threading.Thread(target=client, args=(w,)) for w in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if os.environ.get('FUZZ_VERBOSE') or '-v' in sys.argv:
            sys.stderr.write('\n%s: FUZZ_SEED=%d, %d cases in %.0f s\n'
                             % (self.id(), SEED, sum(counts), SECONDS))
        return failures

    def check(self, failures, workers):
        gone = workers - self.worker_pids() if workers is not None else set()
        died = [l for l in self.error_log().splitlines() if 'exited on signal' in l]
        problems = list(failures)
        if gone or died:
            problems.append('worker(s) %s died: %s' % (sorted(gone), died))
        if problems:
            self.fail('FUZZ_SEED=%d (replay: FUZZ_SEED=%d python3 t %s)\n%s\n--- error.log tail ---\n%s'
                      % (SEED, SEED, __name__, '\n'.join(problems), self.error_log()[-4000:]))

    def fuzz_http(self, pools='', reload_every=None):
        sleep = 'True' if harness.unblock_build() else 'False'
        self.start(http=HTTP % {'sleep': sleep, 'pools': pools}
                   + 'server {\n    listen 127.0.0.1:%(port)s;\n' + SERVER + '}\n',
                   files={'app.py': APP})
        workers = self.worker_pids()
        play = play_http
        if reload_every:
            stop = threading.Event()
            reloads = threading.Thread(target=self.keep_reloading, args=(stop, reload_every))
            reloads.start()
            play = lambda port, case: play_http(port, case, reloading=True)
        try:
            failures = self.run_clients(play, fuzzgen.http_case, [self.port])
        finally:
            if reload_every:
                stop.set()
                reloads.join()
                time.sleep(1.0)       # the last reload settles
                workers = None        # replaced by reloads: only crashes count
        # afterwards every location still answers
        for path in ('/c', '/echo', '/a', '/log', '/ret', '/ssi', '/m'):
            try:
                status = self.get(path, method='POST', body=b'z' * 10)[0]
            except OSError as e:
                status = e
            if status not in (200, 204):
                failures.append('after the run, POST %s: %s' % (path, status))
        self.check(failures, workers)

    def test_http(self):
        self.fuzz_http()

    def keep_reloading(self, stop, every):
        """SIGHUP nginx every `every` seconds until stop (old workers
        finish their requests, waiting handlers included, and exit)."""
        while not stop.wait(every):
            os.kill(self.proc.pid, signal.SIGHUP)

    def test_http_reloads(self):
        self.fuzz_http(reload_every=1.0)

    def test_http_pools_unmapped(self):
        # Pools above glibc's fixed mmap threshold are munmap()ed when freed:
        # a use of a freed request or connection crashes at once.
        self.nginx_env = {'MALLOC_MMAP_THRESHOLD_': '131072'}
        self.fuzz_http('request_pool_size 256k;\n    connection_pool_size 256k;\n    large_client_header_buffers 4 256k;')

    def test_stream(self):
        sleep = 'True' if harness.unblock_build() else 'False'
        self.start(stream=STREAM % {'sleep': sleep}, files={'app.py': APP},
                   wait_ports=['port2'])
        workers = self.worker_pids()
        failures = self.run_clients(play_stream, fuzzgen.stream_case, [self.port3, self.port4])
        self.check(failures, workers)


SUBREQUESTS = r'''
import time
import ngx


def page(r, wait, part='/part'):
    if wait:
        time.sleep(0.01)
    r.ho['Content-Type'] = 'text/html'
    r.send('<!--# include virtual="%s?1" -->|' % part, ngx.SEND_FLUSH)
    r.send('<!--# include virtual="%s?2" -->|' % part)
    r.send('end', ngx.SEND_LAST)


def big(r):
    # in pieces larger than nginx's pool blocks: each one its own allocation
    for i in range(4):
        r.send(bytes([65 + i]) * 300000, ngx.SEND_FLUSH)
    r.send(b'', ngx.SEND_LAST)


def part(r, wait):
    if wait:
        time.sleep(0.01)
    r.send('part%s' % r.var['args'], ngx.SEND_LAST)
'''


class FoundByFuzzing(harness.NginxTestCase):
    """Defects the fuzzer found, each replayed on its own."""

    def test_subrequests_of_a_handler_that_waited(self):
        # FUZZ_SEED=913889992 (unblock build): an SSI page whose handler
        # slept made a subrequest from r.send after being resumed by its
        # timer; nobody ran the connection's posted requests (nginx does
        # after a request's own events, not after a timer), so the page
        # hung until send_timeout and the client got nothing.
        self.start_server('''
            location /page { ssi on; python_content 'page(r, False)'; }
            location /page-wait { ssi on; python_content 'page(r, True)'; }
            location /part { python_content 'part(r, False)'; }
            location /part-wait { python_content 'part(r, True)'; }
            location /both { ssi on; python_content 'page(r, True, "/part-wait")'; }
            location /m { mirror /part-wait; python_content 'part(r, True)'; }
        ''', http='python_include app.py;\nsend_timeout 5s;',
            files={'app.py': SUBREQUESTS})
        for path in ('/page', '/page-wait', '/both'):
            t0 = time.monotonic()
            status, _, body = self.get(path, timeout=4)
            self.assertEqual((status, body), (200, b'part1|part2|end'), path)
            self.assertLess(time.monotonic() - t0, 2.0, path)
        status, _, body = self.get('/m?x', timeout=4)
        self.assertEqual((status, body), (200, b'partx'))

    def test_subrequest_output_is_not_freed_while_queued(self):
        # FUZZ_SEED=557949921 under AddressSanitizer: a subrequest's r.send
        # freed its piece while nginx still had it queued (in the parent's
        # postponed list, or in the connection's buffers, which `busy` does
        # not look at for subrequests); the client got freed memory.
        self.nginx_env = {'MALLOC_MMAP_THRESHOLD_': '131072'}   # freed = unmapped
        self.start(http='''
            python_include app.py;
            server {
                listen 127.0.0.1:%(port)s sndbuf=16k;
                location /page { ssi on; python_content 'page(r, False, "/big")'; }
                location /big { python_content 'big(r)'; }
            }
        ''', files={'app.py': SUBREQUESTS})
        part = b''.join(bytes([65 + i]) * 300000 for i in range(4))
        for _ in range(3):
            status, _, body = self.get('/page', timeout=10)
            self.assertEqual(status, 200)
            self.assertTrue(body == part + b'|' + part + b'|end', 'the body differs (%d bytes)' % len(body))
