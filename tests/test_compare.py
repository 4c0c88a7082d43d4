"""Stage `compare`: summary numbers, report, PNGs, clear errors on bad input, dvc.yaml wiring,
and (slow) the README's branch workflow end to end: `dvc repro` on two branches, then
`dvc metrics diff` and `dvc plots diff` between them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import clone_env

from mnistbench import compare, config, harness, interference, layout, metrics, quiet, records
from mnistbench.cli import main as cli
from mnistbench.compare import markdown

ROOT = Path(__file__).resolve().parents[1]
ARTICLE_BACKENDS = ("torch-dataloader", "torch-tfds", "jax-tfds")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCREEN_ROWS = 60  # a terminal's screen, about: what `dvc metrics diff` of every backend fits

# backend -> (first epoch s, steady epochs' (train s, eval s)); "my-fast" has no article row
TIMES = {
    "torch-dataloader": (30.0, [(20.0, 4.0), (22.0, 4.0)]),
    "torch-tfds": (12.0, [(8.0, 2.0), (9.0, 2.0)]),
    "jax-tfds": (10.0, [(3.0, 1.0), (4.0, 1.0)]),
    "my-fast": (5.0, [(0.2, 0.05), (0.3, 0.05)]),
}


def make_cfg(names=tuple(TIMES), epochs: int = 3, batch_size: int = 32) -> config.Config:
    """A Config without check(): "my-fast" is no backend module, compare needs none. TIMES'
    steady epochs spread up to 40%: a spread limit of 0.5 keeps them quiet."""
    return config.Config(
        train=config.TrainConfig(epochs=epochs, batch_size=batch_size),
        bench=config.BenchConfig(max_spread=0.5),
        backends={n: config.Backend("data/tfds") for n in names},
    )


ENV = {
    "python": "3.11.7",
    "implementation": "cpython",
    "platform": "Linux-test",
    "packages": {"torch": "2.14.1"},
    "cpu": "Test CPU",
    "cpu_count": 2,
    "cpus_usable": 2,
    "thread_env": {},
    "gpus": [],
    "image": "none (host)",
    "image_version": "",
    "threads": None,
}


def history_of(
    first: float, steady: list[tuple[float, float]], foreign: float = 0.0
) -> list[harness.Epoch]:
    """Epochs as the harness records them: epoch 1 takes `first` s, then (train, eval) s each;
    `foreign`: the share of the CPUs others used in every epoch (0.0: a quiet machine)."""

    def load(seconds: float) -> interference.Share:
        return interference.Share(seconds, 0.9, foreign, 0.0, 30.0)

    history = [harness.Epoch(1, 1.0, 0.9, 0.8, first * 0.8, first * 0.2, load(first))]
    return history + [
        harness.Epoch(i, 1.0 / i, 0.9 / i, 0.8 + 0.05 * i, t, e, load(t + e))
        for i, (t, e) in enumerate(steady, start=2)
    ]


def record_of(
    name: str, history: list[harness.Epoch], cfg: config.Config, framework: str | None = None
) -> dict:
    """The record train makes of `history`: harness.summarize, the verdict, env and params,
    checked against the contract."""
    record = harness.summarize(history, num_train=60000, batch_size=cfg.train.batch_size)
    framework = framework or ("PyTorch" if name.startswith("torch") else "JAX (Flax + Optax)")
    limits = quiet.thresholds(cfg)
    verdict = quiet.judge(
        [e.epoch_time_s for e in history], [e.load for e in history], limits, None
    )
    record.update(
        disturbed=int(verdict.label == "disturbed"),
        busy_before=0.0,
        probe_start_s=0.015,
        probe_end_s=0.016,
        quiet=quiet.section(verdict, limits, None),
        num_params=136074,
        train_examples=60000,
        test_examples=10000,
        env={
            **ENV,
            "backend": name,
            "framework": framework,
            "loader": f"{name} loader",
            "device": "cpu",
        },
        params=metrics.params_of(cfg),
    )
    return metrics.check(record, name, backend=name)  # the fixture keeps the contract itself


def write_metrics(
    root: Path,
    name: str,
    first: float,
    steady: list[tuple[float, float]],
    framework: str | None = None,
    cfg: config.Config | None = None,
    foreign: float = 0.0,
) -> Path:
    """metrics/<name>/ as the train stage writes it: the record and the curves, with the
    params of `cfg` (make_cfg() by default)."""
    history = history_of(first, steady, foreign)
    out = layout.backend_dir(root, name)
    plots = out / "plots" / "metrics"
    plots.mkdir(parents=True)
    for epoch in history:
        values = epoch.curves()
        for key in metrics.CURVES:
            records.append_curve(plots / f"{key}.tsv", key, epoch.epoch, values[key])
    cfg = cfg or make_cfg(epochs=len(history))
    records.write_record(out, record_of(name, history, cfg, framework))
    return out


@pytest.fixture
def metrics_root(tmp_path) -> Path:
    root = tmp_path / "metrics"
    for name, (first, steady) in TIMES.items():
        write_metrics(root, name, first, steady)
    return root


# ---------------------------------------------------------------- numbers and report


def test_summary_numbers(metrics_root):
    summary = compare.compare(make_cfg(), metrics_root)
    rows = summary["backends"]
    assert list(rows) == list(TIMES)  # params order
    base = rows["torch-dataloader"]["epoch_time_median_s"]
    assert base == pytest.approx(25.0)  # median of 24 and 26
    jax = rows["jax-tfds"]
    assert jax["epoch_time_median_s"] == pytest.approx(4.5)
    assert (jax["epoch_time_min_s"], jax["epoch_time_max_s"]) == pytest.approx((4.0, 5.0))
    assert jax["epoch_time_spread"] == pytest.approx(1.0 / 4.5)
    assert jax["first_epoch_s"] == pytest.approx(10.0)
    assert jax["first_epoch_extra_s"] == pytest.approx(5.5)
    assert jax["train_time_median_s"] == pytest.approx(3.5)
    assert jax["eval_time_median_s"] == pytest.approx(1.0)
    assert jax["speedup_vs_torch-dataloader"] == pytest.approx(25.0 / 4.5)
    assert jax["speedup_vs_article"] == pytest.approx(5.1 / 4.5)  # midpoint of 3.8-6.4
    assert jax["article"] == {
        "epoch_s_min": 3.8,
        "epoch_s_max": 6.4,
        "first_epoch_s": 13.8,
        "speedup_vs_torch-dataloader": pytest.approx(14.7 / 5.1),
    }
    assert rows["torch-dataloader"]["speedup_vs_torch-dataloader"] == 1.0
    assert rows["my-fast"]["article"] is None and rows["my-fast"]["speedup_vs_article"] is None
    assert "efficiency" not in jax and "roofline" not in summary
    assert summary["settings"] == {
        "epochs": 3,
        "batch_size": 32,
        "train_examples": 60000,
        "test_examples": 10000,
    }
    assert summary["env_differs"] == {}
    written = json.loads((metrics_root / "summary.json").read_text())
    assert written == json.loads(json.dumps(compare.compact(summary)))
    assert written["backends"]["jax-tfds"]["epoch_time_s"] == pytest.approx(4.5)
    assert _strings(written) == []  # numbers only: the words are summary.md's


def _strings(value, where: str = "") -> list[str]:
    """Every place in a JSON value that holds a string."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _strings(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _strings(v, f"{where}[{i}]")]
    return [where] if isinstance(value, str) else []


