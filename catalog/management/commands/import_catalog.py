from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from catalog.services import REFERENCE_CATALOG, CatalogImportError, catalog_import


class Command(BaseCommand):
    help = (
        "Import catalog files (seed-001-shaped JSON) and Alibaba Cloud OpenAPI metadata (api-docs.json). "
        "Without a path, imports the reference catalog shipped with Server402. All files are imported in "
        "one transaction: one bad file imports nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="*", type=Path, metavar="PATH")
        parser.add_argument(
            "--overwrite", action="store_true", help="Replace operator edits with the imported values."
        )

    def handle(self, *args, paths, overwrite, **options):
        try:
            report = catalog_import(paths=paths or [REFERENCE_CATALOG], overwrite=overwrite)
        except CatalogImportError as error:
            raise CommandError(f"{error}\nNothing was imported.") from None
        for service_id in report.created:
            self.stdout.write(f"created  {service_id}")
        for service_id, fields in report.updated.items():
            self.stdout.write(f"updated  {service_id}: {', '.join(fields)}")
        for service_id, fields in report.kept_edits.items():
            self.stdout.write(f"kept operator edits of {service_id}: {', '.join(fields)}")
        for service_id, reason in report.skipped.items():
            self.stdout.write(f"skipped  {service_id}: {reason}")
        self.stdout.write(
            self.style.SUCCESS(
                f"{len(report.created)} created, {len(report.updated)} updated, "
                f"{len(report.unchanged)} unchanged, {len(report.skipped)} skipped"
            )
        )
