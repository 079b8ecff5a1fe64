"""Model options checked against the family's config dataclass before it is built.

Options come from the command line (``--set KEY=VALUE``, VALUE read as JSON, a bare word kept as
a string) or from Python. Without a check, a wrong type fails deep inside a config's
``__post_init__`` (``--set z_dims=two`` raised ``ValueError: invalid literal for int()``) or, worse,
is silently misread (``--set 'z_dims="12"'`` became the layer sizes (1, 2)). :func:`coerce_options`
compares each value with the annotation of the dataclass field it sets and either converts it when
the meaning is unambiguous (an integer where a float is expected, a list where a tuple is expected)
or raises a :class:`~ppvae.errors.ConfigError` saying what the option expects.
"""

from __future__ import annotations

import dataclasses
import numbers
import sys
import types
import typing
from typing import Any

from ppvae.errors import ConfigError


class _Mismatch(Exception):
    """Internal: the value does not fit the annotation."""


def _field_types(config_cls: type) -> dict[str, Any]:
    """Field name -> evaluated annotation (``from __future__ import annotations`` makes them
    strings). A field whose annotation cannot be evaluated is left out (not checked)."""
    try:
        return typing.get_type_hints(config_cls)
    except Exception:  # a name only imported under TYPE_CHECKING, say: evaluate field by field
        pass
    out: dict[str, Any] = {}
    for klass in reversed(config_cls.__mro__):
        module = sys.modules.get(klass.__module__)
        namespace = dict(vars(module)) if module else {}
        for name, ann in vars(klass).get("__annotations__", {}).items():
            if isinstance(ann, str):
                try:
                    ann = eval(ann, namespace, dict(vars(klass)))  # noqa: S307 - the class's own code
                except Exception:
                    out.pop(name, None)
                    continue
            out[name] = ann
    return out


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _describe(tp: Any) -> str:
    """What a value of annotation ``tp`` looks like, for error messages."""
    if _is_union(tp):
        parts = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in parts)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        item = args[0] if args else Any
        if item is int:
            return "a list of integers such as [2] or [200, 100]"
        if item is float:
            return "a list of numbers such as [0.5] or [1, 2.5]"
        if typing.get_origin(item) in (tuple, list) and typing.get_args(item)[:1] == (int,):
            return "a list of lists of integers such as [[300, 300]] or [[200, 200], [100, 100]]"
        return "a list"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` converted to annotation ``tp``; raises :class:`_Mismatch` if it does not fit."""
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if value is None:
        raise _Mismatch
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value in ("True", "False"):  # Python spelling of a bare word
            return value == "True"
        raise _Mismatch
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)  # 10.0 for an integer: no doubt about the meaning
        raise _Mismatch
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _Mismatch
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin is typing.Literal:
        if value in args:
            return value
        raise _Mismatch
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _Mismatch  # a string is never split into characters
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):  # a fixed-length tuple such as tuple[int, int]
                raise _Mismatch
            items = [_coerce(v, a) for v, a in zip(value, args)]
        else:
            item = args[0] if args else Any
            items = [_coerce(v, item) for v in value]
        return tuple(items) if origin is tuple else items
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value  # an annotation this checker does not know: leave the value to the config


def coerce_options(config_cls: type, options: dict[str, Any] | None) -> dict[str, Any]:
    """Check ``options`` against the field annotations of the dataclass ``config_cls``.

    Returns a new dict with each value converted where the meaning is unambiguous (an integer for
    a float field, a list for a tuple field, nested lists for nested tuples, an integral float
    such as 10.0 for an int field) and raises :class:`ConfigError` otherwise, e.g. ``model option
    z_dims expects a list of integers such as [2] or [200, 100]; got 'two'``. A string for a
    tuple field is an error, never split into characters. Understood annotations: ``int``,
    ``float``, ``bool``, ``str``, ``tuple[X, ...]`` (nested too), ``list[X]``, ``Literal[...]``,
    ``X | None`` and other unions; anything else passes unchecked. Keys that are not fields of
    ``config_cls`` are returned unchanged (reporting them is the caller's job).
    """
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"coerce_options needs a dataclass, got {config_cls!r}")
    hints = _field_types(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in fields or key not in hints:
            out[key] = value
            continue
        try:
            out[key] = _coerce(value, hints[key])
        except _Mismatch:
            raise ConfigError(
                f"model option {key} expects {_describe(hints[key])}; got {value!r}"
            ) from None
    return out
