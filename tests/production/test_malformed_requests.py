"""Requests and moments that used to be a 500 or a miscount: a chunked body gunicorn cannot decode; a legacy
payment's x402 settlement the database could not record after the facilitator had settled (the payer must get its
receipt and a clear 503); a proxy's X-Forwarded-For entry with a port, which made every client count as the proxy."""

import json
import socket
import threading

import pytest
from django.db import connection
from django.test import RequestFactory
from gunicorn.http.body import Body, ChunkedReader
from gunicorn.http.unreader import IterUnreader
from rest_framework.test import APIClient
from x402.http.utils import decode_payment_response_header

from payments import facilitators
from payments.models import Payment, X402Authorization
from server402.client_addresses import client_address

URL = "/api/tools/celebrity-recognition"
MALFORMED = "the request body is not valid chunked encoding; nothing was done"


def _gunicorn_chunked_input(raw: bytes) -> Body:
    """What gunicorn hands the application as wsgi.input for a Transfer-Encoding: chunked request: its own decoder,
    which raises its parse errors (not OSError) while the application reads."""
    return Body(ChunkedReader(object(), IterUnreader([raw])))


def _post_chunked(client, url: str, raw: bytes, **extra):
    # No data for the test client to frame: the body comes only through gunicorn's decoder.
    environ = {"CONTENT_LENGTH": "", "CONTENT_TYPE": "application/json", "HTTP_TRANSFER_ENCODING": "chunked",
               "wsgi.input_terminated": True, "wsgi.input": _gunicorn_chunked_input(raw)}
    return client.generic("POST", url, b"", **environ, **extra)


@pytest.mark.django_db
@pytest.mark.parametrize("raw", [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n"], ids=["size", "terminator"])
def test_a_chunked_tool_call_body_gunicorn_cannot_decode_is_400_and_charges_nothing(raw):
    response = _post_chunked(APIClient(), URL, raw)

    assert (response.status_code, response.json()) == (400, {"error": MALFORMED})
    assert not Payment.objects.exists()


@pytest.mark.django_db
def test_a_chunked_mcp_message_gunicorn_cannot_decode_is_an_invalid_request(client):
    response = _post_chunked(client, "/mcp", b"2\r\n{}XX0\r\n\r\n", HTTP_ACCEPT="application/json, text/event-stream")

    assert response.status_code == 400
    assert response.json()["error"] == {"code": -32600, "message": MALFORMED}


def _terminate(pid: int, ended: list) -> None:
    """pg_terminate_backend from a connection of this thread's own, waiting until the backend is gone."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
            ended.append(cursor.fetchone()[0])
    finally:
        connection.close()


def test_a_legacy_payment_whose_settlement_the_database_cannot_record_is_503_with_the_receipt(
        postgresql_only, committed_db, x402_payer, monkeypatch):
    api = APIClient()
    created = api.post("/api/payments", {"serviceId": "celebrity-recognition"}, format="json").json()
    pay_url = f"/api/payments/{created['paymentId']}/pay"
    header = api.post(pay_url, {"method": "x402"}, format="json")["PAYMENT-REQUIRED"]
    signature = x402_payer.header(header)
    sandbox = facilitators.facilitator()
    real_settle, kept = type(sandbox).settle, dict(connection.settings_dict)
    settled = []

    def settle_then_lose_the_database(self, payload, requirements):
        settled.append(real_settle(self, payload, requirements))
        # The database goes away while the facilitator settles: this connection is ended by the server (a
        # failover), and the next one finds nobody listening.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        ended = []
        terminator = threading.Thread(target=_terminate, args=(pid, ended))
        terminator.start()
        terminator.join(60)
        assert ended == [True]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            connection.settings_dict.update(HOST="127.0.0.1", PORT=probe.getsockname()[1])
        return settled[-1]

    monkeypatch.setattr(type(sandbox), "settle", settle_then_lose_the_database)
    try:
        paid = api.post(pay_url, HTTP_PAYMENT_SIGNATURE=signature)
    finally:
        connection.close()
        connection.settings_dict.update(kept)

    body = paid.json()
    assert (paid.status_code, paid["Retry-After"]) == (503, "5"), body
    assert (body["settlement"], body["paymentId"]) == ("unknown", created["paymentId"])
    receipt = decode_payment_response_header(paid["PAYMENT-RESPONSE"])
    assert receipt.success is True and receipt.transaction == settled[0].transaction
    # Nothing was written after the settlement: the operator reconciles from the logged receipt.
    assert Payment.objects.get().status == "pending"
    assert X402Authorization.objects.get().status == "reserved"
    assert len(settled) == 1
    assert json.dumps(body).count("do not pay it again") == 1


@pytest.mark.parametrize(("forwarded", "expected"), [
    ("203.0.113.9:51234", "203.0.113.9"),  # a proxy that writes the client's port too
    ("[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"),
    ("6.6.6.6, 198.51.100.4:7000", "198.51.100.4"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),  # an IPv6 address without brackets is not a port
])
def test_the_client_address_reads_an_entry_that_carries_a_port(settings, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = 1
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == expected
