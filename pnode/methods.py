"""Method names -> PETSc TS types (``"rk4"`` -> TSRK ``4``, ``"cn"`` -> TSTHETA ...)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigurationError


@dataclass(frozen=True)
class Method:
    """How a problem is stepped: a TS type, its sub-type options and whether it adapts."""

    name: str
    ts_type: str
    options: dict = field(default_factory=dict)
    adaptive: bool = False  # has an embedded error estimate (TSAdapt basic works)
    implicit: bool = False


_EXPLICIT = {
    "euler": ("1fe", False), "midpoint": ("2b", False), "heun": ("2a", True),
    "bosh3": ("3bs", True), "rk4": ("4", False), "dopri5": ("5dp", True),
}
_IMPLICIT = {  # name -> (TS type, default options, adaptive)
    "beuler": ("beuler", {}, False),
    "cn": ("cn", {}, False),
    "theta": ("theta", {}, False),
    "arkimex": ("arkimex", {"ts_arkimex_type": "l2"}, True),
}
_RK_ADAPTIVE = {"1fe": False, "2a": True, "2b": False, "3": False, "3bs": True, "4": False,
                "5f": True, "5dp": True, "5bs": True, "6vr": True, "7vr": True, "8vr": True}


def explicit_method_names() -> list[str]:
    """Names accepted for explicit Runge-Kutta methods."""
    return sorted(_EXPLICIT)


def implicit_method_names() -> list[str]:
    """Names accepted for implicit methods (``theta``: ``options={"ts_theta_theta": ...}``;
    ``arkimex``: tableau by ``options={"ts_arkimex_type": "l2" | "ars122" | "2e" | "3" ...}``)."""
    return sorted(_IMPLICIT)


def resolve(method: str | None, options: dict | None = None) -> Method:
    """Turn a user's ``method=`` (and ``ts_type``/``ts_rk_type`` options) into a Method."""
    options = options or {}
    if method is None:
        ts_type = options.get("ts_type")
        if ts_type is None:
            method = "dopri5"
        elif ts_type == "rk":
            rk = str(options.get("ts_rk_type", "3bs"))
            return Method(f"rk-{rk}", "rk", {"ts_rk_type": rk}, _RK_ADAPTIVE.get(rk, True))
        else:
            return Method(str(ts_type), str(ts_type), {}, True, ts_type not in ("rk", "euler", "ssp"))
    if not isinstance(method, str):
        raise ConfigurationError(f"method must be a string, got {type(method).__name__}")
    key = method.lower()
    if key in _EXPLICIT:
        rk, adaptive = _EXPLICIT[key]
        return Method(key, "rk", {"ts_rk_type": rk}, adaptive)
    if key in _IMPLICIT:
        ts_type, defaults, adaptive = _IMPLICIT[key]
        return Method(key, ts_type, dict(defaults), adaptive, implicit=True)
    if key.startswith("rk-") and key[3:] in _RK_ADAPTIVE:
        return Method(key, "rk", {"ts_rk_type": key[3:]}, _RK_ADAPTIVE[key[3:]])
    known = ", ".join(explicit_method_names() + implicit_method_names())
    raise ConfigurationError(
        f"unknown method {method!r}; known: {known}, 'rk-<type>' for any TSRK type "
        f"({', '.join(_RK_ADAPTIVE)}), or method=None with options={{'ts_type': ...}}")
