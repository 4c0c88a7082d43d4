"""Results and params as untrusted input (issue 30): files written by other users and nodes,
read by gather and keep, and params files, each fault ending in one clear line or a correct
result, never a traceback, a hang or a followed link.

Real files, real symbolic links and real FIFOs (os.mkfifo) in tmp_path. Every command that
could wait on a FIFO runs in a subprocess with a time limit, so a regression fails the test
instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistbench import config, gather, keep, outputs, report
from mnistbench.errors import UserError
from mnistbench.report import ReportError

ROOT = Path(__file__).resolve().parents[1]
SECRET = "secret-line-of-a-file-outside"
LIMIT_S = 60  # a hang is a failure, not a stuck suite


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "mnistbench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
    )


def _one_error(result: subprocess.CompletedProcess, *parts: str) -> str:
    """Exit 1, no traceback, and exactly one line, `error: ...`, holding every one of `parts`."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def _secret(tmp_path: Path) -> Path:
    """A file outside every folder the commands read: what a link must not carry in."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    path = outside / "id_rsa"
    path.write_text(f"first line\n{SECRET}\n")
    return path


# ---------------------------------------------------------------- params


def _bomb(tmp_path: Path, key: str) -> Path:
    """A "billion laughs": 9 levels of 9 aliases each, about 10**9 values in 11 lines."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    section, name = key.split(".")
    lines.append(f"{section}:\n  {name}: *l9")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("key", ["model.hidden", "data.raw_dir"])
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, key):
    start = time.monotonic()
    with pytest.raises(config.ConfigError, match=r"expands its YAML aliases .* over the limit"):
        config.load(_bomb(tmp_path, key))
    assert time.monotonic() - start < 1.0


def test_a_small_alias_bomb_in_a_wrong_place_gives_a_short_message(tmp_path):
    """Under the limit (7380 values) but the wrong type: the message shows the value cut, not
    written out (repr of a shared list was where the time went)."""
    levels = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"&l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]" for n in (1, 2, 3)]
    path = tmp_path / "params.yaml"
    path.write_text(f"data:\n  raw_dir: [{', '.join(levels)}]\n")  # anchors inside the value
    start = time.monotonic()
    with pytest.raises(config.ConfigError, match="data.raw_dir must be str") as info:
        config.load(path)
    assert time.monotonic() - start < 1.0
    assert len(str(info.value)) < 200


