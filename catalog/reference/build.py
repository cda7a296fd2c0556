"""Rebuild catalog/reference/catalog.json, the catalog Server402 ships.

    python -m catalog.reference.build ../shared

Sources: seed 001's ten services, kept verbatim (they are the API contract),
and Alibaba Cloud's metadata for imagerecog and facebody (September 2024) run
through the same transform as `import_catalog`, with curation.json supplying
what metadata cannot: capability-first ids, English wording, search keywords,
related services and parameter limits. RecognizeVehicleType and DetectFruits
exist only in the seeds and the SDKs, so their binding is written here.
"""

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED_DERIVED = {"canonicalId", "method", "endpoint", "legacyEndpoint", "endpointAliases", "inputTypes",
                "outputTypes", "quality", "discovery", "matchScore", "matchTerms", "why"}
# Where the seed contradicts its own schema, the schema wins: seed 001 documents
# "jobId is required" for a parameter named JobId, and an agent that believed
# it would send `jobId` and be refused as an unknown parameter.
SEED_CORRECTIONS = {
    "GetAsyncJobResult": {"errorExamples": [{"input": {}, "error": "JobId is required", "statusCode": 400}]},
}
METADATA = {
    "imagerecog": "aliyun-openapi-metadata/zh_cn/imagerecog/2019-09-30/api-docs.json",
    "facebody": "aliyun-openapi-metadata/zh_cn/facebody/2019-12-30-sep2024/api-docs.json",
}
SEED_ONLY_ACTIONS = {"RecognizeVehicleType", "DetectFruits"}


def _entry(spec: dict) -> dict:
    """A spec written back as a seed-shaped entry, through the same code that serves it."""
    from catalog.documents import service_document
    from catalog.models import PricingPolicy, Service

    policy = PricingPolicy(id="aliyun-viapi", amount_cents=20)
    service = Service(**spec, pricing_policy=policy, state="published")
    entry = {k: v for k, v in service_document(service).items() if k not in SEED_DERIVED}
    return {**entry, **_upstream(spec)}


def _upstream(spec: dict) -> dict:
    return {
        "state": "published",
        "enabled": True,
        "upstream": {
            "product": spec["upstream_product"],
            "version": spec["upstream_version"],
            "action": spec["upstream_action"],
            "method": spec["upstream_method"],
            "parameters": spec["upstream_parameters"],
            "async": spec["upstream_async"],
        },
    }


def build(shared: Path) -> list[dict]:
    from catalog.aliyun_metadata import metadata_specs

    curation = json.loads((HERE / "curation.json").read_text())["services"]
    seed = json.loads(next((shared / "seeds").glob("001_*.txt")).read_text())
    seed_by_action = {entry["keywords"][0]: entry for entry in seed["services"]}
    entries = []
    for product, relative in METADATA.items():
        document = json.loads((shared / "reference" / relative).read_text())
        actions = dict(document["apis"])
        if product == "imagerecog":
            actions.update({action: {"methods": ["post"], "parameters": [
                {"name": "ImageURL", "in": "formData", "schema": {"type": "string", "required": True}}]}
                for action in SEED_ONLY_ACTIONS})
        specs = {s["upstream_action"]: s for s in metadata_specs({**document, "apis": actions}, curation)}
        for action, spec in sorted(specs.items()):
            spec.pop("state")
            if action in seed_by_action:
                verbatim = {k: v for k, v in seed_by_action[action].items() if k not in SEED_DERIVED}
                entries.append({**verbatim, **SEED_CORRECTIONS.get(action, {}), **_upstream(spec)})
            else:
                entries.append(_entry(spec))
    assert len(entries) == 62, len(entries)
    return entries


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server402.settings")
    os.environ.setdefault("SECRET_KEY", "catalog-build")
    import django

    django.setup()
    shared = Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parents[2] / "shared")
    entries = build(shared)
    document = {"schemaVersion": "server402.catalog.v1", "services": entries}
    (HERE / "catalog.json").write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {len(entries)} services to {HERE / 'catalog.json'}")


if __name__ == "__main__":
    main()
