"""r.subrequest(): subrequests to proxied, static and Python locations,
fanned out concurrently (unblock builds); the sync build refuses them."""

import json
import os
import socket
import threading
import time

import harness

APP = r'''
import json, time

def slow(r):
    time.sleep(float(r.arg.get('t', '0.5')))
    r.ho['Content-Type'] = 'application/json'
    r.ho['X-Slow'] = r.arg.get('t', '0.5')
    r.send(json.dumps({'slow': r.arg.get('n')}), ngx.SEND_LAST)

def echo(r):
    r.ho['X-Method'] = r.var['request_method']
    try:
        args = r.var['args']
    except KeyError:
        args = None
    r.send(json.dumps({'method': r.var['request_method'], 'args': args,
                       'body': (r.body or b'').decode(), 'x': r.hi.get('X-Test'),
                       'cl': r.hi.get('Content-Length')}), ngx.SEND_LAST)

def fanout(r):
    t0 = time.monotonic()
    subs = [r.subrequest('/up/slow', args={'n': i, 't': '0.5'}) for i in range(3)]
    merged = [json.loads(s.body) for s in subs]
    r.ho['Content-Type'] = 'application/json'
    r.send(json.dumps({'merged': merged, 'statuses': [s.status for s in subs],
                       'x': [s.headers['x-slow'] for s in subs],
                       'elapsed': time.monotonic() - t0}), ngx.SEND_LAST)

def kinds(r):
    static = r.subrequest('/files/data.txt')
    missing = r.subrequest('/files/nope.txt')
    python = r.subrequest('/echo?a=1', method='POST', args='b=2', body=b'payload',
                          headers={'X-Test': 'yes'})
    proxied = r.subrequest('/up/echo', method='PUT', body='hello')
    big = r.subrequest('/files/big.bin')
    head = r.subrequest('/files/data.txt', method='HEAD')
    down = r.subrequest('/down/')
    nested = r.subrequest('/nested')
    redirected = r.subrequest('/witherr/nope.txt')
    out = {
        'static': [static.status, static.body.decode(), static.headers.get('content-type'),
                   static.headers.get('Content-Length')],
        'missing': [missing.status, b'404' in missing.body],
        # ($request_method is the main request's, in nginx: not compared)
        'python': [python.status, {k: v for k, v in json.loads(python.body).items() if k != 'method'},
                   'X-Method' in python.headers],
        'proxied': [proxied.status, json.loads(proxied.body)],
        'big': [big.status, len(big.body), big.body[:5].decode(), big.body[-5:].decode()],
        'head': [head.status, head.body.decode()],
        'down': [down.status, b'502' in down.body],
        'nested': [nested.status, nested.body.decode()],
        'redirected': [redirected.status, redirected.body.decode()],
    }
    r.send(json.dumps(out), ngx.SEND_LAST)

def in_log(r):
    r.subrequest('/files/data.txt')

def gate(r):
    check = r.subrequest('/up/echo', args={'who': r.arg.get('who', '')})
    return None if json.loads(check.body)['args'] == 'who=ok' else 403

def nested(r):
    inner = r.subrequest('/files/data.txt')
    r.send('nested:' + inner.body.decode(), ngx.SEND_LAST)

def abandoned(r):
    r.subrequest('/up/slow', args={'t': '0.3'})
    r.send('not waited', ngx.SEND_LAST)
'''


def http(port3_body=''):
    return '''
        python_include app.py;
        server {
            listen 127.0.0.1:%(port2)s;
            location /slow { python_content "slow(r)"; }
            location /echo { python_content "echo(r)"; }
        }
    '''


SERVER = '''
    client_body_temp_path %(prefix)stmp;
    location /up/ { proxy_pass http://127.0.0.1:%(port2)s/; }
    location /files/ { alias %(prefix)shtml/; }
    location /echo { python_content "echo(r)"; }
    location /fanout { python_content "fanout(r)"; }
    location /kinds { python_content "kinds(r)"; }
    location /fast { return 200 "fast"; }
    location /down/ { proxy_pass http://127.0.0.1:%(port3)s/; }
    location /nested { python_content "nested(r)"; }
    location /witherr/ { error_page 404 /custom404.html; alias %(prefix)shtml/; }
    location = /custom404.html { root %(prefix)shtml; }
    location /abandoned { python_content "abandoned(r)"; }
    location /in_log { return 200 "ok"; python_log "in_log(r)"; }
'''

FILES = {'app.py': APP, 'html/data.txt': 'static data\n', 'tmp/.keep': '',
         'html/custom404.html': 'custom not found\n'}


