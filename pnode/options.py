"""Scoped PETSc options: a dict applied under one object's prefix, command line first.

Each pnode object owns an options prefix. ``ScopedOptions.apply`` writes the object's
dict into PETSc's options database under that prefix, lets the PETSc object read them
(``setFromOptions``) and removes them again, so they never leak into another object.
Values already in the database (for instance ``-node_ts_type cn`` from ``sys.argv``
passed to :func:`pnode.init`) are left alone and therefore win.
"""
from __future__ import annotations

import itertools
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from .errors import ConfigurationError
from .vec import PETSc

_counter = itertools.count()
# prefixes of collected objects, handed out again: PETSc keeps ~400 bytes for each distinct
# prefix a TS has read its options under, so a fresh prefix per call grew the memory of
# long training loops (measured with repeated setFromOptions under new prefixes)
_released: list[str] = []


def unique_prefix() -> str:
    """A prefix such as ``pnode3_`` that no live object of pnode uses."""
    return _released.pop() if _released else f"pnode{next(_counter)}_"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(_value(x) for x in v)
    return str(v)


class ScopedOptions:
    """PETSc options for one object: ``prefix`` plus a dict of ``key -> value``."""

    def __init__(self, prefix: str | None = None, options: Mapping[str, Any] | None = None):
        if prefix is not None and (not isinstance(prefix, str) or prefix.startswith("-")):
            raise ConfigurationError(f"options_prefix must be a string without a leading '-', got {prefix!r}")
        if prefix is None:
            prefix = unique_prefix()
            weakref.finalize(self, _released.append, prefix)
        self.prefix = prefix
        self.options = {}
        for key, val in dict(options or {}).items():
            if not isinstance(key, str) or not key:
                raise ConfigurationError(f"option names must be non-empty strings, got {key!r}")
            self.options[key.lstrip("-")] = val

    def with_defaults(self, defaults: Mapping[str, Any]) -> "ScopedOptions":
        """A copy where ``defaults`` fill keys the user's dict does not set."""
        merged = dict(defaults)
        merged.update(self.options)
        return ScopedOptions(self.prefix, merged)

    def get(self, *names: str) -> str | None:
        """The value of the option called ``names[0]`` (or one of its aliases ``names[1:]``)
        for this object: from the command line (it wins), else from this object's dict,
        else None."""
        db = PETSc().Options()
        for key in names:
            if db.hasName(self.prefix + key):
                return db.getString(self.prefix + key)
        val = next((self.options[key] for key in names if key in self.options), None)
        return None if val is None else _value(val)

    @contextmanager
    def applied(self, force: Mapping[str, Any] | None = None) -> Iterator[None]:
        """Insert this object's options for the duration of a ``setFromOptions`` call.

        ``force`` holds options that must take these values even over the command line
        (pnode's own invariants, e.g. no step adaptivity while replaying recorded steps).
        """
        db = PETSc().Options()
        inserted, restore = [], {}
        try:
            for key, val in self.options.items():
                name = self.prefix + key
                if db.hasName(name) or (force and key in force):
                    continue  # the command line (or the user) set it: it wins
                db.setValue(name, _value(val) if val is not None else None)
                inserted.append(name)
            for key, val in (force or {}).items():
                name = self.prefix + key
                if db.hasName(name):
                    restore[name] = db.getString(name)
                else:
                    inserted.append(name)
                db.setValue(name, _value(val))
            yield
        finally:
            for name in inserted:
                db.delValue(name)
            for name, val in restore.items():
                db.setValue(name, val)

    def apply(self, petsc_object, force: Mapping[str, Any] | None = None) -> None:
        """``petsc_object.setOptionsPrefix(prefix)`` then ``setFromOptions()`` with our dict."""
        petsc_object.setOptionsPrefix(self.prefix)
        with self.applied(force):
            petsc_object.setFromOptions()
