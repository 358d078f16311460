"""Real client libraries against real servers (Debian's packages, started
by t/servers.py on 127.0.0.1, once per class): redis-py, PyMySQL, pg8000,
psycopg2, psycopg 3, and requests against python-less locations of the
nginx under test.

For each library, in both builds: real work (transactions, parameters,
pipelines), the pool / Session reused by a later request, and error paths
(connection refused, timeout, server killed mid-query) raising catchable
exceptions with the worker alive. Unblock build only: ten concurrent ~1 s
server-side waits finish together in ONE worker while `/` answers in under
100 ms.

A library that the nginx's Python cannot import (e.g. a pyenv Python,
which does not see Debian's dist-packages) or a server that is not
installed skips its class, with the reason.
"""

import os
import socket
import threading
import time
import unittest

import harness
import servers

COMMON = r'''
import socket, time
DB = DB_PORT
DEAD = DEAD_PORT          # nothing listens there
SILENT = SILENT_PORT      # accepts, never answers
try:
    MODULES
    MISSING = None
except ImportError as e:
    MISSING = str(e)

def have(r):
    r.send('yes' if MISSING is None else 'missing: ' + MISSING, ngx.SEND_LAST)

def reply(r, obj):
    r.send(obj if isinstance(obj, str) else repr(obj), ngx.SEND_LAST)

def caught(r, f):
    """The name of what f() raised (or what it returned)."""
    try:
        return reply(r, 'returned %r' % (f(),))
    except Exception as e:
        return reply(r, '%s.%s' % (type(e).__module__, type(e).__name__))
'''

SERVER = r'''
location = /have    { python_content "have(r)"; }
location = /work    { python_content "work(r)"; }
location = /cid     { python_content "cid(r)"; }
location = /slow    { python_content "slow(r)"; }
location = /refused { python_content "caught(r, refused)"; }
location = /timeout { python_content "caught(r, timeout)"; }
location = /killed  { python_content "caught(r, killed)"; }
location = /        { return 200 "root"; }
'''


class RealServer(harness.NginxTestCase):
    """One server per class; one nginx per test, with the library's APP."""

    server_class = None
    APP = ''
    MODULES = ''
    # what refused / timeout / killed raise, as module.Class
    REFUSED = TIMEOUT = KILLED = None
    WORK = None
    HTTP = ''
    SERVER = SERVER

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = None
        if cls.server_class is None:
            return
        try:
            cls.server = cls.server_class()
        except servers.Unavailable as e:
            raise unittest.SkipTest(str(e))
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.stop()
        super().tearDownClass()

    def setUp(self):
        if harness.binary_missing_message():
            self.skipTest(harness.binary_missing_message())
        self.silent = socket.socket()
        self.silent.bind(('127.0.0.1', 0))
        self.silent.listen(64)
        self.addCleanup(self.silent.close)
        dead = harness.free_port()
        app = (COMMON.replace('MODULES', self.MODULES) + self.APP)
        app = (app.replace('DB_PORT', str(self.server.port if self.server else 0))
               .replace('DEAD_PORT', str(dead)).replace('SILENT_PORT', str(self.silent.getsockname()[1])))
        self.start_server(self.SERVER, http='python_include app.py;\n' + self.HTTP, files={'app.py': app})
        have = self.get_body('/have')
        if have != 'yes':
            self.skipTest('nginx\'s Python lacks the library (%s)' % have)

    def assertAlive(self):
        pids = self.worker_pids()
        self.assertEqual(self.get_body('/'), 'root')
        self.assertEqual(self.worker_pids(), pids)

    def test_work(self):
        self.assertEqual(self.get_body('/work'), self.WORK)
        self.assertEqual(self.get_body('/work'), self.WORK)

    def test_pool_reused_across_requests(self):
        first = self.get_body('/cid')
        self.assertEqual(self.get_body('/cid'), first)
        self.assertEqual(self.get_body('/cid'), first)

    def test_errors(self):
        self.assertEqual(self.get_body('/refused'), self.REFUSED)
        t0 = time.monotonic()
        self.assertEqual(self.get_body('/timeout'), self.TIMEOUT)
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertAlive()

    @harness.unblock_only
    def test_ten_concurrent_waits_in_one_worker(self):
        self.get_body('/slow?i=warm')      # import, connect once
        out = []
        threads = [threading.Thread(target=lambda i=i: out.append(self.get_body('/slow?i=%d' % i)))
                   for i in range(10)]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        time.sleep(0.3)
        t1 = time.monotonic()
        self.assertEqual(self.get_body('/'), 'root')
        root_took = time.monotonic() - t1
        for th in threads:
            th.join()
        took = time.monotonic() - t0
        self.assertEqual(len(out), 10)
        self.assertEqual(len(set(out)), 1, out)
        self.assertLess(root_took, 0.1)
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 2.5)              # together, not 10 s
        self.assertEqual(len(self.worker_pids()), 1)

    def test_zz_server_killed_mid_query(self):
        """Last test of the class: the server does not come back."""
        out = {}
        th = threading.Thread(target=lambda: out.update(r=self.get_body('/killed')))
        th.start()
        time.sleep(0.5)
        self.kill_server()
        th.join()
        self.assertEqual(out['r'], self.KILLED)
        self.assertAlive()

    def kill_server(self):
        self.server.kill()


