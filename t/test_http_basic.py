"""HTTP directives: python, python_include, python_set, python_access,
python_log, python_content, python_stack_size; handler return values; the
ngx module."""

import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# Handlers shared by the tests below (python_include app.py).
APP = r'''
import json
import ngx


def send(r, text):
    r.send(text, ngx.SEND_LAST)


def with_header(r, name, value, result):
    r.ho[name] = value
    return result


def redirect(r, status, location):
    r.ho['Location'] = location
    return status


def mark(r, name, result=None):
    r.ctx.setdefault('marks', []).append(name)
    return result


def show_marks(r):
    r.send(','.join(r.ctx.get('marks', [])), ngx.SEND_LAST)


COUNTER = [0]


def count(r):
    COUNTER[0] += 1
    return COUNTER[0]


def constants(r):
    names = ['OK', 'ERROR', 'AGAIN', 'BUSY', 'DONE', 'DECLINED', 'ABORT',
             'LOG_EMERG', 'LOG_ALERT', 'LOG_CRIT', 'LOG_ERR', 'LOG_WARN',
             'LOG_NOTICE', 'LOG_INFO', 'LOG_DEBUG', 'SEND_FLUSH', 'SEND_LAST']
    r.ho['Content-Type'] = 'application/json'
    r.send(json.dumps({n: getattr(ngx, n, None) for n in names}), ngx.SEND_LAST)


def sleepy(r):
    import time
    time.sleep(0.5)
    r.send('slept', ngx.SEND_LAST)
'''


class AppTestCase(harness.NginxTestCase):
    """Tests that serve APP's handlers from one server."""

    def start_app(self, server, http='', main='', files=None):
        all_files = {'app.py': APP}
        all_files.update(files or {})
        return self.start_server(server, http='python_include app.py;\n' + harness.dedent(http),
                                 main=main, files=all_files)


class Directives(AppTestCase):

    def test_content_sends_body(self):
        self.start_server('''
            location / { python_content "r.send('hello', ngx.SEND_LAST)"; }
        ''')
        status, headers, body = self.get('/')
        self.assertEqual((status, body), (200, b'hello'))

    def test_python_at_main_level_defines_function_for_location(self):
        self.start_server('''
            location / { python_content "main_level(r)"; }
        ''', main='''
            python "def main_level(r): r.send('from main', ngx.SEND_LAST)";
        ''')
        self.assertEqual(self.get_body('/'), 'from main')

    def test_python_runs_at_every_level_in_order(self):
        self.start('''
            python "ORDER.append('http')";
            server {
                listen 127.0.0.1:%(port)s;
                python "ORDER.append('server')";
                location / {
                    python "ORDER.append('location')";
                    python_content "r.send(','.join(ORDER), ngx.SEND_LAST)";
                }
            }
        ''', main='python "ORDER = [\'main\']";')
        self.assertEqual(self.get_body('/'), 'main,http,server,location')

    def test_python_include_at_every_level(self):
        self.start('''
            python_include http.py;
            server {
                listen 127.0.0.1:%(port)s;
                python_include server.py;
                location / {
                    python_include location.py;
                    python_content "r.send(','.join(SEEN), ngx.SEND_LAST)";
                }
            }
        ''', main='python_include main.py;', files={
            'main.py': "SEEN = ['main']\n",
            'http.py': "SEEN.append('http')\n",
            'server.py': "SEEN.append('server')\n",
            'location.py': "SEEN.append('location')\n",
        })
        self.assertEqual(self.get_body('/'), 'main,http,server,location')

    def test_python_stack_size_accepted_in_main(self):
        self.start_server('''
            location / { python_content "r.send('ok', ngx.SEND_LAST)"; }
        ''', main='python_stack_size 256k;')
        self.assertEqual(self.get_body('/'), 'ok')

    def test_python_stack_size_accepted_in_http(self):
        self.start_server('''
            location / { python_content "r.send('ok', ngx.SEND_LAST)"; }
        ''', http='python_stack_size 1m;')
        self.assertEqual(self.get_body('/'), 'ok')

    def test_python_content_inside_if(self):
        self.start_server('''
            location / {
                if ($arg_py) {
                    python_content "r.send('python ' + r.arg['py'], ngx.SEND_LAST)";
                }
                python_content "r.send('plain', ngx.SEND_LAST)";
            }
        ''')
        self.assertEqual(self.get_body('/?py=yes'), 'python yes')
        self.assertEqual(self.get_body('/'), 'plain')

    def test_request_is_a_local_not_a_global(self):
        self.start_server('''
            location / {
                python_content "r.send(repr(globals().get('r')) + ' ' + repr('r' in locals()), ngx.SEND_LAST)";
            }
        ''')
        self.assertEqual(self.get_body('/'), 'None True')

    def test_request_visible_in_comprehension_of_expression(self):
        self.start_server('''
            location / {
                python_content "r.send(','.join([r.var['uri'] for _ in range(2)]), ngx.SEND_LAST)";
            }
        ''')
        self.assertEqual(self.get_body('/x'), '/x,/x')

    def test_many_requests_on_one_keepalive_connection(self):
        self.start_app('''
            location / { python_content "send(r, 'n=%d' % count(r))"; }
        ''')
        conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=10)
        try:
            for i in range(1, 101):
                conn.request('GET', '/')
                resp = conn.getresponse()
                self.assertEqual((resp.status, resp.read()), (200, b'n=%d' % i))
        finally:
            conn.close()


