"""subprocess in handlers.

Both builds: returncode is always right (exit codes 0 and 3, a signal, many
children in a row): nginx's SIGCHLD handler no longer reaps a worker's
children ("unknown process" in the log, returncode 0). Unblock build:
subprocess.run / Popen.wait / communicate wait on nginx's event loop, so the
worker serves other requests while a child runs, and several handlers can
wait for children concurrently.

Run: TEST_NGINX_BINARY=build/unblock/objs/nginx python3 t -v test_unblock_subprocess
"""

import concurrent.futures
import time

import harness
from harness import unblock_only

APP = r'''
import subprocess, sys, time

def run(r):
    code = r.arg.get('code', '0')
    p = subprocess.run(['sh', '-c', 'sleep %s; exit %s' % (r.arg.get('t', '0'), code)])
    r.send(str(p.returncode), ngx.SEND_LAST)

def killed(r):
    p = subprocess.Popen(['sleep', '5'])
    time.sleep(0.05)
    p.kill()
    r.send(str(p.wait()), ngx.SEND_LAST)

def exited_before_wait(r):
    # the children end while the worker does something else (nginx's SIGCHLD
    # handler used to reap them: returncode 0, "unknown process" logged)
    ps = [subprocess.Popen(['sh', '-c', cmd]) for cmd in ('exit 0', 'exit 3', 'kill -9 $$')]
    time.sleep(0.3)
    r.send(' '.join(str(p.wait()) for p in ps), ngx.SEND_LAST)

def many(r):
    codes = [subprocess.run(['sh', '-c', 'exit %d' % (i % 5)]).returncode for i in range(int(r.arg['n']))]
    r.send(','.join(map(str, codes)), ngx.SEND_LAST)

def output(r):
    p = subprocess.run(['sh', '-c', 'sleep %s; cat; echo err >&2; exit 2' % r.arg.get('t', '0')],
                       input=b'x' * 200000, capture_output=True)
    r.send('%d %d %r' % (p.returncode, len(p.stdout), p.stderr), ngx.SEND_LAST)

def check_output(r):
    out = subprocess.check_output(['sh', '-c', 'sleep %s; echo hello' % r.arg.get('t', '0')], text=True)
    r.send(out, ngx.SEND_LAST)

def timeout(r):
    t0 = time.monotonic()
    try:
        subprocess.run(['sleep', '5'], timeout=0.3)
        res = 'no timeout'
    except subprocess.TimeoutExpired as e:
        res = 'TimeoutExpired'
    r.send('%s %.1f' % (res, time.monotonic() - t0), ngx.SEND_LAST)

def wait_timeout(r):
    p = subprocess.Popen(['sleep', '5'])
    try:
        p.wait(0.2)
        res = 'no timeout'
    except subprocess.TimeoutExpired:
        res = 'TimeoutExpired'
    p.terminate()
    r.send('%s %s' % (res, p.wait()), ngx.SEND_LAST)

CONFIG_RC = subprocess.run(['sh', '-c', 'exit 3']).returncode
'''

SERVER = '''
python_include app.py;
server {
    listen 127.0.0.1:%(port)s;
    location /fast { return 200 "fast"; }
    location /run { python_content "run(r)"; }
    location /killed { python_content "killed(r)"; }
    location /exited-before-wait { python_content "exited_before_wait(r)"; }
    location /many { python_content "many(r)"; }
    location /output { python_content "output(r)"; }
    location /check-output { python_content "check_output(r)"; }
    location /timeout { python_content "timeout(r)"; }
    location /wait-timeout { python_content "wait_timeout(r)"; }
    location /config { python_content "r.send(str(CONFIG_RC), ngx.SEND_LAST)"; }
}
'''


class Subprocess(harness.NginxTestCase):

    def setUp(self):
        self.start(http=SERVER, files={'app.py': APP})

    def timed(self, paths, delay=0.0):
        def one(i, p):
            time.sleep(i * delay)
            t0 = time.monotonic()
            return self.get_body(p, timeout=15), time.monotonic() - t0
        with concurrent.futures.ThreadPoolExecutor(len(paths)) as ex:
            return list(ex.map(one, range(len(paths)), paths))

    def test_returncode(self):
        self.assertEqual(self.get_body('/config'), '3')
        for code in ('0', '3'):
            for t in ('0', '0.1'):
                self.assertEqual(self.get_body('/run?code=%s&t=%s' % (code, t)), code)
        self.assertEqual(self.get_body('/killed'), '-9')
        self.assertEqual(self.get_body('/exited-before-wait'), '0 3 -9')
        self.assertNotIn('unknown process', self.error_log())

    def test_many_in_a_row(self):
        n = 60
        self.assertEqual(self.get_body('/many?n=%d' % n), ','.join(str(i % 5) for i in range(n)))
        self.assertNotIn('unknown process', self.error_log())

    def test_pipes(self):
        self.assertEqual(self.get_body('/output'), "2 200000 b'err\\n'")
        self.assertEqual(self.get_body('/check-output'), 'hello\n')

    def test_timeouts(self):
        body = self.get_body('/timeout')
        self.assertTrue(body.startswith('TimeoutExpired 0.'), body)
        self.assertEqual(self.get_body('/wait-timeout'), 'TimeoutExpired -15')

    def test_concurrent_handlers(self):
        paths = ['/run?code=%d&t=0.5' % (i % 4) for i in range(6)] + [
            '/output?t=0.5', '/check-output?t=0.5', '/fast']
        t0 = time.monotonic()
        res = self.timed(paths, delay=0.01)
        total = time.monotonic() - t0
        self.assertEqual([b for b, _ in res[:6]], [str(i % 4) for i in range(6)])
        self.assertEqual(res[6][0], "2 200000 b'err\\n'")
        self.assertEqual(res[7][0], 'hello\n')
        self.assertNotIn('unknown process', self.error_log())
        if harness.unblock_build():
            self.assertLess(res[8][1], 0.3, 'the worker was blocked')
            self.assertLess(total, 2.0)       # together, not one after the other (4 s)


if __name__ == '__main__':
    harness.main()
