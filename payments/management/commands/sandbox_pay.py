"""Pay for one tool call with x402 against the running server, printing each step: the demo for a newcomer.

Everything goes over HTTP, as it does for an agent: nothing of the paid-call
pipeline is imported, so what is printed is what the server really answered.
"""

import json
import os
import textwrap
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import quote

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from eth_account import Account
from x402 import PaymentError, x402ClientSync
from x402.http.utils import (
    decode_payment_required_header,
    decode_payment_response_header,
    encode_payment_signature_header,
)
from x402.mechanisms.evm.exact import ExactEvmClientScheme

PRIVATE_KEY_VARIABLE = "SERVER402_SANDBOX_PRIVATE_KEY"
NETWORK_NAMES = {"eip155:84532": "Base Sepolia, a test network", "eip155:8453": "Base mainnet"}
# USDC has 6 decimals: 1,000,000 atomic units are one dollar.
USDC_DECIMALS = 6
# The paid retry waits for the upstream (retried up to 3 times) and for settlement.
TIMEOUT = httpx.Timeout(120.0, connect=5.0)
REFUSED_UNPAID = "the server refused the call before asking for payment, so nothing was signed or charged"


def _usd(atomic: str) -> str:
    dollars = Decimal(int(atomic)).scaleb(-USDC_DECIMALS)
    # Whole cents read as a price ($0.20); smaller amounts keep every digit.
    return f"${dollars:.2f}" if dollars == round(dollars, 2) else f"${dollars.normalize():f}"


def _moment(seconds: str) -> str:
    if int(seconds) == 0:
        return "0 (no lower bound)"
    return f"{seconds} ({datetime.fromtimestamp(int(seconds), tz=UTC):%Y-%m-%d %H:%M:%S} UTC)"


def _abbreviated(signature: str) -> str:
    return f"{signature[:10]}...{signature[-8:]} ({(len(signature) - 2) // 2} bytes)"


def _body(response: httpx.Response):
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


def _pretty(body) -> str:
    text = json.dumps(body, ensure_ascii=False, indent=2) if isinstance(body, dict | list) else str(body)
    return textwrap.indent(text, "   ")


