import json
from pathlib import Path

import pytest

from catalog.models import Service

pytestmark = pytest.mark.django_db
JUDGED = json.loads((Path(__file__).parent / "judged_queries.json").read_text())
# Product targets for the judged set (111 queries judged from what each tool
# does, without the ranker): the right tool first for two queries in three, in
# Chinese for more than half, and an empty answer for three no-tool queries in five.
RECALL_AT_1_FLOOR = 0.67
MRR_AT_5_FLOOR = 0.70
CHINESE_RECALL_AT_1_FLOOR = 0.55
EMPTY_WHEN_NOTHING_FITS_FLOOR = 0.6


def search(api, **params):
    return api.get("/api/catalog/search", params)


def test_it_answers_in_seed_001s_shape(api, seed_001):
    body = search(api, q="celebrity-recognition").json()
    assert list(body) == list(seed_001)
    assert body["schemaVersion"] == "server402.catalog.search.v1"
    assert body["query"] == "celebrity-recognition"
    assert body["filters"] == {"limit": 10}
    assert list(body["payment"]) == list(seed_001["payment"])
    first = body["services"][0]
    assert list(first) == list(seed_001["services"][0])
    assert first["id"] == "celebrity-recognition"
    assert list(first["quality"])[:11] == list(seed_001["services"][0]["quality"])


@pytest.mark.parametrize(
    "query, expected",
    [
        ("celebrity-recognition", "celebrity-recognition"),
        ("aliyun-facebody-detect-celebrity", "celebrity-recognition"),
        ("celebrity_recognition", "celebrity-recognition"),
        ("DetectCelebrity", "celebrity-recognition"),
        ("what car is this", "vehicle-type-recognition"),
        ("how many calories are in this dish", "food-recognition"),
        ("查询异步任务结果", "image-recognition-job-result"),
        ("celebrty recogniton", "celebrity-recognition"),
        ("明星识别", "celebrity-recognition"),
        ("垃圾分类", "waste-classification"),
    ],
)
def test_it_finds_the_right_tool_first(api, query, expected):
    assert search(api, q=query).json()["services"][0]["id"] == expected


def test_match_fields_come_from_the_real_match(api):
    body = search(api, q="how many calories are in this dish").json()
    food = body["services"][0]
    assert {"calories", "dish"} <= set(food["matchTerms"])
    assert food["why"] == ('Matched ' + ", ".join(food["matchTerms"]) +
                           ' for "Recognize Food Image Recognition". Price is USD 0.20 per policy aliyun-viapi.')
    assert food["matchScore"] > 0
    scores = [s["matchScore"] for s in search(api, q="face detection", limit=20).json()["services"]]
    assert scores == sorted(scores, reverse=True)


def test_an_exact_id_outranks_any_text_match(api):
    body = search(api, q="face-detection").json()
    assert body["services"][0]["id"] == "face-detection"
    assert body["services"][0]["matchTerms"][0] == "face-detection"


def test_it_holds_recall_and_mrr_above_the_floor_on_the_judged_set(api):
    ranks, empty_when_nothing_fits = {}, []
    for case in JUDGED:
        ids = [s["id"] for s in search(api, q=case["query"], limit=5).json()["services"]]
        if not case["expected"]:
            empty_when_nothing_fits.append(not ids)
        else:
            ranks[case["query"]] = (case["lang"], next((i for i, s in enumerate(ids) if s in case["expected"]), None))

    def recall_at_1(lang=None):
        chosen = [rank for language, rank in ranks.values() if lang in (None, language)]
        return sum(rank == 0 for rank in chosen) / len(chosen)

    mrr_at_5 = sum(0 if rank is None else 1 / (rank + 1) for _, rank in ranks.values()) / len(ranks)
    empty_share = sum(empty_when_nothing_fits) / len(empty_when_nothing_fits)
    print(f"\njudged set: {len(ranks)} queries with a tool: recall@1={recall_at_1():.3f} "
          f"(en {recall_at_1('en'):.3f}, zh {recall_at_1('zh'):.3f}) MRR@5={mrr_at_5:.3f}; "
          f"{sum(empty_when_nothing_fits)}/{len(empty_when_nothing_fits)} no-tool queries answered empty")
    assert len(JUDGED) >= 80 and sum(c["lang"] == "zh" for c in JUDGED) * 2 >= len(JUDGED)
    assert recall_at_1() >= RECALL_AT_1_FLOOR, [q for q, (_, rank) in ranks.items() if rank != 0]
    assert recall_at_1("zh") >= CHINESE_RECALL_AT_1_FLOOR
    assert mrr_at_5 >= MRR_AT_5_FLOOR
    assert empty_share >= EMPTY_WHEN_NOTHING_FITS_FLOOR


