"""The metrics contract (mnistbench.metrics): train writes exactly its keys, compare reads
only its keys, a diverged run writes nothing, and the validator rejects what breaks it.

Most tests train a fake backend through the real `train.train` (no framework, milliseconds):
what it writes is what a real backend's run writes, minus the learning."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import repo_backends

from mnistbench import (
    compare,
    config,
    harness,
    interference,
    layout,
    metrics,
    records,
    sweep,
    train,
)

FAKE = "fake-mlp"  # a backend name no module has: backends.load is patched to return it


class FakeTrainer:
    """A Trainer whose losses are given per epoch; everything else is constant."""

    device, num_train, num_test = "cpu", 1000, 300

    def __init__(self, losses: list[float]):
        self.losses, self.epoch = losses, 0

    def train_epoch(self) -> float:
        self.epoch += 1
        return self.losses[self.epoch - 1]

    def evaluate(self) -> tuple[float, float]:
        return self.losses[self.epoch - 1] * 0.9, 0.9

    def sync(self) -> None:
        pass

    def num_params(self) -> int:
        return 136_074


def make_cfg(epochs: int = 3, lr: float = 1e-3) -> config.Config:
    """Without check(): FAKE is no backend module, and train needs none in cfg.backends."""
    return config.Config(
        data=config.DataConfig(limit_train=1000, limit_test=300),
        train=config.TrainConfig(epochs=epochs, lr=lr, device="cpu"),
        backends={FAKE: config.Backend(data="data/raw")},
    )


@pytest.fixture
def fake_backend(monkeypatch):
    """`train.train(cfg, FAKE)` trains a FakeTrainer with the losses set in the returned list."""
    losses = [0.5, 0.3, 0.2, 0.1]
    module = types.SimpleNamespace(
        FRAMEWORK="Fake",
        LOADER="fake loader",
        build=lambda cfg, device, data: FakeTrainer(losses),
    )
    real_load = train.backends.load
    monkeypatch.setattr(
        train.backends, "load", lambda name: module if name == FAKE else real_load(name)
    )
    quiet_machine(monkeypatch)
    return losses


def quiet_machine(monkeypatch) -> None:
    """train's sample of the machine before a stage (a second) and its drift probe, made
    instant: what they measure is tests/test_interference.py's."""
    idle = interference.Share(wall_s=1.0, own=0.0, foreign=0.0, steal=0.0, ctx_invol_per_s=0.0)
    monkeypatch.setattr(train.interference, "wait_for_quiet", lambda *a, **k: idle)
    monkeypatch.setattr(train.interference, "probe", lambda *a, **k: 0.015)


# ---------------------------------------------------------------- train writes the contract


def test_train_writes_exactly_the_contracts_keys(fake_backend, tmp_path):
    record = train.train(make_cfg(), FAKE, tmp_path)
    numbers = json.loads(layout.metrics_path(tmp_path, FAKE).read_text())
    run = json.loads(layout.run_path(tmp_path, FAKE).read_text())
    assert list(numbers) == list(metrics.COMPARED)  # the numbers people compare, in order
    assert all(isinstance(v, (int, float)) for v in numbers.values())  # no strings, no env
    assert list(run) == ["details", *metrics.SECTIONS]
    assert list(run["details"]) == list(metrics.DETAILS)
    written = records.read_record(tmp_path, FAKE)
    assert written == record
    assert list(written) == list(metrics.KEYS)  # every key, none beside them, in order
    assert written["quiet"]["verdict"] in metrics.VERDICTS
    assert set(written["env"]) == set(metrics.ENV)
    assert set(written["params"]) == set(metrics.PARAMS)
    assert written["params"]["train.lr"] == 1e-3 and written["params"]["model.hidden"] == [128, 256]
    assert metrics.validate(written, backend=FAKE) == []
    curves = {p.stem for p in layout.curves_dir(tmp_path, FAKE).glob("*.tsv")}
    assert curves == set(metrics.CURVES)
    assert records.read_curve(layout.curve_path(tmp_path, FAKE, "train_loss"), "train_loss", 3) == [
        0.5,
        0.3,
        0.2,
    ]


def test_the_harness_writes_numbers_and_curves_of_the_contract():
    history = harness.run(FakeTrainer([0.5, 0.4]), epochs=2)
    assert set(history[0].curves()) == set(metrics.CURVES)
    assert set(harness.summarize(history, 1000, 32)) <= set(metrics.NUMBERS)


