"""Method names -> PETSc TS types (``"rk4"`` -> TSRK ``4``, ``"cn"`` -> TSTHETA ...).

The tables here are the only place that knows the methods: adding an explicit
Runge-Kutta method is one entry of :data:`RK_TABLEAUS` (and of :data:`NAMED` for a short
name), adding a TS type one entry of :data:`TS_TYPES`. A TS type chosen by options
(``method=None, options={"ts_type": ...}`` or ``-<prefix>ts_type`` on the command line)
is classified by :data:`TS_TYPES`, never guessed; types pnode does not know, or that this
PETSc build lacks, are rejected with the known ones listed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigurationError


@dataclass(frozen=True)
class Method:
    """How a problem is stepped: a TS type, its sub-type options, whether it adapts (has an
    embedded error estimate), whether it is implicit and whether PETSc has its adjoint."""

    name: str
    ts_type: str
    options: dict = field(default_factory=dict)
    adaptive: bool = False
    implicit: bool = False
    adjoint: bool = True
    solver_options: dict = field(default_factory=dict)  # over pnode's implicit defaults


@dataclass(frozen=True)
class TSKind:
    """What pnode knows of a PETSc TS type."""

    implicit: bool
    adaptive: bool
    adjoint: bool
    subtype: str | None = None  # the option choosing its tableau, e.g. "ts_rk_type"
    default_subtype: str | None = None
    solver_options: dict = field(default_factory=dict)  # e.g. a linear SNES for Rosenbrock-W


#: TSRK tableaus -> whether they have an embedded error estimate
RK_TABLEAUS = {"1fe": False, "2a": True, "2b": False, "3": False, "3bs": True, "4": False,
               "5f": True, "5dp": True, "5bs": True, "6vr": True, "7vr": True, "8vr": True}

#: short names -> (TS type, sub-type, whether the name fixes the sub-type or only
#: defaults it: "arkimex" takes its tableau from ``ts_arkimex_type`` when given)
NAMED = {
    "euler": ("rk", "1fe", True), "midpoint": ("rk", "2b", True), "heun": ("rk", "2a", True),
    "bosh3": ("rk", "3bs", True), "rk4": ("rk", "4", True), "dopri5": ("rk", "5dp", True),
    "beuler": ("beuler", None, True), "cn": ("cn", None, True), "theta": ("theta", None, True),
    "arkimex": ("arkimex", "l2", False), "bdf": ("bdf", None, True), "rosw": ("rosw", None, False),
}

#: PETSc TS types pnode can drive. TSAdjoint exists for rk, theta/beuler/cn and arkimex;
#: the others (Rosenbrock-W, BDF) solve forward only (``odeint``).
TS_TYPES = {
    "rk": TSKind(False, True, True, "ts_rk_type", "3bs"),
    "beuler": TSKind(True, False, True),
    "cn": TSKind(True, False, True),
    "theta": TSKind(True, False, True),
    "arkimex": TSKind(True, True, True, "ts_arkimex_type", "3"),
    "rosw": TSKind(True, True, False, "ts_rosw_type", None, {"snes_type": "ksponly"}),
    "bdf": TSKind(True, True, False),
}


def explicit_method_names() -> list[str]:
    """Names accepted for explicit Runge-Kutta methods."""
    return sorted(k for k, (ts, _, _) in NAMED.items() if not TS_TYPES[ts].implicit)


def implicit_method_names() -> list[str]:
    """Names accepted for implicit methods (``theta``: ``options={"ts_theta_theta": ...}``;
    ``arkimex``: tableau by ``options={"ts_arkimex_type": "l2" | "ars122" | "2e" | "3" ...}``;
    ``bdf`` and ``rosw`` solve forward only)."""
    return sorted(k for k, (ts, _, _) in NAMED.items() if TS_TYPES[ts].implicit)


def _method(name: str, ts_type: str, subtype: str | None) -> Method:
    kind = TS_TYPES[ts_type]
    options = {kind.subtype: subtype} if kind.subtype and subtype is not None else {}
    adaptive = kind.adaptive
    if ts_type == "rk":
        if subtype not in RK_TABLEAUS:
            raise ConfigurationError(
                f"unknown TSRK type {subtype!r} (ts_rk_type); known: {', '.join(RK_TABLEAUS)}")
        adaptive = RK_TABLEAUS[subtype]
    return Method(name, ts_type, options, adaptive, kind.implicit, kind.adjoint, dict(kind.solver_options))


def _unknown_ts_type(ts_type) -> ConfigurationError:
    return ConfigurationError(
        f"unknown TS type {ts_type!r} (ts_type); pnode drives: {', '.join(TS_TYPES)}")


def resolve(method: str | None, options: dict | None = None, command_line: dict | None = None) -> Method:
    """Turn a user's ``method=`` (and the ``ts_type``/sub-type options of the object's dict
    and of the command line, which wins) into a Method.

    ``options`` naming a TS type or tableau other than ``method``'s raises: one of the two
    would be silently ignored. Pass ``method=None`` to choose by options.
    """
    options = options or {}
    command_line = command_line or {}
    if method is not None and not isinstance(method, str):
        raise ConfigurationError(f"method must be a string or None, got {type(method).__name__}")
    if method is not None:
        base = _named(method)
        fixed = NAMED.get(method.lower(), (None, None, True))[2]
        for key in ("ts_type",) + tuple({k.subtype for k in TS_TYPES.values() if k.subtype}):
            want = base.ts_type if key == "ts_type" else (base.options.get(key) if fixed else None)
            if key in options and want is not None and str(options[key]) != want:
                raise ConfigurationError(
                    f"options[{key!r}]={options[key]!r} conflicts with method={method!r} "
                    f"({key} {want}); give one of them (method=None to choose by options)")
    ts_type = command_line.get("ts_type")
    if ts_type is None and method is not None:
        ts_type = base.ts_type
    if ts_type is None:
        ts_type = options.get("ts_type")
    if ts_type is None:
        return _named("dopri5")
    ts_type = str(ts_type)
    if ts_type not in TS_TYPES:
        raise _unknown_ts_type(ts_type)
    kind = TS_TYPES[ts_type]
    sub = None
    if kind.subtype:
        sub = command_line.get(kind.subtype, options.get(kind.subtype))
        if sub is None and method is not None and base.ts_type == ts_type:
            sub = base.options.get(kind.subtype)
        sub = str(sub) if sub is not None else kind.default_subtype
    if method is not None and ts_type == base.ts_type and sub == base.options.get(kind.subtype):
        return base
    if method is not None and ts_type == base.ts_type:
        return _method(base.name, ts_type, sub)
    name = ts_type if sub is None else f"{ts_type}-{sub}"
    return _method(name, ts_type, sub)


def _named(method: str) -> Method:
    key = method.lower()
    if key in NAMED:
        ts_type, sub, _ = NAMED[key]
        return _method(key, ts_type, sub)
    if key.startswith("rk-") and key[3:] in RK_TABLEAUS:
        return _method(key, "rk", key[3:])
    known = ", ".join(explicit_method_names() + implicit_method_names())
    raise ConfigurationError(
        f"unknown method {method!r}; known: {known}, 'rk-<type>' for any TSRK type "
        f"({', '.join(RK_TABLEAUS)}), or method=None with options={{'ts_type': ...}}")
