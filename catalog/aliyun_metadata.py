"""Alibaba Cloud OpenAPI metadata (api-docs.json) turned into service definitions.

The output is a list of "specs": dicts keyed by Service field names, plus a
`pricing_policy` dict. `import_catalog` uses it for any VIAPI product, and
catalog/reference/build.py uses it, with a curated overlay, for the shipped
reference catalog, so both follow the conventions of seed 001.
"""

import json
import re
from dataclasses import dataclass, field

from jsonschema import Draft202012Validator

from catalog.envelope import ENVELOPE_SCHEMA

INPUT_SCHEMA_NOTE = (
    "Use Alibaba Cloud RPC parameter names exactly, for example ImageURL, ImageUrl, Url, URL, JobId, "
    "or Tasks depending on the service."
)
GENERIC_USE_CASES = [
    "Call one focused visual AI capability directly with JSON inputs",
    "Use public image or video URLs and structured parameters to get machine-readable results",
]
LIMITATIONS = [
    "Pass parameter names exactly as listed in the input schema",
    "Only public http or https URLs and JSON/base64 text parameters are supported in this adapter",
    "Binary file upload is not exposed by this Server402 adapter",
    "Provider credentials and upstream permissions must be configured on the server",
]
IMAGE_URL_NOTE = "Public http or https image URL accepted by the Alibaba Cloud API."
VIDEO_URL_NOTE = "Public http or https video URL accepted by the Alibaba Cloud API."
EXAMPLE_IMAGE_URL = "https://example.com/image.jpg"


@dataclass(frozen=True)
class Product:
    label: str
    label_zh: str
    category: str
    version: str
    keywords: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


PRODUCTS = {
    "imagerecog": Product("Image Recognition", "图像识别", "image-recognition", "2019-09-30",
                          ["image recognition", "image classification", "image tagging", "scene recognition",
                           "visual labels", "computer vision"], ["image-tagging"]),
    "facebody": Product("Face And Body Analysis", "人脸人体", "face-body", "2019-12-30",
                        ["face detection", "body detection", "pose estimation", "face recognition",
                         "liveness detection", "human analysis"], ["face-analysis", "body-analysis"]),
    "ocr": Product("Text Recognition", "文字识别", "ocr", "2019-12-30",
                   ["ocr", "text recognition", "document recognition", "card recognition", "text extraction",
                    "computer vision"], ["text-recognition"]),
    "objectdet": Product("Object Detection", "目标检测", "object-detection", "2019-12-30",
                         ["object detection", "bounding boxes", "object localization", "computer vision"],
                         ["object-detection"]),
    "imageseg": Product("Image Segmentation", "分割抠图", "image-segmentation", "2019-12-30",
                        ["image segmentation", "background removal", "cutout", "matting", "computer vision"],
                        ["segmentation"]),
    "imageenhan": Product("Image Enhancement", "图像增强", "image-enhancement", "2019-09-30",
                          ["image enhancement", "super resolution", "colorization", "image editing",
                           "computer vision"], ["image-editing"]),
    "imageprocess": Product("Medical Image Analysis", "医疗影像", "medical-imaging", "2020-03-20",
                            ["medical imaging", "ct scan", "x-ray", "lesion detection"], ["medical-imaging"]),
    "imageaudit": Product("Content Moderation", "内容审核", "content-moderation", "2019-12-30",
                          ["content moderation", "image moderation", "text moderation", "safety review"],
                          ["moderation"]),
    "goodstech": Product("Goods Recognition", "商品理解", "goods-recognition", "2019-12-30",
                         ["product recognition", "goods classification", "retail", "e-commerce"], ["retail"]),
    "videorecog": Product("Video Recognition", "视频理解", "video-recognition", "2020-03-20",
                          ["video recognition", "video understanding", "video tagging", "video analysis"],
                          ["video-analysis"]),
    "videoseg": Product("Video Segmentation", "视频分割", "video-segmentation", "2020-03-20",
                        ["video segmentation", "video matting", "background removal"], ["video-editing"]),
    "videoenhan": Product("Video Enhancement", "视频生产", "video-enhancement", "2020-03-20",
                          ["video enhancement", "video editing", "super resolution", "video generation"],
                          ["video-editing"]),
    "viapi": Product("Visual Intelligence Platform", "视觉智能开放平台", "platform", "2023-01-17",
                     ["async job", "job result", "platform"], ["platform"]),
}

