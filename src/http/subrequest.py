"""Python side of r.subrequest(): argument normalisation and the
case-insensitive mapping of a subrequest's response headers."""

from collections.abc import Mapping
from urllib.parse import urlencode


def query(args):
    """`args=` as the raw query string (bytes): str/bytes as given, a
    mapping or a sequence of pairs URL-encoded."""
    if args is None:
        return b""
    if isinstance(args, str):
        return args.encode("utf-8", "surrogateescape")
    if isinstance(args, (bytes, bytearray, memoryview)):
        return bytes(args)
    return urlencode(args, doseq=True).encode("ascii")


def header_pairs(headers):
    """`headers=` (a mapping or pairs) as a list of (name, value) pairs."""
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(name, value) for name, value in items]


class Headers(Mapping):
    """A subrequest's response headers: names are case-insensitive;
    `h[name]` and `h.get(name)` give the first value, `h.get_all(name)`
    every value, in the order the response had them."""

    __slots__ = ("_pairs", "_first")

    def __init__(self, pairs):
        self._pairs = list(pairs)
        self._first = {}
        for name, value in self._pairs:
            self._first.setdefault(name.lower(), (name, value))

    def __getitem__(self, name):
        if not isinstance(name, str):
            raise KeyError(name)
        return self._first[name.lower()][1]

    def __contains__(self, name):
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self):
        return (name for name, _ in self._first.values())

    def __len__(self):
        return len(self._first)

    def get_all(self, name, default=None):
        if not isinstance(name, str):
            return default
        found = [v for n, v in self._pairs if n.lower() == name.lower()]
        return found if found else default

    def __repr__(self):
        return "<ngx subrequest headers %r>" % (self._pairs,)
