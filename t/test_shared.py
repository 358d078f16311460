"""python_shared_dict, python_init_worker, ngx.timer / ngx.every."""

import json
import os
import signal
import socket
import threading
import time

import harness
from harness import unblock_only

APP = r'''
import json, os, time
import ngx

def api(r):
    d = ngx.shared['d']
    out = {}
    out['set'] = d.set('a', 'x')
    out['get'] = d.get('a')
    out['missing'] = d.get('nope', 'dflt')
    out['add_present'] = d.add('a', 'y')
    out['add_absent'] = d.add('b', b'\x00\xff')
    out['bytes'] = repr(d['b'])
    out['replace_absent'] = d.replace('zz', 1)
    out['replace_present'] = d.replace('a', 2.5)
    out['float'] = d['a']
    d['n'] = 7
    out['incr'] = d.incr('n', 3)
    out['incr_float'] = d.incr('n', 0.5)
    try:
        d.incr('absent')
    except KeyError:
        out['incr_keyerror'] = True
    out['incr_init'] = d.incr('c', 2, init=10)
    d['t'] = True
    out['bool'] = d['t']
    out['in'] = ('a' in d, 'zz' in d)
    for bad in (None, [1], {}):
        try:
            d.set('k', bad)
        except TypeError:
            out.setdefault('typeerrors', 0)
            out['typeerrors'] += 1
    try:
        d.set(5, 'v')
    except TypeError:
        out['keytype'] = True
    try:
        d.incr('b')
    except TypeError:
        out['not_number'] = True
    out['ttl_none'] = d.ttl('a')
    d.set('e', 'v', ttl=30)
    out['ttl_30'] = 29 < d.ttl('e') <= 30
    out['expire'] = d.expire('e', 0), d.ttl('e')
    out['delete'] = d.delete('e'), d.delete('e')
    out['keys'] = sorted(d.keys())
    out['len'] = len(d)
    out['capacity'] = d.capacity()
    out['free'] = 0 < d.free_space() < d.capacity()
    out['names'] = list(ngx.shared), 'd' in ngx.shared, 'x' in ngx.shared
    d.flush_all()
    out['flushed'] = len(d), d.keys()
    r.send(json.dumps(out), ngx.SEND_LAST)

def count(r):
    n = ngx.shared['d'].incr('hits', 1, init=0)
    r.send('%d %d' % (n, os.getpid()), ngx.SEND_LAST)

def show(r):
    v = ngx.shared['d'].get(r.arg['k'])
    r.send(repr(v), ngx.SEND_LAST)

def put(r):
    ttl = float(r.arg['ttl']) if 'ttl' in r.arg else None
    forced = ngx.shared[r.arg.get('z', 'd')].set(r.arg['k'], r.arg['v'], ttl=ttl)
    r.send(repr(forced), ngx.SEND_LAST)
'''