def test_report_puts_the_article_beside_this_run(metrics_root):
    compare.compare(make_cfg(), metrics_root)
    md = (metrics_root / "summary.md").read_text()
    # backend | implementation | loader | article | this run (one round: no interval) | first:
    # article, this run | train / eval share
    assert (
        "| torch-dataloader | PyTorch | torch-dataloader loader | 14.3-15.1 | 25.0 s "
        "| — | 30.0 | 84% / 16% |"
    ) in md
    assert ("| torch-tfds | PyTorch | torch-tfds loader | 7.2-10.9 | 10.5 s | 13.9 | 12.0 |") in md
    assert (
        "| jax-tfds | JAX (Flax + Optax) | jax-tfds loader | 3.8-6.4 | 4.50 s | 13.8 | 10.0 |"
    ) in md
    assert ("| my-fast | JAX (Flax + Optax) | my-fast loader | — | 0.300 s | — |") in md
    assert "| jax-tfds | 2.88x | 5.6x | 1.13x |" in md  # ratios: article, this run, vs article
    assert "| my-fast | — | 83x | — |" in md
    for heading in (
        "## Ratios",
        "## Where the time goes",
        "## How quiet the machine was",
        "## Environment",
        "## Plots",
    ):
        assert heading in md
    assert "| CPU | Test CPU (2 of 2 CPUs usable) |" in md
    assert "A subset of MNIST" not in md  # full splits here
    where = md.split("## Where the time goes")[1].split("## How quiet")[0]
    rows = [line for line in where.splitlines() if line.startswith("| ")][1:]  # no header
    assert len(rows) == len(TIMES)  # one row per backend
    # 4 s for 10000 validation examples against 21 s for 60000 training ones: 1.14x
    assert "| torch-dataloader | 25.0 s | 84% | 16% | 1.14x | overhead-bound | 5.00 s |" in rows
    quiet_rows = md.split("## How quiet the machine was")[1].split("## Environment")[0]
    assert "| jax-tfds | quiet | 0.0% | 0.0% | 22.2% | 1: 4.50 s | 1 run |" in quiet_rows
    assert "Every backend was timed on a quiet machine" in md