class Command(BaseCommand):
    help = (
        "Sandbox only. Pay for one tool call with x402 the way an agent does, against the running server "
        "(make run), and print each step: the 402 and its price, the signed USDC authorization, the result "
        "and the payment receipt. The payer is a test wallet on Base Sepolia: nothing real is paid. "
        "Example: manage.py sandbox_pay celebrity-recognition --input '{\"ImageURL\": \"https://example.com/a.jpg\"}'"
    )

    def add_arguments(self, parser):
        parser.add_argument("service_id", help="The tool to call: its id, legacy id or tool name.")
        parser.add_argument("--input", default="{}", help="The tool's arguments as a JSON object.")
        parser.add_argument("--api-key", default=os.environ.get("SERVER402_API_KEY"),
                            help="Sent as 'Authorization: Bearer', for pricing policies that require a key "
                                 "(default: $SERVER402_API_KEY).")
        parser.add_argument("--private-key", default=os.environ.get(PRIVATE_KEY_VARIABLE),
                            help=f"The payer's hex private key, to pay from the same test address every run "
                                 f"(default: ${PRIVATE_KEY_VARIABLE}, else a new throwaway key per run).")

    def handle(self, *args, service_id, input, api_key, private_key, **options):
        # What gets signed is a real EIP-3009 USDC authorization: on mainnet it would move money.
        if not settings.SANDBOX:
            raise CommandError("sandbox_pay runs only in sandbox mode (SERVER402_MODE=sandbox): it signs USDC "
                               "transfer authorizations with a test key and must never do so on mainnet")
        try:
            arguments = json.loads(input)
        except ValueError as error:
            raise CommandError(f"--input is not JSON: {error}") from None
        payer = self._payer(private_key)
        url = f"{settings.PUBLIC_BASE_URL}/api/tools/{quote(service_id, safe='')}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

        self._say(f"Paying for one call of {service_id} with x402 "
                  f"(sandbox: {NETWORK_NAMES.get(settings.X402_NETWORK)}, nothing real is paid)")
        self._say(f"Payer wallet: {payer.address}" + ("" if private_key else " (a throwaway key made for this run)"))
        with httpx.Client(timeout=TIMEOUT) as http:
            self._say(f"\n1. Call without paying\n   POST {url}\n   {json.dumps(arguments, ensure_ascii=False)}")
            response = self._post(http, url, arguments, headers)
            if response.status_code != 402:
                self._refused(response, REFUSED_UNPAID)
            required = self._payment_required(response)

            self._say("\n2. Sign the payment (EIP-3009 TransferWithAuthorization, by the official x402 client)")
            signature = self._sign(payer, required)

            self._say(f"\n3. Retry the same call with PAYMENT-SIGNATURE\n   POST {url}")
            response = self._post(http, url, arguments, {**headers, "PAYMENT-SIGNATURE": signature}, signed=True)
        if response.status_code != 200:
            self._refused(response, "the paid retry failed")
        self._say(f"   <- {response.status_code} {response.reason_phrase}")
        self._say(_pretty(_body(response)))
        self._say("\n4. Receipt (PAYMENT-RESPONSE)")
        self._receipt(response)

    def _say(self, text: str) -> None:
        self.stdout.write(text)

    def _payer(self, private_key: str | None):
        if not private_key:
            return Account.create()
        try:
            return Account.from_key(private_key)
        except (ValueError, TypeError):
            # Never echo the key itself.
            raise CommandError("--private-key is not a valid hex private key (32 bytes)") from None

    def _post(self, http: httpx.Client, url: str, arguments, headers: dict, signed=False) -> httpx.Response:
        try:
            return http.post(url, json=arguments, headers=headers)
        except httpx.TimeoutException:
            raise CommandError(f"{url} did not answer within {TIMEOUT.read:.0f} s"
                               + ("; the signed payment may still settle" if signed else "")) from None
        except httpx.TransportError as error:
            raise CommandError(f"cannot reach {url} ({type(error).__name__}): is `make run` running? "
                               f"PUBLIC_BASE_URL={settings.PUBLIC_BASE_URL}") from None

    def _refused(self, response: httpx.Response, what: str):
        """Print a non-success answer whole (status, body, any receipt) and stop with a non-zero exit."""
        body = _body(response)
        self._say(f"   <- {response.status_code} {response.reason_phrase}")
        self._say(_pretty(body))
        if "PAYMENT-RESPONSE" in response.headers:
            # A settlement that failed, or one that succeeded before the upstream failed (settle_first).
            self._say("   PAYMENT-RESPONSE:")
            self._receipt(response)
        details = body if isinstance(body, dict) else {"error": body}
        charged = " (charged: retryToken above pays for one more call)" if details.get("charged") is True else ""
        raise CommandError(f"{what}: HTTP {response.status_code}: {details.get('error', body)}{charged}")

    def _payment_required(self, response: httpx.Response):
        # This process's settings say sandbox; the server must say so too before anything is signed.
        mode = response.headers.get("X-Server402-Mode")
        if mode != "sandbox":
            raise CommandError(f"the server at {settings.PUBLIC_BASE_URL} is not in sandbox mode "
                               f"(X-Server402-Mode: {mode}): nothing was signed")
        header = response.headers.get("PAYMENT-REQUIRED")
        if not header:
            self._refused(response, "the 402 has no PAYMENT-REQUIRED header")
        try:
            required = decode_payment_required_header(header)
        except ValueError as error:
            raise CommandError(f"PAYMENT-REQUIRED is not an x402 PaymentRequired: {error}") from None
        self._say(f"   <- {response.status_code} {response.reason_phrase}: {required.error}")
        if not required.accepts:
            self._refused(response, "this 402 offers no x402 payment (the price is not in USD)")
        for offer in required.accepts:
            extra = offer.extra or {}
            self._say(f"   price:    {_usd(offer.amount)} = {offer.amount} atomic units (USDC has {USDC_DECIMALS} "
                      f"decimals), scheme {offer.scheme}\n"
                      f"   network:  {offer.network} ({NETWORK_NAMES.get(offer.network, 'unknown')})\n"
                      f"   asset:    {offer.asset} ({extra.get('name', '?')} version {extra.get('version', '?')})\n"
                      f"   payTo:    {offer.pay_to}\n"
                      f"   pay within {offer.max_timeout_seconds} s")
        body = _body(response)
        terms = body.get("payment") if isinstance(body, dict) else None
        if isinstance(terms, dict) and "amountCents" in terms:
            # The policy's own terms; an x402 signature always pays for exactly one call.
            self._say(f"   policy:   {terms.get('billingMode')}, {terms['amountCents']} {terms.get('currency')} "
                      f"cents for {terms.get('maxCalls')} call(s); one x402 payment pays for one call")
        if required.resource is not None:
            self._say(f"   resource: {required.resource.url}")
        # Refused here rather than left to the client's choice of offer: never sign for another chain.
        if any(offer.network != settings.X402_NETWORK for offer in required.accepts):
            raise CommandError(f"the 402 asks for payment on a network other than the sandbox's "
                               f"{settings.X402_NETWORK}: nothing was signed")
        return required

    def _sign(self, payer, required) -> str:
        # Registered for the sandbox network only, so the official client itself cannot sign for another chain.
        client = x402ClientSync().register(settings.X402_NETWORK, ExactEvmClientScheme(signer=payer))
        try:
            payload = client.create_payment_payload(required, resource=required.resource)
        except PaymentError as error:
            raise CommandError(f"the x402 client could not pay this 402: {error}") from None
        authorization, signature = payload.payload["authorization"], payload.payload["signature"]
        self._say(f"   from:        {authorization['from']}\n"
                  f"   to:          {authorization['to']}\n"
                  f"   value:       {authorization['value']} ({_usd(authorization['value'])})\n"
                  f"   validAfter:  {_moment(authorization['validAfter'])}\n"
                  f"   validBefore: {_moment(authorization['validBefore'])}\n"
                  f"   nonce:       {authorization['nonce']}\n"
                  f"   signature:   {_abbreviated(signature)}")
        header = encode_payment_signature_header(payload)
        self._say(f"   PAYMENT-SIGNATURE: {len(header)} characters of base64 JSON")
        return header

    def _receipt(self, response: httpx.Response) -> None:
        header = response.headers.get("PAYMENT-RESPONSE")
        if header:
            try:
                receipt = decode_payment_response_header(header)
            except ValueError as error:
                self._say(f"   PAYMENT-RESPONSE is not an x402 SettleResponse: {error}")
                return
            self._say(f"   success:     {str(receipt.success).lower()}\n"
                      f"   transaction: {receipt.transaction or '-'}\n"
                      f"   network:     {receipt.network}\n"
                      f"   payer:       {receipt.payer or '-'}")
            if receipt.error_reason:
                self._say(f"   error:       {receipt.error_reason} {receipt.error_message or ''}".rstrip())
        elif response.status_code == 200:
            self._say("   no PAYMENT-RESPONSE header: the server did not say how the payment settled")
        remaining = response.headers.get("X-Payment-Remaining-Calls")
        if remaining is not None:
            self._say(f"   remaining calls on this payment: {remaining}")