# Capability-first ids: "RecognizeBankCard" -> "bank-card-recognition".
_VERB_NOUNS = {
    "recognize": "recognition", "detect": "detection", "classify": "classification",
    "classifying": "classification", "segment": "segmentation", "generate": "generation",
    "enhance": "enhancement", "extract": "extraction", "evaluate": "evaluation", "compare": "comparison",
    "search": "search", "tagging": "tagging", "erase": "erasure", "colorize": "colorization",
    "translate": "translation", "correct": "correction", "merge": "merge", "blur": "blur",
}
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


_NUMBER = {"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}]}
# What the transform relies on in an api-docs.json, checked before it runs.
METADATA_SCHEMA = {
    "type": "object",
    "required": ["info", "apis"],
    "properties": {
        "info": {
            "type": "object",
            "required": ["product", "version"],
            "properties": {
                "product": {"type": "string", "pattern": "^[a-z0-9]{1,40}$"},
                "version": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
                "style": {"const": "RPC"},
            },
        },
        "apis": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^[A-Z][A-Za-z0-9]{0,99}$"},
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "methods": {"type": "array", "items": {"enum": ["get", "post", "GET", "POST"]}},
                    "parameters": {"type": "array", "items": {"$ref": "#/$defs/parameter"}},
                    "responseDemo": {"type": ["string", "null"]},
                    "title": {"type": ["string", "null"]},
                    "summary": {"type": ["string", "null"]},
                    "description": {"type": ["string", "null"]},
                    "deprecated": {"type": "boolean"},
                },
            },
        },
    },
    "$defs": {
        "parameter": {
            "type": "object",
            "required": ["name", "schema"],
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_.]{0,99}$"},
                "in": {"type": "string"},
                "style": {"type": "string"},
                "schema": {"$ref": "#/$defs/schema"},
            },
        },
        "schema": {
            "type": "object",
            "properties": {
                "type": {"enum": ["string", "integer", "number", "boolean", "array", "object"]},
                "minimum": _NUMBER, "maximum": _NUMBER, "maxItems": _NUMBER, "minItems": _NUMBER,
                "maxLength": _NUMBER,
                "enum": {"type": "array"},
                "items": {"$ref": "#/$defs/schema"},
                "properties": {"type": "object", "additionalProperties": {"$ref": "#/$defs/schema"}},
            },
        },
    },
}
_METADATA_VALIDATOR = Draft202012Validator(METADATA_SCHEMA)