@pytest.mark.parametrize(
    "ratio, reading",
    [
        (1.0, "overhead-bound"),
        (markdown.EVAL_RATIO_OVERHEAD, "overhead-bound"),
        (0.59, "roughly arithmetic"),
        (markdown.EVAL_RATIO_BATCHED, "roughly arithmetic"),
        (0.19, "fewer, larger steps"),
    ],
)
def test_eval_cost_readings_follow_the_named_thresholds(ratio, reading):
    assert markdown.eval_reading(ratio) == reading


def test_where_time_goes_is_a_table_explained_below_it():
    rows = {
        "a": {
            "epoch_time_s": 1.0,
            "train_share": 0.5,
            "eval_cost_ratio": 1.0,
            "first_epoch_extra_s": -0.1,
            "epoch_time_min_s": 0.95,
            "epoch_time_max_s": 1.2,
            "epoch_time_spread": 0.25,
        },
        "b": {
            "epoch_time_s": 2.0,
            "train_share": 0.9,
            "eval_cost_ratio": 0.34,
            "first_epoch_extra_s": 1.0,
            "epoch_time_min_s": 1.2,
            "epoch_time_max_s": 2.1,
            "epoch_time_spread": 0.45,
        },
    }
    lines = compare.where_time_goes({"backends": rows})
    assert lines[2] == "| a | 1.00 s | 50% | 50% | 1.00x | overhead-bound | none |"
    # a 45% spread is flagged, 25% is not
    assert lines[3] == (
        "| b | 2.00 s, unsteady (1.20-2.10) | 90% | 10% | 0.34x | roughly arithmetic | 1.00 s |"
    )
    assert lines[4] == "" and len(lines) == 6
    for threshold in ("0.33x", "0.60x or more", "Under 0.20x", "30% or more"):
        assert threshold in lines[5]
    assert "Efficiency" not in lines[5]  # no roofline, no efficiency column to explain


def test_subset_and_mixed_environments_are_flagged(tmp_path):
    root = tmp_path / "metrics"
    for name in ARTICLE_BACKENDS:
        write_metrics(root, name, *TIMES[name])
    m = records.read_record(root, "jax-tfds")
    m["train_examples"], m["env"]["cpu"] = 1000, "Other CPU"
    write_split(layout.backend_dir(root, "jax-tfds"), m)
    summary = compare.compare(make_cfg(ARTICLE_BACKENDS), root)
    assert summary["env_differs"]["cpu"] == {
        "torch-dataloader": "Test CPU",
        "torch-tfds": "Test CPU",
        "jax-tfds": "Other CPU",
    }
    md = (root / "summary.md").read_text()
    assert "recorded in different environments" in md
    assert "- cpu: torch-dataloader Test CPU, torch-tfds Test CPU, jax-tfds Other CPU" in md


