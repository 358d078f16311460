"""Where python_access runs in nginx's access phase (issue 9, items 6 and 7):
after nginx's own checks (allow/deny, auth_basic), with `satisfy` as
nginx defines it, and a handler in flight during a graceful quit finishes
with its normal answer."""

import base64
import signal
import threading
import time

import harness

APP = r'''
import time
import ngx

CALLS = []

def check(r):
    CALLS.append(r.var['uri'])
    if r.arg.get('verdict') == 'deny':
        return 403
    return ngx.OK

def slow_check(r):
    time.sleep(1.0)
    return ngx.OK

def inside(r):
    r.send('in', ngx.SEND_LAST)

def calls(r):
    r.send(' '.join(CALLS), ngx.SEND_LAST)
    CALLS.clear()
'''


class AccessOrder(harness.NginxTestCase):

    def setUp(self):
        self.start_server('''
            location /denied { deny all; python_access "check(r)"; python_content "inside(r)"; }
            location /allowed { allow 127.0.0.1; deny all; python_access "check(r)"; python_content "inside(r)"; }
            location /auth {
                auth_basic "x"; auth_basic_user_file htpasswd;
                python_access "check(r)"; python_content "inside(r)";
            }
            location /any_allowed { satisfy any; allow 127.0.0.1; deny all; python_access "check(r)"; python_content "inside(r)"; }
            location /any_python { satisfy any; deny all; python_access "check(r)"; python_content "inside(r)"; }
            location /slow { python_access "slow_check(r)"; python_content "inside(r)"; }
            location /calls { python_content "calls(r)"; }
        ''', http='python_include app.py;', files={'app.py': APP, 'htpasswd': 'user:{PLAIN}secret\n'})

    def calls(self):
        return self.get_body('/calls').split()

    def test_deny_comes_before_python(self):
        self.assertEqual(self.get('/denied')[0], 403)
        self.assertEqual(self.calls(), [])

    def test_allow_then_python_decides(self):
        self.assertEqual(self.get('/allowed')[::2], (200, b'in'))
        self.assertEqual(self.get('/allowed?verdict=deny')[0], 403)
        self.assertEqual(self.calls(), ['/allowed', '/allowed'])

    def test_auth_basic_comes_before_python(self):
        self.assertEqual(self.get('/auth')[0], 401)
        self.assertEqual(self.calls(), [])
        good = {'Authorization': 'Basic ' + base64.b64encode(b'user:secret').decode()}
        self.assertEqual(self.get('/auth', headers=good)[::2], (200, b'in'))
        self.assertEqual(self.calls(), ['/auth'])

    def test_satisfy_any(self):
        # allow grants access: Python is not asked
        self.assertEqual(self.get('/any_allowed?verdict=deny')[::2], (200, b'in'))
        self.assertEqual(self.calls(), [])
        # deny refuses, Python grants: any one grant is enough
        self.assertEqual(self.get('/any_python')[::2], (200, b'in'))
        # both refuse: nginx's refusal
        self.assertEqual(self.get('/any_python?verdict=deny')[0], 403)
        self.assertEqual(self.calls(), ['/any_python', '/any_python'])

    @harness.unblock_only
    def test_access_handler_in_flight_finishes_on_graceful_quit(self):
        out = {}

        def slow():
            out['slow'] = self.get('/slow', timeout=10)

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.4)
        self.proc.send_signal(signal.SIGQUIT)
        t.join(10)
        self.assertEqual(out['slow'][::2], (200, b'in'), self.error_log())