def test_aliases_within_the_limit_still_load(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("widths: &w [64, 32]\nmodel:\n  hidden: *w\n")
    raw = config.read_yaml(path)
    assert raw["model"]["hidden"] == [64, 32]


def test_a_huge_params_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "params.yaml"
    mirror = "    - https://example.com/mnist/\n"
    path.write_text("data:\n  mirrors:\n" + mirror * (config.PARAMS_MAX_BYTES // len(mirror) + 1))
    start = time.monotonic()
    with pytest.raises(config.ConfigError, match=r"is over 262\.1 kB .*not read"):
        config.load(path)
    assert time.monotonic() - start < 1.0


def test_a_params_file_at_the_limit_is_still_read(tmp_path):
    path = tmp_path / "params.yaml"
    text = "data:\n  raw_dir: data/raw\n"
    path.write_text(text + "#" * (config.PARAMS_MAX_BYTES - len(text) - 1) + "\n")
    assert config.load(path).data.raw_dir == "data/raw"


def test_a_float_out_of_range_names_the_range_not_the_type(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  timeout_s: 1.0e308\n")
    with pytest.raises(config.ConfigError, match="at most 3600 s .*got 1e\\+308"):
        config.load(path)


def test_the_cli_refuses_an_alias_bomb_in_one_line(tmp_path):
    result = _cli("params", str(tmp_path / "out.yaml"), "--params", str(_bomb(tmp_path, "x.y")))
    _one_error(result, "bomb.yaml", "YAML aliases")
    assert not (tmp_path / "out.yaml").exists()


# ---------------------------------------------------------------- keep


def _metrics(tmp_path: Path, name: str = "box") -> Path:
    """A finished run's metrics folder: what keep needs, clean."""
    metrics = tmp_path / "metrics"
    (metrics / "train" / "jax-scan").mkdir(parents=True)
    (metrics / "summary.json").write_text(json.dumps({"backends": {}}))
    (metrics / "machine.json").write_text(json.dumps({"name": name}))
    (metrics / "train" / "jax-scan" / "metrics.json").write_text("{}")
    return metrics


def _nothing_kept(results: Path) -> bool:
    return not results.exists() or not any(results.iterdir())


def test_keep_refuses_a_link_to_a_file_outside(tmp_path):
    metrics, results = _metrics(tmp_path), tmp_path / "results"
    (metrics / "train" / "jax-scan" / "notes.txt").symlink_to(_secret(tmp_path))
    with pytest.raises(ReportError, match=r"notes.txt: a symbolic link .*never"):
        keep.keep(metrics, results, extra=())
    assert _nothing_kept(results)


def test_keep_refuses_a_linked_folder(tmp_path):
    metrics, results = _metrics(tmp_path), tmp_path / "results"
    _secret(tmp_path)
    (metrics / "roofline").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(ReportError, match="roofline: a symbolic link"):
        keep.keep(metrics, results, extra=())
    assert _nothing_kept(results)


def test_keep_refuses_a_fifo_without_waiting_on_it(tmp_path):
    metrics, results = _metrics(tmp_path), tmp_path / "results"
    os.mkfifo(metrics / "summary.png")
    start = time.monotonic()
    with pytest.raises(ReportError, match=r"summary.png: a FIFO \(named pipe\), not a file"):
        keep.keep(metrics, results, extra=())
    assert time.monotonic() - start < 5 and _nothing_kept(results)


def test_keep_refuses_a_linked_params_file(tmp_path):
    metrics, results = _metrics(tmp_path), tmp_path / "results"
    linked = tmp_path / "params.yaml"
    linked.symlink_to(_secret(tmp_path))
    with pytest.raises(ReportError, match="params.yaml: a symbolic link"):
        keep.keep(metrics, results, extra=(str(linked),))
    assert _nothing_kept(results)


def test_keep_copies_plain_files_as_before(tmp_path):
    metrics = _metrics(tmp_path)
    dest = keep.keep(metrics, tmp_path / "results", extra=())
    assert dest == tmp_path / "results" / "box"
    assert (dest / "metrics" / "train" / "jax-scan" / "metrics.json").read_text() == "{}"


def test_keep_with_an_empty_name_refuses_rather_than_use_the_machines(tmp_path):
    metrics, results = _metrics(tmp_path, name="box"), tmp_path / "results"
    result = _cli("keep", "--metrics", str(metrics), "--results", str(results), "--name", "")
    _one_error(result, "machine name '' is not one plain folder name", "empty")
    assert not results.exists()


def test_keep_refuses_a_name_too_long_for_the_file_system(tmp_path):
    metrics, results = _metrics(tmp_path), tmp_path / "results"
    result = _cli("keep", "--metrics", str(metrics), "--results", str(results), "--name", "a" * 300)
    line = _one_error(result, "machine name of 300 characters: at most")
    longest = int(line.split("at most ")[1].split()[0])
    assert 0 < longest < 255
    assert not results.exists()
    dest = keep.keep(metrics, results, "b" * longest, extra=())  # the longest name it allows
    assert dest.is_dir() and not list(results.glob(".*"))


def test_keep_refuses_an_over_long_name_from_machine_json(tmp_path):
    metrics, results = _metrics(tmp_path, name="c" * 300), tmp_path / "results"
    with pytest.raises(ReportError, match="300 characters"):
        keep.keep(metrics, results, extra=())
    assert _nothing_kept(results)


@pytest.mark.parametrize(
    "code, message", [(errno.ENOSPC, "no space left in {results}"), (errno.EIO, "nothing was kept")]
)
def test_keep_that_cannot_copy_names_the_destination_and_keeps_nothing(
    tmp_path, monkeypatch, code, message
):
    """The copy fails as a full disk makes it (the errno's file: the source in metrics/)."""
    metrics, results = _metrics(tmp_path), tmp_path / "results"

    def failing_copy(src, dst, **kwargs):
        raise OSError(code, os.strerror(code), str(src))

    monkeypatch.setattr(keep.shutil, "copy2", failing_copy)
    with pytest.raises(UserError) as info:
        keep.keep(metrics, results, extra=())
    assert message.format(results=results) in str(info.value), info.value
    assert "\n" not in str(info.value) and _nothing_kept(results)


# ---------------------------------------------------------------- gather


def _run(
    runs: Path, name: str, node: str, summary: dict | None = None, machine: dict | None = None
) -> Path:
    """A finished task's folder: status.txt, run.log, summary.json, machine.json."""
    d = runs / name
    d.mkdir(parents=True)
    row = {
        "epoch_time_median_s": 1.0,
        "epoch_time_min_s": 0.9,
        "epoch_time_max_s": 1.1,
        "val_acc": 0.97,
    }
    summary = summary if summary is not None else {"backends": {"jax-scan": row}, "settings": {}}
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "machine.json").write_text(json.dumps({"name": "box", "id": "aaaa", **(machine or {})}))
    (d / "status.txt").write_text(f"status=ok\nexit_code=0\nnode={node}\njob=5_{node}\n")
    (d / "run.log").write_text("compare: done\n")
    return d


def _failed(d: Path) -> Path:
    (d / "status.txt").write_text("status=failed\nfailed_step=train\nexit_code=1\nnode=f1\n")
    return d


def _gather(runs: Path, out: Path) -> str:
    """gather in a subprocess with a time limit (a FIFO read would hang it): machines.md."""
    result = _cli("gather", str(runs), "--no-references", "--out", str(out))
    # every run bad: the report is written, and gather fails saying so in one line
    assert result.returncode == 0 or (
        result.returncode == 1 and result.stderr.startswith("error: no run succeeded")
    ), result.stderr
    return (out / "machines.md").read_text()


def test_gather_does_not_read_a_run_log_that_links_outside(tmp_path):
    runs = tmp_path / "runs"
    d = _failed(_run(runs, "box.aaaa.f1.5_1", "f1"))
    (d / "run.log").unlink()
    (d / "run.log").symlink_to(_secret(tmp_path))
    text = _gather(runs, tmp_path / "out")
    assert SECRET not in text
    assert "run.log: a symbolic link" in text


def test_gather_does_not_follow_a_linked_status(tmp_path):
    runs = tmp_path / "runs"
    d = _run(runs, "box.aaaa.n1.5_1", "n1")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "status.txt").write_text("status=ok\nnode=n1\n")
    (d / "status.txt").unlink()
    (d / "status.txt").symlink_to(outside / "status.txt")
    g = gather.gather(runs, None)
    assert [r.folder.name for r in g.failed] == ["box.aaaa.n1.5_1"]
    assert "status.txt: a symbolic link" in g.failed[0].problem
    assert g.kinds == []


def test_gather_lists_a_linked_run_folder_without_counting_it(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "box.aaaa.n1.5_1", "n1")
    elsewhere = _run(tmp_path / "elsewhere", "box.aaaa.n2.5_2", "n2")
    (runs / "box.aaaa.n2.5_2").symlink_to(elsewhere, target_is_directory=True)
    g = gather.gather(runs, None)
    assert [len(k.runs) for k in g.kinds] == [1]
    assert [r.folder.name for r in g.failed] == ["box.aaaa.n2.5_2"]
    assert "a symbolic link" in g.failed[0].problem and "not followed" in g.failed[0].problem
    text = gather.markdown(g, runs)
    assert "(2 nodes)" not in text and "compare: done" not in text.split("### Failed")[1]
    assert "(not read: box.aaaa.n2.5_2 is a symbolic link)" in text


def test_gather_reads_no_slurm_log_through_a_linked_logs_folder(tmp_path):
    runs = tmp_path / "runs"
    (runs / "jobs" / "1").mkdir(parents=True)
    (runs / "jobs" / "1" / "job.json").write_text(json.dumps({"job": "7", "tasks": [{"task": 0}]}))
    outside = _secret(tmp_path).parent
    (outside / "7_0.out").write_text(f"{SECRET}\n")
    (runs / "logs").symlink_to(outside, target_is_directory=True)
    text = _gather(runs, tmp_path / "out")
    assert SECRET not in text and "(not read: logs is a symbolic link)" in text
    assert "runs, 0 ok" in text  # logs/ is not taken for a run folder either


def test_a_linked_jobs_folder_is_one_line_naming_it(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "box.aaaa.n1.5_1", "n1")
    (tmp_path / "elsewhere").mkdir()
    (runs / "jobs").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    result = _cli("gather", str(runs), "--no-references", "--out", str(tmp_path / "out"))
    _one_error(result, f"{runs / 'jobs'}: a symbolic link", "not followed")


@pytest.mark.parametrize("fifo", ["status.txt", "run.log", "summary.json", "machine.json"])
def test_gather_never_waits_on_a_fifo_in_a_run(tmp_path, fifo):
    runs = tmp_path / "runs"
    d = _run(runs, "box.aaaa.n1.5_1", "n1")
    if fifo == "run.log":
        _failed(d)  # its log's last line is shown only for a failed run
    (d / fifo).unlink()
    os.mkfifo(d / fifo)
    text = _gather(runs, tmp_path / "out")  # returns within LIMIT_S, or the test fails
    assert f"{fifo}: a FIFO (named pipe), not a regular file" in text


def test_gather_never_waits_on_a_fifo_as_slurms_log(tmp_path):
    runs = tmp_path / "runs"
    (runs / "jobs" / "1").mkdir(parents=True)
    (runs / "jobs" / "1" / "job.json").write_text(json.dumps({"job": "7", "tasks": [{"task": 0}]}))
    (runs / "logs").mkdir()
    os.mkfifo(runs / "logs" / "7_0.out")
    text = _gather(runs, tmp_path / "out")
    assert "7_0.out: a FIFO (named pipe), not a regular file" in text


@pytest.mark.parametrize(
    "tasks",
    [[1, 2], "abc", {"task": 0}, [{"task": "0"}], [{"task": True}], [{"target": "cpu"}]],
)
def test_a_malformed_job_record_is_one_line_naming_it(tmp_path, tasks):
    runs = tmp_path / "runs"
    (runs / "jobs" / "20260101-1").mkdir(parents=True)
    record = runs / "jobs" / "20260101-1" / "job.json"
    record.write_text(json.dumps({"job": "5", "tasks": tasks}))
    result = _cli("gather", str(runs), "--no-references", "--out", str(tmp_path / "out"))
    _one_error(result, f"{record}: tasks must be a list of")


def test_a_linked_job_record_is_one_line_naming_it(tmp_path):
    runs = tmp_path / "runs"
    (runs / "jobs" / "1").mkdir(parents=True)
    record = runs / "jobs" / "1" / "job.json"
    record.symlink_to(_secret(tmp_path))
    result = _cli("gather", str(runs), "--no-references", "--out", str(tmp_path / "out"))
    _one_error(result, f"{record}: a symbolic link")


ROW = {"epoch_time_median_s": 1.0, "epoch_time_min_s": 0.9, "epoch_time_max_s": 1.1}


@pytest.mark.parametrize(
    "summary, machine, message",
    [
        ({"backends": {"b": {**ROW, "val_acc": 7.5}}}, {}, "val_acc must be a number in [0, 1]"),
        (
            {"backends": {"b": {**ROW, "runs": 3, "epoch_time_s": 1, "run_min_s": -1}}},
            {},
            "run_min_s must be finite and > 0, got -1",
        ),
        ({"backends": {"b": {**ROW, "runs": "3", "val_acc": 0.9}}}, {}, "runs must be an int"),
        ({"backends": {"b": {**ROW, "val_acc": "0.9"}}}, {}, "val_acc must be a number"),
        ({"backends": {"b": {**ROW, "val_acc": 0.9}}, "settings": []}, {}, "settings must be"),
        ({"backends": {"b": {**ROW, "val_acc": 0.9, "disturbed": False}}}, {}, "unstable must"),
        ({"backends": {"b": {**ROW, "val_acc": 0.9}}}, {"fingerprint": "x"}, "fingerprint must"),
        ({"backends": {"b": {**ROW, "val_acc": 0.9}}}, {"fingerprint": {"gpus": [1]}}, "gpus"),
        ({"backends": {"b": {**ROW, "val_acc": 0.9}}}, {"name": ["x"]}, "name must be a string"),
        ({"backends": [1]}, {}, "backends must be an object"),
        ({"backends": {"b": {**ROW, "val_acc": 0.9, "epoch_time_s": 10**400}}}, {}, "finite"),
        ({"backends": {"b": {**ROW, "val_acc": 0.9, "epoch_time_min_s": 2}}}, {}, "<= epoch_time"),
    ],
)
def test_a_malformed_summary_or_machine_fails_that_run_naming_the_file(
    tmp_path, summary, machine, message
):
    runs = tmp_path / "runs"
    _run(runs, "box.aaaa.n1.5_1", "n1")  # a good run beside it: still gathered
    bad = _run(runs, "box.aaaa.n2.5_2", "n2", summary, machine)
    g = gather.gather(runs, None)
    assert [r.folder for r in g.failed] == [bad]
    assert message in g.failed[0].problem
    assert str(bad / ("machine.json" if machine else "summary.json")) in g.failed[0].problem
    assert [len(k.runs) for k in g.kinds] == [1]
    text = _gather(runs, tmp_path / "out")  # and the command prints it, no traceback
    assert message in text and "7.5" not in text.split("## The cluster")[0]


def test_an_oversized_summary_is_not_read(tmp_path):
    runs = tmp_path / "runs"
    bad = _run(runs, "box.aaaa.n1.5_1", "n1")
    with open(bad / "summary.json", "a") as f:
        f.write(" " * gather.MAX_BYTES)
    g = gather.gather(runs, None)
    assert "summary.json: over 1.0 MB" in g.failed[0].problem


def test_gather_reads_a_good_run_as_before(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "box.aaaa.n1.5_1", "n1")
    g = gather.gather(runs, None)
    assert g.failed == [] and [k.column.cells["jax-scan"].epoch_s for k in g.kinds] == [1.0]


# Any JSON value, with the edges that break naive code: huge ints, NaN, infinities, nesting.
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
ROW_KEYS = ("runs", "epoch_time_s", "run_min_s", "run_max_s", "val_acc", "disturbed")
ROW_KEYS += ("unstable", "epoch_time_median_s", "epoch_time_min_s", "epoch_time_max_s")
ROW_KEYS += ("epoch_time_lo_s", "epoch_time_hi_s", report.SPEEDUP_KEY, "speedup_lo", "speedup_hi")
# where a value goes: summary.json's backends.b.<key> or top level, machine.json's top level or
# its fingerprint
PLACES = st.one_of(
    st.tuples(st.just("row"), st.sampled_from(ROW_KEYS)),
    st.tuples(st.just("summary"), st.sampled_from(["settings", "backends"])),
    st.tuples(st.just("machine"), st.sampled_from(["name", "id", "fingerprint"])),
    st.tuples(st.just("fingerprint"), st.sampled_from(["cpu_flags", "gpus", "frameworks", "cpu"])),
)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(place=PLACES, value=JSON_VALUES)
def test_any_value_anywhere_is_gathered_or_refused_never_a_traceback(tmp_path, place, value):
    """Every field gather reads, given any JSON value: the run is either refused (listed as
    failed, naming the file) or shown with values in range; never an exception."""
    runs = tmp_path / f"runs-{time.monotonic_ns()}"  # tmp_path is shared by the examples
    row = {**ROW, "val_acc": 0.9, "runs": 1, "disturbed": False, "unstable": False}
    row["unsteady"] = False
    summary, machine = {"backends": {"b": row}, "settings": {}}, {"fingerprint": {}}
    where, key = place
    target = {"row": row, "summary": summary, "machine": machine}.get(where)
    (target if target is not None else machine["fingerprint"])[key] = value
    _run(runs, "box.aaaa.n1.5_1", "n1", summary, machine)

    g = gather.gather(runs, None)
    gather.markdown(g, runs)  # draws every run without an exception
    if g.failed:
        assert "box.aaaa.n1.5_1/" in g.failed[0].problem, g.failed[0].problem
        return
    (cell,) = g.kinds[0].column.cells.values()
    assert 0 < cell.low_s <= cell.high_s and 0 < cell.epoch_s and 0 <= cell.val_acc <= 1
    assert cell.speedup is None or all(v is None or 0 < v < math.inf for v in cell.speedup)


# ---------------------------------------------------------------- submit.py


def _submit():
    spec = importlib.util.spec_from_file_location(
        "untrusted_submit", ROOT / "scripts" / "slurm" / "submit.py"
    )
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_submit_with_unbalanced_quotes_is_one_line(tmp_path, capsys):
    args = ["--results", str(tmp_path / "runs"), "--dry-run", "-p 'cpu"]
    assert _submit().main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: target "-p \'cpu": No closing quotation')
    assert err.count("\n") == 1 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("dry_run", [True, False])
def test_submit_with_results_a_file_is_one_line(tmp_path, capsys, dry_run):
    results = tmp_path / "passwd"
    results.write_text("root:x:0:0\n")
    args = ["--results", str(results), *(["--dry-run"] if dry_run else []), "cpu"]
    assert _submit().main(args) == 1
    err = capsys.readouterr().err
    assert err == f"error: --results {results}: not a folder (the shared folder for the runs)\n"
    assert results.read_text() == "root:x:0:0\n"


def test_submit_with_results_under_a_file_is_one_line(tmp_path, capsys):
    results = tmp_path / "passwd" / "runs"
    (tmp_path / "passwd").write_text("root:x:0:0\n")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {}}))
    assert _submit().main(["--results", str(results), "--params", str(params), "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --results {results}: cannot create ") and "Not a dir" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "field, value", [("val_acc", 7.5), ("run_min_s", -1), ("epoch_time_s", "3")]
)
def test_report_refuses_a_reference_summary_with_impossible_numbers(tmp_path, field, value):
    """results/ comes from other machines and users: `mnistbench report` checks every field it
    draws, and names the file and the field instead of printing the number."""
    results = tmp_path / "results"
    d = results / "other-box"
    d.mkdir(parents=True)
    row = {"epoch_time_s": 2.0, "run_min_s": 1.5, "run_max_s": 2.5, "val_acc": 0.97, "runs": 3}
    row[field] = value
    (d / "summary.json").write_text(json.dumps({"backends": {"jax-scan": row}, "settings": {}}))
    (d / "machine.json").write_text(json.dumps({"name": "other-box", "id": "a" * 12}))
    with pytest.raises(report.ReportError, match=rf"summary.json: backends.jax-scan.{field}"):
        report.write(results, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.parametrize(
    "command", [["machine", "--out", "{f}/machine.json"], ["report", "--out", "{f}"]]
)
def test_an_out_that_is_a_file_where_a_folder_goes_is_one_line(tmp_path, monkeypatch, command):
    """--out naming a file where a folder goes: one `error:` line naming it, no traceback."""
    from click.testing import CliRunner

    from mnistbench.cli import main as cli

    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    args = [a.replace("{f}", str(blocker)) for a in command]
    if command[0] == "report":
        args += ["--results", str(tmp_path / "none"), "--no-local"]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 1, done.output
    assert done.output.startswith("error: ") and "Traceback" not in done.output
    assert str(blocker) in done.output and blocker.read_text() == "not a folder\n"


# ---------------------------------------------------------------- a full disk under --out


def _full_disk_writes(monkeypatch) -> None:
    """Every file write fails as on a full disk: write() raises ENOSPC naming no file (as a
    real one does: the folder written to is known only to the caller)."""
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fd, *args, **kwargs):
            self.file = real_fdopen(fd, *args, **kwargs)

        def __getattr__(self, name):  # reading goes on as usual
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs.os, "fdopen", Full)


