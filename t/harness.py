"""Test harness for nginx-python: start nginx on a throw-away prefix, talk HTTP.

Environment:
  TEST_NGINX_BINARY   the nginx to test (default: <repo>/build/sync/objs/nginx)
  TEST_NGINX_CATLOG=1 print each test's error.log to stderr after it
  TEST_NGINX_LEAVE=1  keep the temporary prefix directories (their paths are printed)
  TEST_NGINX_DEBUG=1  error_log at debug level (the binary has --with-debug)
  TEST_NGINX_PERTURB=N glibc MALLOC_PERTURB_ for nginx (default 165; 0: off), so
                      that a use-after-free reads garbage and crashes every time

A test:

    class T(harness.NginxTestCase):
        def test_hello(self):
            self.start_server('''
                location / { python_content "r.send('hi', ngx.SEND_LAST)"; }
            ''')
            status, headers, body = self.get('/')

Configuration text may use the placeholders %(port)s, %(port2)s, ... (free
ports on 127.0.0.1, picked for this test) and %(prefix)s (the temporary
prefix, with a trailing slash). Only these exact tokens are replaced, so
other '%' characters (Python code) are left alone. Files given with
files={'name': text} are written relative to the prefix, with the same
placeholders replaced.
"""

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

T_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(T_DIR)

NGINX = os.path.abspath(os.environ.get('TEST_NGINX_BINARY')
                        or os.path.join(REPO, 'build', 'sync', 'objs', 'nginx'))
CATLOG = os.environ.get('TEST_NGINX_CATLOG', '') not in ('', '0')
LEAVE = os.environ.get('TEST_NGINX_LEAVE', '') not in ('', '0')
DEBUG = os.environ.get('TEST_NGINX_DEBUG', '') not in ('', '0')

START_TIMEOUT = 10.0     # seconds for nginx to accept connections
STOP_TIMEOUT = 10.0      # seconds for a graceful stop
RELOAD_TIMEOUT = 10.0    # seconds for a new worker generation
HTTP_TIMEOUT = 10.0      # seconds for one HTTP exchange

# error.log lines that fail every test (unless the test expected them)
BAD_LOG = re.compile(r'\[alert\]|\[crit\]|exited on signal')
EMERG_LOG = re.compile(r'\[emerg\]')

# glibc overwrites freed memory with this byte (and new memory with its
# complement): a use-after-free reads garbage and crashes at once instead of
# by chance. TEST_NGINX_PERTURB=0 turns it off.
NGINX_ENV = dict(os.environ)
NGINX_ENV.setdefault('MALLOC_PERTURB_', os.environ.get('TEST_NGINX_PERTURB', '165'))
if NGINX_ENV['MALLOC_PERTURB_'] == '0':
    del NGINX_ENV['MALLOC_PERTURB_']
NO_PERTURB_ENV = {k: v for k, v in NGINX_ENV.items() if k != 'MALLOC_PERTURB_'}

PLACEHOLDER = re.compile(r'%\((port\d*|prefix)\)s')


def binary_missing_message():
    """None if the nginx binary exists, else a message saying what to do."""
    if os.path.isfile(NGINX) and os.access(NGINX, os.X_OK):
        return None
    return ('nginx binary not found: %s\n'
            'Build it first with `make module` (or `make module FEATURES=unblock`), '
            'or point TEST_NGINX_BINARY at an nginx built with nginx-python.' % NGINX)


_nginx_v = None


