"""Config machinery for any tree of dataclasses: loaded from YAML, overridable from the command line.

Every field carries its documentation as a string literal directly below it (an *attribute
docstring*). :func:`field_docs` reads those from the class source with :mod:`ast`, so the
documentation lives next to the default and :func:`describe` can print both.

Loading order: the dataclass defaults, then the YAML file (nested mappings mirroring the tree; any
subset of keys), then ``--set key.path=value`` overrides, then every ``validate()`` method in the
tree. Every problem is a :class:`ConfigError` with one line naming the offending key::

    cfg = load_config("experiments/cheetah_vel.yaml", ["maml.inner_lr=0.05", "seed=3"], base=ExperimentConfig)
    print(describe(cfg))

Nothing here knows a concrete key: each section's dataclass lives beside the code it configures
(``MAMLConfig`` in ``metarl/algos/maml/config.py``, ...), and the experiment's root tree and its
loader are in :mod:`metarl.experiment`. YAML reading/writing and :func:`describe` are in
:mod:`metarl.common.config_yaml` (re-exported here).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import os
import types
import typing
from typing import Any, Iterator, Literal, Mapping, Sequence, Union

import yaml

from metarl.common.config_yaml import config_to_dict, describe, dump_yaml, field_docs, yaml_error_line, yaml_load

__all__ = [
    "ConfigError",
    "ConfigRangeError",
    "field_docs",
    "config_keys",
    "load_config",
    "parse_override",
    "set_by_path",
    "get_by_path",
    "config_to_dict",
    "config_from_dict",
    "validate_config",
    "check_range",
    "dump_yaml",
    "describe",
]


class ConfigError(ValueError):
    """A configuration problem, described in one line that names the offending key."""


class ConfigRangeError(ConfigError):
    """A value of the right type outside its allowed range (raised by ``validate()`` methods)."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key} = {_short_repr(value)} is out of range: must be {allowed}")


# --------------------------------------------------------------------------------------------
# The tree's fields
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    # get_type_hints resolves string annotations (``from __future__ import annotations``).
    return typing.get_type_hints(cls)


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = _hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _section_type(tp: Any) -> type | None:
    """The dataclass type if ``tp`` is a section (a nested dataclass), else None."""
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _iter_keys(cls: type, prefix: str = "") -> Iterator[tuple[str, type, str]]:
    """(dotted key, owning class, field name) for every field in the tree, sections included."""
    for name, (_, tp) in _fields(cls).items():
        yield prefix + name, cls, name
        sub = _section_type(tp)
        if sub is not None:
            yield from _iter_keys(sub, f"{prefix}{name}.")


def config_keys(cls: type, *, sections: bool = False) -> list[str]:
    """Every dotted key of the tree (leaves only, unless ``sections``), in declaration order."""
    cls = cls if isinstance(cls, type) else type(cls)
    return [
        key
        for key, owner, name in _iter_keys(cls)
        if sections or _section_type(_fields(owner)[name][1]) is None
    ]


# --------------------------------------------------------------------------------------------
# Types: description and checking
# --------------------------------------------------------------------------------------------