class MetadataError(ValueError):
    """A metadata document that cannot be read; `field` says where."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def action_words(action: str) -> list[str]:
    """"DetectCelebrity" -> ["Detect", "Celebrity"]; "GenRealPersonVerificationToken" keeps each word."""
    return _CAMEL.findall(action)


# An action's first word says whether it changes what the upstream stores (a face database, a template).
_WRITE_VERBS = frozenset({"Add", "Create", "Delete", "Update", "Batch", "Merge", "Gen", "Insert", "Remove"})
# ... and whether the change can lose something already stored (as opposed to adding to it).
_DESTRUCTIVE_VERBS = frozenset({"Delete", "Remove", "Update", "Merge"})


def action_writes(action: str) -> bool:
    """Whether calling `action` changes state kept upstream ("AddFace" does, "DetectFace" does not)."""
    words = action_words(action)
    return bool(words) and words[0] in _WRITE_VERBS


def action_destroys(action: str) -> bool:
    """Whether calling `action` can delete or overwrite state kept upstream ("DeleteFace", "UpdateFaceEntity")."""
    words = action_words(action)
    return bool(words) and words[0] in _DESTRUCTIVE_VERBS


def kebab(action: str) -> str:
    return "-".join(word.lower() for word in action_words(action))


def legacy_id(product: str, action: str) -> str:
    return f"aliyun-{product}-{kebab(action)}"


def capability_id(action: str) -> str:
    words = [word.lower() for word in action_words(action)]
    noun = _VERB_NOUNS.get(words[0])
    return "-".join([*words[1:], noun]) if noun and len(words) > 1 else "-".join(words)


def _is_url(name: str, schema: dict) -> bool:
    return bool(schema.get("isFileTransferUrl")) or re.search(r"(url|URL|Url)[A-Z]?$", name) is not None


def _number(value):
    if isinstance(value, str):
        return float(value) if "." in value else int(value)
    return value


def _typed_example(schema: dict, example):
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(example)
        if kind == "number":
            return _number(example)
        if kind == "boolean":
            return str(example).lower() == "true" if isinstance(example, str) else bool(example)
    except (TypeError, ValueError):
        return None
    return example


_LIMIT_KEYS = ("enum", "minimum", "maximum", "maxItems", "minItems", "maxLength", "default")


def _property(name: str, schema: dict, curated: dict) -> dict:
    kind = schema.get("type", "string")
    prop: dict = {"type": kind}
    if kind == "string" and _is_url(name, schema):
        prop["format"] = "uri"
        prop["description"] = VIDEO_URL_NOTE if "video" in name.lower() else IMAGE_URL_NOTE
    elif kind == "string" and name == "JobId":
        prop["description"] = "Alibaba Cloud asynchronous job ID."
    else:
        prop["description"] = f"Alibaba Cloud RPC parameter {name}."
    for key in _LIMIT_KEYS:
        if key in schema:
            value = schema[key]
            prop[key] = [_typed_example(schema, v) for v in value] if key == "enum" else (
                _typed_example(schema, value) if key == "default" else _number(value))
    if kind == "array":
        items = schema.get("items") or {}
        prop["items"] = _object(items, curated.get("items") or {}) if items.get("type") == "object" else {
            "type": items.get("type", "string")}
    elif kind == "object":
        prop.update(_object(schema, curated))
    prop.update({k: v for k, v in curated.items() if k not in ("items", "properties")})
    return prop


def _object(schema: dict, curated: dict) -> dict:
    """An object's JSON Schema from metadata, with curated wording of its fields."""
    curated_fields = curated.get("properties") or {}
    fields = schema.get("properties") or {}
    result = {"type": "object", "properties": {
        name: _property(name, field_schema, curated_fields.get(name, {})) for name, field_schema in fields.items()}}
    required = [name for name, field_schema in fields.items() if field_schema.get("required")]
    if required:
        result["required"] = required
    return result


def _example_value(name: str, schema: dict):
    """The metadata's example, typed; nested objects and arrays built from their fields' examples."""
    kind = schema.get("type")
    if kind == "string" and _is_url(name, schema):
        return schema.get("example") or EXAMPLE_IMAGE_URL
    if kind == "object":
        fields = {sub: _example_value(sub, sub_schema) for sub, sub_schema in (schema.get("properties") or {}).items()}
        return {sub: value for sub, value in fields.items() if value not in (None, [], {})} or None
    if kind == "array":
        item = _example_value(name, schema.get("items") or {})
        return [item] if item not in (None, {}) else []
    example = schema.get("example")
    # Alibaba masks sample base64 payloads ("/9j/4AAQ****"); they are not usable values.
    if example in (None, "") or "**" in str(example):
        return None
    return _typed_example(schema, example)


def _example_response(action: str, api: dict) -> dict:
    demo = {}
    try:
        for variant in json.loads(api.get("responseDemo") or "[]"):
            if isinstance(variant, dict) and variant.get("type") == "json" and variant.get("example"):
                demo = json.loads(variant["example"])
                break
    except (TypeError, ValueError, AttributeError):
        demo = {}
    if not isinstance(demo, dict):
        demo = {}
    request_id = str(demo.pop("RequestId", "example-request-id"))
    result = demo.pop("Data", demo) if demo else f"example result from Alibaba Cloud {action}"
    return {"code": "200", "content": "", "data": {"Action": action, "Result": result},
            "message": "success", "requestId": request_id}


def _required_context(properties: dict, required: list[str]) -> list[str]:
    context = []
    for name in required or list(properties):
        prop = properties[name]
        if prop.get("format") == "uri":
            context.append("public-video-url" if "video" in name.lower() else "public-image-url")
        elif name == "JobId":
            context.append("job-id")
    return [*dict.fromkeys(context), "aliyun-credentials"]


def _error_examples(properties: dict, required: list[str]) -> list[dict]:
    if not required:
        return []
    first = required[0]
    examples = [{"input": {}, "error": f"{first} is required", "statusCode": 400}]
    if properties[first].get("format") == "uri":
        examples.append({"input": {first: "not-a-url"},
                         "error": f"{first} must be a valid http or https URL", "statusCode": 400})
    return examples


