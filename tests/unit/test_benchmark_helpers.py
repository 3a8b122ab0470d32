"""fcdd.testing.benchmark: the timing, header and tables every benchmark prints with."""

from __future__ import annotations

import re
import time

import pytest

from fcdd.testing.benchmark import Clock, Timing, alternate, cell, header, measure, table, table_row


def test_measure_warms_up_untimed_then_times_each_call():
    calls = []

    def work():
        calls.append(time.perf_counter())
        time.sleep(0.01 if len(calls) > 2 else 0.4)  # the two warm-up calls are slow

    t = measure(work, warmup=2, repeats=4)
    assert len(calls) == 6 and t.calls == 4
    assert all(0.009 < w < 0.4 for w in t.wall), t.wall  # the slow warm-up calls are not in it
    assert t.wall_s == pytest.approx(sum(sorted(t.wall)[1:3]) / 2)  # the median of four
    assert all(c < w for c, w in zip(t.cpu, t.wall, strict=True))  # sleeping costs no CPU time
    assert t.per_second(8) == pytest.approx(8 / t.wall_s)


def test_measure_counts_cpu_time_and_divides_by_the_units_of_work():
    def spin():
        end = time.process_time() + 0.03
        while time.process_time() < end:
            pass

    t = measure(spin, warmup=0, repeats=3, per=3)
    assert t.calls == 3
    assert all(0.009 < c < 0.05 for c in t.cpu), t.cpu  # 30 ms of CPU over 3 units each


def test_measure_runs_until_min_seconds():
    t = measure(lambda: time.sleep(0.01), warmup=0, repeats=1, min_seconds=0.1)
    assert t.calls >= 5


def test_alternate_interleaves_the_cases_round_by_round():
    order = []
    cases = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    timings = alternate(cases, rounds=3, warmup=1)
    assert order == ["a", "b", "c"] * 4  # one warm-up call each, then the rounds in turn
    assert [t.calls for t in timings.values()] == [3, 3, 3]


def test_clock_intervals_between_marks():
    clock = Clock()
    clock.mark()
    time.sleep(0.05)
    clock.on_epoch_end(1, {})
    time.sleep(0.01)
    clock.mark()
    t = clock.intervals(per=2)
    assert len(t.wall) == 2 and t.wall[0] > t.wall[1] > 0
    wall, cpu = clock.fastest(per=2)
    assert wall == min(t.wall) and cpu <= max(t.cpu)


def test_timing_quantiles_in_milliseconds():
    t = Timing(wall=[0.001, 0.002, 0.003, 0.004, 0.1], cpu=[0.0] * 5)
    assert t.quantile_ms(0.5) == pytest.approx(3.0) and t.quantile_ms(1.0) == pytest.approx(100.0)
    assert t.wall_s == 0.003


def test_header_names_the_machine_device_and_commit():
    text = header("cpu", "what is measured")
    lines = text.splitlines()
    assert lines[0] == "# what is measured"
    assert lines[1].startswith("CPU: ") and "flags: " in lines[1] and "threads" in lines[1]
    assert re.fullmatch(r"device: cpu · \d{4}-\d{2}-\d{2} · commit ([0-9a-f]{7,}\+?|unknown)", lines[2])
    assert header(None).splitlines()[0].startswith("CPU: ")


def test_table_is_markdown_and_refuses_a_short_row():
    text = table(["net", "images/s", "ratio"], [["cnn28", 1234.5, "0.98"], ["vgg", 0.12345, None]])
    assert text.splitlines() == [
        "| net | images/s | ratio |",
        "|---|---|---|",
        "| cnn28 | 1234 | 0.98 |",  # at least every integer digit, no decimals past 3 significant
        "| vgg | 0.123 | - |",
    ]
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        table(["a", "b", "c"], [[1, 2]])
    assert table_row([1, 2.5]) == "| 1 | 2.5 |" and cell(float("nan")) == "nan"