class SharedDict(harness.NginxTestCase):

    def test_api(self):
        self.start_server('''
            location / { python_content "app.api(r)"; }
        ''', http='''
            python_shared_dict d 1m;
            python "import app";
        ''', files={'app.py': APP})
        status, _, body = self.get('/')
        self.assertEqual(status, 200, self.error_log())
        out = json.loads(body)
        self.assertEqual(out['set'], False)
        self.assertEqual(out['get'], 'x')
        self.assertEqual(out['missing'], 'dflt')
        self.assertEqual((out['add_present'], out['add_absent']), (False, True))
        self.assertEqual(out['bytes'], repr(b'\x00\xff'))
        self.assertEqual((out['replace_absent'], out['replace_present']), (False, True))
        self.assertEqual(out['float'], 2.5)
        self.assertEqual(out['incr'], 10)
        self.assertEqual(out['incr_float'], 10.5)
        self.assertTrue(out['incr_keyerror'])
        self.assertEqual(out['incr_init'], 12)
        self.assertIs(out['bool'], True)
        self.assertEqual(out['in'], [True, False])
        self.assertEqual(out['typeerrors'], 3)
        self.assertTrue(out['keytype'])
        self.assertTrue(out['not_number'])
        self.assertIsNone(out['ttl_none'])
        self.assertTrue(out['ttl_30'])
        self.assertEqual(out['expire'], [True, None])
        self.assertEqual(out['delete'], [True, False])
        self.assertEqual(out['keys'], ['a', 'b', 'c', 'n', 't'])
        self.assertEqual(out['len'], 5)
        self.assertEqual(out['capacity'], 1024 * 1024)
        self.assertTrue(out['free'])
        self.assertEqual(out['names'], [['d'], True, False])
        self.assertEqual(out['flushed'], [0, []])

    def test_counter_across_four_workers(self):
        """Concurrent increments from every worker add up exactly."""
        self.start_server('''
            location / { python_content "app.count(r)"; }
        ''', http='python_shared_dict d 1m; python "import app";',
            main='worker_processes 4;', files={'app.py': APP})
        pids, results, errors = set(), [], []

        def client():
            try:
                for _ in range(50):
                    # a new connection each time: spread over the workers
                    body = self.get_body('/', headers={'Connection': 'close'})
                    n, pid = body.split()
                    results.append(int(n))
                    pids.add(pid)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(sorted(results), list(range(1, 401)))
        self.assertGreater(len(pids), 1, 'one worker served everything')

    def test_ttl_and_eviction(self):
        self.start_server('''
            location /put { python_content "app.put(r)"; }
            location /show { python_content "app.show(r)"; }
        ''', http='python_shared_dict d 1m; python_shared_dict small 32k; python "import app";',
            files={'app.py': APP})
        self.assertEqual(self.get_body('/put?k=t&v=1&ttl=0.3'), 'False')
        self.assertEqual(self.get_body('/show?k=t'), "'1'")
        time.sleep(0.5)
        self.assertEqual(self.get_body('/show?k=t'), 'None')
        # fill the small zone: some set() must evict (returns True)
        value = 'v' * 1000
        forced = [self.get_body('/put?z=small&k=k%d&v=%s' % (i, value)) for i in range(100)]
        self.assertIn('True', forced)
        self.assertEqual(forced[0], 'False')

    def test_values_survive_reload_and_http_stream_share(self):
        self.start_server('''
            location /put { python_content "app.put(r)"; }
            location /show { python_content "app.show(r)"; }
        ''', http='python_shared_dict d 1m; python "import app";',
            stream='''
            python_shared_dict d 1m;
            python_set $kept "ngx.shared['d'].get('k')";
            server {
                listen 127.0.0.1:%(port2)s;
                return "stream:$kept";
            }
            ''', files={'app.py': APP}, wait_ports=['port', 'port2'])
        self.get_body('/put?k=k&v=kept')
        self.reload()
        self.assertEqual(self.get_body('/show?k=k'), "'kept'")
        with socket.create_connection(('127.0.0.1', self.port2), timeout=5) as c:
            self.assertEqual(c.recv(100), b'stream:kept')

    def test_killed_worker_never_wedges_the_zone(self):
        """Workers killed (SIGKILL) in the middle of increments, perhaps
        holding the zone's lock: the master unlocks it, the others go on."""
        self.allow_log = r'exited on signal 9'
        self.start_server('''
            location / { python_content "app.count(r)"; }
        ''', http='python_shared_dict d 1m; python "import app";',
            main='worker_processes 4;', files={'app.py': APP})
        stop = threading.Event()

        def load():
            while not stop.is_set():
                try:
                    self.get('/', headers={'Connection': 'close'}, timeout=2)
                except OSError:
                    pass

        threads = [threading.Thread(target=load) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            for _ in range(6):
                time.sleep(0.15)
                victim = sorted(self.worker_pids())[0]
                os.kill(victim, signal.SIGKILL)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        time.sleep(0.5)
        t0 = time.monotonic()
        for _ in range(40):
            status, _, _ = self.get('/', headers={'Connection': 'close'}, timeout=5)
            self.assertEqual(status, 200)
        self.assertLess(time.monotonic() - t0, 10)

    def test_config_time_use_is_an_error(self):
        rc, out = self.nginx_t(http='''
            python_shared_dict d 1m;
            python "ngx.shared['d'].set('a', 1)";
        ''')
        self.assertNotEqual(rc, 0, out)
        self.assertIn('not at configuration time', out)

    def test_bad_size(self):
        rc, out = self.nginx_t(http='python_shared_dict d 1k;')
        self.assertConfError(rc, out, 'python_shared_dict d 1k', 'invalid python_shared_dict size')


TIMERS = r'''
import os, socket, time
import ngx

def start():
    d = ngx.shared['d']
    d.set('init:%d' % os.getpid(), time.monotonic())
    ngx.timer(0.2, once, 'hello')
    h = ngx.every(0.1, tick)
    d.set('start', time.monotonic())
    ngx.timer(0.05, boom)
    cancelled = ngx.timer(0.1, once, 'never')
    d.set('cancel', cancelled.cancel())

def once(word):
    ngx.shared['d'].set('once', word)
    ngx.shared['d'].set('once_at', time.monotonic())

def tick():
    ngx.shared['d'].incr('ticks', 1, init=0)

def boom():
    raise ValueError('timer says no')

def show(r):
    d = ngx.shared['d']
    r.send(repr({k: d.get(k) for k in d.keys(0)}), ngx.SEND_LAST)
'''


RATE = r'''
import ngx

def limited(r, limit=5, window=1):
    """At most `limit` requests per client address per `window` seconds,
    counted across all workers."""
    key = 'rate:' + r.var['remote_addr']
    if ngx.shared['rates'].incr(key, 1, init=0, ttl=window) > limit:
        return 429
'''


class RateLimiter(harness.NginxTestCase):

    def test_rate_limiter_example(self):
        self.start_server('''
            location / { python_access "rate.limited(r)"; python_content "r.send('ok', ngx.SEND_LAST)"; }
        ''', http='python_shared_dict rates 1m; python "import rate";',
            main='worker_processes 2;', files={'rate.py': RATE})
        codes = [self.get('/', headers={'Connection': 'close'})[0] for _ in range(8)]
        self.assertEqual(codes, [200] * 5 + [429] * 3)
        time.sleep(1.1)
        self.assertEqual(self.get('/')[0], 200)


class InitWorkerAndTimers(harness.NginxTestCase):

    def test_init_worker_and_timers(self):
        self.start_server('''
            location / { python_content "app.show(r)"; }
        ''', http='python_shared_dict d 1m;',
            main='''
            python "import app";
            python_init_worker "app.start()";
            python_init_worker "1/0";
            worker_processes 2;
            ''', files={'app.py': TIMERS})
        time.sleep(0.7)
        d = eval(self.get_body('/'))
        self.assertEqual(len([k for k in d if k.startswith('init:')]), 2)
        self.assertEqual(d['once'], 'hello')
        self.assertGreaterEqual(d['once_at'] - d['start'], 0.18)
        self.assertGreaterEqual(d['ticks'], 2 * 4)  # two workers, ~6 ticks each
        self.assertIs(d['cancel'], True)
        log = self.error_log()
        self.assertIn('ZeroDivisionError', log)
        self.assertIn('python_init_worker', log)
        self.assertIn('ValueError: timer says no', log)
        self.assertNotIn('never', repr(d))

    def test_timers_on_time_under_load(self):
        """A 50 ms periodic timer keeps its pace while the worker serves
        requests as fast as a client can send them."""
        self.start_server('''
            location / { python_content "r.send('x', ngx.SEND_LAST)"; }
            location /ticks { python_content "r.send(repr(ngx.shared['d'].get('ticks')), ngx.SEND_LAST)"; }
        ''', http='python_shared_dict d 1m;', main='''
            python "import app";
            python_init_worker "ngx.every(0.05, app.tick)";
        ''', files={'app.py': TIMERS})
        stop = threading.Event()

        def load():
            while not stop.is_set():
                self.get('/')

        threads = [threading.Thread(target=load) for _ in range(4)]
        start = int(self.get_body('/ticks').replace('None', '0'))
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(1.0)
        ticks = int(self.get_body('/ticks')) - start
        elapsed = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(10)
        self.assertGreaterEqual(ticks, int(elapsed / 0.05) - 3)
        self.assertLessEqual(ticks, int(elapsed / 0.05) + 2)

    def test_timer_at_config_time_is_an_error(self):
        rc, out = self.nginx_t(main='python "ngx.timer(1, print)";')
        self.assertNotEqual(rc, 0, out)
        self.assertIn('not at configuration time', out)

    def test_pending_timers_do_not_delay_quit(self):
        self.start_server('location / { return 200; }', main='''
            python "import app";
            python_init_worker "(ngx.timer(3600, print), ngx.every(1, print))";
        ''', files={'app.py': TIMERS})
        t0 = time.monotonic()
        self.stop()
        self.assertLess(time.monotonic() - t0, 2)
        self.assertNotRegex(self.error_log(), r'\[alert\]|\[crit\]')


WAITING = r'''
import socket, time
import ngx

def refresher(port):
    # a periodic job doing real socket I/O on nginx's event loop
    s = socket.create_connection(('127.0.0.1', port), timeout=5)
    s.sendall(b'GET /upstream HTTP/1.0\r\n\r\n')
    data = b''
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    ngx.shared['d'].set('fetched', data.split(b'\r\n\r\n', 1)[1])
    ngx.shared['d'].incr('fetches', 1, init=0)

def sleeper():
    try:
        time.sleep(3600)
    except ngx.Cancelled:
        ngx.shared['d'].set('woken', True)
        raise
'''


class UnblockTimers(harness.NginxTestCase):

    @unblock_only
    def test_periodic_timer_does_io_and_quit_cancels_waiting(self):
        self.start_server('''
            location /upstream { return 200 "fresh"; }
            location /woken { python_content "r.send(repr(ngx.shared['d'].get('woken')), ngx.SEND_LAST)"; }
            location / { python_content "r.send(repr((ngx.shared['d'].get('fetched'), ngx.shared['d'].get('fetches'))), ngx.SEND_LAST)"; }
        ''', http='python_shared_dict d 1m;', main='''
            python "import app";
            python_init_worker "(ngx.every(0.1, app.refresher, %(port)s), ngx.timer(0, app.sleeper))";
        ''', files={'app.py': WAITING})
        time.sleep(0.6)
        fetched, fetches = eval(self.get_body('/'))
        self.assertEqual(fetched, b'fresh')
        self.assertGreaterEqual(fetches, 3)
        t0 = time.monotonic()
        pid = next(iter(self.worker_pids()))
        self.reload()
        self.assertLess(time.monotonic() - t0, 3)
        self.assertFalse(harness.alive(pid))
        self.assertNotRegex(self.error_log(), r'\[alert\]|\[crit\]')
        # the old worker's waiting timer run was woken with ngx.Cancelled
        self.assertEqual(self.get_body('/woken'), 'True')