def test_without_the_baseline_there_are_no_speedups(tmp_path):
    root = tmp_path / "metrics"
    write_metrics(root, "jax-tfds", *TIMES["jax-tfds"])
    summary = compare.compare(make_cfg(("jax-tfds",)), root)
    assert summary["backends"]["jax-tfds"]["speedup_vs_torch-dataloader"] is None
    assert "torch-dataloader is not among this run's backends" in (root / "summary.md").read_text()


def test_roofline_adds_efficiency(metrics_root, tmp_path):
    roofline = tmp_path / "roofline.json"
    roofline.write_text(
        json.dumps(
            {
                "matmul_gflops": 114.0,
                "threads": None,
                "train_gflop_per_epoch": 36.8,
                "eval_gflop_per_epoch": 2.7,
                "gflop_per_epoch": 39.5,
                "roofline_epoch_s": 0.35,
            }
        )
    )
    summary = compare.compare(make_cfg(), metrics_root, roofline_path=roofline)
    jax = summary["backends"]["jax-tfds"]
    assert jax["roofline_epoch_s"] == pytest.approx(0.35)
    assert jax["efficiency"] == pytest.approx(0.35 / 4.5)
    assert summary["roofline"]["matmul_gflops"] == 114.0
    md = (metrics_root / "summary.md").read_text()
    assert "| jax-tfds | 2.88x | 5.6x | 1.13x | 0.350 | 7.8% |" in md
    assert "Efficiency (above) is the share of the steady epoch that the arithmetic" in md


