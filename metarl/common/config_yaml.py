"""YAML and documentation side of the config machinery (:mod:`metarl.common.config`).

Reading: a YAML 1.2-style float rule and duplicate-key errors. Writing: :func:`dump_yaml` (the
``config.yaml`` of a run) and :func:`describe` (``metarl config``: every key with its doc line,
read by :func:`field_docs` from the attribute docstring under each dataclass field).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import inspect
import re
import textwrap
from typing import Any, Mapping

import yaml

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


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def yaml_error_line(exc: yaml.YAMLError) -> str:
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


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


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
