import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog.models import PricingPolicy, Service
from catalog.services import REFERENCE_CATALOG, CatalogImportError, catalog_import
from tests.conftest import FIXTURES

pytestmark = pytest.mark.django_db
OCR_METADATA = FIXTURES / "metadata" / "ocr" / "api-docs.json"


def reference_entries() -> list[dict]:
    return json.loads(REFERENCE_CATALOG.read_text())["services"]


def write_catalog(tmp_path, entries, name="catalog.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"services": entries}))
    return path


def test_it_imports_the_reference_catalog_into_an_empty_database():
    Service.objects.all().delete()
    PricingPolicy.objects.all().delete()
    report = catalog_import(paths=[REFERENCE_CATALOG])
    assert len(report.created) == 62
    assert Service.objects.filter(state="published", enabled=True).count() == 62
    policy = PricingPolicy.objects.get()
    assert (policy.id, policy.amount_cents, policy.settle_mode, policy.max_calls) == (
        "aliyun-viapi", 20, "settle_first", 1)


def test_reimporting_changes_nothing():
    before = {s.id: s.updated_at for s in Service.objects.all()}
    policy_before = PricingPolicy.objects.get().updated_at
    report = catalog_import(paths=[REFERENCE_CATALOG])
    assert report.created == [] and report.updated == {}
    assert len(report.unchanged) == 62
    assert {s.id: s.updated_at for s in Service.objects.all()} == before
    assert PricingPolicy.objects.get().updated_at == policy_before


def test_it_keeps_operator_edits_on_reimport():
    service = Service.objects.get(id="celebrity-recognition")
    service.name = "Celebrity finder"
    service.description = "Operator wording."
    service.state = Service.State.DRAFT
    service.save()
    policy = PricingPolicy.objects.get(id="aliyun-viapi")
    policy.amount_cents = 35
    policy.save()

    report = catalog_import(paths=[REFERENCE_CATALOG])

    service.refresh_from_db()
    policy.refresh_from_db()
    assert (service.name, service.description, service.state) == ("Celebrity finder", "Operator wording.", "draft")
    assert policy.amount_cents == 35
    assert set(report.kept_edits["celebrity-recognition"]) == {"name", "description", "state"}


def test_overwrite_replaces_operator_edits():
    Service.objects.filter(id="celebrity-recognition").update(name="Celebrity finder")
    PricingPolicy.objects.filter(id="aliyun-viapi").update(amount_cents=35)
    call_command("import_catalog", "--overwrite", stdout=open("/dev/null", "w"))
    assert Service.objects.get(id="celebrity-recognition").name == "Detect Celebrity Face And Body Analysis"
    assert PricingPolicy.objects.get(id="aliyun-viapi").amount_cents == 20


def test_a_changed_source_updates_fields_the_operator_did_not_touch(tmp_path):
    entries = reference_entries()
    food = next(e for e in entries if e["id"] == "food-recognition")
    food["keywords"] = [*food["keywords"], "calorie estimate"]
    report = catalog_import(paths=[write_catalog(tmp_path, entries)])
    assert report.updated == {"food-recognition": ["keywords", "imported_from"]}
    assert "calorie estimate" in Service.objects.get(id="food-recognition").keywords


def test_a_bad_file_names_the_file_and_the_field_and_imports_nothing(tmp_path):
    entries = reference_entries()
    entries[3]["sla"]["maxLatency"] = "fast"
    good = write_catalog(tmp_path, [{**reference_entries()[0], "name": "Renamed by a good file"}], "good.json")
    bad = write_catalog(tmp_path, entries, "bad.json")

    with pytest.raises(CatalogImportError) as error:
        catalog_import(paths=[good, bad])

    assert str(bad) in str(error.value)
    assert error.value.field == "services[3].sla.maxLatency"
    assert "'fast' does not match" in str(error.value)
    assert not Service.objects.filter(name="Renamed by a good file").exists()


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda e: e.pop("id"), "services[0]"),
        (lambda e: e.update(id="Not An Id"), "services[0].id"),
        (lambda e: e["pricing"].update(amountCents=-5), "services[0].pricing.amountCents"),
        (lambda e: e.update(inputSchema={"type": "objekt"}), "services[0].inputSchema.type"),
        (lambda e: e["upstream"].update(method="PATCH"), "services[0].upstream.method"),
    ],
)
def test_each_bad_field_is_named(tmp_path, mutate, field):
    entry = reference_entries()[0]
    mutate(entry)
    with pytest.raises(CatalogImportError) as error:
        catalog_import(paths=[write_catalog(tmp_path, [entry])])
    assert error.value.field == field


def test_the_same_id_twice_in_one_file_is_refused(tmp_path):
    entry = reference_entries()[0]
    with pytest.raises(CatalogImportError) as error:
        catalog_import(paths=[write_catalog(tmp_path, [entry, {**entry, "name": "Second"}])])
    assert (error.value.field, str(error.value).rsplit(": ", 1)[1]) == (
        f"{entry['id']}.id", "appears more than once in the file")


