"""manage.py run_health_checks [--service ID ...] [--concurrency N] [--full] [--inline | --no-wait [--delay S]]"""

import time

from django.core.management.base import BaseCommand, CommandError

from health import services
from health.models import HealthRun


class Command(BaseCommand):
    help = ("Start a health run over every published service (or the ones named) on the Celery workers, "
            "wait for it and print each service's result.")

    def add_arguments(self, parser):
        parser.add_argument("--service", action="append", dest="service_ids", metavar="ID",
                            help="A service id to check; repeat for several. Default: every published service.")
        parser.add_argument("--concurrency", type=int, help="Services checked at once (HEALTH_CHECK_CONCURRENCY).")
        parser.add_argument("--full", action="store_true",
                            help="Send each service's example request (billed in live mode), not the free probe.")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--inline", action="store_true", help="Run here instead of on a Celery worker.")
        mode.add_argument("--no-wait", action="store_true", help="Queue the run and return its id.")
        parser.add_argument("--delay", type=float, default=0, metavar="SECONDS",
                            help="With --no-wait: have the worker start it this many seconds from now.")
        parser.add_argument("--timeout", type=float, default=600.0,
                            help="Seconds to wait for a queued run to finish (default 600).")

    def handle(self, *args, service_ids, concurrency, full, inline, no_wait, delay, timeout, **options):
        try:
            run = services.health_run_start(trigger=HealthRun.Trigger.COMMAND, service_ids=service_ids,
                                            concurrency=concurrency, full=full, enqueue=not inline,
                                            delay_seconds=delay if no_wait else 0)
        except services.HealthRunRefused as refused:
            raise CommandError(str(refused)) from None
        self.stdout.write(f"Health run {run.pk}: {run.total} service(s), concurrency {run.concurrency}")
        if no_wait:
            return
        if inline:
            run = services.health_run_execute(run_id=run.pk)
        else:
            run = self._wait(run, timeout)
        for result in run.results.select_related("service").order_by("service_id"):
            latency = f"{result.latency_ms} ms" if result.latency_ms is not None else "-"
            self.stdout.write(f"  {result.service_id:44} {result.status:12} {latency:>9}  {result.message}")
        self.stdout.write(f"Run {run.pk} {run.status} in {run.duration_seconds or 0:.1f} s: "
                          f"{run.done}/{run.total} checked{'; ' + run.error if run.error else ''}")
        if run.status != HealthRun.Status.SUCCEEDED:
            raise CommandError(f"health run {run.pk} {run.status}")

    def _wait(self, run: HealthRun, timeout: float) -> HealthRun:
        deadline = time.monotonic() + timeout
        reported = -1
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if run.is_finished:
                return run
            if run.done != reported:
                reported = run.done
                self.stdout.write(f"  {run.status}: {run.done}/{run.total}")
            time.sleep(0.5)
        hint = " No worker has taken it: is one running (make run starts one)? --inline runs it here." \
            if run.status == HealthRun.Status.QUEUED else ""
        raise CommandError(f"health run {run.pk} is still {run.status} after {timeout:.0f} s.{hint}")
