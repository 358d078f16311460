"""The .deb for Debian's own nginx (`make deb`): install it, load it, serve.

Runs only when TEST_DEB_PACKAGES names the .deb files to try (`make test-deb`
builds them and sets it), as root on Debian with Debian's nginx installed:
each package is installed with `apt-get install -y ./file.deb`, then
/usr/sbin/nginx (Debian's 1.22.1, not the binary under test elsewhere) runs a
configuration in a temporary prefix that includes
/etc/nginx/modules-enabled/*.conf -- exactly the modules a Debian nginx loads
-- and serves a Python handler over http and a stream python_content. The
package is purged at the end of each test (the machine is left as found).
"""

import json
import os
import socket
import subprocess

import harness

PACKAGES = os.environ.get('TEST_DEB_PACKAGES', '').split()
DEBIAN_NGINX = '/usr/sbin/nginx'
ENABLED = '/etc/nginx/modules-enabled'
LINK = ENABLED + '/60-mod-python.conf'

HTTP = r'''
python "
import json, sys
def hello(r):
    body = json.dumps({'n': r.arg['n'], 'python': '%d.%d' % sys.version_info[:2]})
    r.send(body.encode(), ngx.SEND_LAST)
";
server {
    listen 127.0.0.1:%(port)s;
    location / { python_content "hello(r)"; }
}
'''

# A stream python_content in each flavour: the sync build cannot do socket
# I/O, so its handler logs what a python_preread waited for and ends the
# session; the
# unblock build answers on the client socket. python_set + return checks a
# stream variable in both.
STREAM = {
    'sync': r'''
python "
def content(s):
    s.log('deb stream content got %r' % s.buf, ngx.LOG_NOTICE)
";
python_set $py_answer "b'pong ' + s.var['server_port'].encode()";
server {
    listen 127.0.0.1:%(port2)s;
    python_preread "None if s.buf.endswith(b'\\n') else ngx.AGAIN";
    python_content "content(s)";
}
server { listen 127.0.0.1:%(port3)s; return $py_answer; }
''',
    'unblock': r'''
python "
def content(s):
    line = s.sock.makefile('rb').readline()
    s.sock.sendall(b'echo ' + line)
";
python_set $py_answer "b'pong ' + s.var['server_port'].encode()";
server { listen 127.0.0.1:%(port2)s; python_content "content(s)"; }
server { listen 127.0.0.1:%(port3)s; return $py_answer; }
''',
}


# apt-get waits for the dpkg lock (another apt on the machine) instead of failing
APT = ['apt-get', '-o', 'DPkg::Lock::Timeout=120', '-y', '-q']


def run(cmd, timeout=300):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    return p.returncode, p.stdout.decode('utf-8', 'replace')


def package_name(deb):
    rc, out = run(['dpkg-deb', '-f', deb, 'Package'])
    assert rc == 0, out
    return out.strip()


class DebianPackage(harness.NginxTestCase):

    def setUp(self):
        if not PACKAGES:
            self.skipTest('TEST_DEB_PACKAGES not set (make test-deb sets it)')
        if os.geteuid() != 0:
            self.skipTest('installs a .deb: needs root')
        # start() runs harness.NGINX: here Debian's own nginx.
        saved = harness.NGINX
        harness.NGINX = DEBIAN_NGINX
        self.addCleanup(setattr, harness, 'NGINX', saved)

    def make_prefix(self):
        # Debian's snippets say `load_module modules/x.so`, relative to the
        # prefix (/usr/share/nginx, where modules -> /usr/lib/nginx/modules).
        d = super().make_prefix()
        os.symlink('/usr/lib/nginx/modules', d + 'modules')
        return d

    def deb(self, flavour):
        want = 'libnginx-mod-python' + ('-unblock' if flavour == 'unblock' else '')
        for deb in PACKAGES:
            if package_name(deb) == want:
                return os.path.abspath(deb), want
        self.skipTest('no %s package in TEST_DEB_PACKAGES' % want)

    def install(self, flavour):
        deb, name = self.deb(flavour)
        rc, out = run(APT + ['install', deb])
        self.assertEqual(rc, 0, out)
        self.addCleanup(run, APT + ['purge', name])
        return name

    def check_package(self, name):
        """Control fields and files the way Debian's module packages have them."""
        rc, provides = run(['dpkg-query', '-W', '-f=${Provides}', 'nginx'])
        abi = [p.strip() for p in provides.split(',') if p.strip().startswith('nginx-abi-')]
        self.assertEqual(len(abi), 1, provides)
        rc, depends = run(['dpkg-query', '-W', '-f=${Depends}', name])
        deps = [d.strip().split()[0] for d in depends.split(',')]
        self.assertIn(abi[0], deps)
        self.assertIn('libnginx-mod-stream', deps)
        self.assertTrue(any(d.startswith('libpython3.') for d in deps), depends)
        self.assertTrue(os.path.isfile('/usr/lib/nginx/modules/ngx_python_module.so'))
        self.assertEqual(os.readlink(LINK), '/usr/share/nginx/modules-available/mod-python.conf')
        with open(LINK) as f:
            self.assertEqual(f.read().strip(), 'load_module modules/ngx_python_module.so;')
        # loaded after ngx_stream_module.so, which it needs
        enabled = sorted(os.listdir(ENABLED))
        self.assertLess(enabled.index('50-mod-stream.conf'), enabled.index('60-mod-python.conf'))
        # Debian's own configuration still passes with the module enabled
        rc, out = run([DEBIAN_NGINX, '-t', '-q'])
        self.assertEqual(rc, 0, out)

    def serve(self, flavour):
        self.start(main='include %s/*.conf;' % ENABLED, http=HTTP, stream=STREAM[flavour],
                   wait_ports=['port', 'port2', 'port3'])
        status, headers, body = self.get('/?n=deb%20ok')
        self.assertEqual(status, 200, body)
        self.assertEqual(headers['Server'], 'nginx/1.22.1')
        got = json.loads(body)
        self.assertEqual(got['n'], 'deb ok')
        rc, out = run(['dpkg-query', '-W', '-f=${Depends}', 'libnginx-mod-python'
                       + ('-unblock' if flavour == 'unblock' else '')])
        self.assertIn('libpython%s ' % got['python'], out)

        self.assertEqual(self.raw(b'', port=self.port3), b'pong %d' % self.port3)
        if flavour == 'unblock':
            self.assertEqual(self.raw(b'ping\n', port=self.port2), b'echo ping\n')
        else:
            offset = self.error_log_size()
            self.assertEqual(self.raw(b'ping\n', port=self.port2), b'')
            self.wait_log(r"deb stream content got b'ping\\n'", offset)

    def test_sync_package(self):
        self.check_package(self.install('sync'))
        self.serve('sync')

    def test_unblock_package(self):
        self.check_package(self.install('unblock'))
        self.serve('unblock')


if __name__ == '__main__':
    harness.main()
