"""The external checks: the official `mcp` client drives /mcp on a live server, in every protocol mode it has,
and the x402 SDK's own MCP helper pays a tool with no code of ours.

`mcp` 2.3 connects in "legacy" mode (the initialize handshake, offering 2025-11-25), "auto" (server/discover,
then 2026-07-28) and "2026-07-28" (stateless from the first request); it offers 2025-06-18 and 2025-03-26 when
its newest handshake version is turned back, the one knob it has for older servers.
"""

from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import anyio
import httpx2
import mcp.client.session
import pytest
from eth_account import Account
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from x402 import x402ClientSync
from x402.mcp import wrap_mcp_client_with_payment
from x402.mechanisms.evm.exact import ExactEvmClientScheme
from x402.schemas import parse_payment_required

from catalog.models import Service
from jobs import services as job_services
from payments.models import Payment, ToolCall, X402Authorization
from payments.pipeline import paid_job_run

pytestmark = pytest.mark.usefixtures("committed_db")

BODY = {"ImageURL": "https://example.com/face.jpg"}

# (client mode, newest handshake version it offers, the version it must end up speaking)
MODES = [
    ("legacy", "2025-11-25", "2025-11-25"),
    ("legacy", "2025-06-18", "2025-06-18"),
    ("legacy", "2025-03-26", "2025-03-26"),
    ("auto", "2025-11-25", "2026-07-28"),
    ("2026-07-28", "2025-11-25", "2026-07-28"),
]


@pytest.fixture
def server(live_server, settings):
    settings.PUBLIC_BASE_URL = live_server.url
    settings.ALIBABA_CLOUD_ENDPOINT = f"{live_server.url}/sandbox/aliyun/{{product}}"
    # Small pages, so every mode walks nextCursor.
    settings.MCP_TOOLS_PAGE_SIZE = 25
    return live_server.url


def _run(scenario, server, mode, headers=None):
    async def connected():
        async with httpx2.AsyncClient(headers=headers or {}, timeout=30) as http, \
                Client(streamable_http_client(f"{server}/mcp", http_client=http), mode=mode) as client:
            return await scenario(client)

    # A thread of its own: the browser tests' Playwright keeps an event loop running in this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(anyio.run, connected).result()


async def _tool_names(client) -> list[str]:
    names, cursor = [], None
    while True:
        page = await client.list_tools(cursor=cursor)
        names += [tool.name for tool in page.tools]
        cursor = page.next_cursor
        if cursor is None:
            return names