def service_spec(product: str, version: str, action: str, api: dict, curated: dict | None = None) -> dict:
    """One action's service definition; `curated` overrides the derived wording."""
    curated = curated or {}
    info = PRODUCTS.get(product) or Product(product, product, product, version)
    words = action_words(action)
    curated_params = curated.get("parameters", {})
    parameters = api.get("parameters") or []
    properties, required, binding, examples = {}, [], {}, {}
    method = "POST" if "post" in [m.lower() for m in api.get("methods", ["post"])] else "GET"
    for parameter in parameters:
        name, schema = parameter["name"], parameter["schema"]
        properties[name] = _property(name, schema, curated_params.get(name, {}))
        if schema.get("required"):
            required.append(name)
        place = "query" if method == "GET" or parameter.get("in") == "query" else "body"
        binding[name] = {"in": place, **({"style": parameter["style"]} if parameter.get("style") else {})}
        value = _example_value(name, schema)
        if value not in (None, []) and (schema.get("required") or _is_url(name, schema)):
            examples[name] = value
    input_schema = {"description": INPUT_SCHEMA_NOTE, "properties": properties, "type": "object"}
    if required:
        input_schema["required"] = required
    title = api.get("title") or api.get("summary") or action
    need = curated.get("need") or f"the visual analysis task described by action {title}"
    keys = ", ".join(sorted(properties)) or "none"
    description = (f"Use this visual AI API when the task needs {need}. Send the schema keys exactly as listed "
                   f"({keys}); required parameters: {', '.join(required) or 'none'}.")
    writes = action_writes(action)
    keywords = [action, f"阿里云{info.label_zh} {title}", *info.keywords, *(w.lower() for w in words),
                *curated.get("keywords", [])]
    return {
        "id": curated.get("id") or capability_id(action),
        "internal_id": legacy_id(product, action),
        "name": f"{' '.join(words)} {info.label}",
        "description": description,
        "description_for_model": description,
        "category": info.category,
        "keywords": list(dict.fromkeys(keywords)),
        "use_cases": [need, *GENERIC_USE_CASES],
        "limitations": LIMITATIONS,
        "tags": list(dict.fromkeys(["computer-vision", info.category, *info.tags])),
        "input_schema": input_schema,
        "output_schema": ENVELOPE_SCHEMA,
        "example_request": examples,
        "example_response": _example_response(action, api),
        "error_examples": _error_examples(properties, required),
        "related_services": curated.get("relatedServices", []),
        "required_context": curated.get("requiredContext") or _required_context(properties, required),
        "complexity": curated.get("complexity", "moderate"),
        "typical_response_ms": int(str(curated.get("typicalResponseTime", "1200ms")).removesuffix("ms")),
        "cacheable": curated.get("cacheable", not writes),
        "idempotent": curated.get("idempotent", not writes),
        "upstream_product": product,
        "upstream_version": version,
        "upstream_action": action,
        "upstream_method": method,
        "upstream_parameters": binding,
        # An async action tells its callers to poll GetAsyncJobResult for the result.
        "upstream_async": curated.get(
            "async", action != "GetAsyncJobResult" and "GetAsyncJobResult" in (api.get("description") or "")),
    }


def _related_by_product(specs: list[dict]) -> None:
    """Seed 001's rule where nothing is curated: the first three other actions of the product, by name."""
    ordered = sorted(specs, key=lambda spec: spec["upstream_action"])
    for spec in specs:
        if not spec["related_services"]:
            spec["related_services"] = [other["id"] for other in ordered if other is not spec][:3]


def metadata_specs(document: dict, curation: dict | None = None) -> list[dict]:
    """Every non-deprecated action of one api-docs.json, as draft service specs."""
    error = next(iter(sorted(_METADATA_VALIDATOR.iter_errors(document), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "(document)"
        raise MetadataError(where, error.message)
    info, apis = document["info"], document["apis"]
    product, version = info["product"], info["version"]
    curation = curation or {}
    specs = []
    for action, api in apis.items():
        if api.get("deprecated"):
            continue
        spec = service_spec(product, version, action, api, curation.get(f"{product}/{action}"))
        spec["state"] = "draft"
        specs.append(spec)
    _related_by_product(specs)
    return specs