def test_pngs_are_valid_images(metrics_root):
    from matplotlib import image

    compare.compare(make_cfg(), metrics_root)
    for name in ("epoch_time.png", "curves.png"):
        data = (metrics_root / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        pixels = image.imread(metrics_root / name)
        assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 500
        assert pixels.std() > 0.05  # something is drawn
    assert not [p for p in metrics_root.iterdir() if p.name.startswith(".")]  # no temp files left


def test_out_dir_and_cli(metrics_root, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "train": {"epochs": 3},
                "backends": {
                    "torch-dataloader": "data/raw",
                    "torch-tfds": "data/tfds",
                    "jax-tfds": "data/tfds",
                },
            }
        )
    )
    out = tmp_path / "report"
    result = CliRunner().invoke(
        cli, ["compare", "--params", str(params), "--metrics", str(metrics_root), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "jax-tfds: steady epoch 4.50 s, 5.56x torch-dataloader" in result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(compare.OUTPUTS)
    assert not (metrics_root / "summary.json").exists()


# ---------------------------------------------------------------- bad input: error, nothing written


def _set(key, value):
    def edit(m):
        m[key] = value

    return edit


def _env(key, value):
    def edit(m):
        m["env"][key] = value

    return edit


def _drop(key):
    def edit(m):
        del m[key]

    return edit


def _params(key, value):
    def edit(m):
        m["params"][key] = value

    return edit


def _drop_params(key):
    def edit(m):
        del m["params"][key]

    return edit


def _both(*edits):
    def edit(m):
        for e in edits:
            e(m)

    return edit


BAD_METRICS = {
    "missing key": (_drop("epoch_time_median_s"), "missing keys: epoch_time_median_s"),
    "unknown key": (_set("gpu_temp", 80), "unknown keys: gpu_temp (not in the metrics contract"),
    "string time": (_set("first_epoch_s", "fast"), "first_epoch_s must be a finite number"),
    "nan time": (_set("eval_time_median_s", float("nan")), "eval_time_median_s must be a finite"),
    "nan loss": (_set("val_loss", float("nan")), "val_loss must be a finite number >= 0, got nan"),
    "inf loss": (_set("train_loss", float("inf")), "train_loss must be a finite number >= 0"),
    "accuracy over 1": (_set("val_acc", 1.5), "val_acc must be a finite number >= 0 and <= 1"),
    "bool count": (_set("epochs", True), "epochs must be an integer"),
    "env not a dict": (_set("env", "cpu"), "env must be an object"),
    "wrong backend": (_env("backend", "torch-tfds"), "env.backend is 'torch-tfds', not 'jax-tfds'"),
    "no framework": (_env("framework", None), "env.framework must be a string"),
    "unknown env key": (_env("host", "x"), "unknown keys: env.host"),
    "min over median": (_set("epoch_time_min_s", 99.0), "epoch_time_min_s <= epoch_time_median_s"),
    "batch vs params": (
        _set("batch_size", 64),
        "batch_size is 64 but params train.batch_size is 32",
    ),
    "more than MNIST": (_set("test_examples", 20000), "test_examples is 20000, more than 10000"),
    "no params": (_drop("params"), "missing keys: params"),
    "params lack lr": (_drop_params("train.lr"), "missing keys: params.train.lr"),
    "nan lr": (_params("train.lr", float("nan")), "params.train.lr must be a finite number > 0"),
    # made with other params than the current ones: not comparable, the key named
    "other limit_train": (
        _both(_params("data.limit_train", 1000), _set("train_examples", 1000)),
        "made with other params: data.limit_train 1000 (current params: None)",
    ),
    "other hidden": (
        _params("model.hidden", [64]),
        "made with other params: model.hidden [64] (current params: [128, 256])",
    ),
    "other lr": (
        _params("train.lr", 0.01),
        "made with other params: train.lr 0.01 (current params: 0.001)",
    ),
    "other seed": (
        _params("train.seed", 3),
        "made with other params: train.seed 3 (current params: 0)",
    ),
}


def write_split(folder: Path, record: dict) -> None:
    """A record, however broken, into metrics.json and run.json as train splits a valid one.
    NaN and Infinity are written bare, as JSON has no such numbers."""
    sections = {k: record[k] for k in metrics.SECTIONS if k in record}
    numbers = {k: v for k, v in record.items() if k in metrics.COMPARED}
    details = {k: v for k, v in record.items() if k not in numbers and k not in sections}
    (folder / layout.METRICS_FILE).write_text(json.dumps(numbers))
    (folder / layout.RUN_FILE).write_text(json.dumps({"details": details, **sections}))


@pytest.mark.parametrize("case", BAD_METRICS)
def test_malformed_metrics_json_names_the_file(metrics_root, case):
    edit, message = BAD_METRICS[case]
    path = layout.backend_dir(metrics_root, "jax-tfds") / "metrics.json"
    m = records.read_record(metrics_root, "jax-tfds")
    edit(m)
    write_split(layout.backend_dir(metrics_root, "jax-tfds"), m)
    with pytest.raises(compare.CompareError) as err:
        compare.compare(make_cfg(), metrics_root)
    assert f"{path} (+ run.json): " in str(err.value) and message in str(err.value)
    assert not any((metrics_root / name).exists() for name in compare.OUTPUTS)


BAD_FILES = {
    "no metrics.json": ("metrics.json", None, "metrics.json: missing"),
    "not JSON": ("metrics.json", "{oops", "metrics.json: not valid JSON"),
    "JSON list": ("metrics.json", "[1, 2]", "metrics.json: must hold a JSON object, got list"),
    "no curve": ("plots/metrics/val_acc.tsv", None, "val_acc.tsv: missing"),
    "bad header": (
        "plots/metrics/val_acc.tsv",
        "epoch\tacc\n1\t0.5\n",
        "header must be 'step<TAB>val_acc'",
    ),
    "bad row": (
        "plots/metrics/val_loss.tsv",
        "step\tval_loss\n1\t0.5\n2\tnope\n3\t0.1\n",
        "line 3 is not '<step><TAB><number>'",
    ),
    "nan row": (
        "plots/metrics/val_loss.tsv",
        "step\tval_loss\n1\t0.5\n2\tnan\n3\t0.1\n",
        "line 3: val_loss must be a finite number >= 0, got nan",
    ),
    "short curve": (
        "plots/metrics/train_loss.tsv",
        "step\ttrain_loss\n1\t0.5\n2\t0.4\n",
        "2 rows but metrics.json says 3 epochs",
    ),
    "steps out of order": (
        "plots/metrics/epoch_time_s.tsv",
        "step\tepoch_time_s\n1\t0.5\n3\t0.4\n2\t0.3\n",
        "line 3: step 3, expected 2",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_missing_or_malformed_files_name_the_file(metrics_root, case):
    relative, content, message = BAD_FILES[case]
    path = layout.backend_dir(metrics_root, "torch-tfds") / relative
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    with pytest.raises(compare.CompareError) as err:
        compare.compare(make_cfg(), metrics_root)
    assert str(path) in str(err.value) and message in str(err.value)
    assert not any((metrics_root / name).exists() for name in compare.OUTPUTS)


def test_every_problem_is_reported_and_old_outputs_stay(metrics_root, tmp_path):
    compare.compare(make_cfg(), metrics_root)
    before = _contents(metrics_root)
    shutil.rmtree(layout.backend_dir(metrics_root, "torch-dataloader"))
    (layout.backend_dir(metrics_root, "jax-tfds") / "metrics.json").write_text("")
    params = tmp_path / "params.yaml"
    article = {"torch-dataloader": "data/raw", "torch-tfds": "data/tfds", "jax-tfds": "data/tfds"}
    params.write_text(yaml.safe_dump({"train": {"epochs": 3}, "backends": article}))
    result = CliRunner().invoke(
        cli, ["compare", "--params", str(params), "--metrics", str(metrics_root)]
    )
    assert result.exit_code == 1
    assert result.output.startswith("error: compare: nothing written")
    assert f"{metrics_root}/train/torch-dataloader/metrics.json: missing" in result.output
    assert f"{metrics_root}/train/jax-tfds/metrics.json: not valid JSON" in result.output
    assert "Traceback" not in result.output
    assert _contents(metrics_root) == before


def test_missing_or_bad_roofline_is_an_error(metrics_root, tmp_path):
    missing = tmp_path / "roofline" / "metrics.json"
    with pytest.raises(compare.CompareError, match=f"{missing}: missing"):
        compare.compare(make_cfg(), metrics_root, roofline_path=missing)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"matmul_gflops": 114.0, "roofline_epoch_s": "soon"}))
    with pytest.raises(compare.CompareError, match="train_gflop_per_epoch must be a finite number"):
        compare.compare(make_cfg(), metrics_root, roofline_path=bad)
    assert not (metrics_root / "summary.json").exists()


# ---------------------------------------------------------------- dvc.yaml wiring


def _covered(item: str, listed: list, sep: str = "/") -> bool:
    """`item` is in `listed`, itself or through a folder (a params section) above it."""
    return any(item == d or item.startswith(f"{d}{sep}") for d in listed if isinstance(d, str))


def test_dvc_yaml_compare_stage_params_outputs_and_plots():
    """compare refuses results made with other params (metrics.PARAMS): those params must be
    its DVC params too, or an edit would leave a report DVC thinks is current. (Its code and
    metrics deps are checked against the imports and backends in tests/test_dvc_deps.py.)
    Its outputs are compare's, and the top-level plots draw every backend's curves."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    names = list(config.load(ROOT / "params.yaml").backends)
    stage = dvc["stages"]["compare"]
    unread = [k for k in metrics.PARAMS if not _covered(k, stage["params"], sep=".")]
    assert not unread, f"dvc.yaml: compare checks params {unread}: list them in its params"
    assert "--roofline metrics/roofline/metrics.json" in stage["cmd"]
    assert "metrics/roofline/metrics.json" in stage["deps"]
    # DVC's metrics are the headline (estimates and intervals); summary.json is the report's
    # input, not a DVC metric
    assert [next(iter(m)) for m in stage["metrics"]] == ["metrics/headline"]
    outs = [next(iter(o)) for section in ("metrics", "outs", "plots") for o in stage[section]]
    assert sorted(Path(o).name for o in outs) == sorted(compare.OUTPUTS)
    for out in outs:  # nothing compare writes is inside a train stage's output
        assert Path(out).parent == Path("metrics") and Path(out).stem not in names
    assert "metrics/train" in stage["deps"]  # every backend's folder
    plots = {Path(next(iter(p))).stem: next(iter(p.values())) for p in dvc["plots"]}
    assert set(plots) >= {"val_acc", "val_loss", "train_loss", "epoch_time_s", "foreign_share"}
    for key, plot in plots.items():  # compare's files: every backend, none named here
        assert key in metrics.CURVES and plot["y"] == key and plot["x"] == "step"
        assert (ROOT / plot["template"]).is_file()


# ---------------------------------------------------------------- end to end: README's workflow


def _run(args: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (
        f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


def _set_params(repo: Path, **train_keys) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["data"].update(limit_train=1000, limit_test=300)
    params["train"].update(train_keys)
    params["bench"].update(rounds_min=2, rounds_max=2)  # the repeats stage too, but short
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.long("the README's branch workflow, `dvc repro` twice (~325 CPU-s)")
def test_branches_compare_with_dvc_metrics_and_plots_diff(tmp_path):
    """Clone of this repository's HEAD (commit first), small params, `dvc repro`, commit; a
    branch with another train.batch_size, `dvc repro`, commit; then the two commits compare."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    env = clone_env(repo)
    git = ["git", "-c", "commit.gpgsign=false"]
    names = list(config.load(repo / "params.yaml").backends)

    _set_params(repo, epochs=2)
    _run(["dvc", "repro"], repo, env)
    for name in ("summary.json", "summary.md", "epoch_time.png", "curves.png"):
        assert (repo / "metrics" / name).is_file(), name
    for name in ("epoch_time.png", "curves.png"):
        assert (repo / "metrics" / name).read_bytes().startswith(PNG_MAGIC)
    rows = json.loads((repo / "metrics" / "summary.json").read_text())["backends"]
    assert list(rows) == names
    if (repo / "metrics" / "roofline" / "metrics.json").exists():
        summary_json = json.loads((repo / "metrics" / "summary.json").read_text())
        assert summary_json["roofline"]["roofline_epoch_s"] > 0
    _run([*git, "add", "params.yaml", "dvc.lock", "metrics"], repo, env)
    _run([*git, "commit", "-q", "-m", "small run, batch 32"], repo, env)
    rev1 = _run(["git", "rev-parse", "HEAD"], repo, env).strip()

    _run(["git", "checkout", "-q", "-b", "batch-64"], repo, env)
    _set_params(repo, batch_size=64)
    _run(["dvc", "repro"], repo, env)
    _run([*git, "add", "params.yaml", "dvc.lock", "metrics"], repo, env)
    _run([*git, "commit", "-q", "-m", "small run, batch 64"], repo, env)
    assert _run(["git", "status", "--porcelain"], repo, env) == ""  # every output is committed
    rev2 = _run(["git", "rev-parse", "HEAD"], repo, env).strip()

    diff = json.loads(_run(["dvc", "metrics", "diff", rev1, rev2, "--json"], repo, env))
    # the headline only (no single run, no env), a file per backend
    assert set(diff) == {f"metrics/headline/{name}.json" for name in names}
    for name in names:
        for key in ("epoch_s", "speedup", "val_acc"):
            if name == "torch-dataloader" and key == "speedup":
                continue  # the baseline against itself: 1.0 on both sides
            assert diff[f"metrics/headline/{name}.json"][key]["diff"] != 0, (name, key)
    compared = _run(["mnistbench", "diff", rev1, rev2], repo, env)  # which differences are real
    assert compared.splitlines()[-1].endswith(".") and all(n in compared for n in names)
    table = _run(["dvc", "metrics", "diff", rev1, rev2], repo, env).splitlines()
    assert len(table) <= SCREEN_ROWS, f"{len(table)} rows:\n" + "\n".join(table)
    shown = _run(["dvc", "params", "diff", rev1, rev2], repo, env)
    assert "train.batch_size" in shown

    out = tmp_path / "plots"
    _run(["dvc", "plots", "diff", rev1, rev2, "-o", str(out)], repo, env)
    html = (out / "index.html").read_text()
    for title in ("validation accuracy per epoch", "seconds per epoch"):
        assert title in html
    assert rev1 in html and rev2 in html
    images = sorted(p.name for p in (out / "static").iterdir())
    pngs = [
        next(iter(p))
        for stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values()
        for p in stage.get("plots", [])
    ]  # compare's two and report's one
    assert len(images) == 2 * len(pngs) and all(p.endswith(".png") for p in images)


@pytest.mark.parametrize(
    "share, text",
    [
        (0.078, "7.8%"),
        (0.922, "92.2%"),
        (1.54e-5, "0.0015%"),
        (0.99998, "100.00%"),
        (0.9995, "99.95%"),
        (1.2, "120.0%"),
    ],
)
def test_percentages_keep_small_shares_visible(share, text):
    # a GPU row's efficiency is thousandths of a percent: "0.0%" would hide it
    assert compare.fmt.pct(share) == text


def _contents(metrics_root: Path) -> dict[str, bytes]:
    """Every file compare writes under metrics_root, by relative path."""
    return {
        str(p.relative_to(metrics_root)): p.read_bytes()
        for name in compare.OUTPUTS
        for p in (
            [metrics_root / name]
            if (metrics_root / name).is_file()
            else sorted((metrics_root / name).rglob("*"))
        )
    }


def test_curves_hold_every_backend_in_params_order(metrics_root):
    """curves/<key>.tsv: columns step, backend, <key>; each backend's epochs 1..N in order."""
    compare.compare(make_cfg(), metrics_root)
    for key in metrics.CURVES:
        lines = layout.all_curves_path(metrics_root, key).read_text().splitlines()
        assert lines[0] == f"step\tbackend\t{key}"
        rows = [line.split("\t") for line in lines[1:]]
        names = list(dict.fromkeys(r[1] for r in rows))
        assert names == list(make_cfg().backends)
        for name in names:
            mine = [r for r in rows if r[1] == name]
            expected = records.read_curve(
                layout.curve_path(metrics_root, name, key), key, len(mine)
            )
            assert [int(r[0]) for r in mine] == list(range(1, len(mine) + 1))
            assert [float(r[2]) for r in mine] == expected


def test_the_run_settings_do_not_depend_on_the_backends_order(tmp_path):
    """jax-scan drops the last partial batch (1984 of 2000 images), the others see all: the
    run's size is the same whichever backend params lists first."""
    root = tmp_path / "metrics"
    for name in ("jax-tfds", "torch-dataloader"):
        write_metrics(root, name, *TIMES[name])
    record = json.loads(layout.metrics_path(root, "jax-tfds").read_text())
    run = json.loads(layout.run_path(root, "jax-tfds").read_text())
    run["details"]["train_examples"] = 59968  # 1874 full batches of 32
    layout.run_path(root, "jax-tfds").write_text(json.dumps(run))
    assert record["epochs"] == 3
    for order in (("jax-tfds", "torch-dataloader"), ("torch-dataloader", "jax-tfds")):
        cfg = make_cfg(order)
        assert compare.compare(cfg, root)["settings"]["train_examples"] == 60000, order


def test_one_run_has_no_spread_across_runs(metrics_root):
    """A single round: the runs column says "1 run", never a spread of 0% over one sample."""
    compare.compare(make_cfg(), metrics_root)
    md = (metrics_root / "summary.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| jax-tfds | ")]
    quiet = [row for row in rows if row.rstrip().endswith("| 1 run |")]
    assert quiet, "\n".join(rows)
    assert not any(row.rstrip().endswith("| 0.0% |") for row in rows)
