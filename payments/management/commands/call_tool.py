"""Try the whole paid flow from a shell: buy a token with a key's balance, call the tool, print the answer."""

import json
import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from catalog.input_validation import input_problems
from catalog.selectors import service_resolve
from payments import services as payment_services
from payments.credentials import payment_token
from payments.pipeline import paid_call_run
from payments.selectors import ApiKeyRejected, api_key_allows, api_key_authenticate


class Command(BaseCommand):
    help = ("Buy one payment for a service with an API key's prepaid balance and call the tool with its token. "
            "In sandbox mode the server (make run) must be running: the emulator answers over HTTP.")

    def add_arguments(self, parser):
        parser.add_argument("service_id")
        parser.add_argument("--input", default="{}", help="The tool's arguments as a JSON object.")
        parser.add_argument("--api-key", default=os.environ.get("SERVER402_API_KEY"),
                            help="The key to pay with (default: $SERVER402_API_KEY).")

    def handle(self, *args, service_id, input, api_key, **options):
        if not api_key:
            raise CommandError("an API key is required: --api-key or SERVER402_API_KEY")
        try:
            arguments = json.loads(input)
        except ValueError as error:
            raise CommandError(f"--input is not JSON: {error}") from None
        try:
            key = api_key_authenticate(api_key)
        except ApiKeyRejected as rejected:
            raise CommandError(rejected.reason) from None
        service = service_resolve(service_id)
        if service is None:
            raise CommandError(f"service {service_id!r} not found or not callable")
        if not api_key_allows(key, service):
            raise CommandError("api key is not allowed to call this service")
        # Refuse bad input before buying anything with the balance.
        problems = input_problems(service.input_schema, arguments) if isinstance(arguments, dict) else [
            ("--input must be a JSON object", None)]
        if problems:
            raise CommandError(problems[0][0])
        payment = payment_services.payment_create(service=service, client=key)
        try:
            payment = payment_services.payment_pay_from_balance(payment=payment, api_key=key)
        except payment_services.InsufficientBalance:
            raise CommandError(f"balance too low: {key.balance_cents} cents, {payment.amount_cents} needed") from None
        self.stderr.write(f"Paid {payment.id} ({payment.amount_cents} cents, {payment.max_calls} call(s)); "
                          f"balance now {key.balance_cents} cents.")
        answer = paid_call_run(reference=service.id, arguments=arguments, api_key=api_key,
                               payment_token=payment_token(payment.id))
        self.stderr.write(f"HTTP {answer.status}")
        self.stdout.write(json.dumps(answer.body, ensure_ascii=False, indent=2))
        if answer.status != 200:
            # The failed call was given back: the token can pay for a retry.
            self.stderr.write(f"Not charged; retry with X-Payment-Token: {payment_token(payment.id)}")
            if settings.SANDBOX and answer.status == 502:
                self.stderr.write(f"The sandbox emulator is served by the running server: is it up on "
                                  f"PORT={settings.PORT}? Set PORT to the port `make run` serves.")
            sys.exit(1)
