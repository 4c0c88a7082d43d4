"""Property-based tests: the params loader and the metrics validator, fed arbitrary documents.

Whatever a params file or a metrics.json holds, the only outcomes are a valid result or the
project's own error (errors.UserError: one line, exit 1); never another exception, which the
CLI would show as a traceback. Hypothesis draws the documents (YAML text, nested values, a
valid document with one value replaced) and shrinks any failure to a small example.
"""

from __future__ import annotations

import copy
import json
import math

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_compare import history_of, record_of

from mnistbench import config, metrics
from mnistbench.errors import UserError

# database=None: no .hypothesis/ folder in the repository (a failure prints its example)
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Scalars as YAML and JSON produce them, with the edges that break naive code: huge ints
# (beyond float's range), NaN and infinities, empty and odd strings.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
KEYS = st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.none())
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)

VALID_PARAMS = {
    "data": {
        "raw_dir": "data/raw",
        "tfds_dir": "data/tfds",
        "mirrors": ["data/mirror/"],
        "limit_train": None,
        "limit_test": None,
        "timeout_s": 30.0,
        "retries": 3,
    },
    "model": {"hidden": [128, 256]},
    "train": {
        "epochs": 10,
        "batch_size": 32,
        "lr": 0.001,
        "seed": 0,
        "threads": None,
        "device": "auto",
    },
    "backends": {  # params.yaml's full entries, and the shorthand (a bare folder) beside them
        "torch-dataloader": {
            "data": "data/raw",
            "loader": "torch-dataloader",
            "step": "_article_torch",
        },
        "jax-tfds": {"data": "data/tfds", "loader": "_article_tfds", "step": "jax-tfds"},
        "jax-scan": "data/raw",
    },
}


def test_the_valid_params_are_valid():
    """The base of the mutations below loads, so they test single changes."""
    cfg = config.from_dict(copy.deepcopy(VALID_PARAMS))
    assert cfg.backends["jax-tfds"] == config.Backend("data/tfds", "_article_tfds", "jax-tfds")
    assert cfg.backends["jax-scan"] == config.Backend("data/raw")


def _paths(doc, prefix=()):
    """Every path (tuple of keys) to a value in a nested dict, the dicts themselves included."""
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))


def _replaced(doc, path, value):
    """A deep copy of doc with the value at path replaced (the whole doc for path ())."""
    if not path:
        return value
    new = copy.deepcopy(doc)
    node = new
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return new


def _one_value_changed(valid: dict, values) -> st.SearchStrategy:
    """`valid` with the value at one path (drawn) replaced by an arbitrary value."""
    paths = sorted(_paths(valid), key=repr)
    return st.builds(_replaced, st.just(valid), st.sampled_from(paths), values)


def _loads_or_user_error(load, document) -> None:
    try:
        load(document)
    except UserError:
        pass  # the project's own, one-line error: the expected outcome for a bad document


# ---------------------------------------------------------------- params


@SETTINGS
@given(st.text(max_size=300))
def test_any_yaml_text_loads_or_is_a_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(text, encoding="utf-8")
    _loads_or_user_error(config.load, path)


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_load_or_are_a_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_bytes(data)
    _loads_or_user_error(config.load, path)


@SETTINGS
@given(VALUES)
def test_any_document_dumped_as_yaml_loads_or_is_a_config_error(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    _loads_or_user_error(config.load, path)


@SETTINGS
@given(VALUES)
def test_from_dict_takes_any_value(doc):
    _loads_or_user_error(config.from_dict, doc)


@SETTINGS
@given(_one_value_changed(VALID_PARAMS, VALUES))
def test_valid_params_with_one_value_changed_load_or_are_a_config_error(doc):
    _loads_or_user_error(config.from_dict, doc)


@SETTINGS
@given(st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=True))
def test_limits_and_timeouts_are_checked_not_crashed_on(number, real):
    """The numeric keys the stages use directly (sleep, settimeout, seeds): any value is
    either accepted within its bounds or refused by name."""
    for section, key, value in (
        ("data", "timeout_s", real),
        ("data", "retries", number),
        ("train", "seed", number),
        ("train", "lr", real),
        ("train", "threads", number),
    ):
        doc = _replaced(VALID_PARAMS, (section, key), value)
        try:
            cfg = config.from_dict(doc)
        except config.ConfigError as e:
            assert f"{section}.{key}" in str(e)
            continue
        loaded = getattr(getattr(cfg, section), key)
        if key == "timeout_s":
            assert 0 < loaded <= config.TIMEOUT_MAX_S
        if key == "retries":
            assert 1 <= loaded <= config.RETRIES_MAX


# ---------------------------------------------------------------- metrics


def _valid_record() -> dict:
    """A record as train writes it: torch-dataloader, 3 epochs, a quiet machine."""
    cfg = config.Config(train=config.TrainConfig(epochs=3))
    history = history_of(1.2, [(1.2, 0.2), (1.3, 0.2)])
    return record_of("torch-dataloader", history, cfg)


VALID_RECORD = _valid_record()


def test_the_valid_record_is_valid():
    """The base of the mutations below keeps the contract, so they test single changes."""
    assert metrics.validate(VALID_RECORD, "torch-dataloader") == []


def _validates(record) -> None:
    problems = metrics.validate(record, "torch-dataloader")
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
    _loads_or_user_error(lambda r: metrics.check(r, "metrics.json", "torch-dataloader"), record)


@SETTINGS
@given(JSON_VALUES)
def test_any_json_value_is_validated_not_crashed_on(doc):
    _validates(doc)


@SETTINGS
@given(_one_value_changed(VALID_RECORD, JSON_VALUES))
def test_a_valid_record_with_one_value_changed_is_validated(record):
    _validates(record)


@SETTINGS
@given(st.text(max_size=300))
def test_any_json_text_parsed_then_validated(text):
    try:
        doc = json.loads(text)
    except ValueError:
        return  # not JSON: compare's loader reports that itself
    _validates(doc)


def test_a_number_beyond_floats_range_is_a_problem_not_a_crash():
    """json.loads reads 1e400 as inf and 10**400 (digits) as an int too big for a float."""
    record = _replaced(VALID_RECORD, ("val_acc",), json.loads("1" + "0" * 400))
    problems = metrics.validate(record)
    assert any(p.startswith("val_acc must be") for p in problems), problems
    record = _replaced(VALID_RECORD, ("val_acc",), json.loads("1e400"))
    assert math.isinf(record["val_acc"]) and metrics.validate(record)


def test_what_the_draws_cannot_reach_is_a_config_error_too(tmp_path):
    """Found by hand beside the draws (texts of 300 characters cannot reach them): a
    5,000-digit int (Python refuses to convert it), lists nested 3,000 deep, and a key or
    value too long for repr."""
    path = tmp_path / "params.yaml"
    for text, expected in (
        ("train:\n  seed: " + "1" * 5000 + "\n", "a value YAML cannot convert"),
        ("[" * 3000, "nests lists or mappings too deeply"),
    ):
        path.write_text(text)
        try:
            config.load(path)
        except config.ConfigError as e:
            assert expected in str(e) and "\n" not in str(e)
        else:
            raise AssertionError(f"{text[:20]!r} loaded")
    for doc, expected in (
        ({"train": {"seed": 10**5000}}, "train.seed must be between"),
        ({10**5000: 1}, "unknown key an integer of 5001 digits"),
    ):
        try:
            config.from_dict(doc)
        except config.ConfigError as e:
            assert expected in str(e) and len(str(e)) < 300
        else:
            raise AssertionError(f"{doc!r:.40} loaded")