def nginx_v():
    """The output of `nginx -V` (cached)."""
    global _nginx_v
    if _nginx_v is None:
        if binary_missing_message():
            return ''
        p = subprocess.run([NGINX, '-V'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=30)
        _nginx_v = p.stdout.decode('utf-8', 'replace')
    return _nginx_v


def unblock_build():
    """True for the unblock flavour (configured with -DNGX_PYTHON_SYNC=0)."""
    return 'NGX_PYTHON_SYNC=0' in nginx_v()


def sync_only(f):
    """Decorator: skip the test in the unblock build."""
    def wrapper(self, *a, **kw):
        if unblock_build():
            self.skipTest('sync build only')
        return f(self, *a, **kw)
    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper


def unblock_only(f):
    """Decorator: skip the test in the sync build."""
    def wrapper(self, *a, **kw):
        if not unblock_build():
            self.skipTest('unblock build only (NGX_PYTHON_SYNC=0)')
        return f(self, *a, **kw)
    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper


_handed_out = set()


def free_port():
    """A TCP port on 127.0.0.1 that is free now (never the same twice per run)."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(('127.0.0.1', 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError('no free port found')


def rss_kb(pid):
    """Resident set size of a process in kB (VmRSS from /proc/PID/status)."""
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise RuntimeError('no VmRSS for pid %d' % pid)


def children(pid):
    """Pids of the live (non-zombie) child processes of pid."""
    out = []
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % name) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(')') + 2:].split()
        # fields[0] = state, fields[1] = ppid
        if len(fields) > 1 and int(fields[1]) == pid and fields[0] != 'Z':
            out.append(int(name))
    return set(out)


def alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(')') + 2:].split()[0] != 'Z'


def dedent(text):
    return textwrap.dedent(text).strip('\n') + '\n' if text else ''


class NginxTestCase(unittest.TestCase):
    """A TestCase that runs one nginx per test (started by the test itself)."""

    maxDiff = None

    # set by a test that expects [emerg] in the error.log of its nginx
    allow_emerg = False
    # set by a test that expects some [alert] lines: a regex they match
    allow_log = None
    # False for a test whose nginx allocates huge pools (MALLOC_PERTURB_
    # writes every byte of them: slow) and whose point is freed memory being
    # unmapped, which already crashes a use-after-free
    malloc_perturb = True
    # more environment for nginx (e.g. glibc's MALLOC_MMAP_THRESHOLD_)
    nginx_env = {}

    # ---- configuration ---------------------------------------------------

    def _init_state(self):
        if getattr(self, '_harness_ready', False):
            return
        self._harness_ready = True
        self.prefixes = []        # every temp dir this test made
        self.proc = None          # the nginx master (Popen)
        self.prefix = None        # prefix of the running nginx (trailing slash)
        self.conf_path = None     # absolute path of its nginx.conf
        self.last_conf = None     # the most recently written nginx.conf
        self.ports = {}
        self._workers = set()
        self.addCleanup(self._harness_cleanup)

    def make_prefix(self):
        """A fresh temporary prefix directory (with logs/), mode 0755."""
        self._init_state()
        d = os.path.realpath(tempfile.mkdtemp(prefix='nginx-python-t-'))
        os.chmod(d, 0o755)
        os.mkdir(os.path.join(d, 'logs'))
        self.prefixes.append(d)
        return d + '/'

    def _substitute(self, text, values):
        def repl(m):
            name = m.group(1)
            if name not in values:
                values[name] = free_port()
            return str(values[name])
        return PLACEHOLDER.sub(repl, text)

    def conf_text(self, http=None, stream=None, main='', events=''):
        """The nginx.conf text (before placeholder substitution)."""
        level = 'debug' if DEBUG else 'info'
        parts = [
            'daemon off;',
            'master_process on;',
            '' if 'worker_processes' in main else 'worker_processes 1;',
            'error_log logs/error.log %s;' % level,
            'pid logs/nginx.pid;',
        ]
        if os.geteuid() == 0:
            parts.append('user root;')
        if main:
            parts.append(dedent(main))
        default = '' if 'worker_connections' in events else '    worker_connections 512;\n'
        parts.append('events {\n%s%s}' % (default, dedent(events)))
        if http is not None:
            parts.append('http {\n    access_log off;\n%s}' % dedent(http))
        if stream is not None:
            parts.append('stream {\n%s}' % dedent(stream))
        return '\n'.join(parts) + '\n'

    def write_file(self, name, text, prefix=None):
        """Write a file relative to the prefix (placeholders replaced in str text)."""
        prefix = prefix or self.prefix
        path = os.path.join(prefix, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(text, str):
            text = self._substitute(text, self.ports).encode('utf-8')
        with open(path, 'wb') as f:
            f.write(text)
        return path

    def write_config(self, prefix, http=None, stream=None, main='', files=None,
                     events='', conf='nginx.conf'):
        """Write nginx.conf and files into prefix; returns the conf path."""
        self.ports['prefix'] = prefix      # %(prefix)s: this prefix, not a port
        text = self._substitute(self.conf_text(http, stream, main, events), self.ports)
        for name, content in (files or {}).items():
            self.write_file(name, content, prefix)
        path = self.write_file(conf, text, prefix)
        self.last_conf = path
        return path

    def conf_line(self, needle, conf_path=None):
        """Line number (1-based) of the first line of a written conf containing needle."""
        conf_path = conf_path or self.last_conf
        with open(conf_path, encoding='utf-8') as f:
            for n, line in enumerate(f, 1):
                if needle in line:
                    return n
        raise AssertionError('%r not found in %s' % (needle, conf_path))

    # ---- running nginx -----------------------------------------------------

    def start(self, http=None, stream=None, main='', files=None, events='',
              conf='nginx.conf', wait_ports=None):
        """Write a configuration into a fresh prefix and start nginx on it.

        Returns when the listening ports accept connections (self.port by
        default, or the placeholder names in wait_ports, e.g. ['port', 'port2']).
        """
        msg = binary_missing_message()
        if msg:
            self.fail(msg)
        self._init_state()
        if self.proc is not None:
            self.fail('start() called twice in one test')
        for attempt in range(3):
            self.ports = {}
            self.prefix = self.make_prefix()
            self.conf_path = self.write_config(self.prefix, http, stream, main, files,
                                               events, conf)
            for name, value in self.ports.items():
                setattr(self, name, value)
            rel_conf = os.path.relpath(self.conf_path, self.prefix)
            self._stdout = open(os.path.join(self.prefix, 'logs', 'stderr.log'), 'wb')
            self.proc = subprocess.Popen(
                [NGINX, '-p', self.prefix, '-c', rel_conf],
                env=dict(NGINX_ENV if self.malloc_perturb else NO_PERTURB_ENV,
                         **self.nginx_env),
                stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=subprocess.STDOUT)
            names = wait_ports if wait_ports is not None else (
                ['port'] if 'port' in self.ports else [])
            if self._wait_listening([self.ports[n] for n in names]):
                # nginx listens before it forks: give the workers a moment
                # (bounded: a test may expect them not to start)
                deadline = time.monotonic() + 2.0
                while not children(self.proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.01)
                self._workers = children(self.proc.pid)
                return
            # nginx exited: a port taken meanwhile by someone else? Try again.
            log = self.error_log()
            self._stdout.close()
            if 'Address already in use' in log and attempt < 2:
                self.proc = None
                continue
            self.proc = None
            self._start_failed = True     # the log is in this failure already
            self.fail('nginx exited on start (status %s):\n%s' % (
                self._last_status, log))

    def start_server(self, server, http='', main='', files=None, stream=None, **kw):
        """start() with one server listening on %(port)s; server = its body."""
        body = 'server {\n    listen 127.0.0.1:%%(port)s;\n%s}\n' % dedent(server)
        return self.start(http=dedent(http) + body, main=main, files=files,
                          stream=stream, **kw)

    def _wait_listening(self, ports):
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(ports)
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._last_status = rc
                return False
            while pending:
                try:
                    socket.create_connection(('127.0.0.1', pending[0]), timeout=1).close()
                    pending.pop(0)
                except OSError:
                    break
            if not pending:
                return True
            time.sleep(0.05)
        self.stop()
        self.fail('nginx did not listen on %s within %ss:\n%s' % (
            pending, START_TIMEOUT, self.error_log()))

    def worker_pids(self):
        """Live worker pids of the running nginx."""
        return children(self.proc.pid)

    def master_pid(self):
        return self.proc.pid

    def master_rss_kb(self):
        return rss_kb(self.proc.pid)

    def reload(self, expect_ok=True, timeout=RELOAD_TIMEOUT):
        """SIGHUP the master; wait for the new worker generation.

        With expect_ok, fail unless a new worker started and the old ones
        exited. Returns True if the reload succeeded, False if nginx kept the
        old configuration ([emerg] in the log; then the test must set
        self.allow_emerg).
        """
        old = self.worker_pids()
        offset = self.error_log_size()
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        started = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail('nginx exited during reload:\n%s' % self.error_log())
            new = self.worker_pids() - old
            if new:
                started = True
                if not any(alive(p) for p in old):
                    self._workers = new
                    return True
            elif not started and '[emerg]' in self.error_log(offset):
                # the new configuration was rejected; the old workers stay
                time.sleep(0.1)
                if not (self.worker_pids() - old):
                    if expect_ok:
                        self.fail('reload failed:\n%s' % self.error_log(offset))
                    return False
            time.sleep(0.02)
        self.fail('reload did not complete within %ss (new worker started: %s):\n%s'
                  % (timeout, started, self.error_log(offset)))

    def stop(self):
        """Graceful stop (SIGQUIT), SIGKILL after STOP_TIMEOUT. Returns the status."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        workers = children(proc.pid) | self._workers
        hung = False
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                hung = True
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        # workers of a killed master are orphans: end them (they are ours)
        for pid in workers:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self._stdout.close()
        if hung:
            self._stop_hung = True
        return proc.returncode

    # ---- logs ---------------------------------------------------------------

    def error_log_path(self, prefix=None):
        return os.path.join(prefix or self.prefix, 'logs', 'error.log')

    def error_log_size(self):
        try:
            return os.path.getsize(self.error_log_path())
        except OSError:
            return 0

    def error_log(self, offset=0, prefix=None):
        """error.log text (from byte offset) plus anything nginx wrote to stderr."""
        prefix = prefix or self.prefix
        if prefix is None:
            return ''
        text = ''
        try:
            with open(self.error_log_path(prefix), 'rb') as f:
                f.seek(offset)
                text = f.read().decode('utf-8', 'replace')
        except OSError:
            pass
        if offset == 0:
            try:
                with open(os.path.join(prefix, 'logs', 'stderr.log'), 'rb') as f:
                    err = f.read().decode('utf-8', 'replace')
                if err.strip():
                    text += '\n--- stderr ---\n' + err
            except OSError:
                pass
        return text

    def wait_log(self, pattern, offset=0, timeout=5.0):
        """Wait until error.log (from offset) matches pattern (regex); return the match."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.error_log(offset))
            if m:
                return m
            if time.monotonic() > deadline:
                self.fail('%r not in error.log within %ss:\n%s' % (
                    pattern, timeout, self.error_log(offset)))
            time.sleep(0.02)

    def log_entries(self, level, offset=0):
        """error.log entries (an entry may span lines: tracebacks) at [level]."""
        text = self.error_log(offset)
        entries = re.split(r'\n(?=\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[)', text)
        return [e for e in entries if '[%s]' % level in e.split('\n', 1)[0]]

    # ---- nginx -t -----------------------------------------------------------

    def nginx_t(self, http=None, stream=None, main='', files=None, events='',
                conf='nginx.conf', conf_text=None):
        """`nginx -t` on a configuration in a fresh prefix: (returncode, output).

        self.last_conf is that nginx.conf (see conf_line()); self.t_prefix its prefix.
        """
        msg = binary_missing_message()
        if msg:
            self.fail(msg)
        prefix = self.make_prefix()
        saved = self.ports
        self.ports = {}
        try:
            if conf_text is not None:
                for name, content in (files or {}).items():
                    self.write_file(name, content, prefix)
                path = self.write_file(conf, conf_text, prefix)
                self.last_conf = path
            else:
                path = self.write_config(prefix, http, stream, main, files, events, conf)
        finally:
            self.ports = saved
        self.t_prefix = prefix
        p = subprocess.run([NGINX, '-t', '-p', prefix, '-c', os.path.relpath(path, prefix)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        return p.returncode, p.stdout.decode('utf-8', 'replace')

    def assertConfError(self, rc, output, needle, *texts):
        """nginx -t failed with [emerg] ... in <conf>:<line of needle>, and texts."""
        self.assertNotEqual(rc, 0, output)
        self.assertIn('[emerg]', output)
        where = 'in %s:%d' % (self.last_conf, self.conf_line(needle))
        self.assertIn(where, output)
        for t in texts:
            self.assertIn(t, output)

    # ---- HTTP ---------------------------------------------------------------

    def get(self, path, headers=None, method='GET', body=None, port=None,
            timeout=HTTP_TIMEOUT):
        """One HTTP/1.1 request: (status, headers, body bytes).

        headers is an http.client.HTTPMessage (case-insensitive, get_all()).
        Header values may be bytes (sent as they are) or str (latin-1).
        """
        conn = http.client.HTTPConnection('127.0.0.1', port or self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.msg, data
        finally:
            conn.close()

    def get_body(self, path, **kw):
        """GET that must answer 200; returns the body as str."""
        status, headers, body = self.get(path, **kw)
        self.assertEqual(status, 200, body)
        return body.decode('utf-8', 'surrogateescape')

    def raw(self, data, port=None, timeout=HTTP_TIMEOUT):
        """Send raw bytes, read until the server closes (bounded); the bytes read."""
        s = socket.create_connection(('127.0.0.1', port or self.port), timeout=timeout)
        try:
            s.sendall(data)
            chunks = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    b = s.recv(65536)
                except socket.timeout:
                    break
                except ConnectionResetError:
                    break
                if not b:
                    break
                chunks.append(b)
            return b''.join(chunks)
        finally:
            s.close()

    # ---- teardown -------------------------------------------------------------

    def _harness_cleanup(self):
        prefix = self.prefix
        started = prefix is not None
        self.stop()
        log = self.error_log(prefix=prefix) if started else ''
        if CATLOG and started:
            sys.stderr.write('\n===== %s: %slogs/error.log =====\n%s\n===== end =====\n'
                             % (self.id(), prefix, log))
        if LEAVE:
            for p in self.prefixes:
                sys.stderr.write('\n%s: left %s\n' % (self.id(), p))
        else:
            for p in self.prefixes:
                shutil.rmtree(p, ignore_errors=True)
        if getattr(self, '_stop_hung', False):
            self.fail('nginx did not exit within %ss of SIGQUIT (killed):\n%s'
                      % (STOP_TIMEOUT, log))
        if started and not getattr(self, '_start_failed', False):
            bad = [l for l in log.splitlines()
                   if (BAD_LOG.search(l) or (not self.allow_emerg and EMERG_LOG.search(l)))
                   and not (self.allow_log and re.search(self.allow_log, l))]
            if bad:
                self.fail('error.log has unexpected entries:\n%s\n--- full log ---\n%s'
                          % ('\n'.join(bad), log))


# ---- running tests ------------------------------------------------------------

class _Result(unittest.TextTestResult):
    """Counts each test once: failed (failure, error, unexpected success) > skipped > passed."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.outcome = {}

    def _set(self, test, what):
        key = test.id()
        if self.outcome.get(key) == 'failed':
            return
        self.outcome[key] = what

    def startTest(self, test):
        super().startTest(test)
        self.outcome.setdefault(test.id(), 'passed')

    def addError(self, test, err):
        super().addError(test, err)
        self._set(test, 'failed')

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._set(test, 'failed')

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set(test, 'failed')

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._set(test, 'skipped')

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._set(test, 'failed')


def _count(suite):
    n = 0
    for t in suite:
        n += _count(t) if isinstance(t, unittest.TestSuite) else 1
    return n


def run_suite(suite, verbosity=1, failfast=False):
    """Run a suite; print the summary line last; return the exit status."""
    msg = binary_missing_message()
    if msg:
        sys.stderr.write(msg + '\n')
        sys.stderr.flush()
        print('0 passed, %d failed, 0 skipped' % max(_count(suite), 1))
        return 1
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=verbosity,
                                     resultclass=_Result, failfast=failfast)
    sys.stderr.write('nginx: %s (%s build)\n' % (NGINX, 'unblock' if unblock_build() else 'sync'))
    result = runner.run(suite)
    counts = {'passed': 0, 'failed': 0, 'skipped': 0}
    for what in result.outcome.values():
        counts[what] += 1
    # errors outside any test (setUpClass, module import) count as failures
    outside = [t for t, _ in result.errors if t.id() not in result.outcome]
    counts['failed'] += len(outside)
    sys.stderr.flush()
    sys.stdout.flush()
    print('%(passed)d passed, %(failed)d failed, %(skipped)d skipped' % counts)
    sys.stdout.flush()
    return 1 if counts['failed'] else 0


