"""The roofline: FLOPs counted by hand, the matmul measurement, and the file compare reads;
and the kernel bound (mnistbench.kernel_bound) it writes into that file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mnistbench import compare, config, kernel_bound, roofline


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


def test_the_article_model_costs_39_5_gflop_per_epoch():
    """About 39.5 GFLOP per epoch, 36.8 training and 2.7 evaluation (docs/bounds.md)."""
    flops = roofline.model_flops((128, 256), batch_size=32, num_train=60000, num_test=10000)
    assert flops.train == 613_376 * 60000  # 2*(100352+32768+2560) fwd, x2 bwd, less 2*100352
    assert round(flops.train / 1e9, 1) == 36.8
    assert round(flops.eval / 1e9, 1) == 2.7
    assert round(flops.total / 1e9, 1) == 39.5


def _small_run() -> tuple[config.Config, dict]:
    """A 1,000 / 200 image config and a measured peak of 50 GFLOP/s (one torch shape)."""
    cfg = config.from_dict({"data": {"limit_train": 1000, "limit_test": 200}})
    measured = {
        "matmul_gflops": 50.0,
        "peak_source": "torch 8x8x8",
        "by_shape": {"torch": {"8x8x8": 50.0}},
        "device": "cpu",
    }
    return cfg, measured


def test_roofline_time_is_flops_over_the_peak():
    cfg, measured = _small_run()
    result = roofline.roofline(cfg, measured, threads_used=2)
    flops = roofline.model_flops((128, 256), 32, 1000, 200)
    assert result["gflop_per_epoch"] == pytest.approx(flops.total / 1e9)
    assert result["roofline_epoch_s"] == pytest.approx(flops.total / 1e9 / 50.0)
    assert result["train_examples"] == 1000 and result["threads"] == 2


def test_measurement_reports_the_peak_and_where_it_came_from(monkeypatch):
    monkeypatch.setitem(roofline.SQUARE, "cpu", 128)  # small: the test is about the bookkeeping
    monkeypatch.setattr(kernel_bound, "MIN_TIME_S", 0.01)  # the shared timer's
    measured = roofline.measure_matmul_gflops(None, "cpu", hidden=(4,), batch_size=8)
    assert set(measured["by_shape"]) == {"torch", "jax"}
    shapes = ["8x784x4", "784x8x4", "8x4x10", "4x8x10", "10000x784x4", "128x128x128"]
    for per_shape in measured["by_shape"].values():
        assert list(per_shape) == shapes and all(v > 0 for v in per_shape.values())
    framework, shape = measured["peak_source"].split()
    assert measured["matmul_gflops"] == measured["by_shape"][framework][shape]
    assert measured["matmul_gflops"] == max(
        v for per in measured["by_shape"].values() for v in per.values()
    )
    assert measured["device"] == "cpu"


# `make test` measures the same kernels in-process (test_kernel_parts_are_timed_...)
@pytest.mark.long("`mnistbench roofline` in its own process, every kernel timed (~31 CPU-s)")
def test_cli_writes_the_file_compare_reads(tmp_path):
    """`mnistbench roofline` in its own process (as the DVC stage runs it), one thread."""
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"train": {"threads": 1, "device": "cpu"}}))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mnistbench",
            "roofline",
            "--params",
            str(params),
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    path = tmp_path / "roofline" / "metrics.json"
    written = json.loads(path.read_text())
    assert written["threads"] == 1 and written["env"]["cpus_usable"] == 1
    assert written["gflop_per_epoch"] == pytest.approx(39.51616)
    read = compare.load_roofline(path)  # the agreement with compare: it accepts this file
    assert read["roofline_epoch_s"] == pytest.approx(39.51616 / written["matmul_gflops"])
    assert not list((tmp_path / "roofline").glob(".*partial"))
    assert set(written["kernel_bound_epoch_s"]) == {"torch", "jax"}
    for fw, bound in written["kernel_bound_epoch_s"].items():
        parts = written["kernel_bound"][fw]
        assert parts["steps"] == 1875 and len(parts["products_s"]) == 8
        assert bound == pytest.approx(
            1875 * (sum(parts["products_s"].values()) + parts["optimizer_s"])
            + sum(parts["eval_products_s"].values())
        )
        assert bound > 0


# ------------------------------------------------------------------ the kernel bound


def test_step_products_are_the_products_model_flops_counts():
    """784 -> 4 -> 10 at batch 8: forward both layers, then backward from the last layer;
    the first layer has no input gradient. Their FLOPs are model_flops' per-step count."""
    products = kernel_bound.step_products((4,), batch_size=8)
    assert [p.name for p in products] == [
        "forward 1 8x784x4",
        "forward 2 8x4x10",
        "weight grad 2 4x8x10",
        "input grad 2 8x10x4",
        "weight grad 1 784x8x4",
    ]
    flops = roofline.model_flops((128, 256), batch_size=32, num_train=60000, num_test=10000)
    assert sum(p.flops for p in kernel_bound.step_products((128, 256), 32)) == flops.per_train_step
    evals = kernel_bound.eval_products((128, 256), num_test=10000)
    assert [p.name for p in evals] == [
        "eval forward 1 10000x784x128",
        "eval forward 2 10000x128x256",
        "eval forward 3 10000x256x10",
    ]
    assert sum(p.flops for p in evals) == flops.eval


