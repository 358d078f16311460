"""Unblock build: select.select, select.poll, select.epoll, the selectors
classes and ngx.wait_fd wait on nginx's event loop inside handlers (other
requests are served meanwhile; a zero timeout never waits; several fds at
once; timeouts never early by time.monotonic); at configuration time and in
python_set they keep their blocking behaviour, without RuntimeError.

Each handler waits for a reply from /nap of the same nginx (one worker): a
wait that blocked the worker could never see it, and `/` is timed while the
waits are pending.

Run: TEST_NGINX_BINARY=build/unblock/objs/nginx python3 t test_unblock_select
"""

import socket
import threading
import time

import harness

APP = r'''
import select, selectors, socket, time

PORT = %(port)s
SILENT = SILENT_PORT

def nap(r):
    time.sleep(float(r.arg.get('t', '0')))
    r.send('napped', ngx.SEND_LAST)

def ask(t):
    """A socket whose reply (from /nap) comes after `t` seconds."""
    s = socket.create_connection(('127.0.0.1', PORT))
    s.sendall(('GET /nap?t=%s HTTP/1.0\r\n\r\n' % t).encode())
    return s

def silent():
    return socket.create_connection(('127.0.0.1', SILENT))

def by_select(a, b, timeout):
    return select.select([a, b.fileno()], [], [], timeout)[0]

def by_poll(a, b, timeout):
    p = select.poll()
    p.register(a, select.POLLIN)
    p.register(b.fileno(), select.POLLIN | select.POLLPRI)
    fds = {a.fileno(): a, b.fileno(): b}
    return [fds[fd] for fd, ev in p.poll(None if timeout is None else timeout * 1000)]

def by_epoll(a, b, timeout):
    with select.epoll() as e:
        e.register(a.fileno(), select.EPOLLIN)
        e.register(b, select.EPOLLIN)
        fds = {a.fileno(): a, b.fileno(): b}
        return [fds[fd] for fd, ev in e.poll(-1 if timeout is None else timeout)]

def selector(cls):
    def by_selector(a, b, timeout):
        with getattr(selectors, cls)() as sel:
            sel.register(a, selectors.EVENT_READ)
            sel.register(b, selectors.EVENT_READ)
            return [k.fileobj for k, ev in sel.select(timeout)]
    return by_selector

def by_wait_fd(a, b, timeout):
    # one fd: the faster one
    return [a] if ngx.wait_fd(a, timeout=timeout) else []

WAYS = {'select': by_select, 'poll': by_poll, 'epoll': by_epoll, 'wait_fd': by_wait_fd,
        'DefaultSelector': selector('DefaultSelector'), 'SelectSelector': selector('SelectSelector'),
        'PollSelector': selector('PollSelector'), 'EpollSelector': selector('EpollSelector')}

def wait(r):
    """Two fds: one answers after t seconds, the other never; which is ready."""
    way = WAYS[r.arg['way']]
    t = r.arg.get('t', '0.3')
    timeout = float(r.arg['timeout']) if 'timeout' in r.arg else None
    a, b = ask(t), silent()
    t0 = time.monotonic()
    ready = way(a, b, timeout)
    took = time.monotonic() - t0
    names = sorted('answer' if x is a else 'silent' for x in ready)
    a.close(); b.close()
    r.send('%s %.3f' % (','.join(names) or 'none', took), ngx.SEND_LAST)

def zero(r):
    """A zero timeout on a silent fd returns at once, never waits."""
    way = WAYS[r.arg['way']]
    a, b = silent(), silent()
    t0 = time.monotonic()
    for _ in range(20):
        ready = way(a, b, 0)
    took = time.monotonic() - t0
    a.close(); b.close()
    r.send('%d %.3f' % (len(ready), took), ngx.SEND_LAST)

def writable(r):
    s = ask('0')
    w = select.select([], [s], [], 1)[1]
    p = select.poll(); p.register(s, select.POLLOUT)
    r.send('%d %d %s' % (len(w), len(p.poll(1000)), ngx.wait_fd(s, write=True, timeout=1)), ngx.SEND_LAST)
    s.close()

def busy_then(r):
    """The worker is busy for a while (nginx's cached clock lags), then a
    timed wait: it must not end before its timeout by time.monotonic."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.2:
        pass
    what = r.arg['what']
    t0 = time.monotonic()
    if what == 'sleep':
        time.sleep(0.3)
    elif what == 'recv':
        s = silent(); s.settimeout(0.3)
        try:
            s.recv(1)
        except socket.timeout:
            pass
        s.close()
    elif what == 'select':
        s = silent(); select.select([s], [], [], 0.3); s.close()
    elif what == 'wait_fd':
        s = silent(); ngx.wait_fd(s, timeout=0.3); s.close()
    r.send('%.4f' % (time.monotonic() - t0), ngx.SEND_LAST)

def set_select(r):
    """python_set: select blocks as it always did (nothing else could run)."""
    a, b = socket.socketpair()
    b.send(b'x')
    t0 = time.monotonic()
    got = select.select([a], [], [], 0.05)[0]
    empty = select.select([b], [], [], 0.05)[0]
    p = select.poll(); p.register(b, select.POLLIN)
    return '%d %d %d %s' % (len(got), len(empty), len(p.poll(50)), time.monotonic() - t0 >= 0.1)

# configuration time: the originals
_a, _b = socket.socketpair()
_b.send(b'x')
AT_CONFIG = (len(select.select([_a], [], [], 0)[0]), len(select.poll().poll(0)),
             len(selectors.DefaultSelector().select(0)), ngx.wait_fd(_a, timeout=0))
_a.close(); _b.close()

def config(r):
    r.send(repr(AT_CONFIG), ngx.SEND_LAST)
'''

