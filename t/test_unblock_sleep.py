"""Unblock build: time.sleep() in python_access / python_content waits on
nginx's event loop (the single worker keeps serving meanwhile), keeps the
standard library's signature and errors, really blocks at configuration
time, and raises RuntimeError in python_set / python_log, which cannot wait.

Run: TEST_NGINX_BINARY=build/unblock/objs/nginx python3 t/test_unblock_sleep.py
Every test skips in the sync build.
"""

import os
import selectors
import socket
import threading
import time

import harness

SKIP_REASON = 'needs the unblock build (make module FEATURES=unblock; nginx -V has NGX_PYTHON_SYNC=0)'

APP = r'''
import time
from time import sleep as imported_sleep    # bound at config time: still cooperative

def nap(r):
    t = float(r.arg.get('t', '0.2'))
    t0 = time.monotonic()
    time.sleep(t)
    r.send('slept %.3f' % (time.monotonic() - t0), ngx.SEND_LAST)

def nap_imported(r):
    imported_sleep(float(r.arg.get('t', '0.2')))
    r.send('slept', ngx.SEND_LAST)

def nap_loop(r):
    # many short waits in one handler
    for i in range(20):
        time.sleep(0.01)
    r.send('looped', ngx.SEND_LAST)

def step(r, name, secs):
    time.sleep(secs)
    r.ctx.setdefault('order', []).append(name)

def show_order(r):
    r.ctx.setdefault('order', []).append('content')
    r.send(','.join(r.ctx['order']), ngx.SEND_LAST)

def deny_later(r):
    time.sleep(0.1)
    return 403

def allow_later(r):
    time.sleep(0.1)
    return ngx.OK

def after_sleep_request(r):
    # the request object, its ctx and variables are intact after waiting
    r.ctx['before'] = r.var['uri']
    time.sleep(0.05)
    r.ho['X-After'] = r.arg.get('x', '')
    r.status = 201
    r.send('%s %s %s' % (r.ctx['before'], r.var['request_method'], r.hi.get('X-Test')), ngx.SEND_LAST)

def edge_values(r):
    out = {}
    time.sleep(0)
    time.sleep(0.0001)
    time.sleep(1)                       # an int works as well
    for bad in (-1, -0.5, float('nan')):
        try:
            time.sleep(bad)
            out[repr(bad)] = 'no error'
        except ValueError as e:
            out[repr(bad)] = 'ValueError: %s' % e
    for bad in ('1', None, [1]):
        try:
            time.sleep(bad)
            out[repr(bad)] = 'no error'
        except TypeError:
            out[repr(bad)] = 'TypeError'
    try:
        time.sleep()
        out['noarg'] = 'no error'
    except TypeError:
        out['noarg'] = 'TypeError'
    r.send(repr(out), ngx.SEND_LAST)

def raise_after_sleep(r):
    time.sleep(0.05)
    raise ValueError('raised after sleeping')

def raise_in_access_after_sleep(r):
    time.sleep(0.05)
    raise KeyError('access raised after sleeping')

def set_sleeps(r):
    time.sleep(0.01)
    return 'never'

def log_sleeps(r):
    time.sleep(0.01)

def log_time(r):
    r.log('request_time=%s uri=%s' % (r.var['request_time'], r.var['uri']))

def read_sleeping_set_then_sleep(r):
    # python_set evaluated from inside a content handler cannot wait either;
    # afterwards the content handler can wait again.
    try:
        v = r.var['sleepy']
    except KeyError:
        v = 'KeyError'
    time.sleep(0.05)
    r.send('set=[%s] then slept' % v, ngx.SEND_LAST)

import contextvars, sys, threading
CV = contextvars.ContextVar('cv', default=None)
LOCAL = threading.local()

def isolation(r):
    # per-handler Python state survives waits while others run in between
    me = r.arg['id']
    CV.set(me)
    LOCAL.me = me
    try:
        raise KeyError(me)
    except KeyError:
        time.sleep(float(r.arg['t']))
        exc = sys.exc_info()[1].args[0]
    time.sleep(0.01)
    r.send('%s %s %s' % (CV.get(), getattr(LOCAL, 'me', None), exc), ngx.SEND_LAST)

def fresh(r):
    # a new handler sees nothing left by earlier ones
    time.sleep(0.01)
    r.send('%s %s %s' % (CV.get(), getattr(LOCAL, 'me', None), sys.exc_info()[0]), ngx.SEND_LAST)

def extensions(r):
    # C extensions calling PyGILState_Ensure inside a handler that waited
    import ctypes, sqlite3, _ngx_unblock
    time.sleep(0.01)
    db = sqlite3.connect(':memory:')
    db.create_function('twice', 1, lambda x: x * 2)
    v = db.execute('select twice(21)').fetchone()[0]
    time.sleep(0.01)
    cmp = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))(
        lambda a, b: a[0] - b[0])
    arr = (ctypes.c_int * 5)(5, 1, 4, 2, 3)
    ctypes.CDLL(None).qsort(arr, 5, ctypes.sizeof(ctypes.c_int), cmp)
    r.send(repr((v, list(arr), _ngx_unblock.gilstate_supported())), ngx.SEND_LAST)

def sleep_in_callback(r):
    # the wait happens inside a C callback (sqlite3 -> Python): the whole C
    # stack of the handler is suspended and resumed
    import sqlite3
    db = sqlite3.connect(':memory:')
    db.create_function('slow_twice', 1, lambda x: (time.sleep(0.5), x * 2)[1])
    t0 = time.monotonic()
    v = db.execute('select slow_twice(4)').fetchone()[0]
    r.send('%d %.3f' % (v, time.monotonic() - t0), ngx.SEND_LAST)

CONFIG_SLEPT = None

def late_sleep(r):
    # A sleep started late in a long event-loop turn (nginx's cached clock
    # is then behind) must still last its full time.
    end = time.monotonic() + 0.03
    while time.monotonic() < end:
        pass
    t0 = time.monotonic()
    time.sleep(0.05)
    r.send('%.6f' % (time.monotonic() - t0), ngx.SEND_LAST)
'''

