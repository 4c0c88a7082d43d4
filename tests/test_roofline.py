"""The roofline: FLOPs counted by hand, the matmul measurement, and the file compare reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mnistbench import compare, config, roofline


def test_flops_of_a_small_model_match_a_hand_count():
    """784 -> 4 (ReLU) -> 10: two products per example, counted by hand."""
    flops = roofline.model_flops((4,), batch_size=8, num_train=100, num_test=50)
    first, second = 2 * 784 * 4, 2 * 4 * 10  # 6272 and 80 FLOPs forward per example
    assert flops.forward_per_example == 6352
    # backward: both weight gradients, and the input gradient of the second layer only
    # (the first layer's input is the data: nobody asks for its gradient)
    assert flops.train_per_example == 6352 + (first + second) + second == 12784
    assert flops.train == 12784 * 100
    assert flops.eval == 6352 * 50
    assert flops.per_train_step == 12784 * 8
    assert flops.total == flops.train + flops.eval


def test_the_article_model_costs_what_design_md_says():
    """DESIGN.md: about 39.5 GFLOP per epoch, 36.8 training and 2.7 evaluation."""
    flops = roofline.model_flops((128, 256), batch_size=32, num_train=60000, num_test=10000)
    assert flops.train == 613_376 * 60000  # 2*(100352+32768+2560) fwd, x2 bwd, less 2*100352
    assert round(flops.train / 1e9, 1) == 36.8
    assert round(flops.eval / 1e9, 1) == 2.7
    assert round(flops.total / 1e9, 1) == 39.5


def test_roofline_time_is_flops_over_the_peak():
    cfg = config.from_dict({"data": {"limit_train": 1000, "limit_test": 200}})
    measured = {"matmul_gflops": 50.0, "peak_source": "torch 8x8x8",
                "by_shape": {"torch": {"8x8x8": 50.0}}, "device": "cpu"}
    result = roofline.roofline(cfg, measured, threads_used=2)
    flops = roofline.model_flops((128, 256), 32, 1000, 200)
    assert result["gflop_per_epoch"] == pytest.approx(flops.total / 1e9)
    assert result["roofline_epoch_s"] == pytest.approx(flops.total / 1e9 / 50.0)
    assert result["train_examples"] == 1000 and result["threads"] == 2


def test_measurement_reports_the_peak_and_where_it_came_from(monkeypatch):
    monkeypatch.setitem(roofline.SQUARE, "cpu", 128)  # small: the test is about the bookkeeping
    monkeypatch.setattr(roofline, "MIN_TIME_S", 0.01)
    measured = roofline.measure_matmul_gflops(None, "cpu", hidden=(4,), batch_size=8)
    assert set(measured["by_shape"]) == {"torch", "jax"}
    shapes = ["8x784x4", "784x8x4", "8x4x10", "4x8x10", "10000x784x4", "128x128x128"]
    for per_shape in measured["by_shape"].values():
        assert list(per_shape) == shapes and all(v > 0 for v in per_shape.values())
    framework, shape = measured["peak_source"].split()
    assert measured["matmul_gflops"] == measured["by_shape"][framework][shape]
    assert measured["matmul_gflops"] == max(v for per in measured["by_shape"].values()
                                            for v in per.values())
    assert measured["device"] == "cpu"


@pytest.mark.slow
def test_cli_writes_the_file_compare_reads(tmp_path):
    """`mnistbench roofline` in its own process (as the DVC stage runs it), one thread."""
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"train": {"threads": 1, "device": "cpu"}}))
    subprocess.run([sys.executable, "-m", "mnistbench.cli", "roofline", "--params", str(params),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    path = tmp_path / "roofline" / "metrics.json"
    written = json.loads(path.read_text())
    assert written["threads"] == 1 and written["env"]["cpus_usable"] == 1
    assert written["gflop_per_epoch"] == pytest.approx(39.51616)
    read = compare.load_roofline(path)  # the agreement with compare: it accepts this file
    assert read["roofline_epoch_s"] == pytest.approx(39.51616 / written["matmul_gflops"])
    assert not list((tmp_path / "roofline").glob(".*partial"))
