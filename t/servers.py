"""Real servers from Debian's packages for the tests (tools/deps --test
installs them): Redis, MariaDB and PostgreSQL, each started on 127.0.0.1 on
a free port in a temporary directory, and stopped (its directory removed)
by stop().

    srv = servers.Redis()       # raises Unavailable when it cannot run here
    srv.start(); ... srv.port ...; srv.kill(); srv.stop()

Servers run as root except PostgreSQL, which refuses to and runs as user
postgres. Authentication is off (MariaDB --skip-grant-tables, PostgreSQL
`trust`): loopback only, throw-away data.
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import harness

START_TIMEOUT = 60.0


class Unavailable(Exception):
    """The server cannot run on this machine (package missing, not root)."""


def _which(*candidates):
    for c in candidates:
        if os.path.isabs(c) and os.access(c, os.X_OK):
            return c
        found = shutil.which(c)
        if found:
            return found
    return None


class Server:
    name = '?'

    def __init__(self):
        self.proc = None
        self.dir = None
        self.port = None

    def _mkdir(self):
        self.dir = tempfile.mkdtemp(prefix='nginx-python-%s-' % self.name)
        os.chmod(self.dir, 0o755)
        self.port = harness.free_port()

    def _log(self):
        path = os.path.join(self.dir, 'server.log')
        try:
            with open(path, encoding='utf-8', errors='replace') as f:
                return f.read()[-3000:]
        except OSError:
            return ''

    def _spawn(self, argv, **kw):
        log = open(os.path.join(self.dir, 'server.log'), 'ab')
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.dir, **kw)
        finally:
            log.close()

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('%s exited on start (%s):\n%s' % (self.name, self.proc.returncode, self._log()))
            if self.ready():
                return
            time.sleep(0.05)
        raise RuntimeError('%s did not start within %ss:\n%s' % (self.name, START_TIMEOUT, self._log()))

    def ready(self):
        try:
            socket.create_connection(('127.0.0.1', self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def kill(self):
        """SIGKILL: the server dies at once (e.g. in the middle of a query)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class Redis(Server):
    name = 'redis'

    def __init__(self):
        super().__init__()
        self.binary = _which('redis-server')
        if not self.binary:
            raise Unavailable('redis-server is not installed (tools/deps --test)')

    def start(self):
        self._mkdir()
        self._spawn([self.binary, '--bind', '127.0.0.1', '--port', str(self.port), '--save', '',
                     '--appendonly', 'no', '--dir', self.dir, '--daemonize', 'no',
                     '--enable-debug-command', 'yes'])
        self._wait_ready()

    def restart(self):
        """A killed server again, on the same port."""
        self._spawn([self.binary, '--bind', '127.0.0.1', '--port', str(self.port), '--save', '',
                     '--appendonly', 'no', '--dir', self.dir, '--daemonize', 'no',
                     '--enable-debug-command', 'yes'])
        self._wait_ready()

    def ready(self):
        try:
            with socket.create_connection(('127.0.0.1', self.port), timeout=1) as s:
                s.sendall(b'PING\r\n')
                return s.recv(16).startswith(b'+PONG')
        except OSError:
            return False


class MariaDB(Server):
    name = 'mariadb'

    def __init__(self):
        super().__init__()
        self.binary = _which('mariadbd', '/usr/sbin/mariadbd', 'mysqld', '/usr/sbin/mysqld')
        self.install_db = _which('mariadb-install-db', 'mysql_install_db')
        if not self.binary or not self.install_db:
            raise Unavailable('mariadb-server is not installed (tools/deps --test)')
        if os.geteuid() != 0:
            raise Unavailable('the tests start MariaDB as root')

    def start(self):
        self._mkdir()
        data = os.path.join(self.dir, 'data')
        p = subprocess.run([self.install_db, '--no-defaults', '--datadir=' + data, '--user=root',
                            '--skip-test-db', '--auth-root-authentication-method=normal'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=START_TIMEOUT)
        if p.returncode != 0:
            raise RuntimeError('mariadb-install-db failed:\n%s' % p.stdout.decode('utf-8', 'replace')[-3000:])
        self._spawn([self.binary, '--no-defaults', '--datadir=' + data, '--user=root',
                     '--bind-address=127.0.0.1', '--port=%d' % self.port,
                     '--socket=' + os.path.join(self.dir, 'mysqld.sock'),
                     '--pid-file=' + os.path.join(self.dir, 'mysqld.pid'),
                     '--skip-grant-tables', '--skip-log-bin', '--innodb-buffer-pool-size=16M',
                     '--innodb-log-file-size=8M', '--skip-name-resolve'])
        self._wait_ready()


class PostgreSQL(Server):
    name = 'postgresql'

    def __init__(self):
        super().__init__()
        bindir = None
        base = '/usr/lib/postgresql'
        if os.path.isdir(base):
            for v in sorted(os.listdir(base), key=lambda v: int(v) if v.isdigit() else 0, reverse=True):
                if os.access(os.path.join(base, v, 'bin', 'postgres'), os.X_OK):
                    bindir = os.path.join(base, v, 'bin')
                    break
        if bindir is None:
            raise Unavailable('postgresql is not installed (tools/deps --test)')
        self.bindir = bindir
        try:
            self.user = pwd.getpwnam('postgres')
        except KeyError:
            raise Unavailable('no user postgres (the postgresql package creates it)') from None
        if os.geteuid() != 0:
            raise Unavailable('the tests start PostgreSQL as user postgres (needs root)')

    def _as_postgres(self):
        os.setgid(self.user.pw_gid)
        os.setuid(self.user.pw_uid)

    def start(self):
        self._mkdir()
        data = os.path.join(self.dir, 'data')
        os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        p = subprocess.run([os.path.join(self.bindir, 'initdb'), '-D', data, '-U', 'postgres',
                            '-A', 'trust', '-E', 'UTF8', '--no-sync'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           preexec_fn=self._as_postgres, cwd=self.dir, timeout=START_TIMEOUT)
        if p.returncode != 0:
            raise RuntimeError('initdb failed:\n%s' % p.stdout.decode('utf-8', 'replace')[-3000:])
        self._spawn([os.path.join(self.bindir, 'postgres'), '-D', data, '-p', str(self.port),
                     '-k', self.dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off',
                     '-c', 'max_connections=50', '-c', 'shared_buffers=16MB'],
                    preexec_fn=self._as_postgres)
        self._wait_ready()

    def kill(self):
        """SIGQUIT: immediate shutdown, its backends die at once too (a
        SIGKILLed postmaster would leave them running)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            self.proc.wait(10)

    def ready(self):
        p = subprocess.run([os.path.join(self.bindir, 'pg_isready'), '-q', '-h', '127.0.0.1',
                            '-p', str(self.port)], stdin=subprocess.DEVNULL)
        return p.returncode == 0
