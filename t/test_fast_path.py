"""The per-request fast path keeps the semantics of the slow one: a handler
written as `name(r)` is called directly but still follows rebinding of the
name, builtins and undefined names; request objects reused for later
requests start clean (arguments, r.ctx, flags), and an `r` that Python code
kept is never handed to another request."""

import http.client
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

APP = r'''
import ngx

KEPT = []


def first(r):
    global who
    who = second
    r.send('first', ngx.SEND_LAST)


def second(r):
    r.send('second', ngx.SEND_LAST)


who = first


def fresh(r):
    # what a reused object must not carry over from an earlier request
    seen = '%s ctx=%r sent_before=%s' % (r.arg.get('a'), dict(r.ctx), 'x' in r.ctx)
    r.ctx['x'] = r.arg.get('a')
    r.send(seen, ngx.SEND_LAST)


def keep(r):
    if KEPT:
        old = KEPT[0]
        try:
            old.arg
            state = 'usable'
        except RuntimeError:
            state = 'ended'
        out = 'same' if old is r else 'other %s' % state
    else:
        out = 'kept'
    KEPT.append(r)
    r.send(out, ngx.SEND_LAST)
'''

SERVER = r'''
    location = /who { python_content "who(r)"; }
    location = /fresh { python_content "fresh(r)"; }
    location = /keep { python_content "keep(r)"; }
    location = /undefined { python_content "no_such_handler(r)"; }
    location = /builtin { return 200 $v; }
'''


class FastPath(harness.NginxTestCase):

    def setUp(self):
        super().setUp()
        self.start_server(SERVER, http='python_include app.py;\npython_set $v "str(r)";', files={'app.py': APP})

    def test_direct_call_follows_rebinding_of_the_name(self):
        self.assertEqual(self.get_body('/who'), 'first')
        self.assertEqual(self.get_body('/who'), 'second')
        self.assertEqual(self.get_body('/who'), 'second')

    def test_builtin_name_still_works(self):
        self.assertEqual(self.get_body('/builtin'), '<ngx.Request GET /builtin HTTP/1.1>')

    def test_undefined_name_is_a_name_error(self):
        offset = self.error_log_size()
        self.assertEqual(self.get('/undefined')[0], 500)
        log = self.error_log(offset)
        self.assertIn("NameError: name 'no_such_handler' is not defined", log)

    def test_reused_request_objects_start_clean(self):
        conn = http.client.HTTPConnection('127.0.0.1', self.ports['port'], timeout=10)
        try:
            for i in range(100):
                conn.request('GET', '/fresh?a=%d' % i)
                resp = conn.getresponse()
                self.assertEqual(resp.read().decode(), '%d ctx={} sent_before=False' % i)
            conn.request('GET', '/fresh')
            self.assertEqual(conn.getresponse().read().decode(), 'None ctx={} sent_before=False')
        finally:
            conn.close()

    def test_kept_request_object_is_not_reused(self):
        self.assertEqual(self.get_body('/keep'), 'kept')
        for _ in range(3):
            self.assertEqual(self.get_body('/keep'), 'other ended')


if __name__ == '__main__':
    harness.main()
