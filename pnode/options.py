"""Scoped PETSc options: a dict applied under one object's prefix, command line first.

Each pnode object owns an options prefix. ``ScopedOptions.apply`` writes the object's
dict into PETSc's options database under that prefix, lets the PETSc object read them
(``setFromOptions``) and removes them again, so they never leak into another object.
Values already in the database (for instance ``-node_ts_type cn`` from ``sys.argv``
passed to :func:`pnode.init`) are left alone and therefore win.

Options are code, like a command line: ``*_python_type`` imports and instantiates a
Python class named by its value, ``ts_monitor ascii:PATH`` writes to any path. pnode
therefore rejects Python types given in an options dict unless
:func:`allow_python_types` says otherwise (the command line is the user's own and may
name them). Names must be PETSc option names (no spaces); a value PETSc rejects raises
a :class:`ConfigurationError` naming the option (and the allowed values of a type
option), and an option from the dict that PETSc never read gives a
:class:`pnode.errors.PnodeWarning`.
"""
from __future__ import annotations

import itertools
import re
import warnings
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from .errors import ConfigurationError, PnodeWarning
from .startup import PETSc

_counter = itertools.count()
# prefixes of collected objects, handed out again: PETSc keeps ~400 bytes for each distinct
# prefix a TS has read its options under, so a fresh prefix per call grew the memory of
# long training loops (measured with repeated setFromOptions under new prefixes)
_released: list[str] = []
_NAME = re.compile(r"^[A-Za-z0-9_]+$")

#: options of the dict (and command line, under the prefix) that pnode reads itself: PETSc
#: has none of these names, so they do not warn as unread
PNODE_OPTIONS = frozenset({"adjoint_ksp_rtol"})
_python_types_allowed = False
# endings of option names that take a value (None, a bare flag, would be ignored by PETSc)
_VALUED = ("_type", "_it", "_its", "_steps", "_max", "_min", "rtol", "atol", "_tol", "time_step", "_dt",
           "_theta", "_radius", "_reject", "_rejections", "_failures", "_lag_jacobian", "_restart")


def allow_python_types(allowed: bool = True) -> None:
    """Let options dicts name Python classes (``*_type: python``, ``*_python_type``)."""
    global _python_types_allowed
    _python_types_allowed = bool(allowed)


def unique_prefix() -> str:
    """A prefix such as ``pnode3_`` that no live object of pnode uses."""
    return _released.pop() if _released else f"pnode{next(_counter)}_"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(_value(x) for x in v)
    return str(v)


def _check_option(key, val) -> str:
    if not isinstance(key, str) or not key.strip("-"):
        raise ConfigurationError(f"option names must be non-empty strings, got {key!r}")
    name = key.lstrip("-")
    if not _NAME.match(name):
        raise ConfigurationError(
            f"option name {key!r} is not a PETSc option name (letters, digits and '_' only; "
            "give the value separately: options={'ts_type': 'rk'})")
    if val is None and name.endswith(_VALUED):
        raise ConfigurationError(f"option {name} needs a value (None makes it a flag, which PETSc ignores)")
    python = name.endswith("python_type") or (name.endswith("_type") and str(val).lower() == "python")
    if python and not _python_types_allowed:
        raise ConfigurationError(
            f"option {name}={val!r} names a Python type, which imports and runs code; give it on "
            "the command line, or call pnode.options.allow_python_types() first")
    return name


