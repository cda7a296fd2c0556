"""Writes to the catalog."""

import json
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from catalog.aliyun_metadata import MetadataError, metadata_specs
from catalog.catalog_files import CatalogFileError, catalog_specs
from catalog.models import PricingPolicy, Service

REFERENCE_CATALOG = Path(__file__).resolve().parent / "reference" / "catalog.json"
# Kept in a service's import snapshot: whether it came from raw metadata or a curated catalog file.
SOURCE_KIND = "_source"


class CatalogImportError(Exception):
    """An import refused as a whole; the message names the file and the field."""

    def __init__(self, path, field: str, message: str):
        super().__init__(f"{path}: {field}: {message}")
        self.path, self.field = str(path), field


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: dict[str, list[str]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    kept_edits: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    policies_created: list[str] = field(default_factory=list)


def _read_specs(path: Path) -> tuple[list[dict], bool]:
    """The file's specs, and whether their ids were generated (metadata) rather than curated."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CatalogImportError(path, "(file)", error.strerror or str(error)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CatalogImportError(path, "(file)", f"not valid JSON: {error}") from None
    try:
        if isinstance(document, dict) and "apis" in document:
            return metadata_specs(document), True
        return catalog_specs(document), False
    except (MetadataError, CatalogFileError) as error:
        raise CatalogImportError(path, error.field, str(error).split(": ", 1)[1]) from None


def _merge(obj, spec: dict, *, overwrite: bool) -> tuple[list[str], list[str]]:
    """Apply `spec` to `obj` field by field, keeping what an operator changed.

    A field is an operator's edit when its current value differs from the value
    the last import wrote. Returns (changed fields, kept edits).
    """
    changed, kept = [], []
    for name, new in spec.items():
        current = getattr(obj, name)
        last = obj.imported.get(name, current)
        if current != last and not overwrite:
            if current != new:
                kept.append(name)
        elif current != new:
            setattr(obj, name, new)
            changed.append(name)
        obj.imported[name] = new
    return changed, kept


def _policy(spec: dict | None, where, *, overwrite: bool, seen: dict, report: ImportReport) -> PricingPolicy:
    """The policy a spec names, created or merged once per import (later mentions must agree)."""
    if spec is None:
        spec = {"id": settings.DEFAULT_PRICING_POLICY}
        policy = PricingPolicy.objects.filter(id=spec["id"]).first()
        if policy is not None:
            return policy
        spec = {**spec, "name": "Alibaba Cloud VIAPI", "amount_cents": 20}
    if spec["id"] in seen:
        first, policy = seen[spec["id"]]
        if first != spec:
            raise CatalogImportError(where, "pricing", f"policy {spec['id']!r} is given two different ways")
        return policy
    policy, created = PricingPolicy.objects.get_or_create(id=spec["id"], defaults={**spec, "imported": spec})
    if created:
        report.policies_created.append(policy.id)
    else:
        snapshot = dict(policy.imported)
        changed, _ = _merge(policy, {k: v for k, v in spec.items() if k != "id"}, overwrite=overwrite)
        if changed or policy.imported != snapshot:
            policy.save()
    seen[spec["id"]] = (spec, policy)
    return policy


def _existing(spec: dict) -> Service | None:
    return (
        Service.objects.filter(id=spec["id"]).first()
        or Service.objects.filter(
            upstream_product=spec["upstream_product"],
            upstream_version=spec["upstream_version"],
            upstream_action=spec["upstream_action"],
        ).first()
    )


def _id_taken(spec: dict) -> bool:
    return Service.objects.filter(id=spec["id"]).exclude(
        upstream_product=spec["upstream_product"], upstream_action=spec["upstream_action"]
    ).exists()


def _save(service: Service, path, *, new: bool) -> None:
    try:
        service.full_clean(exclude=["pricing_policy"], validate_unique=new)
    except ValidationError as error:
        field, messages = next(iter(error.message_dict.items()))
        raise CatalogImportError(path, f"{service.id}.{field}", " ".join(messages)) from None
    service.save()


@transaction.atomic
def catalog_import(*, paths: list[Path], overwrite: bool = False) -> ImportReport:
    """Import seed-001-shaped catalog files and Alibaba Cloud metadata, all or nothing.

    Re-importing is idempotent. Fields an operator edited since the last import
    are kept unless `overwrite`. An action already in the catalog under another
    id (say, raw metadata over the curated reference catalog) is left alone.
    """
    report, policies = ImportReport(), {}
    for path in paths:
        specs, generated = _read_specs(Path(path))
        ids = [spec["id"] for spec in specs]
        if not generated and len(set(ids)) != len(ids):
            twice = sorted({i for i in ids if ids.count(i) > 1})
            raise CatalogImportError(path, f"{twice[0]}.id", "appears more than once in the file")
        for spec in specs:
            policy = _policy(spec.pop("pricing_policy", None), path, overwrite=overwrite, seen=policies,
                             report=report)
            if _id_taken(spec):
                if not generated:
                    raise CatalogImportError(path, f"{spec['id']}.id", "is already used by another upstream action")
                # Generic ids like "get-async-job-result" recur across products.
                spec["id"] = f"{spec['upstream_product']}-{spec['id']}"
            service = _existing(spec)
            source = "metadata" if generated else "catalog"
            if service is not None and (
                service.id != spec["id"] or (generated and service.imported.get(SOURCE_KIND) != "metadata")
            ):
                # Raw metadata never overrides a curated entry of the same action.
                report.skipped[spec["id"]] = f"{spec['upstream_action']} is already in the catalog as {service.id}"
                continue
            fields = {**spec, "pricing_policy_id": policy.id, "imported_from": str(path)}
            fields.pop("id")
            if service is None:
                service = Service(id=spec["id"], **fields, imported={**fields, SOURCE_KIND: source})
                _save(service, path, new=True)
                report.created.append(service.id)
                continue
            snapshot = dict(service.imported)
            changed, kept = _merge(service, fields, overwrite=overwrite)
            service.imported[SOURCE_KIND] = source
            if changed or service.imported != snapshot:
                _save(service, path, new=False)
            if set(changed) - {"imported_from"}:
                report.updated[service.id] = changed
            else:
                report.unchanged.append(service.id)
            if kept:
                report.kept_edits[service.id] = kept
    return report


# --- Operators' edits (the dashboard) -------------------------------------------


def _changes_apply(model, pk, changes: dict) -> tuple[object, list[str]]:
    """Apply `changes` to the row as it is now (locked), saving only what differs; (row, changed names).

    Compared with the stored row, not the caller's instance: a bound ModelForm
    has already written its values onto the instance it was given.
    """
    with transaction.atomic():
        row = model.objects.select_for_update().get(pk=pk)
        changed = [name for name, value in changes.items() if getattr(row, name) != value]
        for name in changed:
            setattr(row, name, changes[name])
        if changed:
            row.full_clean()
            row.save(update_fields=[*changed, "updated_at"])
    return row, changed


def service_update(*, service: Service, **changes) -> list[str]:
    """Apply an operator's edits to a service; returns the names of the fields that changed.

    Saved through Model.save(), which stamps updated_at: every process's search
    index and tool list pick the edit up at their next request. A later catalog
    import keeps these edits (it only overwrites fields still at their imported value).
    """
    return _changes_apply(Service, service.pk, changes)[1]


def pricing_policy_create(*, id: str, amount_cents: int, **fields) -> PricingPolicy:
    """A new pricing policy; services are moved to it one by one from their own pages."""
    policy = PricingPolicy(id=id, amount_cents=amount_cents, **fields)
    policy.full_clean()
    # An INSERT, never an UPDATE: two operators choosing the same id at once must not overwrite each other.
    policy.save(force_insert=True)
    return policy


def pricing_policy_update(*, policy: PricingPolicy, **changes) -> list[str]:
    """Edit a policy; returns the names of the fields that changed.

    Existing payments keep the price and rules they copied when they were made;
    only payments created after this change see it.
    """
    return _changes_apply(PricingPolicy, policy.pk, changes)[1]
