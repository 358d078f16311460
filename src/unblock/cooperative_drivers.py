"""Database drivers whose C code does its own socket I/O, made cooperative
when they are imported (unblock build).

- psycopg2: libpq runs in non-blocking ("green") mode with a wait callback
  (psycopg2.extensions.set_wait_callback) that waits with ngx.wait_fd. Set
  only if the application has not set its own callback.
- psycopg 3: its pure-Python wait functions wait in select.select /
  selectors, which are cooperative (cooperative_select.py); if its C
  accelerator (psycopg_c, with a C wait) is installed, the Python
  wait_select is used instead.

The hooks run right after the driver's own import, whenever that happens
(configuration time or a handler); a driver imported before install() is
patched at once.
"""

import sys as _sys

import _ngx_unblock as _u


def psycopg2_wait(conn):
    """psycopg2 wait callback: drives conn.poll() and waits for the fd."""
    import psycopg2.extensions as ext
    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        if state == ext.POLL_READ:
            _u.wait_fd(conn.fileno(), False)
        elif state == ext.POLL_WRITE:
            _u.wait_fd(conn.fileno(), True)
        else:
            raise ext.OperationalError('bad state from poll: %r' % (state,))


def _psycopg2_loaded(module):
    ext = _sys.modules.get('psycopg2.extensions')
    if ext is not None and ext.get_wait_callback() is None:
        ext.set_wait_callback(psycopg2_wait)


def _psycopg_waiting_loaded(waiting):
    wait_c = getattr(waiting, 'wait_c', None)
    if wait_c is not None and waiting.wait is wait_c:
        waiting.wait = waiting.wait_select


_HOOKS = {
    'psycopg2': _psycopg2_loaded,
    'psycopg.waiting': _psycopg_waiting_loaded,
}


class _Loader:
    """The driver's own loader, then the hook."""

    def __init__(self, loader, hook):
        self._loader = loader
        self._hook = hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._hook(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _AfterImport:
    """A meta path finder that only wraps the loader of the hooked modules."""

    def find_spec(self, name, path=None, target=None):
        hook = _HOOKS.get(name)
        if hook is None:
            return None
        for finder in _sys.meta_path:
            find = getattr(finder, 'find_spec', None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
            spec.loader = _Loader(spec.loader, hook)
        return spec


def install():
    for name, hook in _HOOKS.items():
        if name in _sys.modules:
            hook(_sys.modules[name])
    _sys.meta_path.insert(0, _AfterImport())