class ContentResult(AppTestCase):
    """What the value of a python_content expression does."""

    def test_none_with_nothing_sent_gives_empty_200(self):
        self.start_app('location / { python_content "None"; }')
        status, headers, body = self.get('/')
        self.assertEqual((status, body), (200, b''))

    def test_ok_with_nothing_sent_gives_empty_200(self):
        self.start_app('location / { python_content "ngx.OK"; }')
        status, headers, body = self.get('/')
        self.assertEqual((status, body), (200, b''))

    def test_return_value_ignored_after_body_sent(self):
        self.start_app('location / { python_content "send(r, \'body\')"; }')
        self.assertEqual(self.get_body('/'), 'body')

    def test_404_gives_error_page_and_keeps_headers(self):
        self.start_app('''
            location / { python_content "with_header(r, 'X-Kept', 'yes', 404)"; }
        ''')
        status, headers, body = self.get('/')
        self.assertEqual(status, 404)
        self.assertIn(b'404 Not Found', body)
        self.assertEqual(headers['X-Kept'], 'yes')

    def test_500_gives_error_page(self):
        self.start_app('location / { python_content "500"; }')
        status, headers, body = self.get('/')
        self.assertEqual(status, 500)
        self.assertIn(b'500 Internal Server Error', body)

    def test_302_redirects_to_location(self):
        self.start_app('''
            location / { python_content "redirect(r, 302, 'http://127.0.0.1/elsewhere')"; }
        ''')
        status, headers, body = self.get('/')
        self.assertEqual(status, 302)
        self.assertEqual(headers['Location'], 'http://127.0.0.1/elsewhere')

    def test_301_redirects_to_location(self):
        self.start_app('''
            location / { python_content "redirect(r, 301, 'http://127.0.0.1/moved')"; }
        ''')
        status, headers, body = self.get('/')
        self.assertEqual(status, 301)
        self.assertEqual(headers['Location'], 'http://127.0.0.1/moved')

    def test_204_no_content(self):
        self.start_app('location / { python_content "with_header(r, \'X-Kept\', \'1\', 204)"; }')
        status, headers, body = self.get('/')
        self.assertEqual((status, body), (204, b''))
        self.assertEqual(headers['X-Kept'], '1')

    def test_201_created(self):
        self.start_app('location / { python_content "201"; }')
        status, headers, body = self.get('/')
        self.assertEqual(status, 201)

    def test_other_2xx_gives_empty_response_with_that_status(self):
        self.start_app('location / { python_content "202"; }')
        status, headers, body = self.get('/')
        self.assertEqual((status, body), (202, b''))

    def test_ngx_error_gives_500(self):
        self.start_app('location / { python_content "ngx.ERROR"; }')
        status, headers, body = self.get('/')
        self.assertEqual(status, 500)

    def test_request_body_is_read_before_handler(self):
        self.start_app('''
            location / { python_content "send(r, 'got ' + r.var['request_body'])"; }
        ''')
        status, headers, body = self.get('/', method='POST', body=b'hello body',
                                         headers={'Content-Type': 'text/plain'})
        self.assertEqual((status, body), (200, b'got hello body'))