@pytest.mark.parametrize(("mode", "offered", "spoken"), MODES, ids=[f"{m}-{o}" for m, o, _ in MODES])
def test_the_official_client_finds_pays_and_calls_a_tool_in_every_mode(server, make_key, paid_token, monkeypatch,
                                                                       mode, offered, spoken):
    monkeypatch.setattr(mcp.client.session, "LATEST_HANDSHAKE_VERSION", offered)
    key, secret = make_key()
    _, token = paid_token("celebrity-recognition", key)
    payer = x402ClientSync()
    account = Account.create()
    payer.register("eip155:*", ExactEvmClientScheme(signer=account))

    async def scenario(client):
        assert client.protocol_version == spoken
        names = await _tool_names(client)
        found = await client.call_tool("search_services", {"query": "recognise celebrities in a photo"})
        unpaid = await client.call_tool("celebrity_recognition", BODY)
        by_token = await client.call_tool("celebrity_recognition", {**BODY, "paymentToken": token})
        payload = payer.create_payment_payload(parse_payment_required(unpaid.structured_content))
        by_x402 = await client.call_tool("celebrity_recognition", BODY,
                                         meta={"x402/payment": payload.model_dump(by_alias=True, exclude_none=True)})
        return names, found, unpaid, by_token, by_x402

    names, found, unpaid, by_token, by_x402 = _run(scenario, server, mode, {"Authorization": f"Bearer {secret}"})

    published = Service.objects.filter(state="published", enabled=True).count()
    assert len(names) == len(set(names)) == published + 2
    assert {"celebrity_recognition", "search_services", "get_job_result"} <= set(names)
    assert not found.is_error and found.structured_content["services"][0]["id"] == "celebrity-recognition"
    assert unpaid.is_error
    assert unpaid.structured_content["status"] == "payment_required"
    assert unpaid.structured_content["accepts"][0]["network"] == "eip155:84532"
    assert not by_token.is_error and by_token.structured_content["data"]["Action"] == "DetectCelebrity"
    assert not by_x402.is_error and by_x402.structured_content["data"]["Action"] == "DetectCelebrity"
    receipt = by_x402.meta["x402/payment-response"]
    assert receipt["success"] and receipt["payer"] == account.address and receipt["network"] == "eip155:84532"
    assert Payment.objects.get(flow="token").used_calls == 1
    assert X402Authorization.objects.get().status == "settled"
    assert list(ToolCall.objects.values_list("outcome", flat=True)) == ["succeeded", "succeeded"]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_the_official_client_asks_for_a_job_and_reads_its_result(server, make_key, paid_token, monkeypatch, mode):
    key, secret = make_key()
    _, token = paid_token("celebrity-recognition", key)
    # The test is the worker: nothing goes to the broker, and the job is run below, between the two sessions.
    queued = []
    monkeypatch.setattr(job_services, "_enqueue", queued.append)

    async def submit(client):
        # The client validates a non-error result against the tool's outputSchema: the accepted job must fit it.
        accepted = await client.call_tool("celebrity_recognition", {**BODY, "paymentToken": token},
                                          meta={"server402/respond-async": True})
        waiting = await client.call_tool("get_job_result", {"jobId": accepted.structured_content["jobId"]})
        return accepted, waiting

    accepted, waiting = _run(submit, server, mode, {"Authorization": f"Bearer {secret}"})
    job_id, job_secret = accepted.structured_content["jobId"], accepted.structured_content["jobSecret"]
    paid_job_run(job_id=job_id)

    async def read(client):
        return await client.call_tool("get_job_result", {"jobId": job_id, "jobSecret": job_secret})

    # Another session, without the API key: the job's secret is enough.
    done = _run(read, server, mode)

    assert not accepted.is_error and accepted.meta["server402/job"]["jobId"] == job_id == queued[0]
    assert not waiting.is_error and waiting.structured_content["status"] == "queued"
    assert not done.is_error and done.structured_content["status"] == "succeeded"
    assert done.structured_content["result"]["data"]["Action"] == "DetectCelebrity"
    assert ToolCall.objects.get().outcome == "succeeded" and Payment.objects.get().used_calls == 1


class _WireClient:
    """The MCP client x402's helper expects (call_tool takes the request params, the result reads as its wire JSON),
    in front of mcp 2.3's Client: the two official SDKs meet here and nowhere in Server402."""

    def __init__(self, client):
        self.client = client

    async def call_tool(self, params, read_timeout_seconds=None, **options):
        result = await self.client.call_tool(params["name"], params.get("arguments"), meta=params.get("_meta"),
                                             read_timeout_seconds=read_timeout_seconds.total_seconds())
        return SimpleNamespace(**result.model_dump(mode="json", by_alias=True, exclude_none=True))


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_the_x402_mcp_helper_recognises_our_402_and_pays_it(server, mode):
    account = Account.create()
    payer = x402ClientSync()
    payer.register("eip155:*", ExactEvmClientScheme(signer=account))
    asked = []

    async def scenario(client):
        paying = wrap_mcp_client_with_payment(_WireClient(client), payer, auto_payment=True,
                                              on_payment_requested=lambda context: asked.append(context) or True)
        return await paying.call_tool("celebrity_recognition", BODY)

    result = _run(scenario, server, mode)

    assert [context.payment_required.accepts[0].amount for context in asked] == ["200000"]
    assert result.payment_made and not result.is_error
    assert result.payment_response.success and result.payment_response.payer == account.address
    assert X402Authorization.objects.get().status == "settled"
    assert ToolCall.objects.get().outcome == "succeeded"
