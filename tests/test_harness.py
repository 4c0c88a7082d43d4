"""The harness: its clock must include asynchronous work; its summary reports epoch 1 apart
and the median of the steady epochs (the keys themselves: tests/test_metrics.py)."""

from __future__ import annotations

import threading
import time

import pytest

from mnistbench import harness, interference

WORK_S = 0.3  # seconds of "device" work each pass dispatches asynchronously


class AsyncTrainer:
    """Returns at once from each pass, like JAX or CUDA dispatch; the work finishes later."""

    device, num_train, num_test = "cpu", 100, 10

    def __init__(self):
        self._pending: list[threading.Thread] = []

    def _dispatch(self) -> None:
        worker = threading.Thread(target=time.sleep, args=(WORK_S,))
        worker.start()
        self._pending.append(worker)

    def train_epoch(self) -> float:
        self._dispatch()
        return 0.5

    def evaluate(self) -> tuple[float, float]:
        self._dispatch()
        return 0.4, 0.9

    def sync(self) -> None:
        for worker in self._pending:
            worker.join()
        self._pending.clear()

    def num_params(self) -> int:
        return 0


def test_clock_includes_asynchronously_dispatched_work():
    history = harness.run(AsyncTrainer(), epochs=2)
    for epoch in history:
        assert epoch.train_time_s >= WORK_S
        assert epoch.eval_time_s >= WORK_S
        assert epoch.epoch_time_s == pytest.approx(epoch.train_time_s + epoch.eval_time_s)


def test_results_are_read_after_the_clock():
    """The returned values go through float() (a host read) only after the clock stops."""
    calls = []

    class Lazy(AsyncTrainer):
        def train_epoch(self):
            class Value:
                def __float__(self):
                    calls.append("float")
                    return 1.0

            return Value()

    ticks = iter(range(100))

    def clock():
        calls.append("clock")
        return float(next(ticks))

    harness.run(Lazy(), epochs=1, clock=clock)
    assert calls.index("float") > calls.index("clock", 1)


def _epoch(
    n: int, train: float, evaluate: float, acc: float = 0.9, foreign: float = 0.0
) -> harness.Epoch:
    load = interference.Share(train + evaluate, 0.9, foreign, 0.0, 30.0)
    return harness.Epoch(
        n,
        train_loss=1.0 / n,
        val_loss=0.5 / n,
        val_acc=acc,
        train_time_s=train,
        eval_time_s=evaluate,
        load=load,
    )


def test_summary_reports_first_epoch_apart_and_median_of_the_rest():
    history = [
        _epoch(1, 10.0, 2.0),
        _epoch(2, 3.0, 1.0),
        _epoch(3, 5.0, 1.0),
        _epoch(4, 4.0, 1.0, acc=0.97),
    ]
    s = harness.summarize(history, num_train=60000, batch_size=32)
    assert s["first_epoch_s"] == 12.0
    assert s["epoch_time_median_s"] == 5.0  # median of 4, 6, 5
    assert (s["epoch_time_min_s"], s["epoch_time_max_s"]) == (4.0, 6.0)
    assert s["train_time_median_s"] == 4.0
    assert s["eval_time_median_s"] == 1.0
    assert s["samples_per_s"] == 60000 / 4.0
    assert s["val_acc"] == 0.97 and s["train_loss"] == 0.25  # last epoch
    assert s["epochs"] == 4 and s["batch_size"] == 32


def test_summary_keeps_the_steady_epochs_largest_foreign_share():
    """Epoch 1 (compile) is not a steady epoch: its load is judged by the verdict, not here."""
    history = [_epoch(1, 10.0, 2.0, foreign=0.5), _epoch(2, 3.0, 1.0, foreign=0.031)]
    history.append(_epoch(3, 3.0, 1.0, foreign=0.004))
    s = harness.summarize(history, num_train=60000, batch_size=32)
    assert s["foreign_cpu_max"] == 0.03  # rounded to a percent
    assert s["own_cpu_mean"] == 0.9 and s["steal_max"] == 0.0


def test_every_epoch_carries_the_machines_use_read_outside_the_clock():
    """The meter is read before the clock starts and after it stops: its cost is not timed."""
    calls = []
    readings = iter(range(100))

    def meter():
        calls.append("meter")
        n = next(readings)
        return interference.Reading(float(n), 0.5 * n, 0.0, 0.25 * n, 0, 2)

    def clock():
        calls.append("clock")
        return 0.0

    class Instant:
        def train_epoch(self):
            return 0.5

        def evaluate(self):
            return 0.4, 0.9

        def sync(self):
            pass

    (epoch,) = harness.run(Instant(), epochs=1, clock=clock, meter=meter)
    assert calls == ["meter", "clock", "clock", "clock", "meter"]
    assert epoch.load.own == 0.125 and epoch.load.foreign == 0.125  # busy 0.25 - own 0.125


def test_summary_of_a_single_epoch_uses_it_as_steady():
    s = harness.summarize([_epoch(1, 2.0, 1.0)], num_train=10, batch_size=5)
    assert s["epoch_time_median_s"] == s["first_epoch_s"] == 3.0