class Access(AppTestCase):
    """python_access results, ordering and inheritance."""

    def test_none_goes_on_to_content(self):
        self.start_app('''
            location / { python_access "None"; python_content "send(r, 'content')"; }
        ''')
        self.assertEqual(self.get_body('/'), 'content')

    def test_declined_goes_on_to_content(self):
        self.start_app('''
            location / { python_access "ngx.DECLINED"; python_content "send(r, 'content')"; }
        ''')
        self.assertEqual(self.get_body('/'), 'content')

    def test_ok_goes_on_to_content(self):
        self.start_app('''
            location / { python_access "ngx.OK"; python_content "send(r, 'content')"; }
        ''')
        self.assertEqual(self.get_body('/'), 'content')

    def test_status_403_ends_request(self):
        self.start_app('''
            location / { python_access "403"; python_content "send(r, 'content')"; }
        ''')
        status, headers, body = self.get('/')
        self.assertEqual(status, 403)
        self.assertNotIn(b'content', body)

    def test_status_keeps_output_headers(self):
        self.start_app('''
            location / {
                python_access "with_header(r, 'WWW-Authenticate', 'Basic realm=\\"t\\"', 401)";
                python_content "send(r, 'content')";
            }
        ''')
        status, headers, body = self.get('/')
        self.assertEqual(status, 401)
        self.assertEqual(headers['WWW-Authenticate'], 'Basic realm="t"')

    def test_ngx_error_gives_500(self):
        self.start_app('''
            location / { python_access "ngx.ERROR"; python_content "send(r, 'content')"; }
        ''')
        status, headers, body = self.get('/')
        self.assertEqual(status, 500)

    def test_ok_grants_access_under_satisfy_any(self):
        self.start_app('''
            location / {
                satisfy any;
                deny all;
                python_access "ngx.OK";
                python_content "send(r, 'granted')";
            }
        ''')
        self.assertEqual(self.get_body('/'), 'granted')

    def test_declined_does_not_grant_access_under_satisfy_any(self):
        self.start_app('''
            location / {
                satisfy any;
                deny all;
                python_access "ngx.DECLINED";
                python_content "send(r, 'granted')";
            }
        ''')
        status, headers, body = self.get('/')
        self.assertEqual(status, 403)

    def test_ok_does_not_override_deny_under_satisfy_all(self):
        self.start_app('''
            location / {
                satisfy all;
                deny all;
                python_access "ngx.OK";
                python_content "send(r, 'granted')";
            }
        ''')
        status, headers, body = self.get('/')
        self.assertEqual(status, 403)

    def test_several_at_one_level_run_in_order(self):
        self.start_app('''
            location / {
                python_access "mark(r, 'one')";
                python_access "mark(r, 'two')";
                python_access "mark(r, 'three')";
                python_content "show_marks(r)";
            }
        ''')
        self.assertEqual(self.get_body('/'), 'one,two,three')

    def test_status_from_first_stops_the_rest(self):
        self.start_app('''
            location / {
                python_access "403";
                python_access "r.log('second access ran', ngx.LOG_WARN)";
                python_content "send(r, 'content')";
            }
        ''')
        status, headers, body = self.get('/')
        self.assertEqual(status, 403)
        self.assertNotIn('second access ran', self.error_log())

    def test_status_from_later_one_ends_request(self):
        self.start_app('''
            location / {
                python_access "None";
                python_access "403";
                python_content "send(r, 'content')";
            }
        ''')
        status, headers, body = self.get('/')
        self.assertEqual(status, 403)

    def test_inherited_from_http_and_server(self):
        self.start_app('''
            python_access "mark(r, 'server')";
            location /inherit { python_content "show_marks(r)"; }
            location /own {
                python_access "mark(r, 'location')";
                python_content "show_marks(r)";
            }
        ''', http='python_access "mark(r, \'http\')";')
        # the nearest level that sets python_access wins; levels do not add up
        self.assertEqual(self.get_body('/inherit'), 'server')
        self.assertEqual(self.get_body('/own'), 'location')

    def test_inherited_from_http(self):
        self.start_app('''
            location / { python_content "show_marks(r)"; }
        ''', http='python_access "mark(r, \'http\')";')
        self.assertEqual(self.get_body('/'), 'http')

    def test_applies_to_non_python_content(self):
        self.start_app('''
            location / {
                python_access "403 if 'deny' in r.arg else None";
                root html;
            }
        ''', files={'html/index.html': 'static'})
        self.assertEqual(self.get_body('/'), 'static')
        self.assertEqual(self.get('/?deny=1')[0], 403)


