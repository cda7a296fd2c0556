"""Create an API key from a shell; its secret is printed once and never stored."""

from django.core.management.base import BaseCommand, CommandError

from catalog.models import Service
from payments.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key and print its secret (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("--label", required=True)
        parser.add_argument("--service", action="append", default=[], metavar="ID",
                            help="Allow only this service (repeat for several); default: every service.")
        parser.add_argument("--rate-limit", type=int, metavar="PER_MINUTE")
        parser.add_argument("--daily-quota", type=int, metavar="CALLS")
        parser.add_argument("--balance-cents", type=int, default=0)

    def handle(self, *args, label, service, rate_limit, daily_quota, balance_cents, **options):
        services = list(Service.objects.filter(id__in=service))
        missing = sorted(set(service) - {s.id for s in services})
        if missing:
            raise CommandError(f"unknown service id: {', '.join(missing)}")
        for name, value in (("--rate-limit", rate_limit), ("--daily-quota", daily_quota),
                            ("--balance-cents", balance_cents)):
            if value is not None and value < 0:
                raise CommandError(f"{name} must not be negative")
        created = api_key_create(label=label, allowed_services=services, rate_limit_per_minute=rate_limit,
                                 daily_quota=daily_quota, balance_cents=balance_cents)
        key = created.api_key
        self.stderr.write(f"Created {key.client_id} ({label}); balance {key.balance_cents} cents. "
                          "The key below is shown once:")
        self.stdout.write(created.secret)
