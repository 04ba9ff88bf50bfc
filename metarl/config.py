"""Experiment configuration: a tree of dataclasses, loaded from YAML, overridable from the command line.

Every field carries its documentation as a string literal directly below it (an *attribute
docstring*). :func:`field_docs` reads those from the class source with :mod:`ast`, so the
documentation lives next to the default and :func:`describe` can print both.

Loading order: the dataclass defaults, then the YAML file (nested mappings mirroring the tree; any
subset of keys), then ``--set key.path=value`` overrides, then every ``validate()`` method in the
tree. Every problem is a :class:`ConfigError` with one line naming the offending key::

    cfg = load_config("experiments/cheetah_vel.yaml", ["maml.inner_lr=0.05", "seed=3"])
    print(describe(cfg))

The machinery (everything except the concrete classes at the bottom) works for any dataclass tree.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import functools
import inspect
import math
import os
import re
import textwrap
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Mapping, Sequence, Union

import yaml

__all__ = [
    "ConfigError",
    "ConfigRangeError",
    "ExperimentConfig",
    "EnvConfig",
    "PolicyConfig",
    "MAMLConfig",
    "RL2Config",
    "CollectorConfig",
    "TrainConfig",
    "EvalConfig",
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
# YAML dialect
# --------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float and rejects duplicate keys.

    PyYAML implements YAML 1.1, where a float needs a dot, so ``lr: 1e-3`` would silently load as
    the *string* '1e-3'. Duplicate keys would silently keep the last value.
    """

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen[key] = True
            except TypeError:  # unhashable key: let the base class report it
                pass
        return super().construct_mapping(node, deep=deep)


_FLOAT_TAG = "tag:yaml.org,2002:float"
# Copy the resolver table (never modify yaml.SafeLoader's) without the YAML 1.1 float rule.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _yaml_error_line(exc: yaml.YAMLError) -> str:
    """One line from a PyYAML error (its str() spans several lines with a source excerpt)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    # An unclosed bracket or quote is reported where parsing failed; name where it was opened too.
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None and mark is not None and start.line != mark.line:
        problem += f" ({context} at line {start.line + 1})"
    return f"{where}: {problem}"


# --------------------------------------------------------------------------------------------
# Field documentation
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _own_field_docs(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined in a REPL / exec: no source to read
        return {}
    class_node = ast.parse(source).body[0]
    docs: dict[str, str] = {}
    body = class_node.body
    for stmt, following in zip(body, body[1:]):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[stmt.target.id] = inspect.cleandoc(following.value.value)
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """``{field name: docstring}`` for a dataclass, read from the string literal under each field.

    Inherited fields keep the documentation written in the base class (a subclass may redefine it).
    Fields without a docstring are absent.
    """
    if not isinstance(cls, type):
        cls = type(cls)
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    names = {f.name for f in dataclasses.fields(cls)}
    return {name: doc for name, doc in docs.items() if name in names}


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


def config_keys(cls: type | None = None, *, sections: bool = False) -> list[str]:
    """Every dotted key of the tree (leaves only, unless ``sections``), in declaration order."""
    cls = ExperimentConfig if cls is None else (cls if isinstance(cls, type) else type(cls))
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
        value = _yaml_load(raw) if raw.strip() else None
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


def config_from_dict(d: Mapping[str, Any], base: type | None = None, *, validate: bool = True) -> Any:
    """Build a config of type ``base`` (default :class:`ExperimentConfig`) from a nested mapping.

    Missing keys keep their defaults; types are checked; ``validate()`` methods run unless
    ``validate=False``.
    """
    base = ExperimentConfig if base is None else base
    cfg = _merge(base(), d if d is not None else {}, "", base)
    if validate:
        validate_config(cfg)
    return cfg


def load_config(
    path: str | os.PathLike | None,
    overrides: Sequence[str] = (),
    base: type | None = None,
) -> Any:
    """Defaults ← YAML file at ``path`` (None: defaults only) ← ``key.path=value`` overrides; validated."""
    base = ExperimentConfig if base is None else base
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
            data = _yaml_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"malformed YAML in {path}{_yaml_error_line(exc)}") from None
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


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts / lists / scalars (YAML-safe; tuples become lists)."""
    return _plain(cfg)


