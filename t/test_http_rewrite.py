"""python_rewrite, r.uri / r.args / r.method and r.internal_redirect()
(issue 11, items 1-3), against a second server of the nginx under test
reached through proxy_pass."""

import harness

APP = r'''
import time
import ngx

def show(r):
    r.send('%s %s ?%s x=%s' % (r.method, r.uri, r.args, r.var['x'] or '-'), ngx.SEND_LAST)

def gate(r):
    if r.arg.get('wait'):
        time.sleep(0.05)
    what = r.arg.get('do')
    if what == 'deny':
        return 403
    if what == 'fail':
        raise ValueError('rewrite failed on purpose')
    if what == 'move':
        r.uri = '/moved' + r.uri
        r.args = 'from=rewrite'
    if what == 'redirect':
        r.internal_redirect('/target?via=rewrite')
        r.send('not reached')
    if what == 'named':
        r.internal_redirect('@named')
    return None

def access_redirect(r):
    r.internal_redirect('/target?via=access')

def content_redirect(r):
    r.internal_redirect('/target?via=content')

def misuse(r):
    out = []
    for f in (lambda: setattr(r, 'uri', '/x'), lambda: setattr(r, 'args', 'a=1'),
              lambda: r.internal_redirect('nope')):
        try:
            f()
            out.append('ok')
        except (RuntimeError, ValueError) as e:
            out.append(type(e).__name__)
    r.send(' '.join(out), ngx.SEND_LAST)

def set_vars(r):
    r.var['target'] = 'from-python'
    r.var['args'] = 'changed=1'
    out = []
    for name, value in (('nosuch', 'x'), ('remote_addr', 'x')):
        try:
            r.var[name] = value
            out.append('set')
        except (KeyError, ValueError) as e:
            out.append(type(e).__name__)
    r.ctx['errors'] = ' '.join(out)

def show_vars(r):
    r.send('%s %s %s %s' % (r.var['target'], r.var['args'], r.arg['changed'], r.ctx['errors']), ngx.SEND_LAST)

def in_set(r):
    try:
        r.internal_redirect('/target')
    except RuntimeError:
        return 'refused'
    return 'redirected'
'''

SERVER = '''
    location /r/ {
        set $x from-set;
        python_rewrite "gate(r)";
        python_content "show(r)";
    }
    location /moved/ { python_content "show(r)"; }
    location /target { python_content "show(r)"; }
    location @named { python_content "show(r)"; }
    location /proxied/ {
        python_rewrite "gate(r)";
        proxy_pass http://127.0.0.1:%(port2)s;
    }
    location /moved/proxied/ { proxy_pass http://127.0.0.1:%(port2)s; }
    location /access { python_access "access_redirect(r)"; python_content "show(r)"; }
    location /content { python_content "content_redirect(r)"; }
    location /misuse { python_content "misuse(r)"; }
    location /set { return 200 "$in_set"; }
    location /vars { set $target default; python_access "set_vars(r)"; python_content "show_vars(r)"; }
'''

HTTP = '''
    python_include app.py;
    python_set $in_set "in_set(r)";
    server {
        listen 127.0.0.1:%(port2)s;
        location / { return 200 "upstream $request_uri"; }
    }
'''


class Rewrite(harness.NginxTestCase):

    def setUp(self):
        self.start_server(SERVER, http=HTTP, files={'app.py': APP})

    def test_goes_on_ends_or_fails(self):
        self.assertEqual(self.get_body('/r/a?q=1'), 'GET /r/a ?q=1 x=from-set')
        self.assertEqual(self.get('/r/a?do=deny')[0], 403)
        self.assertEqual(self.get('/r/a?do=fail')[0], 500)
        self.assertIn('rewrite failed on purpose', self.error_log())

    def test_uri_and_args_change_the_location(self):
        self.assertEqual(self.get_body('/r/a?do=move'), 'GET /moved/r/a ?from=rewrite x=from-set')
        # proxy_pass sends the changed URI and arguments
        self.assertEqual(self.get_body('/proxied/b?do=move'), 'upstream /moved/proxied/b?from=rewrite')

    def test_internal_redirect(self):
        # (nginx's variables keep their values across a redirect: $x was set)
        self.assertEqual(self.get_body('/r/a?do=redirect'), 'GET /target ?via=rewrite x=from-set')
        self.assertEqual(self.get_body('/r/a?do=named'), 'GET /r/a ?do=named x=from-set')
        self.assertEqual(self.get_body('/access'), 'GET /target ?via=access x=-')
        self.assertEqual(self.get_body('/content'), 'GET /target ?via=content x=-')
        # keep-alive goes on after redirected requests
        for _ in range(3):
            self.assertEqual(self.get_body('/content'), 'GET /target ?via=content x=-')

    def test_misuse_raises(self):
        self.assertEqual(self.get_body('/misuse'), 'RuntimeError RuntimeError ValueError')
        self.assertEqual(self.get_body('/set'), 'refused')

    def test_setting_variables(self):
        self.assertEqual(self.get_body('/vars?a=1'), 'from-python changed=1 1 KeyError ValueError')

    @harness.unblock_only
    def test_rewrite_waits_then_redirects(self):
        self.assertEqual(self.get_body('/r/a?do=redirect&wait=1'), 'GET /target ?via=rewrite x=from-set')
        self.assertEqual(self.get_body('/r/a?do=move&wait=1'), 'GET /moved/r/a ?from=rewrite x=from-set')
        self.assertEqual(self.get('/r/a?do=deny&wait=1')[0], 403)
