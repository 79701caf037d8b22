"""bench/compare.py: reading both kinds of result file, matching rows, ratios B / A and the regression threshold."""

import json

import pytest

from bench.compare import HIGHER_IS_BETTER, KEY_FIELDS, compare_rows, load_rows
from compress.core.errors import UserError


def row(name="m", backend="ort", batch_size=1, seq_len=128, **values):
    return {"name": name, "backend": backend, "device": "cpu", "batch_size": batch_size, "seq_len": seq_len,
            **values}


def timing(p50):
    """A run's bench.json timing, every field of compress.core.results.Timing."""
    return {"latency_ms_p50": p50, "latency_ms_p90": p50, "latency_ms_p95": p50, "latency_ms_p99": p50,
            "latency_ms_mean": p50, "latency_ms_std": 0.0, "iters": 10, "efficiency": None}


# ---------------------------------------------------------------- reading files


def test_a_bench_json_file_gives_its_results_as_they_are(tmp_path):
    rows = [row("a", latency_ms_p50=3.0), row("b", latency_ms_p50=4.0)]
    path = tmp_path / "lat.json"
    path.write_text(json.dumps({"command": "latency", "settings": {}, "environment": {}, "results": rows}))
    assert load_rows(path) == rows


def test_a_runs_bench_json_gives_one_row_per_model_and_backend_at_the_runs_shape(tmp_path):
    document = {"settings": {"batch_size": 8, "seq_len": 64}, "results": {
        "teacher": {"torch": timing(10.0), "ort": timing(6.0), "flops": 123,
                    "ort_variants": {"dynamic-qint8": timing(3.0)}},
        "lstm": {"torch": timing(2.0), "ort": None, "ort_variants": {}, "flops": None}}}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(document))
    shape = {"device": "cpu", "batch_size": 8, "seq_len": 64}
    assert load_rows(path) == [
        {"name": "teacher", "backend": "torch", **shape, "flops": 123, **timing(10.0)},
        {"name": "teacher", "backend": "ort", **shape, "flops": 123, **timing(6.0)},
        {"name": "teacher", "backend": "ort dynamic-qint8", **shape, "flops": 123, **timing(3.0)},
        # Backends the run did not time (None) are left out rather than compared as empty rows.
        {"name": "lstm", "backend": "torch", **shape, "flops": None, **timing(2.0)},
    ]


@pytest.mark.parametrize("content, message", [
    (None, "file not found"),
    ("{truncated", "not JSON"),
    (json.dumps([row()]), "no results in it"),  # a bare list of rows, not a document
    (json.dumps({"command": "latency"}), "no results in it"),
    (json.dumps({"results": {"teacher": {}}}), "no results in it"),  # a run's results without its settings
])
def test_a_file_that_is_not_a_result_is_a_user_error_naming_it(tmp_path, content, message):
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message) as err:
        load_rows(path)
    assert err.value.where == str(path) and "bench" in err.value.fix


# ---------------------------------------------------------------- comparing rows


def test_rows_are_matched_by_model_backend_device_and_shape():
    assert KEY_FIELDS == ("name", "backend", "device", "batch_size", "seq_len")
    a = [row("x", latency_ms_p50=10.0), row("x", batch_size=8, latency_ms_p50=40.0),
         row("x", backend="torch", latency_ms_p50=20.0)]
    b = [row("x", backend="torch", latency_ms_p50=30.0), row("x", latency_ms_p50=5.0),
         row("x", batch_size=8, latency_ms_p50=40.0)]
    result = compare_rows(a, b, "latency_ms_p50", 0.1)
    assert [(r["backend"], r["batch_size"], r["a"], r["b"], r["ratio"]) for r in result] == [
        ("ort", 1, 10.0, 5.0, 0.5), ("ort", 8, 40.0, 40.0, 1.0), ("torch", 1, 20.0, 30.0, 1.5)]
    assert [r["regression"] for r in result] == [False, False, True]
    assert all(r["metric"] == "latency_ms_p50" and r["device"] == "cpu" for r in result)


def test_rows_in_one_file_only_are_listed_after_and_never_judged():
    a = [row("old", latency_ms_p50=1.0), row("both", latency_ms_p50=1.0)]
    b = [row("both", latency_ms_p50=1.0), row("new", latency_ms_p50=100.0)]
    result = compare_rows(a, b, "latency_ms_p50", 0.1)
    assert [(r["name"], r["a"], r["b"], r["ratio"], r["regression"]) for r in result] == [
        ("old", 1.0, None, None, False), ("both", 1.0, 1.0, 1.0, False), ("new", None, 100.0, None, False)]


