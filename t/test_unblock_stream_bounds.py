"""Unblock build, stream: bounds found by fuzzing the Python API.

- A python_preread handler that waited and then returns ngx.AGAIN runs
  again only when the client has sent more (it used to be re-run on the
  same bytes, forever, while the client waited).
- s.sock.recv(huge) returns what there is (it used to abort the worker
  allocating the requested size); negative sizes raise ValueError.
- s.sock.settimeout(huge) raises OverflowError as CPython's sockets do, and
  long timeouts wait (a timeout beyond nginx's timer range used to wrap
  into an immediate timeout).
"""

import socket
import time

import harness

READY = 'server { listen 127.0.0.1:%(port)s; return "up\\n"; }\n'

APP = r'''
import socket, time

CALLS = []

def wants_line(s):
    CALLS.append(len(s.buf))
    time.sleep(0.01)
    return None if s.buf.endswith(b'\n') else ngx.AGAIN

def report_calls(s):
    s.sock.sendall(('calls %s\n' % CALLS).encode())

def huge_recv(s):
    data = s.sock.recv(10 ** 11)
    try:
        s.sock.recv(-1)
    except ValueError as e:
        data += b' / ' + str(e).encode()
    s.sock.sendall(b'got ' + data + b'\n')

def huge_timeout(s):
    out = []
    try:
        s.sock.settimeout(1e17)
        out.append('accepted %r' % s.sock.gettimeout())
    except OverflowError as e:
        out.append('OverflowError')
    s.sock.settimeout(5e8)           # ~16 years: longer than any nginx timer
    try:
        out.append(repr(s.sock.recv(10)))
    except socket.timeout:
        out.append('timed out')
    s.sock.sendall((' '.join(out) + '\n').encode())
'''


class StreamBoundsTest(harness.NginxTestCase):

    def setUp(self):
        if not harness.unblock_build():
            self.skipTest('needs the unblock build (handlers that wait, s.sock I/O)')

    def start_stream(self, server):
        self.start(main='python_include app.py;', files={'app.py': APP},
                   stream=READY + 'server { listen 127.0.0.1:%(port2)s; ' + server + ' }\n')

    def exchange(self, *pieces, pause=0.0):
        c = socket.create_connection(('127.0.0.1', self.port2), timeout=5)
        try:
            for i, p in enumerate(pieces):
                if i:
                    time.sleep(pause)
                c.sendall(p)
            data = b''
            while not data.endswith(b'\n'):
                b = c.recv(1000)
                if not b:
                    break
                data += b
            return data.decode()
        finally:
            c.close()

    def test_preread_again_after_a_wait_runs_again_only_on_new_data(self):
        self.start_stream('python_preread "wants_line(s)"; python_content "report_calls(s)";')
        reply = self.exchange(b'abc', b'def\n', pause=0.5)
        calls = eval(reply[len('calls '):])
        # Called for b'abc' (possibly also once before any data arrived)
        # and for b'abcdef\n' — not again and again on b'abc'.
        self.assertEqual(calls[-1], 7, reply)
        self.assertLessEqual(calls.count(3), 1, reply)
        self.assertLessEqual(len(calls), 3, reply)

    def test_recv_of_a_huge_size_returns_what_there_is(self):
        self.start_stream('python_content "huge_recv(s)";')
        self.assertEqual(self.exchange(b'hello'), 'got hello / negative buffersize in recv\n')
        self.assertEqual(self.exchange(b'again'), 'got again / negative buffersize in recv\n')

    def test_huge_timeouts(self):
        self.start_stream('python_content "huge_timeout(s)";')
        t = time.monotonic()
        self.assertEqual(self.exchange(b'', b'late', pause=0.3), "OverflowError b'late'\n")
        self.assertGreaterEqual(time.monotonic() - t, 0.3)


if __name__ == '__main__':
    harness.main()