def test_train_refuses_a_key_the_contract_lacks(fake_backend, tmp_path, monkeypatch):
    """A new key written by the harness (or train) without a line in the contract fails."""
    real = harness.summarize
    monkeypatch.setattr(harness, "summarize", lambda *a: {**real(*a), "gpu_temp_c": 61.0})
    with pytest.raises(metrics.MetricsError, match="unknown keys: gpu_temp_c"):
        train.train(make_cfg(), FAKE, tmp_path)
    assert not layout.backend_dir(tmp_path, FAKE).exists()
    assert not list(layout.train_dir(tmp_path).iterdir())  # no staging folder left either


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_diverged_run_writes_nothing_and_names_the_epoch_and_lr(fake_backend, tmp_path, bad):
    old = layout.backend_dir(tmp_path, FAKE)
    old.mkdir(parents=True)
    (old / "metrics.json").write_text('{"previous": "results"}\n')
    fake_backend[1] = bad  # epoch 2's training loss
    with pytest.raises(metrics.MetricsError) as err:
        train.train(make_cfg(lr=5.0), FAKE, tmp_path)
    message = str(err.value)
    assert message.startswith(f"{FAKE}: training diverged at epoch 2 (lower train.lr, now 5.0)")
    assert f"train_loss must be a finite number >= 0, got {bad}" in message
    assert "\n" not in message
    assert (old / "metrics.json").read_text() == '{"previous": "results"}\n'  # as it was
    assert [p.name for p in tmp_path.iterdir()] == [layout.TRAIN_DIR]
    assert [p.name for p in layout.train_dir(tmp_path).iterdir()] == [FAKE]  # no staging left


def test_cli_train_that_diverges_is_a_one_line_error(raw_dir, tmp_path):
    """A real backend in its own process, with a learning rate that overflows float32."""
    params = tmp_path / "params.yaml"
    params.write_text(
        json.dumps(
            {  # JSON is YAML
                "data": {"raw_dir": str(raw_dir), "limit_train": 512, "limit_test": 100},
                "train": {"epochs": 2, "lr": 1e30, "device": "cpu"},
                "backends": repo_backends("jax-scan", raw=raw_dir),
            }
        )
    )
    out = tmp_path / "metrics"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnistbench",
            "train",
            "jax-scan",
            "--params",
            str(params),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert errors[0].startswith(
        "error: jax-scan: training diverged at epoch 1 (lower train.lr, now 1e+30)"
    )
    assert not list(out.glob("**/metrics.json"))


# ---------------------------------------------------------------- compare reads the contract


