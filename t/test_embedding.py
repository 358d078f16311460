"""The embedded interpreter: the standard library matches the libpython
nginx is linked with, whatever `python3` comes first on PATH when nginx
starts; handlers run in the forked workers."""

import os
import subprocess

import harness

APP = '''
import ssl, sys, os
def info(r):
    r.send(repr({
        'prefix': sys.prefix,
        'version': sys.version_info[:3],
        'ssl': ssl.OPENSSL_VERSION.startswith('OpenSSL'),
        'pid_is_worker': os.getpid() != MASTER_PID,
    }), ngx.SEND_LAST)
MASTER_PID = os.getpid()
'''


class EmbeddingTest(harness.NginxTestCase):

    def test_stdlib_matches_libpython(self):
        self.start_server('location / { python_content "info(r)"; }',
                          http='python_include app.py;', files={'app.py': APP})
        info = eval(self.get_body('/'))
        self.assertTrue(info['ssl'])                # _ssl loads: same ABI as libpython
        self.assertTrue(info['pid_is_worker'])
        # The module was built for /usr/bin/python3 unless PYO3_PYTHON said
        # otherwise; then its prefix is the one in use.
        built_for = os.environ.get('PYO3_PYTHON', '/usr/bin/python3')
        if os.path.exists(built_for):
            out = subprocess.run([built_for, '-c', 'import sys; print(sys.prefix); print(tuple(sys.version_info[:3]))'],
                                 capture_output=True, text=True).stdout.split('\n')
            self.assertEqual(info['prefix'], out[0])
            self.assertEqual(repr(tuple(info['version'])), out[1])


if __name__ == '__main__':
    harness.main()
