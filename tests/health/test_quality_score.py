"""The quality score: each part, the cap, and what it says when samples are few."""

from datetime import UTC, datetime, timedelta

import pytest

from health import latency
from health.quality_score import QualityInputs, freshness_part, quality_score

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def inputs(**changes) -> QualityInputs:
    values = {"recent_statuses": ["healthy"] * 10, "last_checked_at": NOW - timedelta(minutes=5),
              "latency_samples": 20, "latency_within_sla": 20, "sla_max_latency_ms": 5000,
              "call_successes": 50, "call_failures": 0, "now": NOW, "check_interval_seconds": 900}
    return QualityInputs(**{**values, **changes})


def part(score, name):
    return next(p for p in score.parts if p["name"] == name)


def test_a_service_that_answers_fast_recently_and_always_scores_100():
    score = quality_score(inputs())

    assert score.score == 100 and score.note == ""
    assert [p["name"] for p in score.parts] == ["availability", "latency", "freshness", "success"]
    assert sum(p["weight"] for p in score.parts) == 100


def test_availability_is_the_share_of_the_last_ten_answered_checks():
    # Degraded answered (slow is the latency part's business); unknown is no evidence either way.
    statuses = ["healthy", "degraded", "unhealthy", "unknown"] + ["healthy"] * 6 + ["unhealthy"] * 5
    score = quality_score(inputs(recent_statuses=statuses))

    availability = part(score, "availability")
    assert availability["samples"] == 9, "the unknown check does not count; only the last ten are read"
    assert availability["value"] == round(8 / 9, 3) and availability["points"] == round(40 * 8 / 9, 1)
    assert availability["detail"] == "8 of the last 9 checks answered"


def test_latency_is_the_share_under_the_sla_not_the_mean():
    score = quality_score(inputs(latency_samples=100, latency_within_sla=95))

    latency_part = part(score, "latency")
    assert latency_part["value"] == 0.95 and latency_part["points"] == 23.8
    assert latency_part["detail"] == "95 of 100 samples in 24 hours at or under 5000 ms"
    assert score.score == round(100 * (40 + 25 * 0.95 + 15 + 20) / 100)


@pytest.mark.parametrize(("age", "value"), [
    (timedelta(minutes=30), 1.0),  # within two intervals (and at least an hour)
    (timedelta(hours=1), 1.0),
    (timedelta(hours=12, minutes=30), 0.5),  # halfway from 1 hour to 24 hours
    (timedelta(hours=24), 0.0),
    (timedelta(days=3), 0.0),
])
def test_freshness_falls_linearly_from_an_hour_to_a_day(age, value):
    assert freshness_part(NOW - age, NOW, 900)["value"] == value


def test_freshness_follows_a_long_check_interval():
    # Checked every 6 hours: a 10-hour-old check is still fresh.
    assert freshness_part(NOW - timedelta(hours=10), NOW, 6 * 3600)["value"] == 1.0


def test_success_is_the_share_of_real_calls_that_succeeded():
    score = quality_score(inputs(call_successes=45, call_failures=5))

    assert part(score, "success")["value"] == 0.9
    assert part(score, "success")["detail"] == "45 of 50 paid calls in 24 hours succeeded"


def test_too_few_calls_leave_success_out_and_the_note_says_so():
    score = quality_score(inputs(call_successes=2, call_failures=1))

    success = part(score, "success")
    assert success["used"] is False and success["value"] is None and success["samples"] == 3
    assert success["detail"] == "2 of 3 paid calls in 24 hours succeeded (too few: 10 needed)"
    assert score.note == "too few samples for success, left out of the score"
    # The other parts' weights are the whole: a perfect service without calls still scores 100.
    assert score.score == 100


def test_a_service_never_checked_has_no_score():
    score = quality_score(inputs(recent_statuses=[], last_checked_at=None, latency_samples=0,
                                 latency_within_sla=0))

    assert score.score is None
    assert score.note == "not checked yet: no score until a health check has answered"


def test_a_single_check_counts_but_the_note_says_the_score_rests_on_it():
    score = quality_score(inputs(recent_statuses=["healthy"], call_successes=0))

    assert score.score == 100
    assert "based on 1 health check" in score.note


def test_a_service_down_now_scores_at_most_40_whatever_its_history():
    score = quality_score(inputs(recent_statuses=["unhealthy"] + ["healthy"] * 9))

    assert score.score == 40
    assert "capped at 40: the latest check was unhealthy" in score.note


def test_an_unconfigured_service_is_capped_too():
    score = quality_score(inputs(recent_statuses=["unconfigured", "healthy", "healthy"]))

    assert score.score == 40 and "the latest check was unconfigured" in score.note
    assert part(score, "availability")["value"] == round(2 / 3, 3)


# --- Latency histograms --------------------------------------------------------


@pytest.mark.parametrize("milliseconds", [1, 2, 3, 10, 99, 100, 101, 1000, 4999, 5000, 60_000, 600_000])
def test_a_latency_falls_in_a_bucket_whose_bound_is_at_most_ten_percent_above_it(milliseconds):
    bound = latency.upper_bound_ms(latency.bucket(milliseconds))

    assert milliseconds <= bound <= max(milliseconds * 1.1 + 1, 2)


def test_percentiles_from_a_merged_histogram_are_within_ten_percent_of_the_exact_ones():
    samples = [(index * 37) % 2000 + 20 for index in range(1000)]
    hours = [{}, {}]
    for number, sample in enumerate(samples):
        histogram = hours[number % 2]
        histogram[latency.bucket(sample)] = histogram.get(latency.bucket(sample), 0) + 1
    merged = latency.merged(hours)

    for fraction in (0.5, 0.95):
        exact = sorted(samples)[round(fraction * len(samples)) - 1]
        estimate = latency.percentile(merged, fraction)
        assert exact <= estimate <= exact * 1.1 + 1


def test_an_empty_histogram_has_no_percentile():
    assert latency.percentile({}, 0.5) is None
    assert latency.percentile({latency.NO_LATENCY: 4}, 0.5) is None