def test_a_file_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(CommandError, match=r"broken.json: \(file\): not valid JSON.*\nNothing was imported"):
        call_command("import_catalog", str(path))


def test_a_policy_given_two_ways_in_one_import_is_refused(tmp_path):
    first, second = reference_entries()[:2]
    second["pricing"]["amountCents"] = 99
    with pytest.raises(CatalogImportError, match="policy 'aliyun-viapi' is given two different ways"):
        catalog_import(paths=[write_catalog(tmp_path, [first, second])])


def test_it_reads_a_raw_seed_001_search_response(seed_001):
    Service.objects.all().delete()
    report = catalog_import(paths=[FIXTURES / "seed_001_catalog_search.json"])
    assert len(report.created) == 10
    job = Service.objects.get(id="image-recognition-job-result")
    assert (job.upstream_product, job.upstream_version, job.upstream_action, job.state) == (
        "imagerecog", "2019-09-30", "GetAsyncJobResult", "published")


def test_the_ocr_metadata_adds_its_actions_as_drafts_in_one_command(capsys):
    call_command("import_catalog", str(OCR_METADATA))
    ocr = Service.objects.filter(upstream_product="ocr")
    assert ocr.count() == 18
    assert set(ocr.values_list("state", flat=True)) == {"draft"}
    card = ocr.get(upstream_action="RecognizeBankCard")
    assert (card.id, card.internal_id, card.category) == (
        "bank-card-recognition", "aliyun-ocr-recognize-bank-card", "ocr")
    assert card.input_schema["required"] == ["ImageURL"]
    assert card.input_schema["properties"]["ImageURL"]["format"] == "uri"
    assert card.upstream_parameters == {"ImageURL": {"in": "body"}}
    assert "18 created" in capsys.readouterr().out
    # Drafts are not offered to agents.
    assert not Service.objects.filter(upstream_product="ocr", state="published").exists()


def test_metadata_for_an_action_already_in_the_catalog_leaves_it_alone(tmp_path):
    metadata = json.loads(OCR_METADATA.read_text())
    metadata["info"]["product"] = "imagerecog"
    metadata["info"]["version"] = "2019-09-30"
    metadata["apis"] = {"RecognizeScene": {"methods": ["post"], "parameters": [
        {"name": "ImageURL", "in": "formData", "schema": {"type": "string", "required": True}}]}}
    path = tmp_path / "api-docs.json"
    path.write_text(json.dumps(metadata))
    report = catalog_import(paths=[path])
    assert report.skipped == {"scene-recognition": "RecognizeScene is already in the catalog as scene-recognition"}
    assert report.created == []


def ocr_with(tmp_path, change) -> Path:
    metadata = json.loads(OCR_METADATA.read_text())
    change(metadata)
    path = tmp_path / "api-docs.json"
    path.write_text(json.dumps(metadata))
    return path


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda m: m["info"].pop("product"), "info"),
        (lambda m: m["info"].update(style="ROA"), "info.style"),
        (lambda m: m.update(apis={}), "apis"),
        (lambda m: m["apis"].update({"Bad/Action": {}}), "apis"),
        (lambda m: m["apis"]["RecognizeBankCard"].update(parameters=["ImageURL"]), "apis.RecognizeBankCard.parameters.0"),
        (lambda m: m["apis"]["RecognizeBankCard"].update(parameters={"ImageURL": {}}),
         "apis.RecognizeBankCard.parameters"),
        (lambda m: m["apis"]["RecognizeBankCard"]["parameters"][0]["schema"].update(minimum="abc"),
         "apis.RecognizeBankCard.parameters.0.schema.minimum"),
        (lambda m: m["apis"]["RecognizeBankCard"]["parameters"][0]["schema"].update(items="x"),
         "apis.RecognizeBankCard.parameters.0.schema.items"),
    ],
)
def test_malformed_metadata_is_refused_naming_the_field(tmp_path, change, field):
    with pytest.raises(CatalogImportError) as error:
        catalog_import(paths=[ocr_with(tmp_path, change)])
    assert error.value.field == field
    assert not Service.objects.filter(upstream_product="ocr").exists()


@pytest.mark.parametrize("demo", ['[{"type": "json", "example": "[1, 2]"}]', '{"type": "json"}', "not json"])
def test_an_odd_response_demo_only_costs_the_example(tmp_path, demo):
    catalog_import(paths=[ocr_with(tmp_path, lambda m: m["apis"]["RecognizeBankCard"].update(responseDemo=demo))])
    card = Service.objects.get(upstream_action="RecognizeBankCard", upstream_product="ocr")
    assert card.example_response["data"]["Result"] == "example result from Alibaba Cloud RecognizeBankCard"