class Spy(dict):
    """A dict that notes every key read through [] or get()."""

    def __init__(self, data: dict, seen: set[str], prefix: str = ""):
        super().__init__(data)
        self.seen, self.prefix = seen, prefix

    def __getitem__(self, key):
        self.seen.add(self.prefix + key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.seen.add(self.prefix + key)
        return super().get(key, default)


def test_compare_reads_only_the_contracts_keys(fake_backend, tmp_path, monkeypatch):
    """Every key compare reads from a metrics.json (top level, env, params) is one the
    contract defines: a key read from anywhere else fails here, not on a user's machine."""
    cfg = make_cfg()
    train.train(cfg, FAKE, tmp_path)
    seen: set[str] = set()
    real = compare.load.load_run

    def spied(cfg, root, name):
        run = real(cfg, root, name)
        record = {
            **run.metrics,
            "quiet": Spy(run.metrics["quiet"], seen, "quiet."),
            "env": Spy(run.metrics["env"], seen, "env."),
            "params": Spy(run.metrics["params"], seen, "params."),
        }
        return compare.BackendRun(run.name, Spy(record, seen), run.curves, run.repeats)

    monkeypatch.setattr(compare.load, "load_run", spied)
    compare.compare(cfg, tmp_path, tmp_path / "out")
    contract = {
        *metrics.KEYS,
        *(f"quiet.{k}" for k in metrics.QUIET),
        *(f"env.{k}" for k in metrics.ENV),
        *(f"params.{k}" for k in metrics.PARAMS),
    }
    assert {"epoch_time_median_s", "val_acc", "env.framework", "env.cpu"} <= seen  # it spies
    assert seen <= contract, f"compare reads keys the contract lacks: {seen - contract}"


def test_compare_reads_every_curve_train_writes(fake_backend, tmp_path):
    cfg = make_cfg()
    train.train(cfg, FAKE, tmp_path)
    runs = compare.load_runs(cfg, tmp_path)
    assert list(runs[FAKE].curves) == list(metrics.CURVES)
    layout.curve_path(tmp_path, FAKE, "eval_time_s").unlink()  # one curve compare must read
    with pytest.raises(compare.CompareError, match="eval_time_s.tsv: missing"):
        compare.load_runs(cfg, tmp_path)


def test_compare_refuses_backends_made_with_other_params(fake_backend, tmp_path):
    train.train(make_cfg(lr=0.01), FAKE, tmp_path)
    with pytest.raises(
        compare.CompareError,
        match=r"made with other params: train.lr 0.01 \(current params: 0.001\)",
    ):
        compare.compare(make_cfg(), tmp_path)
    assert not (tmp_path / "summary.json").exists()


def test_sweep_reads_the_contracts_keys():
    assert set(sweep.KEYS) <= set(metrics.NUMBERS)


# ---------------------------------------------------------------- the validator and layout


@pytest.mark.parametrize(
    "kind, good, bad",
    [
        (
            metrics.number("s"),
            [0, 0.5, 1e9],
            [math.nan, math.inf, -math.inf, -1e-9, True, "1", None],
        ),
        (metrics.number("acc", high=1), [0.0, 1.0], [1.0001, math.nan]),
        (metrics.number("rate", above=True), [1e-9], [0.0, math.inf]),
        (metrics.integer("n"), [1, 60000], [0, 1.0, True, None]),
        (metrics.optional(metrics.integer("n")), [None, 3], [0, "3"]),
        (metrics.integers("widths"), [[128, 256]], [[], [0], [1.5], (128,)]),
        (metrics.text("device", choices=("cpu", "cuda")), ["cpu"], ["gpu", None]),
    ],
)
def test_kinds_accept_and_reject(kind, good, bad):
    assert all(kind.ok(v) for v in good)
    assert not any(kind.ok(v) for v in bad)


def test_params_of_names_params_yaml_keys():
    cfg = config.from_dict(
        {
            "data": {"limit_train": 1000},
            "model": {"hidden": [64]},
            "train": {"lr": 0.01, "seed": 2, "threads": 1},
        }
    )
    assert metrics.params_of(cfg) == {
        "data.limit_train": 1000,
        "data.limit_test": None,
        "model.hidden": [64],
        "train.epochs": 10,
        "train.batch_size": 32,
        "train.lr": 0.01,
        "train.seed": 2,
        "train.threads": 1,
        "train.device": "auto",
    }


def test_validate_lists_every_problem():
    problems = metrics.validate({"val_acc": math.nan, "epochs": 0, "env": {}, "params": []})
    assert problems[0].startswith("missing keys: train_loss, epoch_time_median_s")
    assert "val_acc must be a finite number >= 0 and <= 1, got nan" in problems
    assert "epochs must be an integer >= 1, got 0" in problems
    assert any(p.startswith("missing keys: env.python") for p in problems)
    assert "params must be an object, got []" in problems
    assert metrics.validate([1]) == ["must hold a JSON object, got list"]


def test_repeat_roots_are_the_rounds_that_hold_the_backend(tmp_path):
    assert layout.repeat_roots(tmp_path, "jax-scan") == []  # no repeats stage run yet
    for round_, name in (("10", "jax-scan"), ("2", "jax-scan"), ("3", "torch-tensor")):
        layout.backend_dir(layout.repeats_root(tmp_path) / round_, name).mkdir(parents=True)
    (layout.repeats_root(tmp_path) / ".4.partial").mkdir()  # not a round
    rounds = layout.repeat_roots(tmp_path, "jax-scan")
    assert rounds == [tmp_path / "repeats" / "2", tmp_path / "repeats" / "10"]  # in round order


def test_layout():
    assert layout.backend_dir("m", "jax-scan") == Path("m/train/jax-scan")
    assert layout.metrics_path("m", "jax-scan") == Path("m/train/jax-scan/metrics.json")
    assert layout.run_path("m", "jax-scan") == Path("m/train/jax-scan/run.json")
    assert layout.curve_path("m", "jax-scan", "val_acc") == Path(
        "m/train/jax-scan/plots/metrics/val_acc.tsv"
    )
    assert layout.all_curves_path("m", "val_acc") == Path("m/curves/val_acc.tsv")
    assert layout.roofline_path("m") == Path("m/roofline/metrics.json")
    assert layout.backend_dir(layout.repeats_root("m") / "2", "jax-scan") == Path(
        "m/repeats/2/train/jax-scan"
    )
    assert layout.backend_of("metrics/train/jax-scan/metrics.json") == "jax-scan"
    for other in (
        "metrics/roofline/metrics.json",
        "metrics/summary.json",
        "metrics/jax-scan/metrics.json",  # the layout before train/
        "metrics/repeats/2/train/jax-scan/metrics.json",
        "results/x/metrics/train/jax-scan/metrics.json",
        "metrics/train/jax-scan/plots/x.tsv",
    ):
        assert layout.backend_of(other) is None, other
    assert compare.OUTPUTS == layout.SUMMARY_FILES