class _Dumper(yaml.SafeDumper):
    """Block-style sections, but lists on one line (``hidden_sizes: [100, 100]``)."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def dump_yaml(cfg: Any) -> str:
    """The config as YAML that :func:`load_config` reads back to an equal config."""
    return yaml.dump(
        config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
        allow_unicode=True, width=1000,
    )


def _inline_yaml(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=float("inf"))
    # A plain scalar document ends with the explicit end marker "...".
    for suffix in ("\n...\n", "\n"):
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text


def describe(cfg: Any) -> str:
    """Every key with its value and, as a comment above it, its documentation (valid YAML)."""
    lines: list[str] = []

    def emit(obj: Any, indent: str) -> None:
        docs = field_docs(type(obj))
        for i, f in enumerate(dataclasses.fields(obj)):
            value = getattr(obj, f.name)
            is_section = dataclasses.is_dataclass(value)
            if is_section and lines and lines[-1] != "":
                lines.append("")  # a blank line before each section
            for doc_line in docs.get(f.name, "(undocumented)").splitlines():
                lines.append(f"{indent}# {doc_line}".rstrip())
            if is_section:
                lines.append(f"{indent}{f.name}:")
                emit(value, indent + "  ")
            else:
                lines.append(f"{indent}{f.name}: {_inline_yaml(_plain(value))}")

    emit(cfg, "")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The experiment configuration tree
# --------------------------------------------------------------------------------------------


@dataclass
class EnvConfig:
    """The task distribution."""

    id: str = "metarl/Sinusoid-v0"
    """Registered Gymnasium id of the task distribution."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to the environment constructor."""
    horizon: int | None = None
    """Episode length H; null uses the registered max_episode_steps."""
    rescale_actions: bool = True
    """Continuous policies act in [-1, 1] per dimension, mapped onto the action space's finite bounds and clipped (as rllab's normalize(), used by the MAML paper); no effect on [-1, 1], unbounded or discrete spaces."""

    def validate(self) -> None:
        if not self.id.strip():
            raise ConfigRangeError("id", self.id, "a non-empty Gymnasium id")
        check_range(self, "horizon", ge=1)


@dataclass
class PolicyConfig:
    """The policy (or regressor) network."""

    hidden_sizes: tuple[int, ...] = (100, 100)
    """Widths of the hidden layers of the MLP, input side first."""
    activation: Literal["relu", "tanh"] = "relu"
    """Nonlinearity between hidden layers."""
    init_log_std: float = 0.0
    """Initial log standard deviation of Gaussian policies."""
    recurrent_hidden_size: int = 128
    """GRU hidden-state size of the RL² policy."""

    def validate(self) -> None:
        for width in self.hidden_sizes:
            if width < 1:
                raise ConfigRangeError("hidden_sizes", self.hidden_sizes, "a list of ints >= 1")
        if not math.isfinite(self.init_log_std):
            raise ConfigRangeError("init_log_std", self.init_log_std, "finite")
        check_range(self, "recurrent_hidden_size", ge=1)


