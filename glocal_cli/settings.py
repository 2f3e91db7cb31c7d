"""Nested frozen settings dataclasses: one default, one help text and one validation per setting.

A settings class is a frozen dataclass whose fields are declared with
:func:`setting` (a value, its help text) or :func:`section` (a nested settings
class, e.g. ``TrainConfig.hpo``). Each class validates itself in
``__post_init__``, so an invalid instance cannot be built and
``dataclasses.replace`` re-validates.

Every leaf setting has a name that is unique in the whole tree, so a *flat*
mapping (a ``params.yaml`` profile, the command-line flags) can be routed to
the right nested field by name; nested mappings (``params.yaml``'s ``hpo``
section, ``hpo.sgld`` ...) are walked field by field. Unknown names are a
one-line :class:`~glocal_cli.errors.UserError` naming the key and the allowed
ones.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Dict, List, Mapping, Tuple

from glocal_cli.errors import UserError

HELP = "help"
SECTION = "section"
PREFIX = "prefix"
CHOICES = "choices"
PANEL = "panel"
METHODS = "methods"
TASKS = "tasks"


def setting(default: Any, help: str, choices: Any = None, panel: str = "", methods: Any = None,
            tasks: Any = None) -> Any:
    """A leaf field: its default (written here only) and its one-line help (the CLI shows both).

    ``choices``: the allowed values of an enumerated setting (a tuple of strings); the
      CLI offers them as a choice (shell completion, one-line error listing them).
    ``panel``: the help panel the CLI lists the option under (``glocal train --help``).
    ``methods`` / ``tasks``: the ``--method`` / ``--task`` values whose runs read the
      setting (None: all). A setting given explicitly to a run that does not read it
      gets a one-line warning naming the methods (tasks) that do.
    """
    meta = {HELP: help, PANEL: panel}
    for key, value in ((CHOICES, choices), (METHODS, methods), (TASKS, tasks)):
        if value is not None:
            meta[key] = tuple(value)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, help: str = "", default: Any = None, prefix: str = "") -> Any:
    """A nested settings field of class ``cls`` (filled from a nested mapping of the same name).

    ``default``: a function returning the default instance (``cls()`` if None).
    ``prefix``: flat names of its leaves are ``prefix + name`` (``sgld_temperature``
    for ``hpo.sgld.temperature``); nested mappings use the plain names.
    """
    return dataclasses.field(default_factory=default or cls, metadata={HELP: help, SECTION: cls, PREFIX: prefix})


def flag(name: str) -> str:
    """The command-line option of the setting ``name``: ``sgld_step_size`` -> ``--sgld-step-size``."""
    return "--" + name.replace("_", "-")


def check_choices(obj: Any, skip: Callable[[str, Any], bool] = lambda name, value: False, prefix: str = "") -> None:
    """Raise a one-line :class:`UserError` where a field of ``obj`` declared with ``choices`` has another value.

    Sections are not walked (each validates itself). ``skip(name, value)``: values
    accepted without the check (e.g. an optax object where a name is expected).
    """
    for f in dataclasses.fields(obj):
        allowed = f.metadata.get(CHOICES)
        value = getattr(obj, f.name)
        if allowed is not None and not skip(f.name, value) and value not in allowed:
            raise UserError(f"{flag(prefix + f.name)} {value!r} is not one of: {', '.join(allowed)}")


def is_section(f: dataclasses.Field) -> bool:
    """Whether ``f`` is a nested settings class (declared with :func:`section`)."""
    return SECTION in f.metadata


def leaves(cls: type, prefix: Tuple[str, ...] = ()) -> Dict[str, Tuple[Tuple[str, ...], dataclasses.Field]]:
    """Every leaf setting of ``cls``: ``name -> (path, field)``, e.g. ``"sigma" -> (("hpo", "sigma"), ...)``.

    A field of ``cls`` itself shadows a same-named leaf of a section below it
    (that one is then set through a nested mapping). Raises ``TypeError`` when
    two sections declare the same name (flat routing would be ambiguous).
    """
    own = {f.name for f in dataclasses.fields(cls) if not is_section(f)}
    out: Dict[str, Tuple[Tuple[str, ...], dataclasses.Field]] = {}
    for f in dataclasses.fields(cls):
        if is_section(f):
            pre = f.metadata.get(PREFIX, "")
            sub = {pre + k: v for k, v in leaves(f.metadata[SECTION], prefix + (f.name,)).items() if pre + k not in own}
        else:
            sub = {f.name: (prefix + (f.name,), f)}
        for name, v in sub.items():
            if name in out:
                raise TypeError(f"setting {name!r} is declared twice ({'.'.join(out[name][0])}, {'.'.join(v[0])})")
            out[name] = v
    return out


def to_nested(obj: Any) -> Dict[str, Any]:
    """A settings instance as a nested dict (values as they are; no copies)."""
    return {f.name: to_nested(getattr(obj, f.name)) if is_section(f) else getattr(obj, f.name)
            for f in dataclasses.fields(obj)}


def to_flat(obj: Any, prefix: str = "") -> Dict[str, Any]:
    """A settings instance as one flat ``{leaf name: value}`` dict (names are unique in the tree).

    As in :func:`leaves`, a field of ``obj`` itself shadows a same-named leaf of a section
    below it (``VerifySettings.model`` over ``TrainConfig.model``).
    """
    out: Dict[str, Any] = {}
    own = {prefix + f.name for f in dataclasses.fields(obj) if not is_section(f)}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if is_section(f):
            out.update({k: v for k, v in to_flat(value, prefix + f.metadata.get(PREFIX, "")).items() if k not in own})
        else:
            out[prefix + f.name] = list(value) if isinstance(value, tuple) else value
    return out


def place(cls: type, target: Dict[str, Any], values: Mapping[str, Any], where: str = "") -> None:
    """Write ``values`` into the nested dict ``target`` of ``cls``; None values are skipped.

    A key is a field of ``cls`` (a nested mapping for a section field is walked
    recursively) or the name of a leaf anywhere below it (routed by name).
    Unknown keys are a one-line UserError naming them and the allowed names.
    """
    own = {f.name: f for f in dataclasses.fields(cls)}
    flat = leaves(cls)
    for key, value in values.items():
        if value is None:
            continue
        f = own.get(key)
        if f is not None and is_section(f):
            if not isinstance(value, Mapping):
                raise UserError(f"{where}{key}: expected a mapping of names to values, got {type(value).__name__}")
            place(f.metadata[SECTION], target.setdefault(key, {}), value, f"{where}{key}.")
        elif f is not None:
            target[key] = value
        elif key in flat:
            node = target
            path = flat[key][0]
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        else:
            known = sorted(set(own) | set(flat))
            raise UserError(f"unknown parameter {where}{key}; known: {', '.join(known)}")


def build(cls: type, nested: Mapping[str, Any]) -> Any:
    """An instance of ``cls`` from a nested dict (as :func:`place` fills); validation runs once, here.

    Fields absent from ``nested`` take their defaults; start from :func:`to_nested` of a
    base instance when a section is given in part (its values then complete the section).
    """
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in nested and is_section(f):
            given = nested[f.name]
            if f.default_factory is not f.metadata[SECTION]:  # a section with its own defaults (verify's run)
                given = merge(to_nested(f.default_factory()), given)
            kw[f.name] = build(f.metadata[SECTION], given)
        elif f.name in nested:
            kw[f.name] = nested[f.name]
    return cls(**kw)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> Dict[str, Any]:
    """``base`` with ``over`` applied, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def from_mapping(cls: type, values: Mapping[str, Any], base: Any = None) -> Any:
    """``base`` (defaults if None) with ``values`` (flat names or nested sections) applied, built once.

    Without ``base`` the fields not in ``values`` take their defaults at build time (so
    defaults that depend on other fields, such as a task's outer lr, are resolved afresh).
    """
    target = to_nested(base) if base is not None else {}
    place(cls, target, values)
    return build(cls, target)


def parse_list(text: str, name: str, cast: Callable[[str], Any] = int, separators: str = ",") -> List[Any]:
    """``"0,1,2"`` -> ``[0, 1, 2]``: a command-line list of ``cast`` values, or a one-line :class:`UserError`.

    ``separators``: a regular expression of what separates the values (default a
    comma; ``r"[,\\s]+"`` also takes spaces, and then brackets around the list).
    ``name`` is the option named in the error (``--name``).
    """
    body = str(text).strip("[] ") if separators != "," else str(text)
    try:
        values = [cast(x) for x in re.split(separators, body) if x.strip()]
    except ValueError:
        raise UserError(f"--{name} must be a comma-separated list of {cast.__name__}s, got {text!r}") from None
    if not values:
        raise UserError(f"--{name} is empty")
    return values
