"""Random but reproducible client sessions for t/test_http_fuzz.py.

Everything a case does (the bytes it sends, how it splits them, when it
vanishes, what the handlers are told to do) comes from one
`random.Random(case_seed)`, so a failing case is replayed by its run's
FUZZ_SEED (see test_http_fuzz.py). Only timing differs between runs.

An HTTP case is a list of requests sent on one connection (pipelined or one
after the other), then one of:
  'full'        read every response; each request is answered
  'vanish_req'  close (maybe with a reset) part-way through sending
  'vanish_resp' close (maybe with a reset) after part of the answer
  'stall'       send everything, then read nothing (a small receive
                buffer) until nginx's send_timeout ends the request
Requests are 'valid' (nginx must answer each) or 'odd' (anything may
happen, but the connection must end: an answer or a close, never a hang).
"""

import random

# What handlers are told to do, in the X-Op header (see APP in the test):
# letters, each one step; unknown letters are ignored by the handlers.
#   s  sleep a little (unblock build: waits on nginx's event loop)
#   a  read r.arg   h  read r.hi   v  read r.var   b  read r.body
#   o  set response headers        c  use r.ctx    p  send a piece (flush)
#   x  raise        d  deny (access returns 403)   k  access returns ngx.OK
#   n  a status from content (404)  g  read $pyv (python_set) from content
#   e  r.sendHeader()                w  r.var named after the headers
#   P  send 1 MB at once
OPS = 'ssaahhvvboccppxdknggewwP'

METHODS = ['GET', 'GET', 'GET', 'POST', 'POST', 'PUT', 'HEAD', 'DELETE', 'OPTIONS']
PATHS = ['/c', '/c/', '/c/deep/path', '/a', '/echo', '/log', '/ret', '/nothing', '/ssi', '/m', '/c/%2e%2e/x',
         '/c/%00', '/c/%zz', '/c/%C3%A9', '/c//..//', '/c/' + 'x' * 300]
HEADER_NAMES = ['X-A', 'User-Agent', 'Accept', 'Cookie', 'X-Forwarded-For', 'Referer',
                'x-a', 'X-Long', 'If-None-Match', 'Range', 'Accept-Encoding', 'X-\xe9']
ODD_BYTES = b'\x00\x01\x7f\x80\xff%&=?#;:,"\'\\ \t+<>{}|^`[]\xc3\xa9\xe2\x82'


def pct(rng, raw):
    """%-escape a random choice of bytes (and sometimes leave a broken escape)."""
    out = bytearray()
    for b in raw:
        c = rng.random()
        if c < 0.2:
            out += b'%%%02X' % b
        elif c < 0.23:
            out += rng.choice([b'%', b'%4', b'%g0', b'%%'])
        else:
            out.append(b)
    return bytes(out)


def token(rng, lo=1, hi=12, odd=0.0):
    """A name-ish byte string; with probability odd per byte, an odd byte."""
    out = bytearray()
    for _ in range(rng.randint(lo, hi)):
        if rng.random() < odd:
            out.append(rng.choice(ODD_BYTES))
        else:
            out.append(rng.choice(b'abcdefghijklmnopqrstuvwxyz0123456789_-.'))
    return bytes(out)


def query(rng, odd):
    parts = []
    for _ in range(rng.choice([0, 1, 2, 3, 8, 40])):
        k, v = token(rng, 0, 8, odd), token(rng, 0, 20, odd)
        c = rng.random()
        if c < 0.1:
            parts.append(k)          # no '='
        elif c < 0.15:
            parts.append(b'=' + v)   # no name
        else:
            parts.append(k + b'=' + v)
    sep = b'&' if rng.random() < 0.9 else b'&&'
    q = pct(rng, sep.join(parts))
    return q.replace(b' ', b'+').replace(b'#', b'%23').replace(b'\t', b'+')


def ops(rng):
    return ''.join(rng.choice(OPS) for _ in range(rng.randint(0, 6)))


def headers(rng, odd):
    out = []
    for _ in range(rng.choice([0, 1, 2, 4, 10, 60])):
        name = rng.choice(HEADER_NAMES).encode('latin-1')
        if odd and rng.random() < 0.3:
            name = token(rng, 1, 10, 0.3)
        value = token(rng, 0, rng.choice([5, 40, 2000]), 0.3 if odd else 0.0)
        value = value.replace(b'\r', b'').replace(b'\n', b'')
        out.append(name + b': ' + value.strip())
    if rng.random() < 0.2:
        # what nginx's own filters act on (ranges, not-modified, 100-continue)
        out.append(rng.choice([b'Range: bytes=0-10', b'Range: bytes=-5,2-3', b'Range: bytes=99999-',
                               b'If-None-Match: "fz"', b'If-Modified-Since: Thu, 01 Jan 2099 00:00:00 GMT',
                               b'Expect: 100-continue', b'Accept-Encoding: gzip']))
    if rng.random() < 0.1:
        # one long header (nginx's large_client_header_buffers: 8k)
        out.append(b'X-Long: ' + b'y' * rng.choice([1000, 7000, 9000, 40000]))
    return out