@dataclass
class MAMLConfig:
    """MAML: inner-loop adaptation and outer (meta) optimisation."""

    meta_batch_size: int = 20
    """Tasks per meta-iteration."""
    episodes_per_task: int = 20
    """Episodes per task per inner step; for H=1 tasks the number K of support samples."""
    query_episodes_per_task: int | None = None
    """Post-update episodes (query samples for H=1) per task; null = same as episodes_per_task."""
    inner_steps: int = 1
    """Inner-loop gradient steps per task during meta-training."""
    inner_lr: float = 0.1
    """Step size of the inner-loop gradient step."""
    first_order: bool = False
    """First-order MAML: do not backpropagate through the inner-loop gradient."""
    learn_inner_lr: bool = False
    """Meta-SGD: learn a per-parameter inner learning rate (initialised to inner_lr)."""
    outer: Literal["trpo", "adam"] = "trpo"
    """Outer (meta) optimiser: TRPO for RL, Adam for supervised tasks."""
    outer_lr: float = 1e-3
    """Adam learning rate when outer is adam."""
    max_kl: float = 0.01
    """TRPO trust region: bound on the mean KL between old and new post-update policies."""
    cg_iters: int = 10
    """TRPO conjugate-gradient iterations."""
    cg_damping: float = 1e-5
    """TRPO damping added to the Fisher-vector product."""
    ls_max_steps: int = 15
    """TRPO backtracking line-search steps."""
    ls_backtrack_ratio: float = 0.8
    """TRPO line-search step shrink factor."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE lambda; 1.0 = plain REINFORCE with the linear baseline."""
    normalize_advantages: bool = True
    """Standardise advantages per task before each policy-gradient step."""

    def validate(self) -> None:
        check_range(self, "meta_batch_size", ge=1)
        check_range(self, "episodes_per_task", ge=1)
        check_range(self, "query_episodes_per_task", ge=1)
        check_range(self, "inner_steps", ge=0)
        check_range(self, "inner_lr", gt=0)
        check_range(self, "outer_lr", gt=0)
        check_range(self, "max_kl", gt=0)
        check_range(self, "cg_iters", ge=1)
        check_range(self, "cg_damping", ge=0)
        check_range(self, "ls_max_steps", ge=1)
        check_range(self, "ls_backtrack_ratio", gt=0, lt=1)
        check_range(self, "gamma", gt=0, le=1)
        check_range(self, "gae_lambda", ge=0, le=1)


@dataclass
class RL2Config:
    """RL²: recurrent policy trained across trials of several episodes."""

    episodes_per_trial: int = 2
    """Episodes of the same task in one trial; the hidden state is kept across them."""
    trials_per_iteration: int = 100
    """Trials (one task each) collected per iteration."""
    optimizer: Literal["ppo", "trpo"] = "ppo"
    """Policy optimiser."""
    lr: float = 3e-4
    """Adam learning rate (PPO and the value function)."""
    ppo_epochs: int = 4
    """PPO passes over each iteration's data."""
    minibatches: int = 4
    """PPO minibatches per epoch (split by trial, so hidden states stay intact)."""
    clip_range: float = 0.2
    """PPO clipping range of the probability ratio."""
    gamma: float = 0.99
    """Discount factor (across the episodes of a trial)."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus."""
    value_coef: float = 0.5
    """Weight of the value-function loss."""
    max_grad_norm: float = 0.5
    """Gradient-norm clipping threshold."""

    def validate(self) -> None:
        check_range(self, "episodes_per_trial", ge=1)
        check_range(self, "trials_per_iteration", ge=1)
        check_range(self, "lr", gt=0)
        check_range(self, "ppo_epochs", ge=1)
        check_range(self, "minibatches", ge=1)
        # Minibatches are whole trials, so there cannot be more of them than trials.
        if self.minibatches > self.trials_per_iteration:
            raise ConfigRangeError(
                "minibatches", self.minibatches, f"<= trials_per_iteration ({self.trials_per_iteration})"
            )
        check_range(self, "clip_range", gt=0)
        check_range(self, "gamma", gt=0, le=1)
        check_range(self, "gae_lambda", ge=0, le=1)
        check_range(self, "entropy_coef", ge=0)
        check_range(self, "value_coef", ge=0)
        check_range(self, "max_grad_norm", gt=0)


