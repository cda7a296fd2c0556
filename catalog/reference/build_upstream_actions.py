"""Rebuild catalog/reference/upstream_actions.json, what the sandbox emulator knows of Alibaba Cloud.

    python -m catalog.reference.build_upstream_actions ../shared

For every VIAPI product: its API version, and for every action its HTTP
methods, its parameters (name, required, type, whether it is a URL), its
documented JSON response example and whether it is asynchronous. The source is
Alibaba Cloud's published OpenAPI metadata (en_us), plus the September 2024
zh_cn facebody snapshot for the actions removed since, plus two imagerecog
actions that only seed 003 documents. Descriptions are dropped: the emulator
needs shapes, not prose, and the file stays small.
"""

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "upstream_actions.json"
METADATA = Path("reference") / "aliyun-openapi-metadata"
# Still lists the seven facebody actions removed since; en_us wins where both exist.
FACEBODY_SEP2024 = METADATA / "zh_cn" / "facebody" / "2019-12-30-sep2024" / "api-docs.json"
URL_NAME = re.compile(r"(URL|Url|url)$")
EMPTY_EXAMPLE = {"RequestId": "5F25BB2C-2130-5B8C-91D7-3F2BF6BAECEC", "Data": {}}


def parameter(entry: dict) -> dict:
    """One request parameter as the emulator checks it."""
    schema = entry.get("schema", {})
    return {
        "name": entry["name"],
        "required": bool(schema.get("required")),
        "type": schema.get("type", "string"),
        "url": bool(schema.get("isFileTransferUrl")) or bool(URL_NAME.search(entry["name"])),
    }


def json_example(action: dict) -> dict:
    """The documented JSON response example, or an empty success when none parses."""
    try:
        demos = json.loads(action.get("responseDemo") or "[]")
        text = next(demo["example"] for demo in demos if demo.get("type") == "json")
        example = json.loads(text)
    except (ValueError, StopIteration, KeyError, TypeError):
        return dict(EMPTY_EXAMPLE)
    return example if isinstance(example, dict) else dict(EMPTY_EXAMPLE)


def is_async(name: str, action: dict, description: str) -> bool:
    # en_us metadata carries no descriptions, so the caller passes the zh_cn one.
    return name != "GetAsyncJobResult" and "GetAsyncJobResult" in (action.get("description") or description)


def action_entry(name: str, action: dict, description: str = "") -> dict:
    return {
        "methods": sorted(method.upper() for method in action.get("methods", ["post"])),
        "parameters": [parameter(entry) for entry in action.get("parameters", [])],
        "example": json_example(action),
        "async": is_async(name, action, description),
    }


def descriptions(shared: Path, product: str, version: str) -> dict[str, str]:
    path = shared / METADATA / "zh_cn" / product / version / "api-docs.json"
    if not path.exists():
        return {}
    return {name: action.get("description") or "" for name, action in json.loads(path.read_text())["apis"].items()}


def product_entry(document: dict, zh_descriptions: dict[str, str]) -> dict:
    actions = {
        name: action_entry(name, action, zh_descriptions.get(name, ""))
        for name, action in document["apis"].items()
    }
    return {"version": document["info"]["version"], "actions": actions}


def seed_only_imagerecog_actions() -> dict:
    """RecognizeVehicleType and DetectFruits, from seed 003 sections 4.6 and 4.7 (in no metadata snapshot)."""
    image_url = [{"name": "ImageURL", "required": True, "type": "string", "url": True}]
    vehicle = {
        "RequestId": "B10DE5EA-F2E6-5396-9462-D11071FEF756",
        "Data": {
            "Elements": [
                {"Score": 1, "Name": "car"},
                {"Score": 0, "Name": "MPV_mian"},
                {"Score": 0, "Name": "others"},
                {"Score": 0, "Name": "SUV"},
            ],
            "Threshold": 1,
        },
    }
    # The seed's response table types Elements as "Array of Element"; its JSON
    # example shows a lone object only because it was converted from the XML
    # one, where a one-element list looks the same. "橙⼦" in the PDF text is a
    # Kangxi-radical artefact of extraction for 橙子.
    fruits = {
        "RequestId": "5F25BB2C-2130-5B8C-91D7-3F2BF6BAECEC",
        "Data": {
            "Elements": [
                {
                    "Score": 0.8227852582931519,
                    "Box": [214.05966186523438, 44.83051300048828, 723.5120849609375, 482.8807067871094],
                    "Name": "橙子",
                }
            ]
        },
    }
    return {
        "RecognizeVehicleType": {"methods": ["POST"], "parameters": image_url, "example": vehicle, "async": False},
        "DetectFruits": {"methods": ["POST"], "parameters": image_url, "example": fruits, "async": False},
    }


def build(shared: Path) -> dict:
    """{product: {"version", "actions": {action: {"methods", "parameters", "example", "async"}}}}."""
    products = {}
    for path in sorted((shared / METADATA / "en_us").glob("*/*/api-docs.json")):
        document = json.loads(path.read_text())
        product, version = document["info"]["product"], document["info"]["version"]
        products[product] = product_entry(document, descriptions(shared, product, version))
    removed = product_entry(json.loads((shared / FACEBODY_SEP2024).read_text()), {})
    products["facebody"]["actions"] = {**removed["actions"], **products["facebody"]["actions"]}
    products["imagerecog"]["actions"].update(seed_only_imagerecog_actions())
    return products


def main():
    shared = Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parents[2] / "shared")
    products = build(shared)
    OUTPUT.write_text(json.dumps(products, ensure_ascii=False, separators=(",", ":"), sort_keys=True) + "\n")
    actions = sum(len(product["actions"]) for product in products.values())
    print(f"wrote {len(products)} products, {actions} actions, {OUTPUT.stat().st_size} bytes to {OUTPUT}")


if __name__ == "__main__":
    main()