class SetVariable(AppTestCase):
    """python_set: conversion of the result, evaluation per request."""

    def test_str_result(self):
        self.start_app('''
            location / { return 200 "[$v]"; }
        ''', http='python_set $v "\'abc\' + r.var[\'uri\']";')
        self.assertEqual(self.get_body('/x'), '[abc/x]')

    def test_str_is_sent_as_utf8(self):
        self.start_app('location / { return 200 "[$v]"; }',
                       http='python_set $v "\'h\\u00e9\'";')
        status, headers, body = self.get('/')
        self.assertEqual(body, '[h\u00e9]'.encode('utf-8'))

    def test_int_result_becomes_str(self):
        self.start_app('location / { return 200 "[$v]"; }', http='python_set $v "6 * 7";')
        self.assertEqual(self.get_body('/'), '[42]')

    def test_none_result_is_empty(self):
        self.start_app('location / { return 200 "[$v]"; }', http='python_set $v "None";')
        self.assertEqual(self.get_body('/'), '[]')

    def test_bytes_result_is_raw(self):
        self.start_app('location / { return 200 "[$v]"; }',
                       http='python_set $v "b\'\\xff\\x01\'";')
        status, headers, body = self.get('/')
        self.assertEqual(body, b'[\xff\x01]')

    def test_evaluated_for_each_request(self):
        self.start_app('location / { return 200 "[$v]"; }', http='python_set $v "count(r)";')
        self.assertEqual(self.get_body('/'), '[1]')
        self.assertEqual(self.get_body('/'), '[2]')
        self.assertEqual(self.get_body('/'), '[3]')

    def test_sees_request_arguments(self):
        self.start_app('location / { return 200 "[$v]"; }',
                       http='python_set $v "r.arg.get(\'name\', \'nobody\').upper()";')
        self.assertEqual(self.get_body('/?name=ada'), '[ADA]')
        self.assertEqual(self.get_body('/'), '[NOBODY]')

    def test_readable_from_python_through_r_var(self):
        self.start_app('''
            location / { python_content "send(r, 'var=' + r.var['v'])"; }
        ''', http='python_set $v "r.var[\'uri\'] * 2";')
        self.assertEqual(self.get_body('/ab'), 'var=/ab/ab')

    def test_usable_in_add_header(self):
        self.start_app('''
            location / { add_header X-V $v; return 200 "ok"; }
        ''', http='python_set $v "\'header-\' + r.var[\'request_method\']";')
        status, headers, body = self.get('/')
        self.assertEqual(headers['X-V'], 'header-GET')


