"""The stream side: python_access / python_preread / python_content /
python_log / python_set in `stream {}`, the session object `s` and `s.sock`.

Every nginx here also has a plain stream server on %(port)s (`return`): the
harness waits on it, so its probe connection runs no Python handler. The
servers under test listen on %(port2)s, %(port3)s, ...
"""

import ast
import socket
import threading
import time

import harness

READY = 'server { listen 127.0.0.1:%(port)s; return "up\\n"; }\n'
IO_TIMEOUT = 5.0


def read_all(s, timeout=IO_TIMEOUT):
    """What the server sends until it closes (a reset ends it too)."""
    chunks = []
    deadline = time.monotonic() + timeout
    s.settimeout(timeout)
    while time.monotonic() < deadline:
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            break
        except socket.timeout:
            raise AssertionError('the server did not close within %ss' % timeout)
        if not b:
            break
        chunks.append(b)
    return b''.join(chunks)


def tcp(port, *parts, delay=0.2, timeout=IO_TIMEOUT):
    """Connect, send parts (delay seconds apart), read until the server closes."""
    s = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    try:
        for i, part in enumerate(parts):
            if i:
                time.sleep(delay)
            try:
                s.sendall(part)
            except OSError:
                break  # the server closed already
        return read_all(s, timeout)
    finally:
        s.close()