def test_a_query_with_no_fitting_tool_gets_an_honest_empty_result(api):
    body = search(api, q="天气预报").json()
    assert (body["total"], body["services"]) == (0, [])


def test_an_empty_query_lists_the_catalog(api):
    body = search(api, q="", limit=100).json()
    assert body["total"] == 62
    assert all(s["matchScore"] == 0 and s["matchTerms"] == [] for s in body["services"])


def test_category_narrows_the_search(api):
    body = search(api, q="recognition", category="image-recognition", limit=100).json()
    assert body["filters"] == {"limit": 100, "category": "image-recognition"}
    assert body["services"] and {s["category"] for s in body["services"]} == {"image-recognition"}


def test_limit_caps_the_answer_but_not_the_total(api):
    body = search(api, q="face", limit=2).json()
    assert len(body["services"]) == 2 and body["total"] > 2


def test_drafts_and_disabled_services_are_not_found(api):
    for service_id, change in [("food-recognition", {"state": "draft"}), ("scene-recognition", {"enabled": False})]:
        service = Service.objects.get(id=service_id)
        for name, value in change.items():
            setattr(service, name, value)
        service.save()
    ids = [s["id"] for s in search(api, q="", limit=100).json()["services"]]
    assert "food-recognition" not in ids and "scene-recognition" not in ids and len(ids) == 60


def test_an_edit_is_searchable_at_once(api):
    service = Service.objects.get(id="fruit-detection")
    service.keywords = [*service.keywords, "durian"]
    service.save()
    assert search(api, q="durian").json()["services"][0]["id"] == "fruit-detection"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"q": "x" * 10_000}, "q must be at most 500 characters"),
        ({"q": "face", "limit": 0}, "limit must be between 1 and 100"),
        ({"q": "face", "limit": 10_000}, "limit must be between 1 and 100"),
        ({"q": "face", "limit": "ten"}, "limit must be a whole number"),
        ({"q": "face", "category": "weather"}, "category: unknown category 'weather'; known: face-body, "
                                               "image-recognition"),
    ],
)
def test_bad_input_gets_400_with_a_clear_message(api, params, message):
    response = search(api, **params)
    assert response.status_code == 400
    assert response.json()["error"] == message


def test_a_price_change_shows_in_search_at_once(api):
    from catalog.models import PricingPolicy

    search(api, q="celebrity")  # the index is built before the change
    policy = PricingPolicy.objects.get(id="aliyun-viapi")
    policy.amount_cents = 99
    policy.save()
    first = search(api, q="celebrity").json()["services"][0]
    assert first["pricing"]["amountCents"] == 99
    assert first["why"].endswith("Price is USD 0.99 per policy aliyun-viapi.")


@pytest.mark.parametrize("query", ["\x00", "a\x00b"])
def test_a_nul_character_in_the_query_is_refused(api, query):
    response = search(api, q=query)
    assert (response.status_code, response.json()["error"]) == (400, "q: Null characters are not allowed.")


@pytest.mark.parametrize("query", ["🙂🙂🙂", "'; DROP TABLE catalog_service; --", "a" * 500, "\u200b", "面"])
def test_odd_queries_never_fail(api, query):
    assert search(api, q=query).status_code == 200