class RedisTest(RealServer):
    server_class = servers.Redis
    MODULES = 'import redis'
    APP = r'''
POOL = redis.ConnectionPool(host='127.0.0.1', port=DB, socket_timeout=10) if MISSING is None else None

def client():
    return redis.Redis(connection_pool=POOL)

def work(r):
    c = client()
    c.delete('k', 'n', 'l')
    p = c.pipeline(transaction=True)
    p.set('k', 'v').incr('n').incrby('n', 41).rpush('l', 'a', 'b').lrange('l', 0, -1)
    res = p.execute()
    reply(r, [res[0], res[2], res[4], c.get('k')])

def cid(r):
    reply(r, client().client_id())

def slow(r):
    reply(r, client().blpop('nothing:' + r.arg['i'], timeout=1))

def refused():
    return redis.Redis(host='127.0.0.1', port=DEAD).ping()

def timeout():
    return redis.Redis(host='127.0.0.1', port=DB, socket_timeout=0.3).blpop('nothing', timeout=2)

def killed():
    return redis.Redis(host='127.0.0.1', port=DB).blpop('nothing', timeout=5)
'''
    WORK = "[True, 42, [b'a', b'b'], b'v']"
    REFUSED = 'redis.exceptions.ConnectionError'
    TIMEOUT = 'redis.exceptions.TimeoutError'
    KILLED = 'redis.exceptions.ConnectionError'


class MariaDBTest(RealServer):
    server_class = servers.MariaDB
    MODULES = 'import pymysql'
    APP = r'''
POOL = []

def connect(**kw):
    return pymysql.connect(host='127.0.0.1', port=DB, user='root', connect_timeout=5, **kw)

def pooled(f):
    c = POOL.pop() if POOL else connect()
    try:
        return f(c)
    finally:
        POOL.append(c)

def work(r):
    def run(c):
        with c.cursor() as cur:
            cur.execute('CREATE DATABASE IF NOT EXISTS t')
            cur.execute('CREATE TABLE IF NOT EXISTS t.kv (k VARCHAR(20) PRIMARY KEY, v INT) ENGINE=InnoDB')
            cur.execute('DELETE FROM t.kv')
            c.commit()
            cur.execute('INSERT INTO t.kv VALUES (%s, %s)', ('a', 1))
            c.rollback()
            cur.executemany('INSERT INTO t.kv VALUES (%s, %s)', [('b', 2), ('c', 3)])
            c.commit()
            cur.execute('SELECT k, v FROM t.kv WHERE v > %s ORDER BY k', (1,))
            return cur.fetchall()
    reply(r, pooled(run))

def cid(r):
    def run(c):
        with c.cursor() as cur:
            cur.execute('SELECT CONNECTION_ID()')
            return cur.fetchone()[0]
    reply(r, pooled(run))

def slow(r):
    def run(c):
        with c.cursor() as cur:
            cur.execute('SELECT SLEEP(1)')
            return cur.fetchone()[0]
    reply(r, pooled(run))

def refused():
    return pymysql.connect(host='127.0.0.1', port=DEAD, user='root')

def timeout():
    with connect(read_timeout=0.3).cursor() as cur:
        cur.execute('SELECT SLEEP(2)')

def killed():
    with connect().cursor() as cur:
        cur.execute('SELECT SLEEP(5)')
'''
    WORK = "(('b', 2), ('c', 3))"
    REFUSED = 'pymysql.err.OperationalError'
    TIMEOUT = 'pymysql.err.OperationalError'
    KILLED = 'pymysql.err.OperationalError'


