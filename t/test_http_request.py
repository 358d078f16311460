"""The HTTP request object r: hi, ho, var, arg, ctx, status, log, sendHeader,
send; non-UTF-8 bytes; a request object kept past its request."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# Probes: GET /<name> runs PROBES[name](r) and answers JSON:
# {"value": <result>} or {"exception": <type name>, "message": <str>}.
# A probe that writes the response itself returns SENT.
APP = r'''
import json
import ngx

PROBES = {}
SENT = object()


def probe(f):
    PROBES[f.__name__] = f
    return f


def run(r):
    f = PROBES[r.var['uri'].lstrip('/')]
    try:
        out = {'value': f(r)}
    except Exception as e:
        out = {'exception': type(e).__name__, 'message': str(e)}
    if out.get('value') is SENT:
        return
    r.ho['Content-Type'] = 'application/json'
    r.send(json.dumps(out), ngx.SEND_LAST)


def raises(f):
    """The name of the exception f() raises, or 'no exception'."""
    try:
        f()
    except Exception as e:
        return type(e).__name__
    return 'no exception'


# ---- r.hi

@probe
def hi_case(r):
    return [r.hi['x-custom'], r.hi['X-CUSTOM'], r.hi['X-Custom']]

@probe
def hi_missing(r):
    return r.hi['X-Missing']

@probe
def hi_get(r):
    return [r.hi.get('X-Missing', 'dflt'), r.hi.get('X-Missing'), r.hi.get('x-custom', 'dflt')]

@probe
def hi_in(r):
    return ['X-CUSTOM' in r.hi, 'x-custom' in r.hi, 'X-Missing' in r.hi]

@probe
def hi_keys(r):
    return sorted(k.lower() for k in r.hi.keys())

@probe
def hi_items(r):
    return sorted([k.lower(), v] for k, v in r.hi.items())

@probe
def hi_len(r):
    return [len(r.hi), len(list(r.hi.keys()))]

@probe
def hi_assign(r):
    r.hi['X-New'] = 'v'

@probe
def hi_delete(r):
    del r.hi['X-Custom']

@probe
def hi_echo(r):
    r.ho['X-Echo'] = r.hi['X-In']
    return repr(r.hi['X-In'])


# ---- r.ho

@probe
def ho_content_type(r):
    r.ho['Content-Type'] = 'text/plain; charset=utf-8'
    r.send('typed', ngx.SEND_LAST)
    return SENT

@probe
def ho_content_length_int(r):
    r.ho['Content-Length'] = 5
    r.send('hello', ngx.SEND_LAST)
    return SENT

@probe
def ho_custom(r):
    r.ho['X-Foo'] = 'bar'
    return 'set'

@probe
def ho_int_value(r):
    r.ho['X-Num'] = 42
    return r.ho['X-Num']

@probe
def ho_bytes_value(r):
    r.ho['X-Bytes'] = b'from-bytes'
    return r.ho['X-Bytes']

@probe
def ho_utf8_value(r):
    r.ho['X-Utf8'] = 'caf\u00e9'
    return 'set'

@probe
def ho_read_back(r):
    r.ho['X-Foo'] = 'bar'
    return [r.ho['X-Foo'], r.ho['x-foo'], r.ho.get('X-FOO'), 'x-FOO' in r.ho]

@probe
def ho_overwrite(r):
    r.ho['X-Foo'] = 'first'
    r.ho['x-foo'] = 'second'
    return r.ho['X-Foo']

@probe
def ho_content_type_read_back(r):
    r.ho['Content-Type'] = 'text/x-test'
    value = r.ho['content-type']
    r.send(value, ngx.SEND_LAST)
    return SENT

@probe
def ho_delete(r):
    r.ho['X-Foo'] = 'bar'
    r.ho['X-Keep'] = 'kept'
    del r.ho['X-Foo']
    return ['X-Foo' in r.ho, r.ho.get('X-Foo', 'gone')]

@probe
def ho_missing(r):
    return r.ho['X-Missing']

@probe
def ho_cr_lf(r):
    return raises(lambda: r.ho.__setitem__('X-Bad', 'a\r\nX-Injected: 1'))

@probe
def ho_lf(r):
    return raises(lambda: r.ho.__setitem__('X-Bad', 'a\nX-Injected: 1'))

@probe
def ho_cr(r):
    return raises(lambda: r.ho.__setitem__('X-Bad', 'a\rb'))

@probe
def ho_nul(r):
    return raises(lambda: r.ho.__setitem__('X-Bad', 'a\0b'))

@probe
def ho_cr_lf_bytes(r):
    return raises(lambda: r.ho.__setitem__('X-Bad', b'a\r\nX-Injected: 1'))


# ---- r.var, r.arg

@probe
def var_uri(r):
    return r.var['uri']

@probe
def var_arg_raw(r):
    return r.var['arg_q']

@probe
def var_unknown(r):
    return r.var['no_such_variable_here']

@probe
def var_not_found(r):
    return r.var['arg_missing']

@probe
def var_assign(r):
    r.var['uri'] = '/x'

@probe
def arg_decoded(r):
    return r.arg['q']

@probe
def arg_missing(r):
    return r.arg['missing']

@probe
def arg_get(r):
    return [r.arg.get('missing', 'dflt'), r.arg.get('q')]

@probe
def arg_assign(r):
    r.arg['q'] = 'x'

@probe
def arg_echo(r):
    r.ho['X-Arg'] = r.arg['x']
    return repr(r.arg['x'])


# ---- r.status

@probe
def status_201(r):
    r.status = 201
    r.send('created', ngx.SEND_LAST)
    return SENT

@probe
def status_read_back(r):
    r.status = 202
    value = r.status
    r.status = 200
    return value

@probe
def status_99(r):
    return raises(lambda: setattr(r, 'status', 99))

@probe
def status_1000(r):
    return raises(lambda: setattr(r, 'status', 1000))


# ---- r.ctx

@probe
def ctx_is_dict(r):
    return isinstance(r.ctx, dict)

@probe
def ctx_private(r):
    r.ctx['n'] = r.ctx.get('n', 0) + 1
    return r.ctx['n']

def ctx_access(r):
    r.ctx['from'] = 'access'

def ctx_log(r):
    r.log('ctx in log phase: %s' % r.ctx.get('from'), ngx.LOG_WARN)

@probe
def ctx_content(r):
    return r.ctx.get('from')


# ---- r.log

@probe
def log_default(r):
    r.log('message at default level')

@probe
def log_warn(r):
    r.log('message at warn level', ngx.LOG_WARN)

@probe
def log_err(r):
    r.log('message at err level', ngx.LOG_ERR)

@probe
def log_notice_keyword(r):
    r.log('message at notice level', level=ngx.LOG_NOTICE)


# ---- r.send, r.sendHeader

@probe
def send_str(r):
    r.send('h\u00e9llo \u2603', ngx.SEND_LAST)
    return SENT

@probe
def send_types(r):
    r.send(b'bytes,')
    r.send(bytearray(b'bytearray,'))
    r.send(memoryview(b'xxmemoryview,')[2:])
    r.send('str')
    r.send(None, ngx.SEND_LAST)
    return SENT

@probe
def send_flush(r):
    r.send('one,', ngx.SEND_FLUSH)
    r.send('two', ngx.SEND_FLUSH)
    r.send(None, ngx.SEND_LAST)
    return SENT

@probe
def send_default_flags(r):
    r.send('a')
    r.send('b')
    return SENT

@probe
def send_headers_first(r):
    r.ho['X-Before-Body'] = 'yes'
    r.status = 203
    r.send('body', ngx.SEND_LAST)
    return SENT

@probe
def send_header_explicit(r):
    r.status = 200
    r.ho['X-Explicit'] = 'yes'
    r.sendHeader()
    r.send('after header', ngx.SEND_LAST)
    return SENT

@probe
def send_header_twice(r):
    r.sendHeader()
    name = raises(r.sendHeader)
    r.send(None, ngx.SEND_LAST)
    r.log('second sendHeader: ' + name, ngx.LOG_WARN)
    return SENT

@probe
def send_after_last(r):
    r.send('last', ngx.SEND_LAST)
    r.log('send after SEND_LAST: ' + raises(lambda: r.send('more')), ngx.LOG_WARN)
    return SENT

@probe
def send_large(r):
    chunk = bytes(range(256)) * 256          # 64 KiB
    for _ in range(32):                      # 2 MiB
        r.send(chunk)
    r.send(None, ngx.SEND_LAST)
    return SENT


# ---- a request object kept past its request

KEPT = {}


@probe
def keep(r):
    KEPT['r'] = r
    KEPT['hi'] = r.hi
    KEPT['ho'] = r.ho
    KEPT['var'] = r.var
    KEPT['arg'] = r.arg
    return 'kept'


@probe
def use_kept(r):
    old = KEPT['r']
    uses = {
        'var': lambda: old.var['uri'],
        'hi': lambda: old.hi['Host'],
        'ho': lambda: old.ho.__setitem__('X-Stale', '1'),
        'arg': lambda: old.arg['a'],
        'status_get': lambda: old.status,
        'status_set': lambda: setattr(old, 'status', 200),
        'log': lambda: old.log('stale log'),
        'send': lambda: old.send('stale'),
        'sendHeader': lambda: old.sendHeader(),
    }
    return {name: raises(f) for name, f in uses.items()}


@probe
def use_kept_mappings(r):
    uses = {
        'hi': lambda: KEPT['hi']['Host'],
        'hi_len': lambda: len(KEPT['hi']),
        'ho': lambda: KEPT['ho'].__setitem__('X-Stale', '1'),
        'ho_get': lambda: KEPT['ho']['Content-Type'],
        'var': lambda: KEPT['var']['uri'],
    }
    out = {name: raises(f) for name, f in uses.items()}
    # r.arg may be a snapshot taken during the request: then it keeps its value
    try:
        out['arg'] = 'value ' + KEPT['arg']['a']
    except Exception as e:
        out['arg'] = type(e).__name__
    return out
'''

SERVER = '''
    location / { python_content "run(r)"; }
    location /ctx_content {
        python_access "ctx_access(r)";
        python_log "ctx_log(r)";
        python_content "run(r)";
    }
'''


class RequestTestCase(harness.NginxTestCase):

    def setUp(self):
        super().setUp()
        self.start_server(SERVER, http='python_include app.py;', files={'app.py': APP})

    def probe(self, name, query='', **kw):
        status, headers, body = self.get('/' + name + query, **kw)
        self.assertEqual(status, 200, body)
        self.assertEqual(headers.get_content_type(), 'application/json', body)
        return json.loads(body)

    def value(self, name, query='', **kw):
        out = self.probe(name, query, **kw)
        self.assertNotIn('exception', out, out)
        return out['value']

    def exception(self, name, query='', **kw):
        out = self.probe(name, query, **kw)
        self.assertIn('exception', out, 'no exception, got %r' % (out,))
        return out['exception']


class InputHeaders(RequestTestCase):

    H = {'X-Custom': 'v'}

    def test_names_are_case_insensitive(self):
        self.assertEqual(self.value('hi_case', headers=self.H), ['v', 'v', 'v'])

    def test_missing_raises_key_error(self):
        self.assertEqual(self.exception('hi_missing', headers=self.H), 'KeyError')

    def test_get_with_default(self):
        self.assertEqual(self.value('hi_get', headers=self.H), ['dflt', None, 'v'])

    def test_in(self):
        self.assertEqual(self.value('hi_in', headers=self.H), [True, True, False])

    def test_keys(self):
        keys = self.value('hi_keys', headers=self.H)
        self.assertIn('x-custom', keys)
        self.assertIn('host', keys)

    def test_items(self):
        self.assertIn(['x-custom', 'v'], self.value('hi_items', headers=self.H))

    def test_len(self):
        resp = self.raw(b'GET /hi_len HTTP/1.0\r\nHost: t\r\nX-A: 1\r\nX-B: 2\r\n\r\n')
        self.assertTrue(resp.startswith(b'HTTP/1.1 200'), resp)
        self.assertEqual(json.loads(resp.split(b'\r\n\r\n', 1)[1]), {'value': [3, 3]})

    def test_assignment_raises_type_error(self):
        self.assertEqual(self.exception('hi_assign', headers=self.H), 'TypeError')

    def test_deletion_raises_type_error(self):
        self.assertEqual(self.exception('hi_delete', headers=self.H), 'TypeError')

    def test_non_utf8_value_round_trips(self):
        resp = self.raw(b'GET /hi_echo HTTP/1.0\r\nHost: t\r\nX-In: a\xff\xfe-\xc3\xa9\r\n\r\n')
        head, body = resp.split(b'\r\n\r\n', 1)
        self.assertTrue(head.startswith(b'HTTP/1.1 200'), resp)
        self.assertIn(b'\r\nX-Echo: a\xff\xfe-\xc3\xa9\r\n', head + b'\r\n')
        # the str seen by Python: surrogateescape for the bad bytes, UTF-8 decoded otherwise
        self.assertEqual(json.loads(body)['value'], repr('a\udcff\udcfe-\u00e9'))


class OutputHeaders(RequestTestCase):

    def test_content_type_sets_response_type(self):
        status, headers, body = self.get('/ho_content_type')
        self.assertEqual((status, body), (200, b'typed'))
        self.assertEqual(headers['Content-Type'], 'text/plain; charset=utf-8')

    def test_content_type_reads_back(self):
        status, headers, body = self.get('/ho_content_type_read_back')
        self.assertEqual(body, b'text/x-test')
        self.assertEqual(headers['Content-Type'], 'text/x-test')

    def test_content_length_accepts_int(self):
        status, headers, body = self.get('/ho_content_length_int')
        self.assertEqual((status, body), (200, b'hello'))
        self.assertEqual(headers['Content-Length'], '5')
        self.assertIsNone(headers['Transfer-Encoding'])

    def test_custom_header_is_sent(self):
        status, headers, body = self.get('/ho_custom')
        self.assertEqual(headers['X-Foo'], 'bar')

    def test_int_value_becomes_str(self):
        status, headers, body = self.get('/ho_int_value')
        self.assertEqual(json.loads(body), {'value': '42'})
        self.assertEqual(headers['X-Num'], '42')

    def test_bytes_value(self):
        status, headers, body = self.get('/ho_bytes_value')
        self.assertEqual(headers['X-Bytes'], 'from-bytes')

    def test_str_value_is_sent_as_utf8(self):
        raw = self.raw(b'GET /ho_utf8_value HTTP/1.0\r\nHost: t\r\n\r\n')
        self.assertIn(b'\r\nX-Utf8: caf\xc3\xa9\r\n', raw)

    def test_read_back_case_insensitive(self):
        self.assertEqual(self.value('ho_read_back'), ['bar', 'bar', 'bar', True])

    def test_setting_again_replaces(self):
        status, headers, body = self.get('/ho_overwrite')
        self.assertEqual(json.loads(body), {'value': 'second'})
        self.assertEqual(headers.get_all('X-Foo'), ['second'])

    def test_delete_removes_header(self):
        status, headers, body = self.get('/ho_delete')
        self.assertEqual(json.loads(body), {'value': [False, 'gone']})
        self.assertIsNone(headers['X-Foo'])
        self.assertEqual(headers['X-Keep'], 'kept')

    def test_missing_raises_key_error(self):
        self.assertEqual(self.exception('ho_missing'), 'KeyError')

    def test_cr_lf_in_value_raises_value_error(self):
        status, headers, body = self.get('/ho_cr_lf')
        self.assertEqual(json.loads(body), {'value': 'ValueError'})
        self.assertIsNone(headers['X-Injected'])
        self.assertIsNone(headers['X-Bad'])

    def test_lf_in_value_raises_value_error(self):
        self.assertEqual(self.value('ho_lf'), 'ValueError')

    def test_cr_in_value_raises_value_error(self):
        self.assertEqual(self.value('ho_cr'), 'ValueError')

    def test_nul_in_value_raises_value_error(self):
        self.assertEqual(self.value('ho_nul'), 'ValueError')

    def test_cr_lf_in_bytes_value_raises_value_error(self):
        self.assertEqual(self.value('ho_cr_lf_bytes'), 'ValueError')


class Variables(RequestTestCase):

    def test_uri(self):
        self.assertEqual(self.value('var_uri', '?a=1'), '/var_uri')

    def test_arg_variable_is_raw(self):
        self.assertEqual(self.value('var_arg_raw', '?q=a+b%21'), 'a+b%21')

    def test_unknown_variable_raises_key_error(self):
        self.assertEqual(self.exception('var_unknown'), 'KeyError')

    def test_not_found_variable_raises_key_error(self):
        self.assertEqual(self.exception('var_not_found'), 'KeyError')

    def test_assigning_a_variable_nginx_does_not_let_change_raises(self):
        # $uri is nginx's own, not changeable (set variables are: test_http_rewrite)
        self.assertEqual(self.exception('var_assign'), 'ValueError')


class Arguments(RequestTestCase):

    def test_url_decoded(self):
        self.assertEqual(self.value('arg_decoded', '?q=a+b%21'), 'a b!')

    def test_missing_raises_key_error(self):
        self.assertEqual(self.exception('arg_missing', '?q=1'), 'KeyError')

    def test_get_with_default(self):
        self.assertEqual(self.value('arg_get', '?q=x%20y'), ['dflt', 'x y'])

    def test_assignment_raises_type_error(self):
        self.assertEqual(self.exception('arg_assign', '?q=1'), 'TypeError')

    def test_non_utf8_value_round_trips(self):
        status, headers, body = self.get('/arg_echo?x=%FFok')
        self.assertEqual(json.loads(body), {'value': repr('\udcffok')})
        raw = self.raw(b'GET /arg_echo?x=%FFok HTTP/1.0\r\nHost: t\r\n\r\n')
        self.assertIn(b'\r\nX-Arg: \xffok\r\n', raw)


class Status(RequestTestCase):

    def test_set_201_then_send(self):
        status, headers, body = self.get('/status_201')
        self.assertEqual((status, body), (201, b'created'))

    def test_read_back(self):
        self.assertEqual(self.value('status_read_back'), 202)

    def test_99_raises_value_error(self):
        self.assertEqual(self.value('status_99'), 'ValueError')

    def test_1000_raises_value_error(self):
        self.assertEqual(self.value('status_1000'), 'ValueError')


class Context(RequestTestCase):

    def test_is_a_dict(self):
        self.assertIs(self.value('ctx_is_dict'), True)

    def test_private_to_each_request(self):
        self.assertEqual(self.value('ctx_private'), 1)
        self.assertEqual(self.value('ctx_private'), 1)

    def test_kept_from_access_to_content(self):
        self.assertEqual(self.value('ctx_content'), 'access')

    def test_kept_until_log_phase(self):
        self.value('ctx_content')
        self.wait_log(r'\[warn\].*ctx in log phase: access')


class Log(RequestTestCase):

    def test_default_level_is_info(self):
        self.value('log_default')
        self.wait_log(r'\[info\] .*message at default level')

    def test_warn_level(self):
        self.value('log_warn')
        self.wait_log(r'\[warn\] .*message at warn level')

    def test_err_level(self):
        self.value('log_err')
        self.wait_log(r'\[error\] .*message at err level')

    def test_level_keyword_argument(self):
        self.value('log_notice_keyword')
        self.wait_log(r'\[notice\] .*message at notice level')

    def test_one_line_per_call(self):
        self.value('log_warn')
        self.value('log_warn')
        self.wait_log(r'(?s)message at warn level.*message at warn level')
        entries = [e for e in self.log_entries('warn') if 'message at warn level' in e]
        self.assertEqual(len(entries), 2, entries)
        for e in entries:
            self.assertEqual(e.count('message at warn level'), 1, e)


class Send(RequestTestCase):

    def test_str_is_sent_as_utf8(self):
        status, headers, body = self.get('/send_str')
        self.assertEqual(body, 'h\u00e9llo \u2603'.encode('utf-8'))

    def test_bytes_bytearray_memoryview_str_none(self):
        status, headers, body = self.get('/send_types')
        self.assertEqual((status, body), (200, b'bytes,bytearray,memoryview,str'))

    def test_flush_flag(self):
        status, headers, body = self.get('/send_flush')
        self.assertEqual(body, b'one,two')

    def test_without_last_flag_response_still_completes(self):
        status, headers, body = self.get('/send_default_flags')
        self.assertEqual((status, body), (200, b'ab'))

    def test_headers_go_first_automatically(self):
        status, headers, body = self.get('/send_headers_first')
        self.assertEqual((status, body), (203, b'body'))
        self.assertEqual(headers['X-Before-Body'], 'yes')

    def test_send_header_explicitly(self):
        status, headers, body = self.get('/send_header_explicit')
        self.assertEqual((status, body), (200, b'after header'))
        self.assertEqual(headers['X-Explicit'], 'yes')

    def test_send_header_twice_raises(self):
        status, headers, body = self.get('/send_header_twice')
        self.assertEqual(status, 200)
        m = self.wait_log(r'second sendHeader: (\w+)')
        self.assertNotEqual(m.group(1), 'no', 'a second sendHeader() did not raise')

    def test_send_after_last_raises(self):
        status, headers, body = self.get('/send_after_last')
        self.assertEqual((status, body), (200, b'last'))
        m = self.wait_log(r'send after SEND_LAST: (\w+)')
        self.assertNotEqual(m.group(1), 'no', 'r.send() after SEND_LAST did not raise')

    def test_large_body_in_pieces(self):
        status, headers, body = self.get('/send_large')
        self.assertEqual(status, 200)
        self.assertEqual(len(body), 2 * 1024 * 1024)
        self.assertEqual(body, bytes(range(256)) * 256 * 32)


class KeptRequest(RequestTestCase):
    """A request object stored by one request and used by a later one."""

    def test_kept_request_raises_on_use(self):
        self.assertEqual(self.value('keep', '?a=1'), 'kept')
        uses = self.value('use_kept')
        for name, result in uses.items():
            self.assertNotEqual(result, 'no exception', 'r.%s worked on a finished request' % name)
        # and the worker is fine
        self.assertEqual(self.value('var_uri'), '/var_uri')

    def test_kept_mappings_raise_on_use(self):
        self.assertEqual(self.value('keep', '?a=1', headers={'Content-Type': 'text/x'}), 'kept')
        uses = self.value('use_kept_mappings')
        arg = uses.pop('arg')
        for name, result in uses.items():
            self.assertNotEqual(result, 'no exception',
                                'kept r.%s mapping worked on a finished request' % name)
        # r.arg: an exception, or the (immutable) value it had during the request
        self.assertTrue(arg == 'value 1' or not arg.startswith('value'), arg)
        self.assertEqual(self.value('var_uri'), '/var_uri')


if __name__ == '__main__':
    harness.main()
