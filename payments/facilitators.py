"""Who verifies and settles x402 payments: a remote facilitator over HTTP, or the sandbox one in-process.

Both answer the x402 facilitator API in the SDK's own types (VerifyResponse,
SettleResponse). A rejection is an answer (`is_valid: false`, `success:
false` with a reason); a facilitator that cannot be asked (unreachable, timed
out, answering nonsense) raises FacilitatorUnavailable, which the caller must
treat as "outcome unknown", never as success.
"""

import os
import threading
import time
from typing import Protocol

import httpx
from django.conf import settings
from x402 import x402FacilitatorSync
from x402.http.facilitator_client import FacilitatorConfig, HTTPFacilitatorClientSync
from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme
from x402.schemas import PaymentPayload, PaymentRequirements, SettleResponse, VerifyResponse

from payments.sandbox_chain import SandboxChain

SANDBOX = "sandbox"


class FacilitatorUnavailable(Exception):
    """The facilitator gave no usable answer; `reason` says why in a sentence."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Facilitator(Protocol):
    name: str

    def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse: ...

    def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse: ...


class _Deadline(httpx.HTTPTransport):
    """Bounds a whole exchange, not each read: httpx's timeouts restart with every chunk, so a
    facilitator trickling its answer would otherwise hold a worker far beyond the timeout."""

    def __init__(self, seconds: float):
        super().__init__()
        self._seconds = seconds

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + self._seconds
        response = super().handle_request(request)
        chunks = response.stream

        def bounded():
            for chunk in chunks:
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the answer took longer than the deadline", request=request)
                yield chunk

        try:
            body = b"".join(bounded())
        finally:
            response.close()
        return httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(body),
                              extensions=response.extensions)


class RemoteFacilitator:
    """A facilitator's /verify and /settle over HTTP, through the SDK's own client."""

    def __init__(self, url: str, *, timeout: float, authorization: str | None = None):
        self.name = url
        headers = {"Authorization": authorization} if authorization else {}
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)), headers=headers,
                                  follow_redirects=False, transport=_Deadline(timeout))
        self._client = HTTPFacilitatorClientSync(FacilitatorConfig(url=url, timeout=timeout, http_client=self._http))

    def _ask(self, operation, payload: PaymentPayload, requirements: PaymentRequirements):
        try:
            return operation(payload, requirements)
        except httpx.TimeoutException:
            raise FacilitatorUnavailable("the payment facilitator did not answer in time") from None
        except httpx.HTTPError as error:
            raise FacilitatorUnavailable(f"the payment facilitator could not be reached ({type(error).__name__})") \
                from None
        except ValueError as error:
            # The SDK raises ValueError for a non-200 answer or a body that is not its type.
            raise FacilitatorUnavailable(f"the payment facilitator answered with an error: {str(error)[:200]}") \
                from None

    def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        return self._ask(self._client.verify, payload, requirements)

    def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        return self._ask(self._client.settle, payload, requirements)


class SandboxFacilitator:
    """The SDK's own facilitator and exact-EVM scheme, on an offline chain (see payments.sandbox_chain)."""

    name = SANDBOX

    def __init__(self, *, network: str, asset: str, domain: dict):
        chain = SandboxChain(asset=asset, chain_id=int(network.split(":")[1]), token_name=domain["name"],
                             token_version=domain["version"])
        self._facilitator = x402FacilitatorSync().register([network], ExactEvmFacilitatorScheme(signer=chain))

    def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        return self._facilitator.verify(payload, requirements)

    def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        return self._facilitator.settle(payload, requirements)


_current: tuple[tuple, Facilitator] | None = None
_lock = threading.Lock()


def facilitator() -> Facilitator:
    """The facilitator the settings name: remote when X402_FACILITATOR_URL is set, else the sandbox one.

    One per process (rebuilt after a fork, or when tests change the settings).
    """
    global _current
    key = (os.getpid(), settings.X402_FACILITATOR_URL, settings.X402_FACILITATOR_TIMEOUT,
           settings.X402_FACILITATOR_AUTHORIZATION, settings.X402_NETWORK, settings.X402_ASSET,
           tuple(sorted(settings.X402_ASSET_DOMAIN.items())))
    with _lock:
        if _current is None or _current[0] != key:
            if settings.X402_FACILITATOR_URL:
                chosen = RemoteFacilitator(settings.X402_FACILITATOR_URL, timeout=settings.X402_FACILITATOR_TIMEOUT,
                                           authorization=settings.X402_FACILITATOR_AUTHORIZATION)
            else:
                chosen = SandboxFacilitator(network=settings.X402_NETWORK, asset=settings.X402_ASSET,
                                            domain=settings.X402_ASSET_DOMAIN)
            _current = (key, chosen)
        return _current[1]