PG_APP = r'''
POOL = []

def pooled(f):
    c = POOL.pop() if POOL else connect()
    try:
        return f(c)
    finally:
        POOL.append(c)

def query(sql, *params):
    def run(c):
        cur = c.cursor()
        cur.execute(sql, params or None)
        row = cur.fetchone()
        c.commit()
        return row[0]
    return run

def cid(r):
    reply(r, pooled(query('SELECT pg_backend_pid()')))

def slow(r):
    reply(r, pooled(query('SELECT pg_sleep(1)')))

def killed():
    return query('SELECT pg_sleep(5)')(connect())

def work(r):
    def run(c):
        cur = c.cursor()
        cur.execute('CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v int)')
        cur.execute('DELETE FROM kv')
        c.commit()
        cur.execute('INSERT INTO kv VALUES (%s, %s)', ('a', 1))
        c.rollback()
        cur.executemany('INSERT INTO kv VALUES (%s, %s)', [('b', 2), ('c', 3)])
        c.commit()
        cur.execute('SELECT k, v FROM kv WHERE v > %s ORDER BY k', (1,))
        rows = [tuple(x) for x in cur.fetchall()]
        c.commit()
        return rows
    reply(r, pooled(run))
'''


class Pg8000Test(RealServer):
    server_class = servers.PostgreSQL
    MODULES = 'import pg8000'
    APP = PG_APP + r'''
def connect(**kw):
    return pg8000.connect(user='postgres', host='127.0.0.1', port=DB, database='postgres', **kw)

def refused():
    return pg8000.connect(user='postgres', host='127.0.0.1', port=DEAD, database='postgres')

def timeout():
    return query('SELECT pg_sleep(2)')(connect(timeout=0.3))
'''
    WORK = "[('b', 2), ('c', 3)]"
    REFUSED = 'pg8000.core.InterfaceError'
    # pg8000 1.10 lets the socket's own errors through: a timeout is the
    # socket's TimeoutError, and a connection that ends mid-message fails
    # while unpacking the truncated reply (the same in both builds).
    TIMEOUT = 'builtins.TimeoutError'
    KILLED = 'struct.error'


class Psycopg2Test(RealServer):
    server_class = servers.PostgreSQL
    MODULES = 'import psycopg2'
    APP = PG_APP + r'''
def connect(**kw):
    return psycopg2.connect(host='127.0.0.1', port=DB, user='postgres', dbname='postgres', connect_timeout=5, **kw)

def refused():
    return psycopg2.connect(host='127.0.0.1', port=DEAD, user='postgres', dbname='postgres')

def timeout():
    return query('SELECT pg_sleep(2)')(connect(options='-c statement_timeout=300'))
'''
    WORK = "[('b', 2), ('c', 3)]"
    REFUSED = 'psycopg2.OperationalError'
    TIMEOUT = 'psycopg2.errors.QueryCanceled'
    KILLED = 'psycopg2.OperationalError'


class PsycopgTest(RealServer):
    server_class = servers.PostgreSQL
    MODULES = 'import psycopg'
    APP = PG_APP + r'''
def connect(**kw):
    return psycopg.connect(host='127.0.0.1', port=DB, user='postgres', dbname='postgres', connect_timeout=5, **kw)

def refused():
    return psycopg.connect(host='127.0.0.1', port=DEAD, user='postgres', dbname='postgres')

def timeout():
    return query('SELECT pg_sleep(2)')(connect(options='-c statement_timeout=300'))

def work(r):
    """Parameters, a rolled back and a committed transaction, a pipeline."""
    def run(c):
        c.execute('CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v int)')
        c.execute('DELETE FROM kv')
        c.commit()
        try:
            with c.transaction():
                c.execute('INSERT INTO kv VALUES (%s, %s)', ('a', 1))
                raise ValueError('roll back')
        except ValueError:
            pass
        with c.pipeline():
            c.execute('INSERT INTO kv VALUES (%s, %s)', ('b', 2))
            c.execute('INSERT INTO kv VALUES (%s, %s)', ('c', 3))
        c.commit()
        rows = c.execute('SELECT k, v FROM kv WHERE v > %s ORDER BY k', (1,)).fetchall()
        c.commit()
        return rows
    reply(r, pooled(run))
'''
    WORK = "[('b', 2), ('c', 3)]"
    REFUSED = 'psycopg.OperationalError'
    TIMEOUT = 'psycopg.errors.QueryCanceled'
    KILLED = 'psycopg.OperationalError'