def _parts(step_products_s: list[float], optimizer_s: float, eval_s: list[float]) -> dict:
    return {
        "products_s": {f"p{i}": t for i, t in enumerate(step_products_s)},
        "optimizer_s": optimizer_s,
        "eval_products_s": {f"e{i}": t for i, t in enumerate(eval_s)},
    }


def test_kernel_bound_is_the_parts_summed_over_an_epoch():
    """1000 examples at batch 64: torch trains 16 steps (the last one smaller, charged as a
    full one), jax-scan 15 (the remainder dropped)."""
    parts = {"torch": _parts([1e-5, 2e-5], 3e-5, [1e-3, 2e-3]), "jax": _parts([4e-5], 1e-5, [5e-4])}
    result = kernel_bound.kernel_bound(parts, num_train=1000, batch_size=64)
    assert result["kernel_bound_epoch_s"] == {
        "torch": pytest.approx(16 * 6e-5 + 3e-3),
        "jax": pytest.approx(15 * 5e-5 + 5e-4),
    }
    torch_parts = result["kernel_bound"]["torch"]
    assert torch_parts["steps"] == 16 and torch_parts["step_s"] == pytest.approx(6e-5)
    assert torch_parts["eval_s"] == pytest.approx(3e-3)
    assert torch_parts["products_s"] == parts["torch"]["products_s"]  # the parts are kept
    assert result["kernel_bound"]["jax"]["steps"] == 15


def test_roofline_file_has_the_kernel_bound_only_when_measured():
    cfg, measured = _small_run()
    assert "kernel_bound_epoch_s" not in roofline.roofline(cfg, measured, threads_used=2)
    parts = {"torch": _parts([1e-5], 1e-5, [1e-4])}
    result = roofline.roofline(cfg, measured, 2, kernel_parts=parts)
    assert result["kernel_bound_epoch_s"] == {"torch": pytest.approx(32 * 2e-5 + 1e-4)}
    assert result["roofline_epoch_s"] == pytest.approx(result["gflop_per_epoch"] / 50.0)


def test_kernel_parts_are_timed_for_each_product_and_adam(monkeypatch):
    """Real timers, tiny model and repeats: the bookkeeping, not the speed."""
    monkeypatch.setattr(kernel_bound, "MIN_TIME_S", 0.005)
    monkeypatch.setattr(kernel_bound, "MAX_INNER", 4)
    monkeypatch.setattr(kernel_bound, "ADAM_CALLS", 2)
    cfg = config.from_dict({"model": {"hidden": [4]}, "train": {"batch_size": 8}})
    parts = kernel_bound.measure_kernel_parts(cfg, "cpu", num_test=50)
    assert set(parts) == {"torch", "jax"}
    names = [p.name for p in kernel_bound.step_products((4,), 8)]
    for per_fw in parts.values():
        assert list(per_fw["products_s"]) == names
        assert list(per_fw["eval_products_s"]) == [
            "eval forward 1 50x784x4",
            "eval forward 2 50x4x10",
        ]
        times = [
            *per_fw["products_s"].values(),
            per_fw["optimizer_s"],
            *per_fw["eval_products_s"].values(),
        ]
        assert all(0 < t < 1 for t in times)


def test_torch_adam_kernels_do_what_the_rows_adam_step_does():
    """The kernel bound times fused Adam's kernels without Optimizer.step's Python: the same
    update, to the bit, as the rows' optimizer (backends/_torch_common.adam)."""
    import torch

    from mnistbench import models
    from mnistbench.backends import _torch_common

    def model_with_grads():
        torch.manual_seed(0)
        model = models.torch_mlp((8,))
        for i, p in enumerate(model.parameters()):
            p.grad = torch.full_like(p, 0.01 * (i + 1))
        return model

    stepped, direct = model_with_grads(), model_with_grads()
    opt_a = _torch_common.adam(torch, stepped.parameters(), lr=1e-3)
    opt_b = _torch_common.adam(torch, direct.parameters(), lr=1e-3)
    for _ in range(3):
        opt_a.step()
    opt_b.step()
    update = kernel_bound.fused_adam_kernels(torch, opt_b)
    update()
    update()
    for a, b in zip(stepped.parameters(), direct.parameters()):
        assert torch.equal(a, b)
        assert torch.equal(opt_a.state[a]["exp_avg_sq"], opt_b.state[b]["exp_avg_sq"])
        assert opt_a.state[a]["step"].item() == opt_b.state[b]["step"].item() == 3
