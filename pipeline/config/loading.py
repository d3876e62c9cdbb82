"""YAML file + ``--set`` overrides -> a validated ``Config``; errors name the file, the dotted key and the value."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..core.errors import ConfigError
from .schema import RETRIEVER_TYPES, Config


def _without_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` less the discriminated-union tags pydantic puts after a list index (``[0, 'bm25', 'k1']``)."""
    return tuple(item for i, item in enumerate(loc) if not (item in RETRIEVER_TYPES and i and isinstance(loc[i - 1], int)))


def _format_loc(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """Dotted key path; list indexes become [i], and a discriminated union's tag is dropped."""
    parts: list[str] = []
    for item in _without_tags(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _lookup(raw: Any, loc: tuple[Any, ...]) -> Any:
    """The raw value at a pydantic ``loc`` (union tags skipped), or None."""
    cur = raw
    for item in _without_tags(loc):
        try:
            cur = cur[item]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def describe_error(err: dict[str, Any], raw: dict[str, Any]) -> str:
    loc = _format_loc(tuple(err["loc"]), raw)
    etype = err["type"]
    if etype == "extra_forbidden":
        return f"{loc}: unknown key"
    if etype == "union_tag_invalid":
        bad = _lookup(raw, tuple(err["loc"]) + ("type",))
        return f"{loc}.type = {bad!r} is not one of: {', '.join(RETRIEVER_TYPES)}"
    if etype == "union_tag_not_found":
        return f"{loc}.type: missing; one of: {', '.join(RETRIEVER_TYPES)}"
    value = _lookup(raw, tuple(err["loc"]))
    shown = f" = {value!r}" if value is not None else ""
    return f"{loc}{shown}: {err['msg']}"


def _key_parts(item: str, key: str) -> list[Any]:
    """``a.b[0].c`` -> ``['a', 'b', 0, 'c']``; malformed keys raise ConfigError naming the ``--set`` item."""
    parts: list[Any] = []
    for part in key.strip().split("."):
        while "[" in part:
            name, rest = part.split("[", 1)
            if name:
                parts.append(name)
            if "]" not in rest:
                raise ConfigError(f"--set {item}: unclosed '[' in the key", key=key, value=item)
            idx, part = rest.split("]", 1)
            try:
                parts.append(int(idx))
            except ValueError:
                raise ConfigError(f"--set {item}: list index {idx!r} is not a number", key=key, value=item) from None
        if part:
            parts.append(part)
    if not parts:
        raise ConfigError(f"--set {item}: empty key", key=key, value=item)
    return parts


def _yaml_value(item: str, key: str, value: str) -> Any:
    """A ``--set`` value parsed as YAML; malformed YAML raises ConfigError naming the item."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or "cannot parse").split())
        raise ConfigError(f"--set {item}: value is not valid YAML ({problem}); quote it to pass a string", key=key, value=value) from exc


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML; list items as ``retrievers[0].k1``)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. retrieval.fusion.mode=rrf", key=item)
        key, value = item.split("=", 1)
        parts = _key_parts(item, key)
        parsed = _yaml_value(item, key, value)
        cur: Any = out
        for i, p in enumerate(parts[:-1]):
            try:
                if isinstance(p, int):
                    cur = cur[p]
                else:
                    cur = cur.setdefault(p, {})
            except (IndexError, TypeError, AttributeError) as exc:
                raise ConfigError(f"--set {key}: no such key ({'.'.join(map(str, parts[: i + 1]))})", key=key) from exc
        try:
            cur[parts[-1]] = parsed
        except (IndexError, TypeError) as exc:
            raise ConfigError(f"--set {key}: no such key", key=key) from exc
    return out


def config_from_dict(raw: dict[str, Any], source: str = "<dict>", base_dir: str | Path = ".") -> Config:
    """Validate a plain dict; errors carry ``source`` and the dotted key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}", path=source)
    data = dict(raw)
    data.setdefault("base_dir", str(base_dir))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [describe_error(e, data) for e in exc.errors()]
        first = exc.errors()[0]
        raise ConfigError(
            f"{source}: " + "; ".join(lines), path=source, key=_format_loc(tuple(first["loc"]), data)
        ) from exc


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with clear errors for missing, unreadable or malformed files."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found", path=path) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})", path=path) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(exc, 'problem', exc)}", path=path) from exc
    if raw is None:
        raise ConfigError(f"{path}: config file is empty", path=path)
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load ``path`` (YAML), apply ``--set`` overrides, validate.

    Relative paths in the config resolve against the project root: the parent of the
    ``configs/`` folder when the file lives in one, else the file's own folder.
    """
    path = Path(path)
    raw = apply_overrides(read_yaml(path), overrides or [])
    return config_from_dict(raw, source=str(path), base_dir=project_root_for(path))


def project_root_for(path: Path) -> Path:
    folder = path.resolve().parent
    for parent in [folder, *folder.parents]:
        if parent.name == "configs":
            return parent.parent
    return folder
