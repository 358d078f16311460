#!/usr/bin/env python3
"""make bench: throughput of Python handlers against plain nginx, side by side.

Runs one nginx (1 worker, pinned to CPU 0) and wrk (pinned to CPU 1) against
locations that answer the same "hello" body: nginx's own `return`, then each
kind of Python handler. Figures are ratios to `return` from the same run.
With the unblock build it also measures 1,000 connections whose handler
sleeps 0.1 s (time.sleep on nginx's event loop).

Usage: tools/bench.py NGINX_BINARY [SECONDS]
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

CONF = """
daemon off;
master_process on;
worker_processes 1;
worker_cpu_affinity 01;
error_log logs/error.log warn;
pid logs/nginx.pid;
%(user)s
events { worker_connections 4096; }
http {
    access_log off;
    python "
def hello(r):
    r.send(b'hello', ngx.SEND_LAST)
def greeting(r):
    return 'hello'
def nap(r):
    import time
    time.sleep(0.1)
    r.send(b'hello', ngx.SEND_LAST)
";
    python_set $greeting "greeting(r)";
    server {
        listen 127.0.0.1:%(port)d backlog=4096;
        location = /return  { return 200 "hello"; }
        location = /content { python_content "hello(r)"; }
        location = /set     { return 200 $greeting; }
        location = /access  { python_access "None"; python_content "hello(r)"; }
        location = /sleep   { python_content "nap(r)"; }
    }
}
"""


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wrk(port, path, seconds, connections=50):
    cmd = ['wrk', '-t1', '-c%d' % connections, '-d%ds' % seconds, '--latency',
           'http://127.0.0.1:%d%s' % (port, path)]
    if shutil.which('taskset'):
        cmd = ['taskset', '-c', '1'] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', out).group(1))
    p99 = re.search(r'99%\s+([\d.]+\w+)', out)
    errors = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
    return rps, (p99.group(1) if p99 else '?'), int(errors.group(1)) if errors else 0


def rss_kb(pid):
    with open('/proc/%d/status' % pid) as f:
        return int(re.search(r'VmRSS:\s+(\d+)', f.read()).group(1))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    if not shutil.which('wrk'):
        sys.exit('bench: wrk is not installed (make deps installs it)')
    unblock = 'NGX_PYTHON_SYNC=0' in subprocess.run([binary, '-V'], capture_output=True, text=True).stderr
    prefix = tempfile.mkdtemp(prefix='nginx-python-bench-')
    os.chmod(prefix, 0o755)
    os.mkdir(os.path.join(prefix, 'logs'))
    port = free_port()
    with open(os.path.join(prefix, 'nginx.conf'), 'w') as f:
        f.write(CONF % {'port': port, 'user': 'user root;' if os.geteuid() == 0 else ''})
    proc = subprocess.Popen([binary, '-p', prefix, '-c', 'nginx.conf'])
    try:
        for _ in range(100):
            try:
                socket.create_connection(('127.0.0.1', port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        with open(os.path.join(prefix, 'logs', 'nginx.pid')) as f:
            master = int(f.read())
        worker = int(subprocess.run(['pgrep', '-P', str(master)], capture_output=True, text=True).stdout.split()[0])
        print('nginx-python bench: %s (%s build), 1 worker on CPU 0, wrk -t1 -c50 %ds on CPU 1'
              % (binary, 'unblock' if unblock else 'sync', seconds))
        print('%-34s %10s %8s %8s' % ('location', 'req/s', 'ratio', 'p99'))
        base = None
        for path, what in [('/return', 'nginx return 200 (baseline)'),
                           ('/content', 'python_content'),
                           ('/set', 'python_set variable'),
                           ('/access', 'python_access + python_content')]:
            rps, p99, errors = wrk(port, path, seconds)
            base = base or rps
            print('%-34s %10.0f %7.2fx %8s%s' % (what, rps, rps / base, p99,
                                                 '  (%d errors)' % errors if errors else ''))
        if unblock:
            rps, p99, errors = wrk(port, '/sleep', seconds, connections=1000)
            print('%-34s %10.0f %8s %8s%s' % ('time.sleep(0.1), 1000 connections', rps, '', p99,
                                              '  (%d errors)' % errors if errors else ''))
            print('  (ideal: 1000 / 0.1 s = 10000 req/s)')
        print('worker RSS after the runs: %d kB' % rss_kb(worker))
        with open(os.path.join(prefix, 'logs', 'error.log')) as f:
            bad = [l for l in f if '[alert]' in l or '[crit]' in l or 'exited on signal' in l]
        if bad:
            sys.exit('bench: nginx reported problems:\n' + ''.join(bad[:10]))
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(prefix, ignore_errors=True)


if __name__ == '__main__':
    main()
