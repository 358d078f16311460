# Loaded by `python_include app.py` in examples/nginx.conf.
import json
import time

import ngx


def hello(r):
    r.ho['Content-Type'] = 'text/plain; charset=utf-8'
    r.send(f'Hello from Python in nginx (configuration loaded {STARTED})\n')
    r.send(None, ngx.SEND_LAST)


def greeting(r):
    name = r.arg.get('name', 'world')
    return f'Hello, {name}!'


def check_token(r):
    if r.arg.get('token') == 'secret':
        return ngx.OK
    r.log('python_access: bad or missing token', ngx.LOG_WARN)
    return 403


def echo(r):
    r.ho['Content-Type'] = 'application/json'
    r.send(json.dumps({
        'method': r.var['request_method'],
        'uri': r.var['uri'],
        'args': dict(r.arg),
        'headers': dict(r.hi.items()),
        'body': r.var.get('request_body', ''),
    }, indent=2) + '\n', ngx.SEND_LAST)


def slow(r):
    started = time.monotonic()
    time.sleep(1)
    r.send('slept %.2f s\n' % (time.monotonic() - started), ngx.SEND_LAST)