_NONE = type(None)
_ARTICLE_NAMES = {bool: "a bool", int: "an int", float: "a float", str: "a string"}
_PLURAL_NAMES = {bool: "bools", int: "ints", float: "floats", str: "strings"}


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _describe_type(tp: Any) -> str:
    """How an error message names the expected type, e.g. 'a float or null'."""
    if tp is Any:
        return "any value"
    if tp is _NONE:
        return "null"
    if tp in _ARTICLE_NAMES:
        return _ARTICLE_NAMES[tp]
    if _section_type(tp) is not None:
        return f"a mapping (the {tp.__name__} section)"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        # Put null last: "a float or null" reads better than "null or a float".
        ordered = [a for a in args if a is not _NONE] + [a for a in args if a is _NONE]
        return " or ".join(_describe_type(a) for a in ordered)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if tp is dict or origin is dict:
        return "a mapping" + (" with string keys" if args and args[0] is str else "")
    if tp in (list, tuple):
        return "a list"
    if origin in (list, tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} values"
        item = args[0] if args else Any
        return "a list of " + _PLURAL_NAMES.get(item, "values")
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    """Internal: the value does not fit the type (turned into a ConfigError by the caller)."""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against ``tp`` and return it in canonical form (ints→float, lists→tuple)."""
    if tp is Any or tp is object:
        return copy.deepcopy(value)
    if tp is _NONE:
        if value is None:
            return None
        raise _Mismatch
    if _is_union(tp):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except _Mismatch:
                continue
        raise _Mismatch
    sub = _section_type(tp)
    if sub is not None:
        if isinstance(value, sub):
            return copy.deepcopy(value)
        if isinstance(value, Mapping):
            return _merge(sub(), value, key + ".")
        raise _Mismatch
    # bool is a subclass of int in Python; YAML `true` must not pass for a number.
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        # Compare type too: 1 == True and 0 == False would otherwise slip through.
        for choice in args:
            if type(value) is type(choice) and value == choice:
                return choice
        raise _Mismatch
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        key_tp, val_tp = args if args else (Any, Any)
        return {_coerce(k, key_tp, key): _coerce(v, val_tp, key) for k, v in value.items()}
    if tp in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        container = tuple if (tp is tuple or origin is tuple) else list
        if not args:
            return container(copy.deepcopy(list(value)))
        if container is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _Mismatch
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        return container(_coerce(v, args[0], key) for v in value)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return copy.deepcopy(value)
        raise _Mismatch
    raise ConfigError(f"{key}: unsupported field type {tp!r} in the config dataclass")


def _literal_choices(tp: Any) -> list[str]:
    if typing.get_origin(tp) is Literal:
        return [a for a in typing.get_args(tp) if isinstance(a, str)]
    if _is_union(tp):
        return [c for a in typing.get_args(tp) for c in _literal_choices(a)]
    return []


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_value(value: Any, tp: Any, key: str) -> Any:
    try:
        return _coerce(value, tp, key)
    except _Mismatch:
        pass
    message = (
        f"{key}: expected {_describe_type(tp)}, got {_short_repr(value)} ({type(value).__name__})"
    )
    if isinstance(value, str):
        close = difflib.get_close_matches(value, _literal_choices(tp), n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
    raise ConfigError(message)


# --------------------------------------------------------------------------------------------
# Merging, paths, overrides
# --------------------------------------------------------------------------------------------


def _unknown_key(cls: type, prefix: str, name: str, root: type | None = None) -> ConfigError:
    """The error for key ``name`` missing from section ``cls``, with the nearest valid key.

    ``root`` is the class at the top of the tree, searched when nothing at this level is close (a
    key put in the wrong section, e.g. a top-level ``inner_lr``).
    """
    full = f"{prefix}{name}"
    level = list(_fields(cls))

    def did_you_mean(keys: list[str]) -> ConfigError:
        options = " or ".join(repr(k) for k in keys[:3])
        return ConfigError(f"unknown config key {full!r}; did you mean {options}?")

    # The same name elsewhere in the tree is the likeliest intent (`max_kl` put at the top level
    # means `maml.max_kl`, not the look-alike section `maml`).
    elsewhere = [(key, leaf) for key, _, leaf in _iter_keys(root)] if root is not None else []
    exact = [key for key, leaf in elsewhere if leaf == name]
    if exact:
        return did_you_mean(exact)
    close = difflib.get_close_matches(name, level, n=1, cutoff=0.6)
    if close:
        return did_you_mean([prefix + close[0]])
    fuzzy = [key for key, leaf in elsewhere if difflib.get_close_matches(name, [leaf], cutoff=0.8)]
    if fuzzy:
        return did_you_mean(fuzzy)
    where = f"in {prefix[:-1]!r}" if prefix else "at the top level"
    return ConfigError(f"unknown config key {full!r}; valid keys {where}: {', '.join(level)}")


def _merge(obj: Any, data: Any, prefix: str = "", root: type | None = None) -> Any:
    """A copy of dataclass ``obj`` with the (possibly partial) nested mapping ``data`` applied."""
    cls = type(obj)
    if not isinstance(data, Mapping):
        key = prefix[:-1] if prefix else "config"
        raise ConfigError(
            f"{key}: expected {_describe_type(cls)}, got {_short_repr(data)} ({type(data).__name__})"
        )
    fields = _fields(cls)
    changes: dict[str, Any] = {}
    for name, value in data.items():
        if not isinstance(name, str):
            raise ConfigError(f"config key {prefix}{name!r} is not a string")
        if name not in fields:
            raise _unknown_key(cls, prefix, name, root)
        _, tp = fields[name]
        if _section_type(tp) is not None and isinstance(value, Mapping):
            changes[name] = _merge(getattr(obj, name), value, f"{prefix}{name}.", root)
        else:
            changes[name] = _check_value(value, tp, prefix + name)
    return dataclasses.replace(obj, **changes)


def _split_path(path: str) -> list[str]:
    parts = path.split(".")
    if not path or any(not p.strip() for p in parts):
        raise ConfigError(f"invalid config key {path!r}: expected dotted names like 'maml.inner_lr'")
    return [p.strip() for p in parts]


def _set(obj: Any, parts: list[str], value: Any, prefix: str, full: str, root: type) -> Any:
    if isinstance(obj, dict):  # inside a free-form mapping field such as env.kwargs
        out = dict(obj)
        if len(parts) == 1:
            out[parts[0]] = copy.deepcopy(value)
        else:
            child = out.get(parts[0], {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"config key {full!r}: {prefix + parts[0]!r} holds {_short_repr(child)}, "
                    "not a mapping"
                )
            out[parts[0]] = _set(child, parts[1:], value, f"{prefix}{parts[0]}.", full, root)
        return out
    cls = type(obj)
    fields = _fields(cls)
    name = parts[0]
    if name not in fields:
        raise _unknown_key(cls, prefix, name, root)
    _, tp = fields[name]
    if len(parts) == 1:
        if _section_type(tp) is not None and isinstance(value, Mapping):
            new = _merge(getattr(obj, name), value, f"{prefix}{name}.", root)
        else:
            new = _check_value(value, tp, prefix + name)
    else:
        child = getattr(obj, name)
        if not (dataclasses.is_dataclass(child) or isinstance(child, dict)):
            raise ConfigError(
                f"config key {full!r}: {prefix + name!r} is {_describe_type(tp)}, not a section"
            )
        new = _set(child, parts[1:], value, f"{prefix}{name}.", full, root)
    return dataclasses.replace(obj, **{name: new})


def set_by_path(cfg: Any, path: str, value: Any) -> Any:
    """A copy of ``cfg`` with the dotted key ``path`` set to ``value`` (type-checked; not validated).

    ``cfg`` is not modified. A mapping given for a section updates only the keys it names. Keys
    below a free-form mapping field (``env.kwargs.goal``) set entries of that mapping.
    """
    return _set(cfg, _split_path(path), value, "", path, type(cfg))


def get_by_path(cfg: Any, path: str) -> Any:
    """The value at dotted key ``path`` (e.g. ``get_by_path(cfg, "maml.inner_lr")``)."""
    obj = cfg
    for i, part in enumerate(_split_path(path)):
        if dataclasses.is_dataclass(obj) and part in _fields(type(obj)):
            obj = getattr(obj, part)
        elif isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif dataclasses.is_dataclass(obj):
            prefix = "".join(p + "." for p in path.split(".")[:i])
            raise _unknown_key(type(obj), prefix, part, type(cfg))
        else:
            raise ConfigError(f"unknown config key {path!r}")
    return obj


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=value"`` → ``("a.b", parsed value)``; the value is read as YAML (``1e-3``, ``[64, 64]``)."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # e.g. an unbalanced bracket: keep the text; the type check reports it
    return key, value


def _apply_override(cfg: Any, text: str) -> Any:
    key, value = parse_override(text)
    try:
        return set_by_path(cfg, key, value)
    except ConfigError:
        # `--set env.id=123` or `collector.device=off` parse as int / bool; for a field that accepts
        # strings the user meant the literal text.
        raw = text.split("=", 1)[1].strip()
        if isinstance(value, str) or not _accepts_str(cfg, key):
            raise
        return set_by_path(cfg, key, raw)


def _accepts_str(cfg: Any, path: str) -> bool:
    obj_cls = type(cfg)
    parts = path.split(".")
    for i, part in enumerate(parts):
        fields = _fields(obj_cls) if _section_type(obj_cls) else {}
        if part not in fields:
            return False
        tp = fields[part][1]
        if i == len(parts) - 1:
            return tp is str or (_is_union(tp) and str in typing.get_args(tp))
        obj_cls = _section_type(tp)
        if obj_cls is None:
            return False
    return False


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def check_range(
    obj: Any,
    name: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> None:
    """Raise :class:`ConfigRangeError` unless ``getattr(obj, name)`` lies in the given bounds.

    None values pass (Optional fields mean "use the default"); NaN never passes.
    """
    value = getattr(obj, name)
    if value is None:
        return
    ok = not (isinstance(value, float) and math.isnan(value))
    ok = ok and (ge is None or value >= ge) and (gt is None or value > gt)
    ok = ok and (le is None or value <= le) and (lt is None or value < lt)
    if ok:
        return
    low = (f"[{ge}" if ge is not None else f"({gt}") if (ge, gt) != (None, None) else None
    high = (f"{le}]" if le is not None else f"{lt})") if (le, lt) != (None, None) else None
    if low and high:
        allowed = f"in {low}, {high}"
    elif low:
        allowed = f">= {ge}" if ge is not None else f"> {gt}"
    else:
        allowed = f"<= {le}" if le is not None else f"< {lt}"
    raise ConfigRangeError(name, value, allowed)


def validate_config(cfg: Any, prefix: str = "") -> None:
    """Call every ``validate()`` in the tree (sections first), naming keys by their full path."""
    for name, (_, tp) in _fields(type(cfg)).items():
        child = getattr(cfg, name)
        if dataclasses.is_dataclass(child):
            validate_config(child, f"{prefix}{name}.")
    validate = getattr(cfg, "validate", None)
    if not callable(validate):
        return
    try:
        validate()
    except ConfigRangeError as exc:
        raise ConfigRangeError(prefix + exc.key, exc.value, exc.allowed) from None
    except ConfigError as exc:
        if prefix:
            raise ConfigError(f"{prefix[:-1]}: {exc}") from None
        raise


# --------------------------------------------------------------------------------------------
# Loading and printing
# --------------------------------------------------------------------------------------------


def config_from_dict(d: Mapping[str, Any], base: type, *, validate: bool = True) -> Any:
    """Build a config of dataclass type ``base`` (the root of the tree) from a nested mapping.

    Missing keys keep their defaults; types are checked; ``validate()`` methods run unless
    ``validate=False``.
    """
    cfg = _merge(base(), d if d is not None else {}, "", base)
    if validate:
        validate_config(cfg)
    return cfg


def load_config(
    path: str | os.PathLike | None,
    overrides: Sequence[str] = (),
    *,
    base: type,
) -> Any:
    """Defaults of the tree ``base`` ← YAML file at ``path`` (None: defaults only) ← ``key.path=value``
    overrides; validated. (The experiment tree's loader is :func:`metarl.experiment.load_config`.)"""
    if isinstance(overrides, str):  # a lone string would otherwise be iterated per character
        overrides = [overrides]
    data: Any = {}
    if path is not None:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise ConfigError(f"config file not found: {path}")
        if os.path.isdir(path):
            raise ConfigError(f"config path is a directory, not a file: {path}")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            data = yaml_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"malformed YAML in {path}{yaml_error_line(exc)}") from None
        if data is None:  # empty file or only comments: all defaults
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"config file {path} must hold a mapping of config keys at the top level, "
                f"got {type(data).__name__}"
            )
    cfg = config_from_dict(data, base, validate=False)
    for text in overrides:
        cfg = _apply_override(cfg, text)
    validate_config(cfg)
    return cfg