class Subrequest(harness.NginxTestCase):

    def files(self):
        files = dict(FILES)
        # Larger than subrequest_output_buffer_size: captured to a temp file.
        files['html/big.bin'] = b'start' + b'x' * (3 * 1024 * 1024) + b'ended'
        return files

    @harness.unblock_only
    def test_fanout_concurrent_while_others_served(self):
        self.start_server(SERVER, http=http(), files=self.files(), wait_ports=['port', 'port2'])
        result = {}

        def fan():
            result['fan'] = self.get('/fanout')

        t = threading.Thread(target=fan)
        t0 = time.monotonic()
        t.start()
        # Meanwhile the worker keeps serving others.
        time.sleep(0.1)
        fast = []
        while t.is_alive() and len(fast) < 20:
            s0 = time.monotonic()
            self.assertEqual(self.get_body('/fast'), 'fast')
            fast.append(time.monotonic() - s0)
        t.join(10)
        status, headers, body = result['fan']
        self.assertEqual(status, 200, body)
        out = json.loads(body)
        self.assertEqual(out['merged'], [{'slow': '0'}, {'slow': '1'}, {'slow': '2'}])
        self.assertEqual(out['statuses'], [200, 200, 200])
        self.assertEqual(out['x'], ['0.5', '0.5', '0.5'])
        # Three 0.5 s subrequests concurrently: well under 1.5 s.
        self.assertLess(out['elapsed'], 1.2, out)
        self.assertGreaterEqual(out['elapsed'], 0.45, out)
        self.assertGreater(len(fast), 3)
        self.assertLess(max(fast), 0.3, fast)

    @harness.unblock_only
    def test_static_python_proxied_errors_large(self):
        self.start_server(SERVER, http=http(), files=self.files(), wait_ports=['port', 'port2'])
        status, _, body = self.get('/kinds')
        self.assertEqual(status, 200, body)
        out = json.loads(body)
        self.assertEqual(out['static'], [200, 'static data\n', 'text/plain', '12'])
        self.assertEqual(out['missing'], [404, True])
        self.assertEqual(out['python'], [200, {'args': 'a=1&b=2', 'body': 'payload',
                                               'x': 'yes', 'cl': '7'}, True])
        self.assertEqual(out['proxied'][0], 200)
        self.assertEqual(out['proxied'][1]['method'], 'PUT')
        self.assertEqual(out['proxied'][1]['body'], 'hello')
        self.assertEqual(out['big'], [200, 3 * 1024 * 1024 + 10, 'start', 'ended'])
        self.assertEqual(out['head'], [200, ''])
        self.assertEqual(out['down'], [502, True])
        self.assertEqual(out['nested'], [200, 'nested:static data\n'])
        # error_page redirects the subrequest internally: still captured
        self.assertEqual(out['redirected'], [404, 'custom not found\n'])

    @harness.unblock_only
    def test_not_waited_and_not_in_log(self):
        self.start_server(SERVER, http=http(), files=self.files(), wait_ports=['port', 'port2'])
        self.assertEqual(self.get_body('/abandoned'), 'not waited')
        self.assertEqual(self.get_body('/in_log'), 'ok')
        self.wait_log(r'(?s)python_log: .*RuntimeError: r.subrequest\(\) works only in python_access and python_content')
        # The worker goes on.
        self.assertEqual(self.get_body('/fast'), 'fast')

    @harness.unblock_only
    def test_client_gone_while_waiting(self):
        self.start_server(SERVER, http=http(), files=self.files(), wait_ports=['port', 'port2'])
        for _ in range(3):
            s = socket.create_connection(('127.0.0.1', self.port))
            s.sendall(b'GET /fanout HTTP/1.1\r\nHost: x\r\n\r\n')
            time.sleep(0.15)
            s.close()
        self.wait_log(r'python_content: stopped waiting: the request or session ended')
        # the subrequests still in flight finish or are dropped; nothing leaks into
        # later requests and the worker goes on
        time.sleep(0.6)
        status, _, body = self.get('/fanout')
        self.assertEqual(status, 200, body)
        self.assertEqual(len(json.loads(body)['merged']), 3)

    @harness.unblock_only
    def test_from_access_handler(self):
        self.start_server(SERVER + '''
            location /guarded {
                python_access "gate(r)";
                python_content "r.send('let in', ngx.SEND_LAST)";
            }
        ''', http=http(), files=self.files(), wait_ports=['port', 'port2'])
        self.assertEqual(self.get_body('/guarded?who=ok'), 'let in')
        self.assertEqual(self.get('/guarded?who=bad')[0], 403)

    @harness.sync_only
    def test_sync_build_refuses(self):
        self.start_server(SERVER, http=http(), files=self.files(), wait_ports=['port', 'port2'])
        status, _, _ = self.get('/fanout')
        self.assertEqual(status, 500)
        self.wait_log(r'RuntimeError: r.subrequest\(\) needs the unblock build')
