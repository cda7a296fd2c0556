"""The baselines of the x402 throughput bench: the x402 SDK's own example servers selling the same tool.

Two app factories, each built as the SDK's example for its framework is built
(examples/python/servers/flask and .../fastapi in the x402 repository: a
resource server with the exact EVM server scheme, the SDK's payment middleware
over a route table), served as bench/x402_throughput.py starts them:

- flask_app(): x402ResourceServerSync and `payment_middleware`, under gunicorn
  with Server402's own process and thread counts;
- fastapi_app(): x402ResourceServer (async) and PaymentMiddlewareASGI, under
  uvicorn with as many workers, uvloop and httptools.

Two things differ from the examples, both so that they do Server402's job and
no less:

- the facilitator is the SDK's own x402FacilitatorSync with its exact EVM
  facilitator scheme on Server402's offline sandbox chain, built as
  payments.facilitators.SandboxFacilitator builds it: the same signature
  checks and settlement, in-process, where the examples call x402.org;
- the paid handler makes the same signed call to the same emulator through
  Server402's own upstream client, and answers the same envelope.

The route (path, price, payee, bazaar extension, upstream binding) comes from
the JSON file named by BENCH_X402_REFERENCE_ROUTE, written by the bench from
the catalog, so every server asks for exactly the same payment.
"""

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Settings only (upstream endpoint, timeouts, sandbox keys, x402 asset): these servers open no database.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server402.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from x402 import x402FacilitatorSync  # noqa: E402
from x402.http import PaymentOption  # noqa: E402
from x402.http.types import RouteConfig  # noqa: E402
from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme, ExactEvmServerScheme  # noqa: E402
from x402.schemas import AssetAmount, PaymentRequirements  # noqa: E402

from catalog import aliyun_client  # noqa: E402
from catalog.envelope import envelope  # noqa: E402
from payments.sandbox_chain import SandboxChain  # noqa: E402


def _route() -> dict:
    return json.loads(Path(os.environ["BENCH_X402_REFERENCE_ROUTE"]).read_text())


def sandbox_facilitator() -> x402FacilitatorSync:
    """The SDK facilitator SandboxFacilitator wraps; it already speaks the sync facilitator-client protocol."""
    chain = SandboxChain(asset=settings.X402_ASSET, chain_id=int(settings.X402_NETWORK.split(":")[1]),
                         token_name=settings.X402_ASSET_DOMAIN["name"],
                         token_version=settings.X402_ASSET_DOMAIN["version"])
    return x402FacilitatorSync().register([settings.X402_NETWORK], ExactEvmFacilitatorScheme(signer=chain))


class AsyncFacilitator:
    """The same facilitator for the async resource server, which awaits verify and settle.

    Called inline, not in a thread: the work is pure-Python signature recovery,
    which holds the GIL either way, so a thread would only add a hop.
    """

    def __init__(self, facilitator: x402FacilitatorSync):
        self._facilitator = facilitator

    async def verify(self, payload, requirements):
        return self._facilitator.verify(payload, requirements)

    async def settle(self, payload, requirements):
        return self._facilitator.settle(payload, requirements)

    def get_supported(self):
        return self._facilitator.get_supported()


def routes(route: dict) -> dict[str, RouteConfig]:
    offered = PaymentRequirements.model_validate(route["requirements"])
    option = PaymentOption(
        scheme=offered.scheme, network=offered.network, pay_to=offered.pay_to,
        price=AssetAmount(amount=offered.amount, asset=offered.asset, extra=offered.extra),
        max_timeout_seconds=offered.max_timeout_seconds,
    )
    config = RouteConfig(accepts=[option], description=route["description"], mime_type="application/json",
                         service_name=route["service_name"], tags=route["tags"], extensions=route["extensions"])
    return {f"POST {route['path']}": config}


def tool_call(upstream: SimpleNamespace, arguments) -> tuple[dict, int]:
    """The paid handler's work: the upstream call, then Server402's envelope (status 502 when it fails,
    so the middleware cancels the payment instead of settling it)."""
    if not isinstance(arguments, dict):
        return {"error": "request body must be a JSON object"}, 400
    try:
        answer = aliyun_client.call_service(upstream, arguments)
    except aliyun_client.UpstreamError as error:
        return {"error": error.message}, 502
    return envelope(upstream.upstream_action, answer.body, answer.request_id), 200


def flask_app():
    from flask import Flask, request
    from x402.http.middleware.flask import payment_middleware
    from x402.server import x402ResourceServerSync

    route = _route()
    upstream = SimpleNamespace(**route["upstream"])
    app = Flask(__name__)
    server = x402ResourceServerSync(sandbox_facilitator())
    server.register(settings.X402_NETWORK, ExactEvmServerScheme())
    payment_middleware(app, routes=routes(route), server=server)

    @app.post(route["path"])
    def paid_tool_call():
        return tool_call(upstream, request.get_json(silent=True))

    return app


def fastapi_app():
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from x402.http.middleware.fastapi import PaymentMiddlewareASGI
    from x402.server import x402ResourceServer

    route = _route()
    upstream = SimpleNamespace(**route["upstream"])
    app = FastAPI()
    server = x402ResourceServer(AsyncFacilitator(sandbox_facilitator()))
    server.register(settings.X402_NETWORK, ExactEvmServerScheme())
    app.add_middleware(PaymentMiddlewareASGI, routes=routes(route), server=server)

    # A plain `def`: FastAPI runs it in its thread pool, so the blocking upstream call does not stall the loop.
    @app.post(route["path"])
    def paid_tool_call(arguments: dict):
        body, status = tool_call(upstream, arguments)
        return JSONResponse(body, status_code=status)

    return app