SERVER = r'''
location = /nap { python_content "nap(r)"; }
location = /wait { python_content "wait(r)"; }
location = /zero { python_content "zero(r)"; }
location = /writable { python_content "writable(r)"; }
location = /busy_then { python_content "busy_then(r)"; }
location = /config { python_content "config(r)"; }
location = /set { return 200 $v; }
location = / { return 200 "root"; }
'''

WAYS = ['select', 'poll', 'epoll', 'wait_fd', 'DefaultSelector', 'SelectSelector',
        'PollSelector', 'EpollSelector']


class SelectTest(harness.NginxTestCase):

    def setUp(self):
        if not harness.unblock_build():
            self.skipTest('needs the unblock build (make module FEATURES=unblock)')
        self.silent = socket.socket()
        self.silent.bind(('127.0.0.1', 0))
        self.silent.listen(64)
        self.addCleanup(self.silent.close)
        self.start_server(SERVER, http='python_include app.py;\npython_set $v "set_select(r)";\n', files={
            'app.py': APP.replace('SILENT_PORT', str(self.silent.getsockname()[1]))})

    def test_each_api_waits_cooperatively(self):
        for way in WAYS:
            with self.subTest(way=way):
                out = {}
                th = threading.Thread(target=lambda: out.update(r=self.get_body('/wait?way=%s&t=0.5' % way)))
                th.start()
                time.sleep(0.15)
                t0 = time.monotonic()
                self.assertEqual(self.get_body('/'), 'root')
                self.assertLess(time.monotonic() - t0, 0.1)
                th.join()
                names, took = out['r'].split()
                self.assertEqual(names, 'answer')
                self.assertGreaterEqual(float(took), 0.45)
                self.assertLess(float(took), 2.0)

    def test_concurrent_waits_finish_together(self):
        for way in ('select', 'DefaultSelector'):
            with self.subTest(way=way):
                res = []
                threads = [threading.Thread(target=lambda: res.append(self.get_body('/wait?way=%s&t=0.5' % way)))
                           for _ in range(8)]
                t0 = time.monotonic()
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                self.assertLess(time.monotonic() - t0, 1.5)       # not 8 x 0.5 s
                self.assertEqual([r.split()[0] for r in res], ['answer'] * 8)

    def test_timeout(self):
        for way in WAYS:
            with self.subTest(way=way):
                names, took = self.get_body('/wait?way=%s&t=5&timeout=0.3' % way).split()
                self.assertEqual(names, 'none')
                self.assertGreaterEqual(float(took), 0.3)
                self.assertLess(float(took), 1.5)

    def test_zero_timeout_never_waits(self):
        for way in WAYS:
            with self.subTest(way=way):
                n, took = self.get_body('/zero?way=%s' % way).split()
                self.assertEqual(n, '0')
                self.assertLess(float(took), 0.1)

    def test_writable(self):
        self.assertEqual(self.get_body('/writable'), '1 1 True')

    def test_timeouts_never_early_by_the_monotonic_clock(self):
        for what in ('sleep', 'recv', 'select', 'wait_fd'):
            with self.subTest(what=what):
                for _ in range(3):
                    took = float(self.get_body('/busy_then?what=%s' % what))
                    self.assertGreaterEqual(took, 0.3)
                    self.assertLess(took, 1.0)

    def test_python_set_blocks_as_before(self):
        self.assertEqual(self.get_body('/set'), '1 0 0 True')
        self.assertNotIn('RuntimeError', self.error_log())

    def test_config_time_originals(self):
        self.assertEqual(self.get_body('/config'), '(1, 0, 0, True)')



class WaitFdBothBuildsTest(harness.NginxTestCase):
    """ngx.wait_fd exists in both builds (the sync one blocks like poll)."""

    def test_wait_fd_contract(self):
        app = (
            "import socket, time\n"
            "def h(r):\n"
            "    a, b = socket.socketpair()\n"
            "    out = [ngx.wait_fd(a, timeout=0.05)]\n"
            "    t0 = time.monotonic(); out.append(ngx.wait_fd(a.fileno(), timeout=0.1))\n"
            "    out.append(time.monotonic() - t0 >= 0.1)\n"
            "    b.send(b'x'); out.append(ngx.wait_fd(a))\n"
            "    out.append(ngx.wait_fd(b, write=True, timeout=0))\n"
            "    b.close(); a.recv(1); out.append(ngx.wait_fd(a, timeout=1))\n"
            "    try:\n"
            "        ngx.wait_fd(-1)\n"
            "    except ValueError:\n"
            "        out.append('ValueError')\n"
            "    a.close()\n"
            "    r.send(repr(out), ngx.SEND_LAST)\n")
        self.start_server('location / { python_content "h(r)"; }',
                          http='python_include app.py;\n', files={'app.py': app})
        # empty: False twice (the second not before its timeout); readable;
        # writable; the peer closed (EOF counts as readable); bad fd
        self.assertEqual(self.get_body('/'), "[False, False, True, True, True, True, 'ValueError']")


if __name__ == '__main__':
    harness.main()