@pytest.mark.parametrize("metric", ["latency_ms_p50", "latency_ms_p99", "peak_rss_mb", "rss_increase_mb"])
def test_smaller_is_better_metrics_regress_past_the_threshold_only(metric):
    a = [row(str(i), **{metric: 4.0}) for i in range(4)]
    b = [row("0", **{metric: 5.0}), row("1", **{metric: 5.01}), row("2", **{metric: 2.0}), row("3", **{metric: 4.0})]
    result = compare_rows(a, b, metric, threshold=0.25)
    assert [r["ratio"] for r in result] == [1.25, pytest.approx(1.2525), 0.5, 1.0]
    # Exactly 25% slower is within a 25% threshold; anything past it is a regression; faster never is.
    assert [r["regression"] for r in result] == [False, True, False, False]


@pytest.mark.parametrize("metric", HIGHER_IS_BETTER)
def test_higher_is_better_metrics_regress_when_they_drop_past_the_threshold(metric):
    a = [row(str(i), **{metric: 4.0}) for i in range(3)]
    b = [row("0", **{metric: 3.0}), row("1", **{metric: 2.99}), row("2", **{metric: 8.0})]
    result = compare_rows(a, b, metric, threshold=0.25)
    assert [r["ratio"] for r in result] == [0.75, pytest.approx(0.7475), 2.0]
    assert [r["regression"] for r in result] == [False, True, False]


def test_a_zero_threshold_flags_any_worsening():
    result = compare_rows([row(latency_ms_p50=10.0)], [row(latency_ms_p50=10.001)], "latency_ms_p50", 0.0)
    assert result[0]["regression"]
    result = compare_rows([row(latency_ms_p50=10.0)], [row(latency_ms_p50=10.0)], "latency_ms_p50", 0.0)
    assert not result[0]["regression"]


def test_a_missing_or_zero_value_gives_no_ratio():
    a = [row("gone", flops=100), row("zero", flops=0), row("na", flops=None)]
    b = [row("gone"), row("zero", flops=50), row("na", flops=50)]
    result = compare_rows(a, b, "flops", 0.1)
    assert [(r["a"], r["b"], r["ratio"], r["regression"]) for r in result] == [
        (100, None, None, False), (0, 50, None, False), (None, 50, None, False)]


def test_a_metric_neither_file_has_is_a_user_error():
    with pytest.raises(UserError, match="neither file has 'latency_ms_p42'") as err:
        compare_rows([row(latency_ms_p50=1.0)], [row(latency_ms_p50=1.0)], "latency_ms_p42", 0.1)
    assert err.value.where == "--metric" and "latency_ms_p50" in err.value.fix


def test_a_metric_in_one_file_only_is_compared_as_missing_on_the_other_side():
    result = compare_rows([row(latency_ms_p50=1.0)], [row(latency_ms_p50=1.0, peak_rss_mb=300.0)], "peak_rss_mb",
                          0.1)
    assert [(r["a"], r["b"], r["ratio"], r["regression"]) for r in result] == [(None, 300.0, None, False)]


def test_files_compare_end_to_end_from_disk(tmp_path):
    # A latency --json file against a run's bench.json of the same model and shape: the ratio across both formats.
    lat = tmp_path / "lat.json"
    lat.write_text(json.dumps({"command": "latency", "settings": {}, "environment": {}, "results": [
        row("teacher", backend="ort", batch_size=1, seq_len=128, latency_ms_p50=8.0)]}))
    run = tmp_path / "bench.json"
    run.write_text(json.dumps({"settings": {"batch_size": 1, "seq_len": 128},
                               "results": {"teacher": {"torch": timing(12.0), "ort": timing(10.0),
                                                       "ort_variants": {}, "flops": None}}}))
    ort, torch = compare_rows(load_rows(lat), load_rows(run), "latency_ms_p50", 0.2)
    assert ort["backend"] == "ort" and ort["ratio"] == 1.25 and ort["regression"]
    assert torch["backend"] == "torch" and torch["a"] is None  # timed in the run only: shown, not judged
