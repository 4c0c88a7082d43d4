"""Params files derived from params.yaml for runs made outside DVC (scripts/*/*.sh).

`derive` applies `section.key=value` overrides (each value parsed as YAML, so `2` is an int
and `null` is None), keeps only the named backends, and lets each backend follow its data
directory when `data.raw_dir` or `data.tfds_dir` moves (its entry's `data`; its `loader` and
`step`, which dvc.yaml's train stage needs, are kept). `write` validates the result with
config.from_dict before writing it, so a mistyped key or value fails here, with the config's
message, and not minutes later in a training run. Not a dependency of any DVC stage.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from mnistbench import config, outputs


def parse_override(item: str) -> tuple[str, str, object]:
    """`train.epochs=3` -> ("train", "epochs", 3)."""
    key, sep, value = item.partition("=")
    section, dot, name = key.partition(".")
    if not (sep and dot and section and name):
        raise config.ConfigError(
            f"override {item!r}: expected section.key=value, e.g. train.epochs=3"
        )
    try:
        return section, name, yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise config.ConfigError(f"override {item!r}: the value is not valid YAML: {e}") from e


def read(path: str | Path) -> dict:
    """params.yaml as parsed YAML (call config.load(path) first for its clear errors)."""
    return config.read_yaml(path)


def derive(raw: dict, overrides: list[str], backends: list[str] | None = None) -> dict:
    """A copy of `raw` (params.yaml, parsed) with the overrides and only `backends`."""
    p = copy.deepcopy(raw)
    data = p.setdefault("data", {})
    dirs = {k: data.get(k, getattr(config.DataConfig, k)) for k in ("raw_dir", "tfds_dir")}
    for section, name, value in map(parse_override, overrides):
        if not isinstance(p.get(section), dict):
            raise config.ConfigError(
                f"override {section}.{name}: params has no section {section!r}"
            )
        p[section][name] = value
    known = p.get("backends") or {}  # none listed: config's default, no backends
    if not isinstance(known, dict):
        raise config.ConfigError(f"params: backends must be a mapping, got {known!r}")
    if backends is not None:
        unknown = [b for b in backends if b not in known]
        if unknown:
            listed = ", ".join(known) or "none"
            raise config.ConfigError(
                f"unknown backend(s) {', '.join(unknown)}; params has: {listed}"
            )
        known = {b: known[b] for b in backends}
    moved = {old: data.get(k, old) for k, old in dirs.items()}  # a backend keeps its data kind
    p["backends"] = {b: _moved(entry, moved) for b, entry in known.items()}
    return p


def _moved(entry: object, moved: dict[str, str]) -> object:
    """A backends entry with its data folder following data.raw_dir / data.tfds_dir: a full
    entry ({data, loader, step}) keeps its loader and step; a bare folder stays one."""
    if isinstance(entry, str):
        return moved.get(entry, entry)
    if isinstance(entry, dict) and isinstance(entry.get("data"), str):
        return {**entry, "data": moved.get(entry["data"], entry["data"])}
    return entry  # malformed: left for config.from_dict to name


def write(path: str | Path, raw: dict) -> config.Config:
    """Validate `raw`, then write it to `path` whole (outputs.write_files: staged, renamed)."""
    cfg = config.from_dict(raw)
    path = Path(path)
    if path.is_dir():
        raise config.ConfigError(
            f"{path} is a folder: give the file to write, e.g. {path / 'params.yaml'}"
        )
    outputs.write_files(path.parent, {path.name: yaml.safe_dump(raw, sort_keys=False).encode()})
    return cfg