@pytest.mark.parametrize("command", ["report", "gather"])
def test_an_out_on_a_full_disk_names_that_folder(tmp_path, monkeypatch, command):
    from click.testing import CliRunner

    from mnistbench.cli import main as cli

    runs, out = tmp_path / "runs", tmp_path / "deep" / "out"
    _run(runs, "box.aaaa.n1.5_1", "n1")
    monkeypatch.chdir(tmp_path)
    _full_disk_writes(monkeypatch)
    args = {
        "report": ["report", "--results", str(tmp_path / "none"), "--no-local"],
        "gather": ["gather", str(runs), "--no-references"],
    }[command]
    done = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert done.exit_code == 1, done.output
    assert done.output.startswith(f"error: no space left in {out} ("), done.output
    assert done.output.count("\n") == 1 and "Traceback" not in done.output
    assert list(out.iterdir()) == []  # no temporary file left behind


# ---------------------------------------------------------------- report's reference folders

GOOD_ROW = {"epoch_time_s": 2.0, "run_min_s": 1.5, "run_max_s": 2.5, "val_acc": 0.97, "runs": 3}


def _reference(results: Path, name: str, row: dict | None = None) -> Path:
    """results/<name>/ as keep writes it: summary.json and machine.json, clean."""
    d = results / name
    d.mkdir(parents=True)
    summary = {"backends": {"jax-scan": row or GOOD_ROW}, "settings": {}}
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "machine.json").write_text(json.dumps({"name": name, "id": "a" * 12}))
    return d