class LogPhase(AppTestCase):
    """python_log runs after the response; several in order; inheritance."""

    def test_runs_after_response_with_final_status(self):
        self.start_app('''
            location / {
                python_log "r.log('logged status=' + r.var['status'])";
                return 404;
            }
        ''')
        self.assertEqual(self.get('/')[0], 404)
        self.wait_log(r'\[info\].*logged status=404')

    def test_several_at_one_level_run_in_order(self):
        self.start_app('''
            location / {
                python_log "r.log('log-one', ngx.LOG_NOTICE)";
                python_log "r.log('log-two', ngx.LOG_NOTICE)";
                return 200 "ok";
            }
        ''')
        self.get_body('/')
        self.wait_log(r'log-two')
        log = self.error_log()
        self.assertLess(log.index('log-one'), log.index('log-two'))

    def test_inherited_from_http(self):
        self.start_app('''
            location /inherit { return 200 "ok"; }
            location /own { python_log "r.log('own ' + r.var['uri'])"; return 200 "ok"; }
        ''', http='python_log "r.log(\'http-level \' + r.var[\'uri\'])";')
        self.get_body('/inherit')
        self.get_body('/own')
        self.wait_log(r'own /own')
        self.wait_log(r'http-level /inherit')
        self.assertNotIn('http-level /own', self.error_log())

    def test_result_is_ignored(self):
        self.start_app('''
            location / { python_log "403"; return 200 "fine"; }
        ''')
        self.assertEqual(self.get_body('/'), 'fine')
        self.assertEqual(self.get_body('/'), 'fine')


class NgxModule(AppTestCase):

    def constants(self):
        self.start_app('location / { python_content "constants(r)"; }')
        return json.loads(self.get_body('/'))

    def test_result_codes_match_nginx(self):
        c = self.constants()
        self.assertEqual({k: c[k] for k in ('OK', 'ERROR', 'AGAIN', 'BUSY', 'DONE',
                                             'DECLINED', 'ABORT')},
                         {'OK': 0, 'ERROR': -1, 'AGAIN': -2, 'BUSY': -3, 'DONE': -4,
                          'DECLINED': -5, 'ABORT': -6})

    def test_log_levels_are_distinct_ints(self):
        c = self.constants()
        levels = [c[k] for k in ('LOG_EMERG', 'LOG_ALERT', 'LOG_CRIT', 'LOG_ERR',
                                 'LOG_WARN', 'LOG_NOTICE', 'LOG_INFO', 'LOG_DEBUG')]
        for v in levels:
            self.assertIsInstance(v, int)
        self.assertEqual(len(set(levels)), len(levels))
        self.assertEqual(levels, sorted(levels), 'LOG_EMERG..LOG_DEBUG in nginx order')

    def test_send_flags_are_distinct_nonzero_ints(self):
        c = self.constants()
        self.assertIsInstance(c['SEND_FLUSH'], int)
        self.assertIsInstance(c['SEND_LAST'], int)
        self.assertNotEqual(c['SEND_FLUSH'], c['SEND_LAST'])
        self.assertNotEqual(c['SEND_FLUSH'], 0)
        self.assertNotEqual(c['SEND_LAST'], 0)

    def test_ngx_importable_in_included_code(self):
        self.start_server('location / { python_content "f(r)"; }', http='python_include m.py;',
                          files={'m.py': 'import ngx as n\n'
                                         'def f(r):\n'
                                         '    r.send(str(n is ngx), n.SEND_LAST)\n'})
        self.assertEqual(self.get_body('/'), 'True')


class Concurrency(AppTestCase):

    def _two_sleepers(self):
        self.start_app('location / { python_content "sleepy(r)"; }')
        results = []

        def one():
            results.append(self.get('/'))

        t0 = time.monotonic()
        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        elapsed = time.monotonic() - t0
        self.assertEqual([(s, b) for s, h, b in results], [(200, b'slept')] * 2)
        return elapsed

    @harness.unblock_only
    def test_sleeping_handlers_do_not_block_the_worker(self):
        # two 0.5 s sleeps in one worker overlap
        self.assertLess(self._two_sleepers(), 0.95)

    @harness.sync_only
    def test_sleeping_handler_blocks_the_worker_in_sync_build(self):
        # documented limitation of the sync build: handlers run one at a time
        self.assertGreaterEqual(self._two_sleepers(), 0.95)


if __name__ == '__main__':
    harness.main()