class ScopedOptions:
    """PETSc options for one object: ``prefix`` plus a dict of ``key -> value``."""

    def __init__(self, prefix: str | None = None, options: Mapping[str, Any] | None = None):
        if prefix is not None and (not isinstance(prefix, str) or prefix.startswith("-")
                                   or (prefix and not _NAME.match(prefix))):
            raise ConfigurationError(
                f"options_prefix must be a string of letters, digits and '_' without a leading "
                f"'-', got {prefix!r}")
        if options is not None and not isinstance(options, Mapping):
            raise ConfigurationError(f"options must be a dict of PETSc options, got {type(options).__name__}")
        if prefix is None:
            prefix = unique_prefix()
            weakref.finalize(self, _released.append, prefix)
        self.prefix = prefix
        self.options = {}
        for key, val in dict(options or {}).items():
            self.options[_check_option(key, val)] = val
        self._warned: set[str] = set()
        self._pending: set[str] = set()  # unread at setFromOptions, read (or not) at the first solve
        self._read_late: set[str] = set()

    def with_defaults(self, defaults: Mapping[str, Any]) -> "ScopedOptions":
        """A copy where ``defaults`` fill keys the user's dict does not set (the copy warns
        only about the user's own options)."""
        merged = dict(defaults)
        merged.update(self.options)
        copy = ScopedOptions.__new__(ScopedOptions)
        copy.prefix, copy.options, copy._warned = self.prefix, merged, self._warned
        copy._pending, copy._read_late = set(), set()
        copy._own = set(self.options)
        return copy

    def _user_keys(self) -> set[str]:
        return getattr(self, "_own", set(self.options))

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

    def command_line(self, names) -> dict[str, str]:
        """The options among ``names`` set in PETSc's database under this prefix (the
        command line), with their values."""
        db = PETSc().Options()
        return {key: db.getString(self.prefix + key) for key in names if db.hasName(self.prefix + key)}

    @contextmanager
    def applied(self, force: Mapping[str, Any] | None = None) -> Iterator[list[str]]:
        """Insert this object's options for the duration of a ``setFromOptions`` call;
        yields the names inserted from the dict.

        ``force`` holds options that must take these values even over the command line
        (pnode's own invariants, e.g. no step adaptivity while replaying recorded steps).
        """
        db = PETSc().Options()
        inserted, restore, from_dict = [], {}, []
        try:
            for key, val in self.options.items():
                name = self.prefix + key
                if db.hasName(name) or (force and key in force):
                    continue  # the command line (or the user) set it: it wins
                db.setValue(name, _value(val) if val is not None else None)
                inserted.append(name)
                from_dict.append(key)
            for key, val in (force or {}).items():
                name = self.prefix + key
                if db.hasName(name):
                    restore[name] = db.getString(name)
                else:
                    inserted.append(name)
                db.setValue(name, _value(val))
            yield from_dict
        finally:
            for name in inserted:
                db.delValue(name)
            for name, val in restore.items():
                db.setValue(name, val)

    def apply(self, petsc_object, force: Mapping[str, Any] | None = None, *, until_solved: bool = False) -> None:
        """``petsc_object.setOptionsPrefix(prefix)`` then ``setFromOptions()`` with our dict.

        A value PETSc rejects raises a ConfigurationError naming it; options of the user's
        dict that PETSc did not read warn once per object. With ``until_solved`` the
        unread ones wait for the first solve under :meth:`solving` instead."""
        petsc_object.setOptionsPrefix(self.prefix)
        P = PETSc()
        with self.applied(force) as from_dict:
            try:
                petsc_object.setFromOptions()
            except P.Error as exc:
                raise self._rejected(petsc_object, force) from exc
            db = P.Options()
            unread = [key for key in from_dict if key in self._user_keys() and key not in self._warned
                      and key not in PNODE_OPTIONS
                      and key not in self._read_late and not db.used(self.prefix + key)]
        if until_solved:
            self._pending.update(unread)
        else:
            self._warn_unread(unread, petsc_object)

    @contextmanager
    def solving(self, petsc_object, force: Mapping[str, Any] | None = None) -> Iterator[None]:
        """Around a solve of ``petsc_object`` configured by ``apply(..., until_solved=True)``:
        while options of the dict are still unread, keep them in the database for the
        solve, because PETSc sets some parts up only there and they read their options then
        (block Jacobi's and ASM's sub-solvers, ``sub_pc_factor_levels``; multigrid
        levels). Those read now are remembered; the rest warn. Costs nothing once all were
        read."""
        if not self._pending:
            yield
            return
        with self.applied(force):
            yield
            db = PETSc().Options()
            late = {key for key in self._pending if db.used(self.prefix + key)}
        unread = sorted(self._pending - late)
        self._read_late |= late
        self._pending.clear()
        self._warn_unread(unread, petsc_object)

    def _warn_unread(self, unread: list[str], petsc_object) -> None:
        if unread:
            self._warned.update(unread)
            warnings.warn(
                f"PETSc did not read the option(s) {', '.join(unread)} of prefix {self.prefix!r} "
                f"({type(petsc_object).__name__} {petsc_object.getType()}): misspelt, or for "
                "another kind of solver?", PnodeWarning, stacklevel=5)

    def _rejected(self, petsc_object, force) -> ConfigurationError:
        """The error for options PETSc rejected: each user option is tried alone on a
        scratch object of the same kind to name the culprit."""
        P = PETSc()
        culprits = []
        for key in self._user_keys():
            scratch = type(petsc_object)().create(petsc_object.getComm())
            try:
                scratch.setType(petsc_object.getType())
                single = ScopedOptions.__new__(ScopedOptions)
                single.prefix, single.options, single._warned = self.prefix, {key: self.options[key]}, set()
                with single.applied(force):
                    scratch.setOptionsPrefix(self.prefix)
                    scratch.setFromOptions()
            except P.Error:
                culprits.append(key)
            finally:
                scratch.destroy()
        if not culprits:
            return ConfigurationError(
                f"PETSc rejected the options of prefix {self.prefix!r} (the command line's or "
                f"{sorted(self._user_keys())}); run with -help to see what it accepts")
        return ConfigurationError("; ".join(_describe(key, self.options[key]) for key in culprits))


def _describe(key: str, value) -> str:
    allowed = allowed_values(key)
    words = f"PETSc rejected the option {key}={value!r}"
    if allowed:
        return words + f"; allowed: {', '.join(allowed)}"
    if value is None:
        return words + " (it needs a value)"
    return words + " (a number or name of the kind PETSc expects, see -help)"


_TYPE_ENUMS = {"ts_type": ("TS", "Type"), "ts_rk_type": ("TS", "RKType"),
               "ts_arkimex_type": ("TS", "ARKIMEXType"), "ts_rosw_type": ("TS", "RosWType"),
               "snes_type": ("SNES", "Type"), "ksp_type": ("KSP", "Type"), "pc_type": ("PC", "Type"),
               "snes_linesearch_type": ("SNESLineSearch", "Type"), "tao_type": ("TAO", "Type"),
               "mat_type": ("Mat", "Type")}
_ADAPT_TYPES = ("none", "basic", "dsp", "cfl", "glee", "history")


def allowed_values(key: str) -> list[str]:
    """The values PETSc offers for a type option (empty for other options)."""
    if key.endswith("ts_adapt_type"):
        return list(_ADAPT_TYPES)
    for suffix, (cls, enum) in _TYPE_ENUMS.items():
        if key == suffix or key.endswith("_" + suffix):
            holder = getattr(getattr(PETSc(), cls, None), enum, None)
            if holder is None:
                return []
            return sorted({v for k, v in vars(holder).items() if not k.startswith("_") and isinstance(v, str)})
    return []