SERVER = '''
log_format timing '$uri $status $request_time';
python_include app.py;
python_set $sleepy "set_sleeps(r)";
server {
    listen 127.0.0.1:%(port)s backlog=4096;
    access_log logs/timing.log timing;

    location /fast      { return 200 "fast"; }
    location /sleep     { python_content "nap(r)"; }
    location /imported  { python_content "nap_imported(r)"; }
    location /loop      { python_content "nap_loop(r)"; }
    location /timed     { python_content "nap(r)"; python_log "log_time(r)"; }
    location /access-sleep {
        python_access "step(r, 'access', float(r.arg.get('t', '0.2')))";
        python_log "log_time(r)";
        python_content "r.send('after access', ngx.SEND_LAST)";
    }
    location /order {
        python_access "step(r, 'a1', 0.1)";
        python_access "step(r, 'a2', 0.05)";
        python_access "step(r, 'a3', 0)";
        python_content "step(r, 'c', 0.1) or show_order(r)";
    }
    location /deny      { python_access "deny_later(r)"; python_content "r.send('content ran', ngx.SEND_LAST)"; }
    location /any {
        satisfy any;
        deny all;
        python_access "allow_later(r)";
        python_content "r.send('granted after sleeping', ngx.SEND_LAST)";
    }
    location /all {
        satisfy all;
        deny all;
        python_access "allow_later(r)";
        python_content "r.send('not reached', ngx.SEND_LAST)";
    }
    location /request   { python_content "after_sleep_request(r)"; }
    location /edge      { python_content "edge_values(r)"; }
    location /raise     { python_content "raise_after_sleep(r)"; }
    location /raise-access {
        python_access "raise_in_access_after_sleep(r)";
        python_content "r.send('not reached', ngx.SEND_LAST)";
    }
    location /set       { return 200 "[$sleepy]"; }
    location /set-in-content { python_content "read_sleeping_set_then_sleep(r)"; }
    location /log       { python_log "log_sleeps(r)"; return 200 "logged"; }
    location /isolation { python_content "isolation(r)"; }
    location /fresh     { python_content "fresh(r)"; }
    location /ext       { python_content "extensions(r)"; }
    location /sleep-in-callback { python_content "sleep_in_callback(r)"; }
    location /late-sleep { python_content "late_sleep(r)"; }
    location /proxied {
        proxy_pass http://127.0.0.1:%(port)s/sleep?t=2;
        proxy_read_timeout 100ms;
    }
}
'''


