"""Run-time exceptions in handlers: one [error] entry with the traceback, the
documented response, and a worker that keeps serving."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

APP = r'''
import ngx


def divide(r):
    return 1 / 0


def fail_in_content(r):
    r.ho['X-Before-Error'] = 'yes'
    divide(r)
    r.send('not reached', ngx.SEND_LAST)


def fail_after_send(r):
    r.send('partial', ngx.SEND_FLUSH)
    raise ValueError('after partial body')


def deep(n):
    if n == 0:
        return 1 / 0
    return deep(n - 1)


def recurse(r):
    return recurse(r)


def system_exit(r):
    raise SystemExit(3)


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError('str() of the exception fails too')


def bad_str(r):
    raise BadStr()


def surrogate_message(r):
    raise ValueError('bad bytes: \udcff\udcfe')


def read_failing(r):
    try:
        value = r.var['failing']
    except KeyError:
        value = 'KeyError'
    r.send(value, ngx.SEND_LAST)


def log_fails(r):
    raise KeyError('from python_log')
'''

SERVER = '''
location = /ok { python_content "r.send('ok', ngx.SEND_LAST)"; }
location = /content { python_content "fail_in_content(r)"; }
location = /content-name-error { python_content "no_such_function(r)"; }
location = /access {
    python_access "divide(r)";
    python_content "r.send('content ran', ngx.SEND_LAST)";
}
location = /set { return 200 "[$failing]"; }
location = /set-from-python { python_content "read_failing(r)"; }
location = /log {
    python_log "log_fails(r)";
    return 200 "logged";
}
location = /partial { python_content "fail_after_send(r)"; }
location = /deep { python_content "deep(60)"; }
location = /recursion { python_content "recurse(r)"; }
location = /system-exit { python_content "system_exit(r)"; }
location = /bad-str { python_content "bad_str(r)"; }
location = /surrogate { python_content "surrogate_message(r)"; }
location = /content-returns-str { python_content "'a string'"; }
location = /access-returns-str {
    python_access "'a string'";
    python_content "r.send('content ran', ngx.SEND_LAST)";
}
'''


class RunTimeErrors(harness.NginxTestCase):

    def setUp(self):
        super().setUp()
        self.start_server(SERVER, http='''
            python_include app.py;
            python_set $failing "divide(r)";
        ''', files={'app.py': APP})
        # nginx listens before it forks the worker: wait for it to exist
        deadline = time.monotonic() + 5
        self.workers = self.worker_pids()
        while not self.workers and time.monotonic() < deadline:
            time.sleep(0.02)
            self.workers = self.worker_pids()

    def assertStillServing(self):
        """The same worker answers the next request."""
        self.assertEqual(self.get('/ok')[::2], (200, b'ok'))
        self.assertEqual(self.worker_pids(), self.workers, 'the worker was replaced')

    def error_entries(self, offset, wait_for):
        self.wait_log(wait_for, offset)
        return self.log_entries('error', offset)

    def assertOneTraceback(self, offset, *texts):
        """Exactly one [error] entry since offset, with the traceback and texts."""
        entries = self.error_entries(offset, 'Traceback')
        self.assertEqual(len(entries), 1, '\n'.join(entries))
        self.assertIn('Traceback (most recent call last)', entries[0])
        for t in texts:
            self.assertIn(t, entries[0])
        return entries[0]

    def test_content_exception_gives_500(self):
        offset = self.error_log_size()
        status, headers, body = self.get('/content')
        self.assertEqual(status, 500)
        self.assertNotIn(b'not reached', body)
        self.assertOneTraceback(offset, 'ZeroDivisionError: division by zero')
        self.assertStillServing()

    def test_traceback_names_file_function_and_line(self):
        offset = self.error_log_size()
        self.get('/content')
        app = os.path.join(self.prefix, 'app.py')
        entry = self.assertOneTraceback(offset)
        self.assertIn('File "%s", line 6, in divide' % app, entry)
        self.assertIn('in fail_in_content', entry)

    def test_name_error_in_expression_gives_500(self):
        offset = self.error_log_size()
        self.assertEqual(self.get('/content-name-error')[0], 500)
        self.assertOneTraceback(offset, 'NameError', 'no_such_function')
        self.assertStillServing()

    def test_access_exception_gives_500(self):
        offset = self.error_log_size()
        status, headers, body = self.get('/access')
        self.assertEqual(status, 500)
        self.assertNotIn(b'content ran', body)
        self.assertOneTraceback(offset, 'ZeroDivisionError: division by zero')
        self.assertStillServing()

    def test_set_exception_leaves_variable_empty(self):
        offset = self.error_log_size()
        status, headers, body = self.get('/set')
        self.assertEqual((status, body), (200, b'[]'))
        entries = self.error_entries(offset, 'ZeroDivisionError')
        self.assertGreaterEqual(len(entries), 1)
        self.assertIn('Traceback (most recent call last)', entries[0])
        self.assertIn('ZeroDivisionError: division by zero', entries[0])
        self.assertStillServing()

    def test_set_exception_read_from_python_is_key_error(self):
        offset = self.error_log_size()
        status, headers, body = self.get('/set-from-python')
        self.assertEqual((status, body), (200, b'KeyError'))
        entries = self.error_entries(offset, 'ZeroDivisionError')
        self.assertIn('Traceback (most recent call last)', entries[0])
        self.assertStillServing()

    def test_log_exception_changes_nothing_else(self):
        offset = self.error_log_size()
        status, headers, body = self.get('/log')
        self.assertEqual((status, body), (200, b'logged'))
        self.assertOneTraceback(offset, "KeyError: 'from python_log'")
        self.assertStillServing()

    def test_repeated_exceptions_one_entry_each(self):
        offset = self.error_log_size()
        for _ in range(20):
            self.assertEqual(self.get('/content')[0], 500)
        self.assertStillServing()
        entries = self.log_entries('error', offset)
        self.assertEqual(len(entries), 20)
        for e in entries:
            self.assertIn('ZeroDivisionError: division by zero', e)

    def test_exception_after_body_started_closes_connection(self):
        offset = self.error_log_size()
        resp = self.raw(b'GET /partial HTTP/1.1\r\nHost: t\r\n\r\n')
        self.assertTrue(resp.startswith(b'HTTP/1.1 200'), resp)
        self.assertIn(b'partial', resp)
        # chunked body without its terminating chunk: the response is cut short
        self.assertFalse(resp.endswith(b'0\r\n\r\n'), resp)
        self.assertOneTraceback(offset, 'ValueError: after partial body')
        self.assertStillServing()

    def test_long_traceback_keeps_first_line_and_end(self):
        offset = self.error_log_size()
        self.assertEqual(self.get('/deep')[0], 500)
        self.assertOneTraceback(offset, 'Traceback (most recent call last)',
                                'ZeroDivisionError: division by zero')
        self.assertStillServing()

    def test_recursion_error_gives_500(self):
        offset = self.error_log_size()
        self.assertEqual(self.get('/recursion')[0], 500)
        self.assertOneTraceback(offset, 'RecursionError')
        self.assertStillServing()

    def test_system_exit_does_not_end_the_worker(self):
        offset = self.error_log_size()
        self.assertEqual(self.get('/system-exit')[0], 500)
        self.assertOneTraceback(offset, 'SystemExit')
        self.assertStillServing()

    def test_exception_whose_str_fails_is_still_reported(self):
        offset = self.error_log_size()
        self.assertEqual(self.get('/bad-str')[0], 500)
        entries = self.error_entries(offset, 'BadStr')
        self.assertEqual(len(entries), 1, entries)
        self.assertStillServing()

    def test_exception_message_with_surrogates_is_logged(self):
        offset = self.error_log_size()
        self.assertEqual(self.get('/surrogate')[0], 500)
        self.assertOneTraceback(offset, 'ValueError: bad bytes')
        self.assertStillServing()

    def test_content_returning_a_str_gives_500(self):
        offset = self.error_log_size()
        self.assertEqual(self.get('/content-returns-str')[0], 500)
        self.assertEqual(len(self.error_entries(offset, r'\[error\]')), 1)
        self.assertStillServing()

    def test_access_returning_a_str_gives_500(self):
        offset = self.error_log_size()
        status, headers, body = self.get('/access-returns-str')
        self.assertEqual(status, 500)
        self.assertNotIn(b'content ran', body)
        self.assertEqual(len(self.error_entries(offset, r'\[error\]')), 1)
        self.assertStillServing()


if __name__ == '__main__':
    harness.main()
