"""python_venv and python_path: the embedded interpreter uses a real
virtualenv (made here with the Python the module embeds, a package
installed into it from a wheel built here, with a .pth file) exactly as
VENV/bin/python does; a venv of another Python version, a reload that
changes the venv and a late python_venv are configuration errors;
python_path entries go in front of sys.path, in order, and a reload
replaces them."""

import base64
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import zipfile

import harness

# The Python the module embeds (as in test_embedding.py).
EMBEDDED = os.environ.get('PYO3_PYTHON', '/usr/bin/python3')


def python_minor(python):
    out = subprocess.run([python, '-c', 'import sys; print("%d.%d" % sys.version_info[:2])'],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def build_wheel(directory):
    """A pure-Python wheel: package `hello` (VALUE = 42), a module in a
    directory of its own that only hello_extra.pth puts on sys.path."""
    files = {
        'hello/__init__.py': 'VALUE = 42\n',
        'hello_extra_dir/extra_mod.py': 'X = "via .pth"\n',
        'hello_extra.pth': 'hello_extra_dir\n',
        'hello-1.0.dist-info/METADATA': 'Metadata-Version: 2.1\nName: hello\nVersion: 1.0\n',
        'hello-1.0.dist-info/WHEEL': 'Wheel-Version: 1.0\nGenerator: nginx-python-tests\n'
                                     'Root-Is-Purelib: true\nTag: py3-none-any\n',
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()
        record.append('%s,sha256=%s,%d' % (name, digest, len(text.encode())))
    record.append('hello-1.0.dist-info/RECORD,,')
    files['hello-1.0.dist-info/RECORD'] = '\n'.join(record) + '\n'
    path = os.path.join(directory, 'hello-1.0-py3-none-any.whl')
    with zipfile.ZipFile(path, 'w') as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def make_venv(python, path, with_pip=True):
    args = [python, '-m', 'venv'] + ([] if with_pip else ['--without-pip']) + [path]
    subprocess.run(args, check=True, capture_output=True, timeout=120)


APP = r'''
import sys
def info(r):
    import hello, extra_mod
    r.send(repr({'prefix': sys.prefix, 'base_prefix': sys.base_prefix,
                 'path': sys.path, 'hello': hello.VALUE, 'extra': extra_mod.X,
                 'hello_file': hello.__file__}), ngx.SEND_LAST)
'''

SAME_AS_VENV_PYTHON = r'''
import sys, hello, extra_mod
print(repr({'prefix': sys.prefix, 'base_prefix': sys.base_prefix,
            'path': sys.path, 'hello': hello.VALUE, 'extra': extra_mod.X,
            'hello_file': hello.__file__}))
'''


class VenvTest(harness.NginxTestCase):

    @classmethod
    def setUpClass(cls):
        if python_minor(EMBEDDED) is None:
            raise unittest.SkipTest('%s (the embedded Python) cannot run' % EMBEDDED)
        cls.tmp = os.path.realpath(tempfile.mkdtemp(prefix='nginx-python-venv-'))
        os.chmod(cls.tmp, 0o755)
        cls.venv = os.path.join(cls.tmp, 'venv')
        make_venv(EMBEDDED, cls.venv)
        wheel = build_wheel(cls.tmp)
        subprocess.run([os.path.join(cls.venv, 'bin', 'python'), '-m', 'pip', 'install', '-q',
                        '--no-index', '--disable-pip-version-check', wheel],
                       check=True, capture_output=True, timeout=120)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def venv_python_sees(self):
        out = subprocess.run([os.path.join(self.venv, 'bin', 'python'), '-c', SAME_AS_VENV_PYTHON],
                             capture_output=True, text=True, check=True, cwd='/')
        return eval(out.stdout)

    def test_interpreter_uses_the_venv_as_its_python_would(self):
        self.start_server('location / { python_content "info(r)"; }',
                          main='python_venv %s;' % self.venv,
                          http='python_include app.py;', files={'app.py': APP})
        got = eval(self.get_body('/'))
        want = self.venv_python_sees()
        self.assertEqual(got['prefix'], self.venv)
        self.assertEqual((got['hello'], got['extra']), (42, 'via .pth'))
        self.assertTrue(got['hello_file'].startswith(self.venv + '/lib/'))
        # sys.path: the venv python's ('' first: its current directory),
        # ours has the conf prefix first instead.
        self.assertEqual(got['path'][0], self.prefix.rstrip('/'))
        self.assertEqual(got['path'][1:], want['path'][1:])
        for key in ('prefix', 'base_prefix', 'hello_file', 'extra'):
            self.assertEqual(got[key], want[key])

    def test_relative_to_the_conf_prefix(self):
        # both live in the same temporary directory
        self.start_server('location / { python_content "info(r)"; }',
                          main='python_venv ../%s/venv;' % os.path.basename(self.tmp),
                          http='python_include app.py;', files={'app.py': APP})
        self.assertEqual(eval(self.get_body('/'))['hello'], 42)

    def test_venv_of_another_python_version_is_refused(self):
        mine = python_minor(EMBEDDED)
        others = sorted(glob.glob(os.path.expanduser('~/.pyenv/versions/3.*/bin/python3')))
        other = next((p for p in ['/usr/bin/python3'] + others
                      if python_minor(p) not in (None, mine)), None)
        venv = os.path.join(self.tmp, 'other')
        if other:
            make_venv(other, venv, with_pip=False)
        else:   # only one Python here: a venv whose pyvenv.cfg says 3.8
            make_venv(EMBEDDED, venv, with_pip=False)
            cfg = os.path.join(venv, 'pyvenv.cfg')
            with open(cfg) as f:
                text = f.read()
            with open(cfg, 'w') as f:
                f.write('\n'.join('version = 3.8.18' if l.startswith('version') else l
                                  for l in text.splitlines()) + '\n')
        made = python_minor(os.path.join(venv, 'bin', 'python')) if other else '3.8'
        rc, out = self.nginx_t(main='python_venv %s;' % venv, http='python "import sys";')
        self.assertConfError(rc, out, 'python_venv', 'made with Python %s' % made,
                             'this module embeds Python %s' % mine)

    def test_not_a_venv(self):
        rc, out = self.nginx_t(main='python_venv %s;' % self.tmp)
        self.assertConfError(rc, out, 'python_venv', 'is not a virtualenv', 'pyvenv.cfg')

    def test_python_venv_after_python_code_is_refused(self):
        rc, out = self.nginx_t(main='python "x = 1";\npython_venv %s;' % self.venv)
        self.assertConfError(rc, out, 'python_venv', 'must come before the other python directives')

    def test_reload_cannot_change_the_venv(self):
        self.allow_emerg = True
        self.start_server('location / { python_content "info(r)"; }',
                          main='python_venv %s;' % self.venv,
                          http='python_include app.py;', files={'app.py': APP})
        conf = open(self.conf_path).read()
        self.assertTrue(self.reload())          # the same venv: fine
        with open(self.conf_path, 'w') as f:
            f.write(conf.replace('python_venv %s;' % self.venv, ''))
        self.assertFalse(self.reload(expect_ok=False))
        self.assertIn('a reload cannot change python_venv; restart nginx', self.error_log())
        self.assertEqual(eval(self.get_body('/'))['hello'], 42)   # old workers serve


PATH_APP = r'''
import sys
def info(r):
    import which
    r.send(repr((which.NAME, [p for p in sys.path if p.startswith(PREFIX)])), ngx.SEND_LAST)  # conf prefix itself: no trailing /
'''


class PythonPathTest(harness.NginxTestCase):

    def test_prepended_in_order_relative_to_prefix_and_replaced_on_reload(self):
        files = {'app.py': PATH_APP, 'a/which.py': 'NAME = "a"\n', 'b/which.py': 'NAME = "b"\n',
                 'b/only_b.py': ''}
        self.start_server('location / { python_content "info(r)"; }',
                          main='python_path a;\npython_path %(prefix)sb/;',
                          http='python "PREFIX = %r"; python_include app.py;' % '%(prefix)s',
                          files=files)
        p = self.prefix
        self.assertEqual(eval(self.get_body('/')), ('a', [p + 'a', p + 'b']))
        conf = open(self.conf_path).read()
        with open(self.conf_path, 'w') as f:
            f.write(conf.replace('python_path a;', ''))
        self.reload()
        self.assertEqual(eval(self.get_body('/')), ('b', [p + 'b']))

    def test_python_path_is_main_level_only(self):
        rc, out = self.nginx_t(http='python_path a;')
        self.assertConfError(rc, out, 'python_path', 'is not allowed here')


if __name__ == '__main__':
    harness.main()