def proc_cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open('/proc/%d/stat' % pid) as f:
        stat = f.read()
    fields = stat[stat.rfind(')') + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def fetch_many(port, path, n, timeout):
    """n concurrent HTTP/1.0 GETs (the server closes after each: no chunked
    bodies) over non-blocking sockets; returns (raw responses, seconds)."""
    sel = selectors.DefaultSelector()
    request = ('GET %s HTTP/1.0\r\nHost: t\r\n\r\n' % path).encode()
    t0 = time.monotonic()
    deadline = t0 + timeout
    responses = []
    pending = 0
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(('127.0.0.1', port))
            sel.register(s, selectors.EVENT_WRITE, {'out': request, 'in': []})
            pending += 1
        while pending and time.monotonic() < deadline:
            for key, mask in sel.select(timeout=0.5):
                s, st = key.fileobj, key.data
                if mask & selectors.EVENT_WRITE:
                    try:
                        sent = s.send(st['out'])
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as e:
                        responses.append(('send error %s' % e).encode())
                        sel.unregister(s)
                        s.close()
                        pending -= 1
                        continue
                    st['out'] = st['out'][sent:]
                    if not st['out']:
                        sel.modify(s, selectors.EVENT_READ, st)
                    continue
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b''
                if data:
                    st['in'].append(data)
                else:
                    responses.append(b''.join(st['in']))
                    sel.unregister(s)
                    s.close()
                    pending -= 1
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    return responses, time.monotonic() - t0


class UnblockSleepTest(harness.NginxTestCase):

    def setUp(self):
        if not harness.unblock_build():
            self.skipTest(SKIP_REASON)

    def start_app(self, events='worker_connections 4096;', main=''):
        self.start(http=SERVER, files={'app.py': APP}, events=events, main=main)

    def timing_log(self, uri, timeout=5.0):
        """request_time of the first access-log line for uri (waits for it)."""
        deadline = time.monotonic() + timeout
        path = self.prefix + 'logs/timing.log'
        while True:
            try:
                with open(path) as f:
                    for line in f:
                        parts = line.split()
                        if parts and parts[0] == uri:
                            return int(parts[1]), float(parts[2])
            except OSError:
                pass
            self.assertLess(time.monotonic(), deadline, 'no access-log line for %s' % uri)
            time.sleep(0.02)

    # -- time.sleep waits, and nginx measures the wait --------------------------

    def test_sleep_in_content_request_time(self):
        self.start_app()
        t0 = time.monotonic()
        body = self.get_body('/sleep?t=0.2')
        took = time.monotonic() - t0
        self.assertTrue(body.startswith('slept '), body)
        self.assertGreaterEqual(float(body.split()[1]), 0.19)
        self.assertGreaterEqual(took, 0.19)
        status, request_time = self.timing_log('/sleep')
        self.assertEqual(status, 200)
        self.assertGreaterEqual(request_time, 0.19)
        self.assertLess(request_time, 5)

    def test_sleep_in_content_request_time_via_python_log(self):
        self.start_app()
        self.assertTrue(self.get_body('/timed?t=0.3').startswith('slept'))
        m = self.wait_log(r'request_time=(\d+\.\d+) uri=/timed')
        self.assertGreaterEqual(float(m.group(1)), 0.29)

    def test_sleep_in_access_request_time(self):
        self.start_app()
        self.assertEqual(self.get_body('/access-sleep?t=0.2'), 'after access')
        status, request_time = self.timing_log('/access-sleep')
        self.assertEqual(status, 200)
        self.assertGreaterEqual(request_time, 0.19)
        m = self.wait_log(r'request_time=(\d+\.\d+) uri=/access-sleep')
        self.assertGreaterEqual(float(m.group(1)), 0.19)

    def test_sleep_bound_at_config_time_is_cooperative(self):
        # `from time import sleep` in an include happens after the module
        # replaced time.sleep: 20 concurrent 0.5 s naps take about one nap.
        self.start_app()
        responses, took = fetch_many(self.port, '/imported?t=0.5', 20, timeout=30)
        self.assertEqual(len(responses), 20)
        for resp in responses:
            self.assertTrue(resp.startswith(b'HTTP/1.1 200'), resp[:60])
        self.assertGreaterEqual(took, 0.49)
        self.assertLess(took, 5, 'serialized naps would take 10 s')

    def test_many_short_sleeps_in_one_handler(self):
        self.start_app()
        t0 = time.monotonic()
        self.assertEqual(self.get_body('/loop'), 'looped')
        self.assertGreaterEqual(time.monotonic() - t0, 0.19)

    # -- the worker is not blocked ------------------------------------------------

    def test_other_requests_served_while_one_sleeps(self):
        self.start_app()
        s = socket.create_connection(('127.0.0.1', self.port), timeout=10)
        try:
            t_sleep = time.monotonic()
            s.sendall(b'GET /sleep?t=3 HTTP/1.0\r\n\r\n')
            time.sleep(0.2)                          # the handler is asleep now
            t0 = time.monotonic()
            self.assertEqual(self.get_body('/fast'), 'fast')
            self.assertEqual(self.get_body('/sleep?t=0.01').split()[0], 'slept')
            took = time.monotonic() - t0
            self.assertLess(took, 1.5, 'the worker was blocked by the sleeping handler')
            data = b''
            while True:
                b = s.recv(4096)
                if not b:
                    break
                data += b
            self.assertTrue(data.startswith(b'HTTP/1.1 200'), data[:60])
            self.assertGreaterEqual(time.monotonic() - t_sleep, 2.9)
        finally:
            s.close()

    def test_proxy_timeout_fires_while_the_same_worker_sleeps(self):
        # One worker runs both the proxy and the sleeping backend: the
        # proxy's 100 ms read timeout fires on time only if the backend's
        # sleep does not block the worker.
        self.start_app()
        t0 = time.monotonic()
        status, _, _ = self.get('/proxied')
        took = time.monotonic() - t0
        self.assertEqual(status, 504)
        self.assertLess(took, 1.5, 'a blocking backend would answer after 2 s')
        self.assertIn('upstream timed out', self.error_log())

    def test_sleeping_worker_does_not_spin(self):
        self.start_app()
        worker = sorted(self.worker_pids())[0]
        self.assertEqual(self.get_body('/fast'), 'fast')   # warm up
        before = proc_cpu_seconds(worker)
        self.assertTrue(self.get_body('/sleep?t=2').startswith('slept'))
        used = proc_cpu_seconds(worker) - before
        self.assertLess(used, 1.0, 'the worker used %.2f s of CPU during a 2 s sleep' % used)

    def test_thousand_concurrent_sleeps_take_about_one_sleep(self):
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = 2600
        if soft < need:
            if hard != resource.RLIM_INFINITY and hard < need:
                self.skipTest('needs %d open files (hard limit %d)' % (need, hard))
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        self.start_app(events='worker_connections 4096;', main='worker_rlimit_nofile 4096;')
        n = 1000
        responses, took = fetch_many(self.port, '/sleep?t=0.5', n, timeout=60)
        self.assertEqual(len(responses), n, 'only %d of %d answered in 60 s' % (len(responses), n))
        bad = [r[:80] for r in responses if not r.startswith(b'HTTP/1.1 200')]
        self.assertEqual(bad, [])
        # Each handler slept its 0.5 s ...
        slept = [float(r.rsplit(b'slept ', 1)[1]) for r in responses]
        self.assertGreaterEqual(min(slept), 0.49)
        # ... and all at once: serialized they would take 500 s.
        self.assertLess(took, 8, '1000 concurrent 0.5 s sleeps took %.1f s' % took)
        # nobody slept much longer than asked (timers are not starved)
        self.assertLess(max(slept), 6)
        self.assertEqual(self.get_body('/fast'), 'fast')

    # -- access phase ---------------------------------------------------------

    def test_access_handlers_run_in_order_across_sleeps(self):
        self.start_app()
        t0 = time.monotonic()
        self.assertEqual(self.get_body('/order'), 'a1,a2,a3,c,content')
        self.assertGreaterEqual(time.monotonic() - t0, 0.24)

    def test_access_status_after_sleep(self):
        self.start_app()
        status, _, body = self.get('/deny')
        self.assertEqual(status, 403)
        self.assertNotIn(b'content ran', body)

    def test_access_ok_after_sleep_grants_under_satisfy_any(self):
        self.start_app()
        self.assertEqual(self.get_body('/any'), 'granted after sleeping')
        # under satisfy all, `deny all` still refuses
        self.assertEqual(self.get('/all')[0], 403)

    def test_request_object_intact_after_sleep(self):
        self.start_app()
        status, headers, body = self.get('/request?x=42', headers={'X-Test': 'hello'})
        self.assertEqual(status, 201)
        self.assertEqual(headers['X-After'], '42')
        self.assertEqual(body, b'/request GET hello')

    # -- per-handler state and C extensions -----------------------------------

    def test_per_handler_python_state_across_waits(self):
        # contextvars, threading.local and the handled exception belong to
        # each handler, though 30 of them interleave on one thread.
        self.start_app()
        import threading
        results = {}

        def one(i):
            results[i] = self.get_body('/isolation?id=h%d&t=%.2f' % (i, 0.05 + (i % 5) * 0.05))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(results, {i: 'h%d h%d h%d' % (i, i, i) for i in range(30)})
        self.assertEqual(self.get_body('/fresh'), 'None None None')

    def test_c_extensions_calling_pygilstate_ensure_after_a_wait(self):
        self.start_app()
        self.assertEqual(self.get_body('/ext'), '(42, [1, 2, 3, 4, 5], True)')
        self.assertEqual(self.get_body('/ext'), '(42, [1, 2, 3, 4, 5], True)')

    def test_sleep_inside_a_c_callback(self):
        self.start_app()
        responses, took = fetch_many(self.port, '/sleep-in-callback', 10, timeout=30)
        self.assertEqual(len(responses), 10)
        for resp in responses:
            self.assertTrue(resp.startswith(b'HTTP/1.1 200'), resp[:200])
            value, waited = resp.rsplit(b'\r\n\r\n', 1)[1].split()
            self.assertEqual(value, b'8')
            self.assertGreaterEqual(float(waited), 0.49)
        self.assertLess(took, 3, 'serialized they would take 5 s')
        self.assertEqual(self.get_body('/fast'), 'fast')

    def test_sleep_never_ends_early(self):
        # Other events (here: requests on another connection) make nginx
        # update its clock before the sleep's timer is due; a timer of
        # exactly the sleep's length, counted from the stale clock, fired
        # early then.
        self.start_app()
        stop = threading.Event()

        def other_events():
            while not stop.is_set():
                self.get('/fast')
                time.sleep(0.003)
        t = threading.Thread(target=other_events)
        t.start()
        try:
            for _ in range(3):
                self.assertGreaterEqual(float(self.get_body('/late-sleep')), 0.05)
        finally:
            stop.set()
            t.join()

    # -- signature and errors like the standard library's ---------------------

    def test_sleep_arguments_like_the_standard_library(self):
        self.start_app()
        out = eval(self.get_body('/edge'))
        self.assertEqual(out['-1'], 'ValueError: sleep length must be non-negative')
        self.assertEqual(out['-0.5'], 'ValueError: sleep length must be non-negative')
        self.assertTrue(out['nan'].startswith('ValueError'), out['nan'])
        self.assertEqual(out["'1'"], 'TypeError')
        self.assertEqual(out['None'], 'TypeError')
        self.assertEqual(out['[1]'], 'TypeError')
        self.assertEqual(out['noarg'], 'TypeError')

    def test_exception_after_sleeping_is_a_500_with_traceback(self):
        self.start_app()
        self.assertEqual(self.get('/raise')[0], 500)
        entry = self.log_entries('error')[-1]
        self.assertIn('python_content', entry)
        self.assertIn('Traceback (most recent call last)', entry)
        self.assertIn('ValueError: raised after sleeping', entry)
        self.assertEqual(self.get('/raise-access')[0], 500)
        entry = self.log_entries('error')[-1]
        self.assertIn('python_access', entry)
        self.assertIn("KeyError: 'access raised after sleeping'", entry)
        self.assertEqual(self.get_body('/fast'), 'fast')

    # -- where waiting is impossible or real ------------------------------------

    def test_sleep_in_python_set_raises_runtime_error(self):
        self.start_app()
        t0 = time.monotonic()
        self.assertEqual(self.get_body('/set'), '[]')
        self.assertLess(time.monotonic() - t0, 5)
        entry = [e for e in self.log_entries('error') if 'set_sleeps' in e]
        self.assertTrue(entry, self.error_log())
        self.assertIn('Traceback (most recent call last)', entry[-1])
        self.assertIn('RuntimeError: time.sleep() would block the nginx worker', entry[-1])

    def test_sleep_in_python_log_raises_runtime_error(self):
        self.start_app()
        self.assertEqual(self.get_body('/log'), 'logged')
        m = self.wait_log(r'python_log: Traceback[^\n]*(\n[^\n]*)*?\nRuntimeError: time\.sleep\(\) would block')
        self.assertIn('log_sleeps', m.group(0))
        self.assertEqual(self.get_body('/fast'), 'fast')

    def test_python_set_read_inside_content_then_content_sleeps(self):
        self.start_app()
        self.assertEqual(self.get_body('/set-in-content'), 'set=[KeyError] then slept')
        self.assertIn('RuntimeError: time.sleep() would block', self.error_log())

    def test_sleep_at_config_time_really_sleeps(self):
        files = {'app.py': APP, 'config_sleep.py': r'''
import time
t0 = time.monotonic()
time.sleep(0.2)
CONFIG_SLEPT = time.monotonic() - t0
'''}
        self.start(http='''
            python "import time; time.sleep(0.05)";
            python_include config_sleep.py;
            server {
                listen 127.0.0.1:%(port)s;
                location / { python_content "r.send('%.3f' % CONFIG_SLEPT, ngx.SEND_LAST)"; }
            }
            ''', files=files)
        self.assertGreaterEqual(float(self.get_body('/')), 0.19)

    def test_sleep_at_config_time_with_nginx_t(self):
        rc, out = self.nginx_t(http='python "import time; time.sleep(0.05)";')
        self.assertEqual(rc, 0, out)
        self.assertIn('test is successful', out)


if __name__ == '__main__':
    harness.main()
