"""A stage's settings are checked against its Job dataclass, the one schema of the stage.

Right after composition, before the preflight and before any stage is built, the resolved settings under
`stages.<stage>` are checked against the fields and type hints of the class their `_target_` names: a key the job
does not take, a value of the wrong type, or an enum value outside its `Literal` stops the run with every wrong key
named (`stages.<stage>.<key>`), what it expects and what it got. Settings typed as dataclasses (or lists or
mappings of them), and a mapping whose `_target_` names another Job (forecast's `evaluate`), are checked the same
way. What a type cannot say (ranges, names that exist, relations between fields) stays in the job's
`__post_init__`. Typing is strict: `"2"` is no int, `true` no number, `2.0` no int.

The hints the jobs use are few (str, int, float, bool, None, Literal, Enum, X | Y, list[X], dict[K, V],
dataclasses); a class a config cannot hold (a Path, a callable, Any) accepts any value.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import types
import typing

from synthrel.errors import ConfigError

_NUMBER = (int, float)


def describe(hint) -> str:
    """How an error message names what `hint` accepts."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None) or hint is None:
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    if origin in (typing.Union, types.UnionType):  # the union's literals as one list, where the first stands
        literals = tuple(v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a))
        first = next((a for a in args if typing.get_origin(a) is typing.Literal), None)
        return " or ".join(describe(typing.Literal[literals]) if a is first else describe(a) for a in args
                           if a is first or typing.get_origin(a) is not typing.Literal)
    if origin in (list, tuple) or hint in (list, tuple):
        return f"a list of {describe(args[0])}" if args else "a list"
    if origin is dict or hint is dict:
        return f"a mapping of {describe(args[0])} to {describe(args[1])}" if args else "a mapping"
    if dataclasses.is_dataclass(hint):
        return f"a mapping with keys {', '.join(_fields(hint))}"
    if hint is float:
        return "a number"
    return getattr(hint, "__name__", str(hint))


def _got(value) -> str:
    return f"{value!r} ({type(value).__name__})" if value is not None else "null"


def _fields(cls) -> dict[str, dataclasses.Field]:
    """The settings of a dataclass: its init fields, without private ones."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}


def check_value(value, hint, key: str) -> list[str]:
    """The problems of `value` at config key `key` against type hint `hint` (empty: it fits)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if not check_value(value, arg, key):
                return []
        shaped = [arg for arg in args if _shape_fits(value, arg)]  # a list for `str | list[str]`: say what in it
        if len(shaped) == 1:
            return check_value(value, shaped[0], key)
        return [f"`{key}` is {_got(value)}; expected {describe(hint)}"]
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return []
        return [f"`{key}` is {_got(value)}; expected {describe(hint)}"]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return [] if value in {m.value for m in hint} else [f"`{key}` is {_got(value)}; expected {describe(hint)}"]
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            return [f"`{key}` is {_got(value)}; expected {describe(hint)}"]
        return check_settings(hint, value, key)
    if not _shape_fits(value, hint):
        return [f"`{key}` is {_got(value)}; expected {describe(hint)}"]
    problems = []
    if origin in (list, tuple) and args:
        items = args[:1] if origin is list or args[-1:] == (Ellipsis,) else args
        for index, item in enumerate(value):
            problems += check_value(item, items[min(index, len(items) - 1)], f"{key}[{index}]")
    elif origin is dict and args:
        for name, item in value.items():
            problems += check_value(name, args[0], f"{key} (a key)") + check_value(item, args[1], f"{key}.{name}")
    elif hint is dict and _target_dataclass(value) is not None:  # another job's config (forecast's `evaluate`)
        problems += check_settings(_target_dataclass(value), value, key)
    return problems


def _target_dataclass(value: dict):
    """The dataclass that a config mapping's `_target_` names, or None (no target, not a dataclass, no import)."""
    from hydra.utils import get_class

    if not isinstance(value.get("_target_"), str):
        return None
    try:
        cls = get_class(value["_target_"])
    except Exception:  # noqa: BLE001 - whoever instantiates it reports a wrong target
        return None
    return cls if dataclasses.is_dataclass(cls) else None


def _shape_fits(value, hint) -> bool:
    """The outer type of `value` is the one `hint` asks for (the items are not looked at)."""
    origin = typing.get_origin(hint) or hint
    if hint is type(None) or hint is None:
        return value is None
    if origin is typing.Literal or origin in (typing.Union, types.UnionType):
        return not check_value(value, hint, "")
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    if origin in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is dict:
        return isinstance(value, dict)
    if origin is bool or origin is str:
        return isinstance(value, origin)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, _NUMBER) and not isinstance(value, bool)
    return True  # Any, object, a Path, a callable...: nothing a config holds says otherwise


def check_settings(cls, settings: dict, key: str) -> list[str]:
    """The problems of `settings` (a mapping read from key `key`) against the fields of dataclass `cls`: unknown
    keys (with the valid ones and a close match), missing required ones, and values of the wrong type."""
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    problems = []
    for name in settings:
        if str(name).startswith("_"):  # _target_, _recursive_...: Hydra's
            continue
        if name not in fields:
            close = difflib.get_close_matches(str(name), fields, n=1)
            hint = f"did you mean `{key}.{close[0]}`? " if close else ""
            problems.append(f"unknown key `{key}.{name}`; {hint}valid keys of {key}: {', '.join(sorted(fields))}")
        else:
            problems += check_value(settings[name], hints[name], f"{key}.{name}")
    for name, field in fields.items():
        if name not in settings and field.default is dataclasses.MISSING \
                and field.default_factory is dataclasses.MISSING:
            problems.append(f"`{key}.{name}` is required ({describe(hints[name])}); the stage config does not set it")
    return problems


def check_stage_settings(cfg) -> None:
    """Check every selected stage's settings against its Job class before any stage runs (see the module doc).

    Imports the job modules (torch with most): call it in the run's task function, never at import time."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from synthrel.config import resolved

    stages = cfg.get("stages") or {}
    problems = []
    for name in stages:
        node = stages[name]
        target = OmegaConf.select(node, "_target_")
        if not target:
            continue
        try:
            cls = get_class(str(target))
        except Exception as e:  # noqa: BLE001 - ImportError, AttributeError, Hydra's own: one message
            raise ConfigError(f"`stages.{name}._target_` is {target!r}, which does not import: {e}") from None
        if not dataclasses.is_dataclass(cls):
            continue
        settings = resolved(node)
        for problem in check_settings(cls, settings, f"stages.{name}"):
            problems.append(problem + _source(node, problem, f"stages.{name}"))
    if problems:
        raise ConfigError(f"{len(problems)} stage setting(s) do not fit the stage's schema (its Job class):\n  "
                          + "\n  ".join(problems))


def _source(node, problem: str, prefix: str) -> str:
    """For a wrong value copied from another key (`scheduler: ${backbone.scheduler}`), where to change it."""
    from omegaconf import OmegaConf

    match = re.match(rf"`{re.escape(prefix)}\.(\w+)", problem)  # the problem's own key (not an unknown one)
    if match is None or match[1] not in node or not OmegaConf.is_interpolation(node, match[1]):
        return ""
    text = node._get_node(match[1])._value()
    inner = text[2:-1] if text.startswith("${") and text.endswith("}") else ""
    return f" (set from `{inner}`)" if inner and all(p.isidentifier() for p in inner.split(".")) else ""