@dataclass
class CollectorConfig:
    """Experience collection: vector environments and devices."""

    backend: Literal["auto", "native", "gym", "ray"] = "auto"
    """Vector env implementation: auto = native batched when available, else the Gymnasium loop; ray = Ray actors (num_workers, address) each using auto."""
    num_threads: int | None = None
    """Threads stepping MuJoCo environments (backend ray: per actor); null = all cores (ray: 1)."""
    torch_threads: int | None = 1
    """Torch intra-op threads for updates; null = all cores. 1 is fastest for small networks (OpenMP spin-waiting)."""
    device: str = "cpu"
    """Torch device of the policy during collection and updates."""
    num_workers: int = 2
    """Ray actors (backend: ray); each takes a contiguous share of the tasks and num_threads (default 1) CPUs."""
    address: str | None = None
    """Ray cluster address; 'auto' joins a running cluster, null starts a local one."""

    def validate(self) -> None:
        check_range(self, "num_threads", ge=1)
        check_range(self, "torch_threads", ge=1)
        check_range(self, "num_workers", ge=1)
        if not self.device.strip():
            raise ConfigRangeError("device", self.device, "a torch device such as 'cpu' or 'cuda:0'")


@dataclass
class TrainConfig:
    """The training loop: length, logging, checkpoints."""

    iterations: int = 500
    """Meta-iterations (RL²: iterations) to train."""
    log_every: int = 1
    """Write scalars every N iterations."""
    eval_every: int = 0
    """Log a meta-test adaptation curve every N iterations; 0 = never."""
    eval_tasks: int = 10
    """Held-out tasks in each periodic evaluation."""
    checkpoint_every: int = 50
    """Save a checkpoint every N iterations; 0 = never."""
    keep_checkpoints: int = 3
    """Most recent checkpoints kept on disk."""
    show_progress: bool = True
    """Progress on stderr: a bar on a terminal, else a line per tenth of the run (at least one a minute)."""

    def validate(self) -> None:
        check_range(self, "iterations", ge=0)
        check_range(self, "log_every", ge=1)
        check_range(self, "eval_every", ge=0)
        check_range(self, "eval_tasks", ge=1)
        check_range(self, "checkpoint_every", ge=0)
        check_range(self, "keep_checkpoints", ge=1)


@dataclass
class EvalConfig:
    """Meta-test evaluation on held-out tasks."""

    tasks: int = 40
    """Held-out tasks evaluated."""
    steps: int = 3
    """Gradient steps; performance is measured after 0..steps of them."""
    inner_lr: float | None = None
    """Inner step size at test time; null = maml.inner_lr."""
    inner_lr_after_first: float | None = None
    """Step size for steps after the first; null = inner_lr (the MAML paper used 0.1 then 0.05)."""
    episodes_per_task: int | None = None
    """Episodes (H=1: support samples) per task per step; null = maml.episodes_per_task."""
    seed: int = 1000
    """Seed of the held-out test task stream, separate from training."""

    def validate(self) -> None:
        check_range(self, "tasks", ge=1)
        check_range(self, "steps", ge=0)
        check_range(self, "inner_lr", gt=0)
        check_range(self, "inner_lr_after_first", gt=0)
        check_range(self, "episodes_per_task", ge=1)
        check_range(self, "seed", ge=0)


@dataclass
class ExperimentConfig:
    """One experiment: which algorithm, on what, with which settings."""

    algo: Literal["maml", "rl2", "pretrain", "oracle"] = "maml"
    """Which algorithm trains."""
    seed: int = 0
    """Master seed; every RNG stream of the run derives from it."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The task distribution."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The policy (or regressor) network."""
    maml: MAMLConfig = field(default_factory=MAMLConfig)
    """MAML inner loop and meta-optimiser (also the fine-tuning loop of the pretrain/oracle baselines)."""
    rl2: RL2Config = field(default_factory=RL2Config)
    """RL² settings."""
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    """Experience collection."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training loop, logging and checkpoints."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Meta-test evaluation."""

    def validate(self) -> None:
        # numpy's SeedSequence rejects negative seeds.
        check_range(self, "seed", ge=0)
