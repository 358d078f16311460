#!/usr/bin/env python3
"""make bench: Python against Lua and njs, side by side in one Debian nginx.

One nginx binary, Debian's /usr/sbin/nginx 1.22.1, loads this module (built
by `make debian-module`, one flavour per nginx instance), Debian's
libnginx-mod-http-lua (with lua-cjson) and libnginx-mod-http-js. One worker
(CPU 0), `wrk -t1 -c50` (CPU 1) on loopback. Each rate is a ratio to
`return 200` of the same nginx instance, measured in the same round. Rounds
interleave every instance, and each case is paired with a `return 200` run
just before it; the table is the median of the rounds, and the
raw rounds are printed too. Also: the 1.28 static builds' own ratios, worker
RSS per request suspended in a 10 s wait, and instructions per request
(callgrind: `perf stat -e instructions` is not supported on these VMs).

Every location's answer is checked before it is measured, and a run with
non-2xx answers or socket errors is reported as such.

Usage: tools/bench.py [--rounds N] [--seconds S] [--no-callgrind] [--only main,extra,callgrind]
       (paths default to what `make bench` builds)
"""

import argparse
import glob
import http.client
import json
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEBIAN_NGINX = '/usr/sbin/nginx'
MODULES = '/usr/lib/nginx/modules'
HELLO = b'Hello, world!'                       # 13 bytes
UA = 'nginx-python-bench'
JSON_EXPECT = {'name': 'world', 'agent': UA, 'ok': True}

PY = r'''
import json, time

def hello(r):
    r.send(b'Hello, world!', ngx.SEND_LAST)

def json_doc(r):
    r.send(json.dumps({'name': r.arg['name'], 'agent': r.hi['User-Agent'], 'ok': True}),
           ngx.SEND_LAST)

def nap(r):
    time.sleep(float(r.arg['t']))
    r.send(b'Hello, world!', ngx.SEND_LAST)

def incr(r):
    ngx.shared['pybench'].incr('hits', 1, init=0)
    r.send(b'Hello, world!', ngx.SEND_LAST)
'''

# The same Flask application behind python_wsgi, uWSGI and gunicorn.
FLASK = r'''
from flask import Flask, jsonify, request

app = Flask(__name__)

@app.route('/hello')
@app.route('/<prefix>/hello')
def hello(prefix=None):
    return 'Hello, world!'

@app.route('/json')
@app.route('/<prefix>/json')
def json_doc(prefix=None):
    return jsonify(name=request.args['name'], agent=request.headers['User-Agent'], ok=True)
'''

JS = r'''
function hello(r) { r.return(200, "Hello, world!"); }
function json(r) {
    r.return(200, JSON.stringify({name: r.args.name, agent: r.headersIn['User-Agent'], ok: true}));
}
export default {hello, json};
'''

PY_LOCATIONS = '''
        location = /py/hello { python_content "hello(r)"; }
        location = /py/json  { python_content "json_doc(r)"; }
        location = /py/sleep { python_content "nap(r)"; }
        location = /py/incr  { python_content "incr(r)"; }
        location /wsgi/ { python_wsgi flaskbench:app; }
'''

# Lua reads the raw ngx.var.arg_name (the benchmark's value needs no decoding).
LUA_JS_LOCATIONS = '''
        location = /lua/hello { content_by_lua_block { ngx.print("Hello, world!") } }
        location = /lua/json {
            content_by_lua_block {
                ngx.print(cjson.encode({name = ngx.var.arg_name,
                                        agent = ngx.var.http_user_agent, ok = true}))
            }
        }
        location = /lua/sleep {
            content_by_lua_block { ngx.sleep(tonumber(ngx.var.arg_t)) ngx.print("Hello, world!") }
        }
        location = /lua/incr {
            content_by_lua_block { ngx.shared.bench:incr("hits", 1, 0) ngx.print("Hello, world!") }
        }
        location = /njs/hello { js_content bench.hello; }
        location = /njs/json  { js_content bench.json; }
'''