class Backend(servers.Server):
    """A python-less nginx (the binary under test) for requests to talk to:
    a separate process, so that the sync build's one worker, busy in the
    handler, is not the one that must answer."""

    name = 'nginx-backend'
    CONF = r"""
daemon off;
master_process off;
worker_processes 1;
%(user)s
error_log %(dir)s/error.log info;
pid %(dir)s/nginx.pid;
events { worker_connections 256; }
http {
    access_log off;
    sendfile off;
    server {
        listen 127.0.0.1:%(port)d;
        location = /plain  { return 200 "$arg_a|$arg_b|$http_x_token"; }
        location = /login  { add_header Set-Cookie "sid=42; Path=/"; return 200 "in"; }
        location = /whoami { return 200 "sid=$cookie_sid"; }
        location = /conn   { return 200 "$connection"; }
        location = /echo_post { return 200 "$content_length"; }
        # 2,000 bytes at 1,000 bytes/s: about a second
        location = /big   { root %(dir)s; limit_rate 1000; limit_rate_after 0; }
    }
}
"""

    def start(self):
        self._mkdir()
        with open(os.path.join(self.dir, 'big'), 'wb') as f:
            f.write(b'b' * 2000)
        with open(os.path.join(self.dir, 'nginx.conf'), 'w') as f:
            f.write(self.CONF % {'dir': self.dir, 'port': self.port,
                                 'user': 'user root;' if os.geteuid() == 0 else ''})
        self._spawn([harness.NGINX, '-p', self.dir + '/', '-c', 'nginx.conf'])
        self._wait_ready()


class RequestsTest(RealServer):
    """requests.Session against a python-less nginx."""

    server_class = Backend
    MODULES = 'import requests'
    APP = r"""
BASE = 'http://127.0.0.1:%d' % DB
S = requests.Session() if MISSING is None else None

def work(r):
    a = S.get(BASE + '/plain', params={'a': 'x y', 'b': 2}, headers={'X-Token': 't'}, timeout=5).text
    S.get(BASE + '/login', timeout=5)
    who = S.get(BASE + '/whoami', timeout=5).text
    posted = S.post(BASE + '/echo_post', data=b'z' * 1000, timeout=5).text
    reply(r, [a, who, posted])

def cid(r):
    reply(r, S.get(BASE + '/conn', timeout=5).text)

def slow(r):
    reply(r, len(S.get(BASE + '/big', timeout=5).content))

def refused():
    return S.get('http://127.0.0.1:%d/' % DEAD, timeout=5)

def timeout():
    return S.get('http://127.0.0.1:%d/' % SILENT, timeout=0.3)

def killed():
    return S.get('http://127.0.0.1:%d/' % KILLER, timeout=5)
"""
    WORK = "['x+y|2|t', 'sid=42', '1000']"
    REFUSED = 'requests.exceptions.ConnectionError'
    TIMEOUT = 'requests.exceptions.ReadTimeout'
    KILLED = 'requests.exceptions.ConnectionError'

    def setUp(self):
        # A server that reads the request, then dies (the connection reset).
        self.killer = socket.socket()
        self.killer.bind(('127.0.0.1', 0))
        self.killer.listen(4)
        self.addCleanup(self.killer.close)
        self.APP = self.APP.replace('KILLER', str(self.killer.getsockname()[1]))
        super().setUp()

    def kill_server(self):
        self.killer.settimeout(5)
        conn, _ = self.killer.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
        conn.close()


del RealServer      # the base runs no tests of its own


if __name__ == '__main__':
    harness.main()