def _report(results: Path, out: Path) -> subprocess.CompletedProcess:
    """`mnistbench report` over references only, in a subprocess with a time limit."""
    return _cli("report", "--results", str(results), "--no-local", "--out", str(out))


def test_report_never_reads_a_reference_file_through_a_link(tmp_path):
    """A summary.json linking to a file outside with numbers in range: refused, not drawn."""
    results, out = tmp_path / "results", tmp_path / "out"
    d = _reference(results, "other-box")
    outside = _secret(tmp_path).parent / "numbers.json"
    row = {**GOOD_ROW, "epoch_time_s": 1234.5}
    outside.write_text(json.dumps({"backends": {"jax-scan": row}, "settings": {}}))
    (d / "summary.json").unlink()
    (d / "summary.json").symlink_to(outside)
    _one_error(_report(results, out), f"{d / 'summary.json'}: a symbolic link", "not followed")
    assert not out.exists()


def test_report_never_waits_on_a_fifo_in_a_reference(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    d = _reference(results, "other-box")
    (d / "machine.json").unlink()
    os.mkfifo(d / "machine.json")
    _one_error(_report(results, out), f"{d / 'machine.json'}: a FIFO (named pipe)", "not read")


def test_report_refuses_a_linked_machine_folder(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    elsewhere = _reference(tmp_path / "elsewhere", "box")
    results.mkdir()
    (results / "box").symlink_to(elsewhere, target_is_directory=True)
    _one_error(_report(results, out), f"{results / 'box'}: a symbolic link", "copy its folder")


def test_report_refuses_an_oversized_reference_file(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    d = _reference(results, "other-box")
    with open(d / "summary.json", "a") as f:
        f.write(" " * report.MAX_BYTES)
    _one_error(_report(results, out), "summary.json: over 1.0 MB")


def test_report_shows_no_half_kept_folder_as_a_machine(tmp_path):
    """An interrupted keep leaves results/.<name>.partial/ whole-looking: never a column."""
    results = tmp_path / "results"
    _reference(results, "box")
    _reference(results, ".k9.partial")
    _reference(results, ".k9.partial-old")
    cols = report.write(results, None, tmp_path / "out")
    assert [c.name for c in cols] == [report.ARTICLE, "box"]
    assert ".k9" not in (tmp_path / "out" / "machines.md").read_text()


def test_keep_refuses_a_run_report_would_refuse(tmp_path):
    """A summary.json with val_acc 7.5 is not copied into results/, where every later report
    would stop on it."""
    metrics, results = _metrics(tmp_path), tmp_path / "results"
    (metrics / "summary.json").write_text(json.dumps({"backends": {"b": {"val_acc": 7.5}}}))
    with pytest.raises(ReportError, match=r"summary.json: backends.b.val_acc must be a number"):
        keep.keep(metrics, results, extra=())
    assert _nothing_kept(results)


# ---------------------------------------------------------------- any result folder

MARK = "followed-7f3a9c"  # in the files outside: shown anywhere, a link was followed
# What summary.json or machine.json may be: JSON text of the drawn content, bytes that are no
# JSON, a link to a file outside (good content, marked), a dangling link, a FIFO, a folder,
# nothing at all, or the drawn content padded past the size cap.
FILE_KINDS = ("json", "garbage", "link", "dangling", "fifo", "folder", "missing", "huge")


class _Hang(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    """A read that waits (a FIFO opened for reading) is interrupted and fails the example:
    signals interrupt blocking system calls, and the handler's exception stops the retry."""

    def alarm(signum, frame):
        raise _Hang(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _place(path: Path, kind: str, content: dict, outside: Path) -> None:
    if kind == "json":
        path.write_text(json.dumps(content))
    elif kind == "garbage":
        path.write_bytes(b'\xff{"backends": ')
    elif kind == "link":
        path.symlink_to(outside)
    elif kind == "dangling":
        path.symlink_to(outside.with_name("gone.json"))
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "huge":
        path.write_text(json.dumps(content) + " " * report.MAX_BYTES)


def _in_range(col: report.Column) -> None:
    """Every number a column would print: positive finite seconds, ordered, val_acc in [0, 1]."""
    for cell in col.cells.values():
        assert 0 < cell.low_s <= cell.high_s < math.inf and 0 < cell.epoch_s < math.inf
        assert 0 <= cell.val_acc <= 1
        assert cell.speedup is None or all(v is None or 0 < v < math.inf for v in cell.speedup)


def _plain_tree(root: Path) -> None:
    for top, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            mode = (Path(top) / name).lstat().st_mode
            assert stat.S_ISREG(mode) or stat.S_ISDIR(mode), Path(top) / name


@settings(
    max_examples=100,
    deadline=None,  # _time_limit instead: a shared machine's pauses are no failure
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    place=PLACES,
    value=JSON_VALUES,
    summary_kind=st.sampled_from(FILE_KINDS),
    machine_kind=st.sampled_from(FILE_KINDS),
    linked_folder=st.booleans(),
)
def test_any_result_folder_is_reported_kept_or_refused_never_a_traceback(
    tmp_path, place, value, summary_kind, machine_kind, linked_folder
):
    """A machine's folder as report (results/<machine>/), keep (a metrics folder) and gather (a
    run folder) find it: any value in any field, each file any kind of file, the folder itself
    a link or not. Each command draws it with numbers in range, keeps it as plain files, or
    refuses it in one line; never a traceback, a hang or a value read through a link."""
    base = tmp_path / f"ex-{time.monotonic_ns()}"  # tmp_path is shared by the examples
    outside = base / "outside"
    outside.mkdir(parents=True)
    good = {**ROW, "val_acc": 0.9}
    (outside / "summary.json").write_text(json.dumps({"backends": {MARK: good}}))
    (outside / "machine.json").write_text(json.dumps({"name": MARK, "fingerprint": {"cpu": MARK}}))

    row = {**ROW, "val_acc": 0.9, "runs": 1, "disturbed": 0, "unstable": 0, "unsteady": 0}
    summary, machine = {"backends": {"b": row}, "settings": {}}, {"name": "box", "fingerprint": {}}
    where, key = place
    target = {"row": row, "summary": summary, "machine": machine}.get(where)
    (target if target is not None else machine["fingerprint"])[key] = value

    real = base / "real" / "box"
    real.mkdir(parents=True)
    _place(real / "summary.json", summary_kind, summary, outside / "summary.json")
    _place(real / "machine.json", machine_kind, machine, outside / "machine.json")
    results, runs = base / "results", base / "runs"
    results.mkdir()
    if linked_folder:
        (results / "box").symlink_to(real, target_is_directory=True)
    else:
        os.rename(real, results / "box")
    folder = results / "box"

    with _time_limit(LIMIT_S):
        try:  # report: the reference drawn in range, or one line
            cols = report.columns(results, None)
        except ReportError as e:
            assert "\n" not in str(e) and str(folder) in str(e), str(e)
        else:
            assert MARK not in report.markdown(cols)
            for col in cols[1:]:
                _in_range(col)

        kept = base / "kept"
        try:  # keep: plain files only, and what it keeps report draws in range
            dest = keep.keep(folder, kept, "k", extra=())
        except UserError as e:
            assert "\n" not in str(e), str(e)
            assert _nothing_kept(kept)
        else:
            _plain_tree(dest)
            try:
                cols = report.columns(kept, None)
            except ReportError:
                pass  # what keep does not check (a summary without backends)
            else:
                assert MARK not in report.markdown(cols)
                for col in cols[1:]:
                    _in_range(col)

        runs.mkdir()  # gather: the same folder as a node's run
        run = runs / "box.aaaa.n1.5_1"
        if linked_folder:
            run.symlink_to(real if real.exists() else folder, target_is_directory=True)
        else:
            os.rename(folder, run)
            (run / "status.txt").write_text("status=ok\nexit_code=0\nnode=n1\njob=5_1\n")
        g = gather.gather(runs, None)
        text = gather.markdown(g, runs)
        assert MARK not in text
        for kind in g.kinds:
            _in_range(kind.column)