CONF = '''
%(load)s
daemon off;
master_process %(master)s;
worker_processes 1;
%(affinity)s
worker_rlimit_nofile 20000;
error_log logs/error.log warn;
pid logs/nginx.pid;
user root;
events { worker_connections 10000; }
http {
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    python_include bench.py;
    python_shared_dict pybench 1m;
    %(http)s
    server {
        listen 127.0.0.1:%(port)d backlog=4096;
        location = /return { return 200 "Hello, world!"; }
%(locations)s
    }
}
'''


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Nginx:
    """One nginx instance in a throw-away prefix."""

    def __init__(self, binary, python_so=None, lua_js=False, master=True, wrap=(),
                 uwsgi_port=None, gunicorn_port=None):
        self.binary = binary
        self.prefix = tempfile.mkdtemp(prefix='nginx-python-bench-')
        os.chmod(self.prefix, 0o755)
        for d in ('logs', 'tmp'):
            os.mkdir(os.path.join(self.prefix, d))
        load, http = [], ''
        if python_so:
            # the module carries ngx_stream_python_module: stream first
            load += [MODULES + '/ngx_stream_module.so', python_so]
        if lua_js:
            load += [MODULES + '/ndk_http_module.so', MODULES + '/ngx_http_lua_module.so',
                     MODULES + '/ngx_http_js_module.so']
            http = ('init_by_lua_block { cjson = require "cjson" }\n    js_import bench from bench.js;\n'
                    '    lua_shared_dict bench 1m;')
        for name, port in (('uwsgi', uwsgi_port), ('gunicorn', gunicorn_port)):
            if port:
                http += '\n    upstream %s { server 127.0.0.1:%d; keepalive 8; }' % (name, port)
        self.port = free_port()
        conf = CONF % {
            'load': ''.join('load_module %s;\n' % m for m in load),
            'master': 'on' if master else 'off',
            'affinity': 'worker_cpu_affinity 01;' if master else '',
            'http': http, 'port': self.port,
            'locations': PY_LOCATIONS + (LUA_JS_LOCATIONS if lua_js else '') + (
                '        location /uwsgi/ { include /etc/nginx/uwsgi_params; uwsgi_pass uwsgi; }\n'
                if uwsgi_port else '') + (
                '        location /gunicorn/ { proxy_pass http://gunicorn; proxy_http_version 1.1;'
                ' proxy_set_header Connection ""; }\n' if gunicorn_port else ''),
        }
        for name, text in (('nginx.conf', conf), ('bench.py', PY), ('bench.js', JS),
                           ('flaskbench.py', FLASK)):
            with open(os.path.join(self.prefix, name), 'w') as f:
                f.write(text)
        self.log = open(os.path.join(self.prefix, 'logs', 'stderr.log'), 'wb')
        self.proc = subprocess.Popen(list(wrap) + [binary, '-p', self.prefix, '-c', 'nginx.conf'],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    sys.exit('bench: nginx did not start:\n' + self.errors(all_lines=True))
                time.sleep(0.1)

    def worker(self):
        out = subprocess.run(['pgrep', '-P', str(self.proc.pid)], capture_output=True, text=True)
        return int(out.stdout.split()[0])

    def errors(self, all_lines=False):
        text = ''
        for name in ('error.log', 'stderr.log'):
            try:
                with open(os.path.join(self.prefix, 'logs', name), errors='replace') as f:
                    text += f.read()
            except OSError:
                pass
        if all_lines:
            return text
        return ''.join(l + '\n' for l in text.splitlines()
                       if re.search(r'\[(alert|crit|emerg|error)\]|exited on signal', l))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        bad = self.errors()
        shutil.rmtree(self.prefix, ignore_errors=True)
        if bad:
            sys.exit('bench: nginx reported problems:\n' + bad[:3000])


def fetch(port, path, n=1, conn=None):
    """n keep-alive GETs; returns the last body (status must be 200)."""
    c = conn or http.client.HTTPConnection('127.0.0.1', port, timeout=30)
    body = None
    for _ in range(n):
        c.request('GET', path, headers={'User-Agent': UA})
        resp = c.getresponse()
        body = resp.read()
        if resp.status != 200:
            sys.exit('bench: %s answered %d: %r' % (path, resp.status, body[:200]))
    if conn is None:
        c.close()
    return body


def check(port, case, who):
    """The answer a location gives is the one the case asks for."""
    body = fetch(port, URL[case] % who, n=20)
    if case == 'json':
        ok = json.loads(body) == JSON_EXPECT
    else:
        ok = body == HELLO
    if not ok:
        sys.exit('bench: /%s/%s answered %r' % (who, case, body[:200]))


URL = {'hello': '/%s/hello', 'json': '/%s/json?name=world', 'incr': '/%s/incr'}


def wrk(port, path, seconds, connections=50):
    cmd = ['taskset', '-c', '1', 'wrk', '-t1', '-c%d' % connections, '-d%ds' % seconds,
           '--latency', '-H', 'User-Agent: ' + UA, 'http://127.0.0.1:%d%s' % (port, path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r'Requests/sec:\s+([\d.]+)', out)
    if not m:
        sys.exit('bench: wrk failed:\n' + out)
    bad = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
    errs = re.search(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)', out)
    nerr = sum(map(int, errs.groups())) if errs else 0
    if bad or nerr:
        print('  note: %s: %s non-2xx, %d socket errors' % (path, bad.group(1) if bad else 0, nerr))

    def ms(q):
        m = re.search(r'^\s+%s%%\s+([\d.]+)(us|ms|s)\b' % q, out, re.M)
        return float(m.group(1)) * {'us': 0.001, 'ms': 1, 's': 1000}[m.group(2)] if m else None
    return float(m.group(1)), ms(50), ms(99)


def ratio(ngx, path, seconds, r, key):
    """path's rate over `return 200`'s, measured just before it on the same
    nginx (the machine's load drifts: pairs keep the ratio honest); the
    return rates are kept under r[key]."""
    base = wrk(ngx.port, '/return', seconds)[0]
    r.setdefault(key, []).append(base)
    return wrk(ngx.port, path, seconds)[0] / base


def rss_kb(pid):
    with open('/proc/%d/status' % pid) as f:
        return int(re.search(r'VmRSS:\s+(\d+)', f.read()).group(1))


def suspended_rss(binary, so, who, n=4000, wait=10):
    """Worker RSS growth per request while n requests wait `wait` seconds."""
    ngx = Nginx(binary, so, lua_js=True)
    try:
        worker = ngx.worker()
        # warm up the path (pools, code) with a few short waits at once
        for _ in range(2):
            _concurrent(ngx.port, '/%s/sleep?t=0.01' % who, 200, read=True)
        time.sleep(0.5)
        before = rss_kb(worker)
        socks = _concurrent(ngx.port, '/%s/sleep?t=%d' % (who, wait), n, read=False)
        time.sleep(2.5)
        during = rss_kb(worker)
        answered = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1, socket.MSG_PEEK):
                    answered += 1
            except BlockingIOError:
                pass
            s.close()
        if answered:
            print('  note: %d of %d %s requests answered before the measurement' % (answered, n, who))
        return (during - before) / n
    finally:
        ngx.stop()


def _concurrent(port, path, n, read):
    """n connections each sending one GET; with read, wait for all answers."""
    req = ('GET %s HTTP/1.1\r\nHost: b\r\nUser-Agent: %s\r\nConnection: close\r\n\r\n'
           % (path, UA)).encode()
    socks = []
    for _ in range(n):
        s = socket.create_connection(('127.0.0.1', port), timeout=10)
        s.sendall(req)
        socks.append(s)
    if not read:
        return socks
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    left, deadline = n, time.monotonic() + 30
    while left and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                left -= 1
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return []


def callgrind(binary, so, cases, n=1000):
    """Instructions per request of each (case, who), one nginx process
    (master_process off) under callgrind: counters zeroed after a warm-up,
    dumped after n keep-alive requests."""
    out = tempfile.mkdtemp(prefix='nginx-python-callgrind-')
    ngx = Nginx(binary, so, lua_js=True, master=False,
                wrap=['valgrind', '--tool=callgrind', '--callgrind-out-file=%s/cg.%%p' % out])
    result = {}
    try:
        pid = str(ngx.proc.pid)
        conn = http.client.HTTPConnection('127.0.0.1', ngx.port, timeout=120)
        for case, who in cases:
            path = URL[case] % who if who != 'return' else '/return'
            fetch(ngx.port, path, 200, conn)
            subprocess.run(['callgrind_control', '-z', pid], check=True, capture_output=True)
            fetch(ngx.port, path, n, conn)
            subprocess.run(['callgrind_control', '-d', pid], check=True, capture_output=True)
            dumps = sorted(glob.glob('%s/cg.%s.*' % (out, pid)), key=lambda p: int(p.rsplit('.', 1)[1]))
            with open(dumps[-1]) as f:
                total = int(re.search(r'^summary:\s+(\d+)', f.read(), re.M).group(1))
            result[case, who] = total / n
        conn.close()
    finally:
        ngx.stop()
        shutil.rmtree(out, ignore_errors=True)
    return result


def app_servers():
    """uWSGI (Debian's uwsgi-plugin-python3) and gunicorn serving the Flask
    app, one process each, on CPU 0 like nginx's worker."""
    d = tempfile.mkdtemp(prefix='nginx-python-bench-apps-')
    with open(os.path.join(d, 'flaskbench.py'), 'w') as f:
        f.write(FLASK)
    uport, gport = free_port(), free_port()
    quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [
        subprocess.Popen(['taskset', '-c', '0', 'uwsgi', '--plugin', 'python3', '--socket',
                          '127.0.0.1:%d' % uport, '--chdir', d, '--module', 'flaskbench:app',
                          '--processes', '1', '--disable-logging', '--need-app'], **quiet),
        subprocess.Popen(['taskset', '-c', '0', 'gunicorn', '--workers', '1', '--bind',
                          '127.0.0.1:%d' % gport, '--chdir', d, '--log-level', 'warning',
                          'flaskbench:app'], **quiet),
    ]
    deadline = time.monotonic() + 30
    for port in (uport, gport):
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit('bench: uWSGI or gunicorn did not start')
                time.sleep(0.2)
    return d, uport, gport, procs


def stop_app_servers(servers):
    d, _, _, procs = servers
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(d, ignore_errors=True)


def extra_round(a, s, r, servers):
    """Shared dict `incr` (Python vs lua_shared_dict) and the Flask app
    (python_wsgi vs uWSGI vs gunicorn), each as a ratio to `return 200`."""
    _, uport, gport, _ = servers
    for flavour, so in (('sync', a.sync_so), ('unblock', a.unblock_so)):
        ngx = Nginx(DEBIAN_NGINX, so, lua_js=True, uwsgi_port=uport, gunicorn_port=gport)
        try:
            whos = [('py', flavour)] + ([('lua', 'lua')] if flavour == 'sync' else [])
            for who, col in whos:
                check(ngx.port, 'incr', who)
                r['incr', col] = ratio(ngx, URL['incr'] % who, s, r, 'return x ' + flavour)
            apps = [('wsgi', 'wsgi ' + flavour)]
            if flavour == 'sync':
                apps += [('uwsgi', 'uwsgi'), ('gunicorn', 'gunicorn')]
            for case in ('hello', 'json'):
                for who, col in apps:
                    check(ngx.port, case, who)
                    r['flask ' + case, col] = ratio(ngx, URL[case] % who, s, r, 'return x ' + flavour)
        finally:
            ngx.stop()


def print_extra(rounds):
    def med(key):
        return median([r.get(key) for r in rounds])
    print('\nshared dict: `incr` + 13-byte answer, ratio to `return 200` (median of %d rounds):\n' % len(rounds))
    print('| case | Python sync | Python unblock | Lua (`lua_shared_dict`) |')
    print('|---|---|---|---|')
    print('| incr | %.3f | %.3f | %.3f |' % tuple(med(('incr', c)) for c in ('sync', 'unblock', 'lua')))
    print('\nFlask app, one process on the worker\'s core, ratio to `return 200`:\n')
    print('| Flask view | python_wsgi (sync) | python_wsgi (unblock) | uWSGI (uwsgi_pass) | gunicorn (proxy_pass) |')
    print('|---|---|---|---|---|')
    for case in ('hello', 'json'):
        row = [med(('flask ' + case, c)) for c in ('wsgi sync', 'wsgi unblock', 'uwsgi', 'gunicorn')]
        print('| %s | %.3f | %.3f | %.3f | %.3f |' % ((case,) + tuple(row)))
    for case in ('hello', 'json'):
        w, u = med(('flask ' + case, 'wsgi sync')), med(('flask ' + case, 'uwsgi'))
        print('python_wsgi (sync) / uWSGI, %s: %.1fx' % (case, w / u))
    sys.stdout.flush()


def print_wsgi_instructions(a):
    """Instructions per request of the Flask views hosted by python_wsgi
    (callgrind: stable on a loaded machine, unlike req/s)."""
    if not shutil.which('valgrind'):
        print('\nWSGI instructions per request: valgrind is not installed (skipped)')
        return
    cases = [('hello', 'return'), ('hello', 'wsgi'), ('json', 'wsgi')]
    counts = {flavour: callgrind(DEBIAN_NGINX, so, cases)
              for flavour, so in (('sync', a.sync_so), ('unblock', a.unblock_so))}
    print('\nFlask under python_wsgi, instructions per request (callgrind, whole nginx '
          'process, one keep-alive connection, 1,000 requests after 200 of warm-up):\n')
    print('| Flask view | python_wsgi (sync) | python_wsgi (unblock) |')
    print('|---|---|---|')
    for case in ('hello', 'json'):
        print('| %s | %s | %s |' % ((case,) + tuple(
            format(round(counts[f][case, 'wsgi']), ',') for f in ('sync', 'unblock'))))
    print('\n(`return 200`: %s instructions per request)' % format(round(counts['sync']['hello', 'return']), ','))
    sys.stdout.flush()


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--seconds', type=int, default=5)
    ap.add_argument('--no-callgrind', action='store_true')
    ap.add_argument('--only', default='main,extra',
                    help='sections: main (the Lua/njs table, then callgrind), extra (shared dict incr, '
                         'WSGI), callgrind (instructions per request only: no wrk runs, stable on a '
                         'loaded machine)')
    ap.add_argument('--sync-so', default=os.path.join(REPO, 'build/debian/sync/objs/ngx_python_module.so'))
    ap.add_argument('--unblock-so', default=os.path.join(REPO, 'build/debian/unblock/objs/ngx_python_module.so'))
    ap.add_argument('--static-sync', default=os.path.join(REPO, 'build/sync/objs/nginx'))
    ap.add_argument('--static-unblock', default=os.path.join(REPO, 'build/unblock/objs/nginx'))
    a = ap.parse_args()
    only = set(a.only.split(','))
    if only == {'callgrind'}:
        for p in (a.sync_so, a.unblock_so, DEBIAN_NGINX):
            if not os.path.exists(p):
                sys.exit('bench: %s missing (make debian-module [FEATURES=unblock])' % p)
        print('  load average at start: %s' % open('/proc/loadavg').read().strip())
        print_instructions(a)
        return
    for p in (a.sync_so, a.unblock_so, a.static_sync, a.static_unblock, DEBIAN_NGINX):
        if not os.path.exists(p):
            sys.exit('bench: %s missing (make bench builds everything)' % p)
    s = a.seconds
    print('nginx-python bench: %s (1 worker, CPU 0) + wrk -t1 -c50 %ds (CPU 1), %d rounds'
          % (subprocess.run([DEBIAN_NGINX, '-v'], capture_output=True, text=True).stderr.strip(),
             s, a.rounds))
    print('  python module (sync):    %s\n  python module (unblock): %s\n  static 1.28 builds:      %s, %s'
          % (a.sync_so, a.unblock_so, a.static_sync, a.static_unblock))
    print('  load average at start: %s' % open('/proc/loadavg').read().strip())
    if 'extra' in only:
        servers = app_servers()
        try:
            extra = []
            for _ in range(a.rounds):
                extra.append({})
                extra_round(a, s, extra[-1], servers)
            print_extra(extra)
        finally:
            stop_app_servers(servers)
        if not a.no_callgrind:
            print_wsgi_instructions(a)
    if 'main' not in only:
        return
    rounds = []
    for rnd in range(1, a.rounds + 1):
        r = {}
        # Debian nginx + sync module + Lua + njs: hello and JSON
        ngx = Nginx(DEBIAN_NGINX, a.sync_so, lua_js=True)
        try:
            for case in ('hello', 'json'):
                for who in ('py', 'lua', 'njs'):
                    check(ngx.port, case, who)
            for case in ('hello', 'json'):
                for who, col in (('py', 'sync'), ('lua', 'lua'), ('njs', 'njs')):
                    r[case, col] = ratio(ngx, URL[case] % who, s, r, 'return sync')
        finally:
            ngx.stop()
        # Debian nginx + unblock module (+ Lua): hello, JSON, 1,000 sleepers
        ngx = Nginx(DEBIAN_NGINX, a.unblock_so, lua_js=True)
        try:
            for case in ('hello', 'json'):
                check(ngx.port, case, 'py')
            for case in ('hello', 'json'):
                r[case, 'unblock'] = ratio(ngx, URL[case] % 'py', s, r, 'return unblock')
            for who, col in (('py', 'unblock'), ('lua', 'lua')):
                fetch(ngx.port, '/%s/sleep?t=0.01' % who, 5)
                r['sleep', col] = wrk(ngx.port, '/%s/sleep?t=0.1' % who, s, connections=1000)
        finally:
            ngx.stop()
        # worker RSS per request suspended in a 10 s wait (fresh instances)
        r['rss', 'unblock'] = suspended_rss(DEBIAN_NGINX, a.unblock_so, 'py')
        r['rss', 'lua'] = suspended_rss(DEBIAN_NGINX, a.unblock_so, 'lua')
        # the 1.28 static builds' own ratios
        for flavour, binary in (('sync', a.static_sync), ('unblock', a.static_unblock)):
            ngx = Nginx(binary)
            try:
                for case in ('hello', 'json'):
                    check(ngx.port, case, 'py')
                for case in ('hello', 'json'):
                    r[case, 'static ' + flavour] = ratio(ngx, URL[case] % 'py', s, r,
                                                         'return static ' + flavour)
            finally:
                ngx.stop()
        rounds.append(r)
        print_round(rnd, r)
    print_table(rounds, s)
    print('load average at the end: %s' % open('/proc/loadavg').read().strip())
    if not a.no_callgrind:
        print_instructions(a)


def fmt_sleep(v):
    rps, p50, p99 = v
    return '%s req/s, p50 %s ms, p99 %s ms' % (format(round(rps), ','), _ms(p50), _ms(p99))


def _ms(x):
    return '?' if x is None else ('%.0f' % x)


def print_round(n, r):
    print('\nround %d: return 200 = %s (Debian, sync module) / %s (Debian, unblock module) / '
          '%s (1.28 sync) / %s (1.28 unblock) req/s'
          % ((n,) + tuple(' '.join('%.0f' % x for x in r[k]) for k in
                          ('return sync', 'return unblock', 'return static sync', 'return static unblock'))))
    for case in ('hello', 'json'):
        print('  %-6s ' % case + '  '.join('%s %.3f' % (col, r[case, col]) for col in
                                           ('sync', 'unblock', 'lua', 'njs', 'static sync', 'static unblock')))
    print('  sleep  unblock %s; lua %s' % (fmt_sleep(r['sleep', 'unblock']), fmt_sleep(r['sleep', 'lua'])))
    print('  rss    unblock %.1f KiB; lua %.1f KiB per suspended request'
          % (r['rss', 'unblock'], r['rss', 'lua']))
    sys.stdout.flush()


RETURNS = ('return sync', 'return unblock', 'return static sync', 'return static unblock')


def print_table(rounds, seconds):
    def med(key):
        return median([x for r in rounds for x in (r[key] if key in RETURNS else [r[key]])])

    def sleep(col):     # (req/s, p50, p99), each the median of its own
        return tuple(median([r['sleep', col][i] for r in rounds]) for i in range(3))
    print('\nmedians of %d rounds (ratios to `return 200` of the same nginx, same round):\n' % len(rounds))
    print('| case | Python sync | Python unblock | Lua | njs |')
    print('|---|---|---|---|---|')
    print('| hello world (13 bytes) | %.3f | %.3f | %.3f | %.3f |'
          % tuple(med(('hello', c)) for c in ('sync', 'unblock', 'lua', 'njs')))
    print('| JSON: one query arg + User-Agent → 3-key JSON document | %.3f | %.3f | %.3f (cjson) | %.3f |'
          % tuple(med(('json', c)) for c in ('sync', 'unblock', 'lua', 'njs')))
    print('| 1,000 connections, each request waits 0.1 s (ideal 10,000 req/s) | — | %s | %s (`ngx.sleep`) | — |'
          % (fmt_sleep(sleep('unblock')), fmt_sleep(sleep('lua'))))
    print('| worker RSS per request suspended in a 10 s wait (4,000 at once) | — | %.1f KiB | %.1f KiB | — |'
          % (med(('rss', 'unblock')), med(('rss', 'lua'))))
    print('\nnginx 1.28 static builds (this repository, --with-debug), same method:\n')
    print('| case | sync build | unblock build |')
    print('|---|---|---|')
    for case, what in (('hello', 'hello world'), ('json', 'JSON')):
        print('| %s | %.3f | %.3f |' % (what, med((case, 'static sync')), med((case, 'static unblock'))))
    print('\n`return 200` medians: Debian nginx %.0f / %.0f req/s (sync / unblock module loaded), '
          '1.28 static %.0f / %.0f req/s'
          % (med('return sync'), med('return unblock'), med('return static sync'), med('return static unblock')))
    sys.stdout.flush()


def print_instructions(a):
    if not shutil.which('valgrind'):
        print('\ninstructions per request: valgrind is not installed (skipped)')
        return
    cases = [('hello', 'return')] + [(c, w) for c in ('hello', 'json') for w in ('py', 'lua', 'njs')]
    sync = callgrind(DEBIAN_NGINX, a.sync_so, cases)
    unblock = callgrind(DEBIAN_NGINX, a.unblock_so, [('hello', 'return'), ('hello', 'py'), ('json', 'py')])
    print('\ninstructions per request (callgrind, Debian nginx, one keep-alive connection, '
          '1,000 requests after 200 of warm-up; whole process):\n')
    print('| case | `return 200` | Python sync | Python unblock | Lua | njs |')
    print('|---|---|---|---|---|---|')
    base = sync['hello', 'return']
    for case, what in (('hello', 'hello world'), ('json', 'JSON')):
        print('| %s | %s | %s | %s | %s | %s |' % ((what, format(round(base), ',')) + tuple(
            '%s (%.3f)' % (format(round(x), ','), base / x)
            for x in (sync[case, 'py'], unblock[case, 'py'], sync[case, 'lua'], sync[case, 'njs']))))
    print('\n(in brackets: `return 200`\'s count over the case\'s, a load-independent '
          'counterpart of the req/s ratios)')
    sys.stdout.flush()


if __name__ == '__main__':
    main()
