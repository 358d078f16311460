"""Configuration: nginx -t errors, python_include (paths, globs), the one
namespace per configuration, reloads, and memory over many reloads."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

HELLO_SERVER = '''
server {
    listen 127.0.0.1:%(port)s;
    location / { python_content "r.send('ok', ngx.SEND_LAST)"; }
}
'''


class NginxT(harness.NginxTestCase):
    """`nginx -t` accepts good configurations and rejects bad ones with
    [emerg], the conf file and line, and the Python exception."""

    allow_emerg = True

    def test_valid_config_passes(self):
        rc, out = self.nginx_t(HELLO_SERVER + 'python "X = 1";',
                               main='python "import os";')
        self.assertEqual(rc, 0, out)
        self.assertIn('test is successful', out)
        self.assertNotIn('[emerg]', out)

    def test_syntax_error_in_python(self):
        rc, out = self.nginx_t(HELLO_SERVER + 'python "def f(:";')
        self.assertConfError(rc, out, 'def f(:', 'SyntaxError')

    def test_syntax_error_in_python_at_main_level(self):
        rc, out = self.nginx_t(HELLO_SERVER, main='python "x = = 1";')
        self.assertConfError(rc, out, 'x = = 1', 'SyntaxError')

    def test_exception_in_python(self):
        rc, out = self.nginx_t(HELLO_SERVER + 'python "1/0";')
        self.assertConfError(rc, out, '"1/0"', 'ZeroDivisionError')

    def test_name_error_in_python(self):
        rc, out = self.nginx_t(HELLO_SERVER + 'python "no_such_name_here";')
        self.assertConfError(rc, out, 'no_such_name_here', 'NameError', 'no_such_name_here')

    def test_exception_in_python_at_location_level(self):
        rc, out = self.nginx_t('''
            server {
                listen 127.0.0.1:%(port)s;
                location / {
                    python "raise ValueError('bad location code')";
                    python_content "None";
                }
            }
        ''')
        self.assertConfError(rc, out, 'bad location code', 'ValueError: bad location code')

    def test_syntax_error_in_include_names_the_file(self):
        rc, out = self.nginx_t(HELLO_SERVER + 'python_include bad.py;',
                               files={'bad.py': 'x = 1\ndef f(:\n    pass\n'})
        self.assertConfError(rc, out, 'python_include bad.py', 'SyntaxError',
                             os.path.join(self.t_prefix, 'bad.py'))

    def test_exception_in_include_names_file_and_line(self):
        rc, out = self.nginx_t(HELLO_SERVER + 'python_include bad.py;',
                               files={'bad.py': 'x = 1\n\ny = x / 0\n'})
        self.assertConfError(rc, out, 'python_include bad.py', 'ZeroDivisionError',
                             'File "%s", line 3' % os.path.join(self.t_prefix, 'bad.py'))

    def test_include_honours_its_coding_cookie(self):
        # PEP 263: a latin-1 file says so; a UTF-8 file may start with a BOM
        latin1 = '# -*- coding: latin-1 -*-\nGREETING = "h\u00e9llo"\n'.encode('latin-1')
        bom = b'\xef\xbb\xbfOTHER = "\xc3\xa9t\xc3\xa9"\n'
        self.start_server('location / { python_content "r.send(GREETING + OTHER, ngx.SEND_LAST)"; }',
                          http='python_include latin1.py; python_include bom.py;',
                          files={'latin1.py': latin1, 'bom.py': bom})
        self.assertEqual(self.get_body('/'), 'h\u00e9llo\u00e9t\u00e9')

    def test_undecodable_include_names_file_and_line(self):
        rc, out = self.nginx_t(HELLO_SERVER + 'python_include bad.py;',
                               files={'bad.py': b'x = 1\ny = "caf\xe9"\n'})
        self.assertConfError(rc, out, 'python_include bad.py', 'SyntaxError',
                             os.path.join(self.t_prefix, 'bad.py'), 'line 2')

    def test_escaped_newlines_name_the_directive_and_the_code_line(self):
        # three lines of code on one line of nginx.conf (\\n escapes)
        rc, out = self.nginx_t(HELLO_SERVER + '''
            python "x = 1\\ny = 2\\ndef f(:\\n    pass";
        ''')
        self.assertConfError(rc, out, 'y = 2', 'SyntaxError')
        self.assertIn('<python at %s:%d>' % (self.last_conf, self.conf_line('y = 2')), out)
        self.assertIn('line 3', out)

    def test_escaped_newlines_in_a_traceback(self):
        self.start_server('''
            location / { python_content "f(r)"; }
        ''', http='''
            python "def f(r):\\n    x = 1\\n    raise ValueError('deep %d' % x)";
        ''')
        self.assertEqual(self.get('/')[0], 500)
        where = '<python at %s:%d>' % (self.conf_path, self.conf_line('def f(r)', self.conf_path))
        log = self.error_log()
        self.assertIn('File "%s", line 3, in f' % where, log)
        self.assertIn("raise ValueError('deep %d' % x)", log)

    def test_missing_include_file(self):
        rc, out = self.nginx_t(HELLO_SERVER + 'python_include missing.py;')
        self.assertConfError(rc, out, 'python_include missing.py', 'missing.py')

    def test_glob_without_match_is_not_an_error(self):
        rc, out = self.nginx_t(HELLO_SERVER + 'python_include conf.d/*.py;')
        self.assertEqual(rc, 0, out)

    def test_syntax_error_in_python_access(self):
        rc, out = self.nginx_t('''
            server {
                listen 127.0.0.1:%(port)s;
                location / { python_access "1 +"; }
            }
        ''')
        self.assertConfError(rc, out, 'python_access "1 +"', 'SyntaxError')

    def test_syntax_error_in_python_set(self):
        rc, out = self.nginx_t('python_set $v "(1, ";' + HELLO_SERVER)
        self.assertConfError(rc, out, 'python_set $v', 'SyntaxError')

    def test_syntax_error_in_python_content(self):
        rc, out = self.nginx_t('''
            server {
                listen 127.0.0.1:%(port)s;
                location / { python_content "r.send('x'"; }
            }
        ''')
        self.assertConfError(rc, out, 'python_content', 'SyntaxError')

    def test_syntax_error_in_python_log(self):
        rc, out = self.nginx_t('''
            server {
                listen 127.0.0.1:%(port)s;
                python_log "r.log(]";
                location / { return 200; }
            }
        ''')
        self.assertConfError(rc, out, 'python_log', 'SyntaxError')

    def test_statement_is_not_an_expression(self):
        rc, out = self.nginx_t('''
            server {
                listen 127.0.0.1:%(port)s;
                location / { python_content "x = 1"; }
            }
        ''')
        self.assertConfError(rc, out, 'python_content "x = 1"', 'SyntaxError')

    def test_unknown_name_in_expression_is_a_run_time_matter(self):
        # EXPR is compiled, not evaluated, at configuration time
        rc, out = self.nginx_t('''
            server {
                listen 127.0.0.1:%(port)s;
                location / { python_content "defined_later(r)"; }
            }
        ''')
        self.assertEqual(rc, 0, out)

    def test_python_content_not_allowed_in_server(self):
        rc, out = self.nginx_t('''
            server {
                listen 127.0.0.1:%(port)s;
                python_content "None";
            }
        ''')
        self.assertConfError(rc, out, 'python_content', 'not allowed')

    def test_python_set_not_allowed_in_location(self):
        rc, out = self.nginx_t('''
            server {
                listen 127.0.0.1:%(port)s;
                location / { python_set $v "1"; return 200; }
            }
        ''')
        self.assertConfError(rc, out, 'python_set', 'not allowed')


class Includes(harness.NginxTestCase):

    def test_path_is_relative_to_conf_directory(self):
        # nginx.conf in PREFIX/conf/: python_include inc.py reads PREFIX/conf/inc.py
        self.start('''
            python_include inc.py;
            server {
                listen 127.0.0.1:%(port)s;
                location / { python_content "r.send(VALUE, ngx.SEND_LAST)"; }
            }
        ''', conf='conf/nginx.conf', files={
            'conf/inc.py': "VALUE = 'next to nginx.conf'\n",
            'inc.py': "VALUE = 'in the prefix'\n",
        })
        self.assertEqual(self.get_body('/'), 'next to nginx.conf')

    def test_file_in_subdirectory(self):
        self.start_server('location / { python_content "r.send(VALUE, ngx.SEND_LAST)"; }',
                          http='python_include lib/app.py;',
                          files={'lib/app.py': "VALUE = 'from lib'\n"})
        self.assertEqual(self.get_body('/'), 'from lib')

    def test_glob_runs_every_match_in_sorted_order(self):
        self.start_server('location / { python_content "r.send(\',\'.join(LOADED), ngx.SEND_LAST)"; }',
                          http='python "LOADED = []"; python_include conf.d/*.py;',
                          files={
                              'conf.d/b.py': "LOADED.append('b')\n",
                              'conf.d/a.py': "LOADED.append('a')\n",
                              'conf.d/c.py': "LOADED.append('c')\n",
                              'conf.d/skip.txt': "LOADED.append('txt')\n",
                          })
        self.assertEqual(self.get_body('/'), 'a,b,c')

    def test_glob_without_match_starts(self):
        self.start_server('location / { python_content "r.send(\'up\', ngx.SEND_LAST)"; }',
                          http='python_include nothing/*.py;')
        self.assertEqual(self.get_body('/'), 'up')

    def test_conf_directory_is_on_sys_path(self):
        self.start_server('location / { python_content "r.send(helper.VALUE, ngx.SEND_LAST)"; }',
                          http='python "import helper";',
                          files={'helper.py': "VALUE = 'imported'\n"})
        self.assertEqual(self.get_body('/'), 'imported')


class Namespace(harness.NginxTestCase):

    def test_main_http_server_location_share_one_namespace(self):
        self.start('''
            python_include http.py;
            server {
                listen 127.0.0.1:%(port)s;
                python "C = B + '+server'";
                location / {
                    python "D = C + '+location'";
                    python_content "r.send(D, ngx.SEND_LAST)";
                }
            }
        ''', main='python "A = \'main\'";', files={'http.py': "B = A + '+http'\n"})
        self.assertEqual(self.get_body('/'), 'main+http+server+location')

    def test_code_after_the_location_is_visible_at_run_time(self):
        self.start('''
            server {
                listen 127.0.0.1:%(port)s;
                location / { python_content "defined_later(r)"; }
            }
            python "def defined_later(r): r.send('later', ngx.SEND_LAST)";
        ''')
        self.assertEqual(self.get_body('/'), 'later')

    def test_handlers_share_globals_at_run_time(self):
        self.start_server('''
            location /set { python_content "set_global(r)"; }
            location /get { python_content "r.send(globals().get('SHARED', 'unset'), ngx.SEND_LAST)"; }
        ''', http='python_include app.py;', files={'app.py': (
            "def set_global(r):\n"
            "    global SHARED\n"
            "    SHARED = 'set by ' + r.var['uri']\n"
            "    r.send('done', ngx.SEND_LAST)\n")})
        self.assertEqual(self.get_body('/get'), 'unset')
        self.assertEqual(self.get_body('/set'), 'done')
        self.assertEqual(self.get_body('/get'), 'set by /set')

    def test_ngx_is_already_imported(self):
        self.start_server('location / { python_content "r.send(str(ngx.OK), ngx.SEND_LAST)"; }',
                          http='python "assert ngx.OK == 0";')
        self.assertEqual(self.get_body('/'), '0')


RELOAD_SERVER = '''
location /value { python_content "r.send(VALUE, ngx.SEND_LAST)"; }
location /leak { python_content "r.send(str('LEAK' in globals()), ngx.SEND_LAST)"; }
location /set-leak { python_content "globals().__setitem__('LEAK', 1) or r.send('set', ngx.SEND_LAST)"; }
'''


class Reload(harness.NginxTestCase):

    def start_reloadable(self, value='one'):
        self.start_server(RELOAD_SERVER, http='python_include value.py;',
                          files={'value.py': 'VALUE = %r\n' % value})

    def poll_value(self, expected, timeout=10.0):
        deadline = time.monotonic() + timeout
        body = None
        while time.monotonic() < deadline:
            body = self.get_body('/value')
            if body == expected:
                return
            time.sleep(0.05)
        self.fail('still served %r, not %r, %ss after reload' % (body, expected, timeout))

    def test_changed_include_is_read_on_reload(self):
        self.start_reloadable('one')
        self.assertEqual(self.get_body('/value'), 'one')
        self.write_file('value.py', "VALUE = 'two'\n")
        self.reload()
        self.poll_value('two')

    def test_runtime_globals_do_not_survive_reload(self):
        self.start_reloadable()
        self.assertEqual(self.get_body('/set-leak'), 'set')
        self.assertEqual(self.get_body('/leak'), 'True')
        self.write_file('value.py', "VALUE = 'reloaded'\n")
        self.reload()
        self.poll_value('reloaded')
        self.assertEqual(self.get_body('/leak'), 'False')

    def test_main_level_code_runs_again_on_reload(self):
        self.start_server('location / { python_content "r.send(str(LOADED_AT), ngx.SEND_LAST)"; }',
                          main='python "import time; LOADED_AT = time.monotonic_ns()";')
        first = self.get_body('/')
        self.reload()
        deadline = time.monotonic() + 10
        while self.get_body('/') == first and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertNotEqual(self.get_body('/'), first)

    def test_failed_reload_keeps_old_configuration(self):
        self.allow_emerg = True
        self.start_reloadable('one')
        self.write_file('value.py', "VALUE = 'two'\n1/0\n")
        self.assertFalse(self.reload(expect_ok=False))
        self.assertIn('ZeroDivisionError', self.error_log())
        self.assertEqual(self.get_body('/value'), 'one')
        # and a good configuration after that loads
        self.write_file('value.py', "VALUE = 'three'\n")
        self.reload()
        self.poll_value('three')

    def test_reloads_do_not_grow_master_memory(self):
        # each configuration holds a 1 MiB object: a namespace leaked per reload
        # would grow the master by ~80 MiB between reload 20 and reload 100
        self.start_server(RELOAD_SERVER, http='python_include value.py;', files={
            'value.py': "VALUE = 'v'\nBIG = b'x' * (1 << 20)\nBIG_LIST = [str(i) for i in range(10000)]\n"})
        deadline = time.monotonic() + 240
        rss = {}
        for n in range(1, 101):
            self.assertLess(time.monotonic(), deadline, 'too slow: %d reloads' % n)
            self.reload()
            if n in (20, 100):
                self.assertEqual(self.get_body('/value'), 'v')
                rss[n] = self.master_rss_kb()
        growth = rss[100] - rss[20]
        self.assertLess(growth, 10 * 1024,
                        'master RSS grew %d kB from reload 20 (%d kB) to 100 (%d kB)'
                        % (growth, rss[20], rss[100]))


if __name__ == '__main__':
    harness.main()