def body_framing(rng, body, valid):
    """(header lines, body bytes) framing `body` by Content-Length or chunked."""
    if rng.random() < 0.5:
        cl = len(body)
        if not valid:
            cl = rng.choice([cl + rng.randint(1, 50), max(0, cl - 3), -1, 10 ** 30])
        return [b'Content-Length: %d' % cl], body
    chunks = bytearray()
    i = 0
    while i < len(body):
        n = rng.randint(1, max(1, len(body) // 2 + 1))
        piece = body[i:i + n]
        ext = b';x=y' if rng.random() < 0.1 else b''
        chunks += b'%x%s\r\n%s\r\n' % (len(piece), ext, piece)
        i += n
    chunks += b'0\r\n'
    if rng.random() < 0.1:
        chunks += b'X-Trailer: 1\r\n'
    chunks += b'\r\n'
    if not valid:
        cut = rng.randint(0, len(chunks))
        chunks = chunks[:cut] + rng.choice([b'zz\r\n', b'\r\n', b'ffffffffffffffffff\r\n', b''])
    return [b'Transfer-Encoding: chunked'], bytes(chunks)


def request(rng, last, force_valid=None):
    """(bytes, valid, method, may_close) of one request; `last` adds
    Connection: close. may_close: its handler may fail after sending the
    header (then nginx closes the connection)."""
    valid = rng.random() < 0.75 if force_valid is None else force_valid
    odd = 0.0 if valid else 0.2
    method = rng.choice(METHODS)
    if not valid and rng.random() < 0.2:
        method = token(rng, 1, 8, 0.3).decode('latin-1')
    path = rng.choice(PATHS).encode('latin-1')
    q = query(rng, odd)
    target = path + (b'?' + q if q or rng.random() < 0.1 else b'')
    if not valid:
        target = target.replace(b' ', b'%20')
        if rng.random() < 0.2:
            target += bytes([rng.choice(ODD_BYTES)])
    if valid:
        # nginx refuses these in the request line: keep valid requests valid
        target = bytes(b for b in target if 0x21 <= b < 0x7f or b >= 0x80)
        target = target.replace(b'#', b'%23')
    version = b'HTTP/1.1' if valid or rng.random() < 0.7 else rng.choice([b'HTTP/1.0', b'HTTP/9.9', b'HTX', b''])
    lines = [method.encode('latin-1') + b' ' + target + b' ' + version, b'Host: fuzz']
    op = ops(rng)
    lines.append(b'X-Op: ' + op.encode())
    lines += headers(rng, odd)
    body = b''
    if method in ('POST', 'PUT') or (not valid and rng.random() < 0.3):
        body = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 10, 100, 3000, 70000])))
        framing, body = body_framing(rng, body, valid or rng.random() < 0.5)
        lines += framing
    if last:
        lines.append(b'Connection: close')
    eol = b'\r\n' if valid or rng.random() < 0.8 else b'\n'
    return eol.join(lines) + eol + eol + body, valid, method, 'x' in op


def http_case(rng):
    """One connection's plan: dict(requests=[(bytes, valid, method)], mode, ...)."""
    n = rng.choice([1, 1, 1, 2, 3, 6])
    reqs = [request(rng, i == n - 1) for i in range(n)]
    mode = rng.choices(['full', 'vanish_req', 'vanish_resp', 'stall'], [12, 4, 4, 0.1])[0]
    data = b''.join(r[0] for r in reqs)
    return {
        'requests': reqs,
        'mode': mode,
        'pipelined': rng.random() < 0.5,
        # where the client stops sending (vanish_req) or reading (vanish_resp)
        'cut': rng.randint(0, max(0, len(data) - 1)),
        'read_bytes': rng.choice([0, 1, 100, 5000]),
        'reset': rng.random() < 0.5,
        'split': [rng.randint(1, 400) for _ in range(4)],
        'pause': rng.choice([0, 0, 0.001, 0.02]),
    }


def stream_case(rng):
    """A stream session: random bytes in pieces, then close or read."""
    pieces = []
    for _ in range(rng.randint(0, 5)):
        k = rng.choice([0, 1, 3, 16, 200, 5000])
        p = bytes(rng.getrandbits(8) for _ in range(k))
        if rng.random() < 0.3:
            p += b'\n'
        pieces.append(p)
    if pieces and rng.random() < 0.3:
        # the first byte tells the handlers to refuse, raise or abort
        pieces[0] = rng.choice([b'\xff', b'\xfe', b'\xfc', b'\xfd', b'\x00\x00']) + pieces[0]
    return {
        'pieces': pieces,
        'pause': rng.choice([0, 0.001, 0.03]),
        'mode': rng.choices(['full', 'vanish'], [2, 1])[0],
        'reset': rng.random() < 0.5,
    }


def case_rng(run_seed, worker, index):
    """The RNG of case `index` of client thread `worker` in run `run_seed`."""
    return random.Random('%d/%d/%d' % (run_seed, worker, index))