USAGE = '''usage: python3 t [-v] [-q] [-f] [NAME ...]
  NAME: a test file (test_http_basic, test_http_basic.py, t/test_http_basic.py)
        or a dotted name (test_http_basic.HttpBasic.test_content_hello)
  -v  verbose   -q  quiet   -f  stop at the first failure
'''


def _parse(argv):
    verbosity, failfast, names = 1, False, []
    for a in argv:
        if a in ('-v', '--verbose'):
            verbosity = 2
        elif a in ('-q', '--quiet'):
            verbosity = 0
        elif a in ('-f', '--failfast'):
            failfast = True
        elif a in ('-h', '--help'):
            sys.stdout.write(USAGE)
            sys.exit(0)
        elif a.startswith('-'):
            sys.stderr.write('unknown option %s\n%s' % (a, USAGE))
            sys.exit(2)
        else:
            names.append(a)
    return verbosity, failfast, names


def main_all(argv=None):
    """`python3 t [-v] [names]`: run t/test_*.py (or the named ones)."""
    verbosity, failfast, names = _parse(sys.argv[1:] if argv is None else argv)
    if T_DIR not in sys.path:
        sys.path.insert(0, T_DIR)
    loader = unittest.TestLoader()
    if not names:
        suite = loader.discover(T_DIR, pattern='test_*.py', top_level_dir=T_DIR)
    else:
        suite = unittest.TestSuite()
        for name in names:
            name = os.path.basename(name.rstrip('/')) if name.endswith('.py') else name
            if name.endswith('.py'):
                name = name[:-3]
            if name.startswith('t.'):
                name = name[2:]
            suite.addTests(loader.loadTestsFromName(name))
    sys.exit(run_suite(suite, verbosity, failfast))


def main():
    """At the end of a test file: run that file's tests (optionally named ones)."""
    verbosity, failfast, names = _parse(sys.argv[1:])
    module = sys.modules['__main__']
    loader = unittest.TestLoader()
    if names:
        suite = unittest.TestSuite(loader.loadTestsFromName(n, module) for n in names)
    else:
        suite = loader.loadTestsFromModule(module)
    sys.exit(run_suite(suite, verbosity, failfast))