def udp(port, data, timeout=2.0):
    """One datagram; the reply, or None when none comes within timeout."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(timeout)
    try:
        u.sendto(data, ('127.0.0.1', port))
        return u.recv(65536)
    except socket.timeout:
        return None
    finally:
        u.close()


class StreamTestCase(harness.NginxTestCase):

    def start_stream(self, stream, http=None, files=None, main=''):
        self.start(stream=READY + harness.dedent(stream), http=http, files=files,
                   main=main, wait_ports=['port'])

    def assertTraceback(self, directive, exc, offset=0, traceback=True):
        """One [error] entry `directive: Traceback ... exc` (for a bad
        return value, no traceback: just `directive: exc`)."""
        self.wait_log(exc, offset)
        head = directive + (': Traceback (most recent call last)' if traceback else ': ' + exc)
        entries = [e for e in self.log_entries('error', offset) if head in e]
        self.assertEqual(len(entries), 1, self.error_log(offset))
        self.assertIn(exc, entries[0])


class Access(StreamTestCase):

    def test_access_tcp(self):
        self.start_stream('''
            python_include handlers.py;
            server {
                listen 127.0.0.1:%(port2)s;
                python_access 'gate(s)';
                python_log 's.log("status " + s.var["status"])';
                return "welcome\\n";
            }
        ''', files={'handlers.py': '''
import ngx
calls = []
def gate(s):
    calls.append(1)
    n = len(calls)
    s.log("access call %d buf=%r" % (n, s.buf))
    return {1: None, 2: ngx.OK, 3: ngx.ABORT, 4: ngx.ERROR, 5: ngx.DECLINED}[n]
'''})
        self.assertEqual(tcp(self.port2), b'welcome\n')     # None
        self.assertEqual(tcp(self.port2), b'welcome\n')     # ngx.OK
        self.assertEqual(tcp(self.port2), b'')              # ngx.ABORT
        self.assertEqual(tcp(self.port2), b'')              # ngx.ERROR
        self.assertEqual(tcp(self.port2), b'welcome\n')     # ngx.DECLINED
        self.wait_log(r'access call 5')
        statuses = [e.split('status ')[1][:3] for e in self.log_entries('info') if 'status ' in e]
        self.assertEqual(statuses, ['200', '200', '403', '500', '200'])
        self.assertIn("access call 1 buf=b''", self.error_log())  # TCP: nothing read yet

    def test_access_udp(self):
        self.start_stream('''
            python_set $dgram 's.buf';
            server {
                listen 127.0.0.1:%(port2)s udp;
                python_access 'ngx.ABORT if s.buf.startswith(b"deny") else None';
                return "got:$dgram";
            }
        ''')
        self.assertEqual(udp(self.port2, b'hello'), b'got:hello')
        self.assertIsNone(udp(self.port2, b'deny me', timeout=0.5))
        self.assertEqual(udp(self.port2, b'\xff\x00again'), b'got:\xff\x00again')

    def test_levels_inherit_and_run_in_order(self):
        self.start_stream('''
            python_access 's.ctx.setdefault("seen", []).append("main1")';
            python_access 's.ctx["seen"].append("main2")';
            python_set $seen '",".join(s.ctx.get("seen", []))';
            server {
                listen 127.0.0.1:%(port2)s;
                return "$seen\\n";
            }
            server {
                listen 127.0.0.1:%(port3)s;
                python_access 's.ctx.setdefault("seen", []).append("own")';
                return "$seen\\n";
            }
        ''')
        self.assertEqual(tcp(self.port2), b'main1,main2\n')
        self.assertEqual(tcp(self.port3), b'own\n')

    def test_bad_return_value(self):
        self.start_stream('''
            server {
                listen 127.0.0.1:%(port2)s;
                python_access '"yes"';
                return "never\\n";
            }
            server {
                listen 127.0.0.1:%(port3)s;
                python_access 'ngx.AGAIN';
                return "never\\n";
            }
        ''')
        self.assertEqual(tcp(self.port2), b'')
        self.assertTraceback('python_access', 'TypeError: python_access returned str',
                             traceback=False)
        offset = self.error_log_size()
        self.assertEqual(tcp(self.port3), b'')
        self.assertTraceback('python_access', 'ValueError: python_access returned ngx.AGAIN: '
                             'only python_preread can wait for more data', offset, traceback=False)


class Preread(StreamTestCase):

    def test_again_across_two_writes(self):
        self.start_stream('''
            python_include handlers.py;
            python_set $line 's.ctx.get("line")';
            server {
                listen 127.0.0.1:%(port2)s;
                python_preread 'want_line(s)';
                return "line=$line calls=$calls\\n";
            }
            python_set $calls 's.ctx.get("calls")';
        ''', files={'handlers.py': '''
import ngx
def want_line(s):
    s.ctx["calls"] = s.ctx.get("calls", 0) + 1
    s.log("preread buf=%r" % s.buf)
    if b"\\n" not in s.buf:
        return ngx.AGAIN
    s.ctx["line"] = s.buf.split(b"\\n", 1)[0]
'''})
        out = tcp(self.port2, b'hel', b'lo\nrest')
        self.assertTrue(out.startswith(b'line=hello calls='), out)
        calls = int(out.split(b'calls=')[1])
        # at least once per write (nginx may call again with the same data)
        self.assertGreaterEqual(calls, 2)
        log = self.error_log()
        self.assertIn("preread buf=b'hel'", log)
        self.assertIn("preread buf=b'hello\\nrest'", log)

    def test_resumes_at_the_handler_that_waited(self):
        self.start_stream('''
            server {
                listen 127.0.0.1:%(port2)s;
                python_preread 's.ctx.update(first=s.ctx.get("first", 0) + 1)';
                python_preread 'ngx.AGAIN if len(s.buf) < 4 else None';
                python_preread 's.ctx.update(third=len(s.buf))';
                return "$counts\\n";
            }
            python_set $counts '"%d %d" % (s.ctx["first"], s.ctx["third"])';
        ''')
        self.assertEqual(tcp(self.port2, b'ab', b'cdef'), b'1 6\n')

    def test_preread_timeout_and_buffer_size(self):
        self.start_stream('''
            server {
                listen 127.0.0.1:%(port2)s;
                preread_timeout 300ms;
                python_preread 'ngx.AGAIN';
                return "never\\n";
            }
            server {
                listen 127.0.0.1:%(port3)s;
                preread_buffer_size 16;
                python_preread 'ngx.AGAIN';
                python_log 's.log("status " + s.var["status"])';
                return "never\\n";
            }
        ''')
        t0 = time.monotonic()
        self.assertEqual(tcp(self.port2, b'partial'), b'')
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertEqual(tcp(self.port3, b'x' * 64), b'')
        self.wait_log(r'preread buffer full')
        self.wait_log(r'status 400')

    def test_abort_and_error(self):
        self.start_stream('''
            server {
                listen 127.0.0.1:%(port2)s;
                python_preread 'ngx.ABORT if s.buf.startswith(b"bad") else (ngx.ERROR if s.buf else ngx.AGAIN)';
                python_log 's.log("status " + s.var["status"])';
                return "never\\n";
            }
        ''')
        self.assertEqual(tcp(self.port2, b'bad'), b'')
        self.wait_log(r'status 400')
        offset = self.error_log_size()
        self.assertEqual(tcp(self.port2, b'other'), b'')
        self.wait_log(r'status 500', offset)

    def test_udp_datagram(self):
        self.start_stream('''
            server {
                listen 127.0.0.1:%(port2)s udp;
                python_preread 'None if s.buf == b"ping" else ngx.ABORT';
                return "pong";
            }
        ''')
        self.assertEqual(udp(self.port2, b'ping'), b'pong')
        self.assertIsNone(udp(self.port2, b'other', timeout=0.5))


class Content(StreamTestCase):

    def test_content_results(self):
        self.start_stream('''
            python_include handlers.py;
            server {
                listen 127.0.0.1:%(port2)s;
                python_content 'content(s)';
                python_log 's.log("status " + s.var["status"])';
            }
        ''', files={'handlers.py': '''
import ngx
n = []
def content(s):
    n.append(1)
    s.log("content %d on %s" % (len(n), s.sock.type.name))
    return [None, ngx.OK, ngx.ERROR, ngx.ABORT][len(n) - 1]
'''})
        for _ in range(4):
            self.assertEqual(tcp(self.port2), b'')
        self.wait_log(r'content 4 on SOCK_STREAM')
        statuses = [e.split('status ')[1][:3] for e in self.log_entries('info') if 'status ' in e]
        self.assertEqual(statuses, ['200', '200', '500', '500'])

    def test_content_is_server_only(self):
        rc, out = self.nginx_t(stream='''
            python_content 'None';
            server { listen 127.0.0.1:%(port)s; return "x"; }
        ''')
        self.assertConfError(rc, out, "python_content 'None'", 'is not allowed here')
        rc, out = self.nginx_t(stream='''
            server {
                listen 127.0.0.1:%(port)s;
                python_content 'None';
                python_content 'None';
            }
        ''')
        self.assertNotEqual(rc, 0, out)
        self.assertIn('is duplicate', out)


class LogAndSet(StreamTestCase):

    def test_log_phase(self):
        self.start_stream('''
            python_log 's.log("main log " + s.var["remote_addr"])';
            python_log 's.log("main log 2", ngx.LOG_WARN)';
            server {
                listen 127.0.0.1:%(port2)s;
                python_access 's.ctx.update(who="access was here")';
                return "x\\n";
            }
            server {
                listen 127.0.0.1:%(port3)s;
                python_access 's.ctx.update(who="access was here")';
                python_log 's.log("own log: " + s.ctx["who"] + " bytes_sent=" + s.var["bytes_sent"])';
                return "x\\n";
            }
        ''')
        self.assertEqual(tcp(self.port2), b'x\n')
        self.wait_log(r'\[info\] .*main log 127\.0\.0\.1')
        self.wait_log(r'\[warn\] .*main log 2')
        offset = self.error_log_size()
        self.assertEqual(tcp(self.port3), b'x\n')
        self.wait_log(r'own log: access was here bytes_sent=2', offset)
        self.assertNotIn('main log', self.error_log(offset))

    def test_python_set(self):
        self.start_stream('''
            python 'import ngx';
            python_set $str '"h\\u00e9llo"';
            python_set $bytes 'b"\\xff\\x00raw"';
            python_set $none 'None';
            python_set $int '6 * 7';
            python_set $fails '1 / 0';
            server {
                listen 127.0.0.1:%(port2)s;
                return "[$str][$bytes][$none][$int][$fails]\\n";
            }
            server {
                listen 127.0.0.1:%(port3)s udp;
                return "[$str][$none]";
            }
        ''')
        self.assertEqual(tcp(self.port2), b'[h\xc3\xa9llo][\xff\x00raw][][42][]\n')
        self.assertTraceback('python_set $fails', 'ZeroDivisionError')
        self.assertEqual(udp(self.port3, b'q'), b'[h\xc3\xa9llo][]')


class SessionObject(StreamTestCase):

    def test_var_ctx_log(self):
        self.start_stream('''
            python_include handlers.py;
            server {
                listen 127.0.0.1:%(port2)s;
                python_access 'probe(s)';
                python_preread 's.ctx["phases"].append("preread")';
                python_log 's.log("phases " + ",".join(s.ctx["phases"]))';
                return "$report\\n";
            }
            python_set $report 'report(s)';
        ''', files={'handlers.py': '''
import ngx
def probe(s):
    s.ctx["phases"] = ["access"]
    r = []
    r.append(s.var["remote_addr"])
    r.append(s.var["server_port"] == str(s.sock.getsockname()[1]))
    r.append("server_addr" in s.var)
    r.append("no_such_variable" in s.var)
    r.append(s.var.get("no_such_variable", "dflt"))
    try:
        s.var["no_such_variable"]
    except KeyError as e:
        r.append("KeyError " + str(e))
    s.ctx["report"] = repr(r)
    s.log("a warning", ngx.LOG_WARN)
    s.log(b"bytes message")
def report(s):
    s.ctx["phases"].append("set")
    return s.ctx["report"]
'''})
        out = tcp(self.port2, b'data')
        self.assertEqual(ast.literal_eval(out.decode().strip()),
                         ['127.0.0.1', True, True, False, 'dflt', "KeyError 'no_such_variable'"])
        self.wait_log(r'phases access,preread,set')
        self.wait_log(r'\[warn\] .*a warning')
        self.wait_log(r'\[info\] .*bytes message')

    def test_sock_addresses_tcp_udp(self):
        self.start_stream('''
            python 'import socket';
            python_set $sock 'repr((s.sock.getsockname(), s.sock.getpeername(), s.sock.fileno() > 0, s.sock.family == socket.AF_INET, s.sock.family.name, s.sock.type == socket.SOCK_STREAM, s.sock.type == socket.SOCK_DGRAM))';
            server { listen 127.0.0.1:%(port2)s; return "$sock"; }
            server { listen 127.0.0.1:%(port3)s udp; return "$sock"; }
        ''')
        c = socket.create_connection(('127.0.0.1', self.port2), timeout=IO_TIMEOUT)
        try:
            local = c.getsockname()
            got = ast.literal_eval(read_all(c).decode())
        finally:
            c.close()
        self.assertEqual(got, (('127.0.0.1', self.port2), local, True, True, 'AF_INET', True, False))

        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(IO_TIMEOUT)
        try:
            u.connect(('127.0.0.1', self.port3))
            u.send(b'x')
            got = ast.literal_eval(u.recv(65536).decode())
            local = u.getsockname()
        finally:
            u.close()
        self.assertEqual(got, (('127.0.0.1', self.port3), local, True, True, 'AF_INET', False, True))

    def test_sock_ipv6(self):
        try:
            probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            probe.bind(('::1', 0))
            probe.close()
        except OSError:
            self.skipTest('no IPv6 loopback')
        self.start_stream('''
            python_set $sock 'repr((s.sock.getsockname(), s.sock.getpeername(), s.sock.family.name))';
            server { listen [::1]:%(port2)s; return "$sock"; }
        ''')
        c = socket.create_connection(('::1', self.port2), timeout=IO_TIMEOUT)
        try:
            local = c.getsockname()
            got = ast.literal_eval(read_all(c).decode())
        finally:
            c.close()
        self.assertEqual(got, (('::1', self.port2, 0, 0), local, 'AF_INET6'))

    @harness.sync_only
    def test_sock_io_needs_unblock(self):
        self.start_stream('''
            python_include handlers.py;
            server {
                listen 127.0.0.1:%(port2)s;
                python_access 'try_io(s)';
                return "$io\\n";
            }
            python_set $io 's.ctx["io"]';
        ''', files={'handlers.py': '''
def try_io(s):
    out = []
    calls = [("recv", (10,)), ("send", (b"x",)), ("sendall", (b"x",)), ("makefile", ("rb",)),
             ("settimeout", (1.0,)), ("recv_into", (bytearray(4),))]
    for name, args in calls:
        try:
            getattr(s.sock, name)(*args)
            out.append(name + ": no error")
        except RuntimeError as e:
            out.append(name + (": ok" if "unblock" in str(e) else ": " + str(e)))
    s.ctx["io"] = ",".join(out)
'''})
        self.assertEqual(tcp(self.port2),
                         b'recv: ok,send: ok,sendall: ok,makefile: ok,settimeout: ok,recv_into: ok\n')

    def test_object_after_session_end(self):
        self.start_stream('''
            python_include handlers.py;
            python_set $old 'use_old(s)';
            server { listen 127.0.0.1:%(port2)s; return "$old\\n"; }
        ''', files={'handlers.py': '''
kept = []
def use_old(s):
    kept.append(s)
    if len(kept) == 1:
        return "first"
    old = kept[0]
    out = []
    for what in ("buf", "ctx", "var", "sock"):
        try:
            getattr(old, what)
            out.append(what + " works")
        except RuntimeError:
            out.append(what + " ended")
    try:
        old.log("x")
    except RuntimeError:
        out.append("log ended")
    return " ".join(out) + " " + repr(old)
'''})
        self.assertEqual(tcp(self.port2), b'first\n')
        self.assertEqual(tcp(self.port2),
                         b'buf ended ctx ended var ended sock ended log ended <ngx.Session (ended)>\n')


class Exceptions(StreamTestCase):

    def test_exception_in_each_phase(self):
        self.start_stream('''
            python_include handlers.py;
            server {
                listen 127.0.0.1:%(port2)s;
                python_preread 'step(s, "preread")';
                python_log 'step(s, "log")';
                python_content 'step(s, "content")';
            }
        ''', files={'handlers.py': '''
import ngx
def step(s, phase):
    # the client's first line names the phase that fails
    if phase == "preread":
        if b"\\n" not in s.buf:
            return ngx.AGAIN
        s.ctx["line"] = s.buf.split(b"\\n")[0].decode()
    s.ctx.setdefault("ran", []).append(phase)
    if phase == "log":
        s.log("ran " + ",".join(s.ctx["ran"]))
    if s.ctx["line"] == phase:
        raise ValueError("failing in " + phase)
'''})
        ran = {'preread': 'preread,log', 'content': 'preread,content,log', 'log': 'preread,content,log'}
        for phase in ('preread', 'content', 'log'):
            offset = self.error_log_size()
            self.assertEqual(tcp(self.port2, phase.encode() + b'\n'), b'')
            self.assertTraceback('python_' + phase, 'ValueError: failing in ' + phase, offset)
            self.wait_log(r'ran %s\b' % ran[phase], offset)
        # and a healthy session after all of them
        offset = self.error_log_size()
        self.assertEqual(tcp(self.port2, b'nothing\n'), b'')
        self.wait_log(r'ran preread,content,log', offset)
        self.assertEqual(self.log_entries('error', offset), [])

    def test_exception_in_access_tcp_and_udp(self):
        self.start_stream('''
            python 'failures = [1]';
            server {
                listen 127.0.0.1:%(port2)s;
                python_access '1 / 0 if failures and failures.pop() else None';
                return "served\\n";
            }
            server {
                listen 127.0.0.1:%(port3)s udp;
                python_access '1 / 0 if s.buf == b"boom" else None';
                return "served";
            }
        ''')
        self.assertEqual(tcp(self.port2), b'')
        self.assertTraceback('python_access', 'ZeroDivisionError')
        self.assertEqual(tcp(self.port2), b'served\n')
        offset = self.error_log_size()
        self.assertIsNone(udp(self.port3, b'boom', timeout=0.5))
        self.assertTraceback('python_access', 'ZeroDivisionError', offset)
        self.assertEqual(udp(self.port3, b'fine'), b'served')


class HttpAndStream(StreamTestCase):

    def test_same_handlers_in_http_and_stream(self):
        files = {'shared.py': '''
import ngx
hits = {}
def who(x):
    kind = type(x).__name__
    hits[kind] = hits.get(kind, 0) + 1
    return "%s from %s, hit %d" % (kind, x.var["remote_addr"], hits[kind])
def check(x):
    x.ctx["checked"] = True
    return None
'''}
        self.start_stream(
            stream='''
                python_set $who 'who(s)';
                server {
                    listen 127.0.0.1:%(port2)s;
                    python_access 'check(s)';
                    return "$who\\n";
                }
            ''',
            http='''
                python_set $who 'who(r)';
                server {
                    listen 127.0.0.1:%(port3)s;
                    location / {
                        python_access 'check(r)';
                        return 200 "$who\\n";
                    }
                }
            ''',
            main='python_include shared.py;',
            files=files)
        self.assertEqual(tcp(self.port2), b'Session from 127.0.0.1, hit 1\n')
        self.assertEqual(self.get_body('/', port=self.port3), 'Request from 127.0.0.1, hit 1\n')
        self.assertEqual(tcp(self.port2), b'Session from 127.0.0.1, hit 2\n')
        self.assertEqual(self.get_body('/', port=self.port3), 'Request from 127.0.0.1, hit 2\n')


class Unblock(StreamTestCase):

    @harness.unblock_only
    def test_handlers_wait_without_blocking(self):
        self.start_stream('''
            python 'import time';
            python_set $v 's.ctx.get("v")';
            server {
                listen 127.0.0.1:%(port2)s;
                python_access 'time.sleep(0.3) or s.ctx.update(v="access")';
                return "$v\\n";
            }
            server {
                listen 127.0.0.1:%(port3)s;
                python_preread 'time.sleep(0.1) or (ngx.AGAIN if b"\\\\n" not in s.buf else s.ctx.update(v=s.buf))';
                return "$v\\n";
            }
            server {
                listen 127.0.0.1:%(port4)s udp;
                python_access 'time.sleep(0.1) or s.ctx.update(v=s.buf)';
                return "$v";
            }
        ''')
        results = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, tcp(self.port2)))
                   for i in range(3)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertLess(time.monotonic() - t0, 0.85)   # the three slept at once
        self.assertEqual(list(results.values()), [b'access\n'] * 3)
        # s.buf stays what it was when the handler was called, across a wait
        self.assertEqual(tcp(self.port3, b'ab', b'c\nrest'), b'abc\nrest\n')
        self.assertEqual(udp(self.port4, b'dgram'), b'dgram')


class Config(StreamTestCase):

    def test_python_at_stream_and_server_level(self):
        self.start_stream('''
            python 'LEVEL = ["stream"]';
            server {
                listen 127.0.0.1:%(port2)s;
                python 'LEVEL.append("server")';
                return "$level\\n";
            }
            python_set $level '"+".join(LEVEL)';
            python_stack_size 256k;
        ''')
        self.assertEqual(tcp(self.port2), b'stream+server\n')

    def test_syntax_error_names_the_line(self):
        rc, out = self.nginx_t(stream='''
            server {
                listen 127.0.0.1:%(port)s;
                python_preread 's.buf ==';
                return "x";
            }
        ''')
        self.assertConfError(rc, out, "python_preread 's.buf =='", 'SyntaxError')

    def test_directive_contexts(self):
        for bad in ('python_set $x 1;', 'python_stack_size 64k;'):
            rc, out = self.nginx_t(stream='''
                server {
                    listen 127.0.0.1:%(port)s;
                    ''' + bad + '''
                    return "x";
                }
            ''')
            self.assertConfError(rc, out, bad, 'is not allowed here')


if __name__ == '__main__':
    harness.main()
