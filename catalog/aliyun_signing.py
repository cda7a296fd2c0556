"""Alibaba Cloud request signatures: RPC HMAC-SHA1 (seed 003, section 7) and ACS3-HMAC-SHA256.

Pure functions, shared by the upstream client (which signs) and the sandbox
emulator (which checks), and tested against the vectors Alibaba's own SDKs
produce (../shared/reference/aliyun-signing-vectors.md).
"""

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote

ACS3 = "ACS3-HMAC-SHA256"
# Headers the ACS3 scheme signs, besides content-type when a body is sent.
ACS3_SIGNED_HEADERS = (
    "host", "x-acs-action", "x-acs-content-sha256", "x-acs-date", "x-acs-signature-nonce", "x-acs-version",
)


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as Alibaba signs it: only A-Z a-z 0-9 - _ . ~ stay."""
    return quote(str(value), safe="-_.~")


def timestamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_query(params: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    pairs = params.items() if isinstance(params, Mapping) else params
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(pairs))


def rpc_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """`METHOD&%2F&enc(canonical)`: every query and form parameter except Signature."""
    signed = {key: value for key, value in params.items() if key != "Signature"}
    return f"{method.upper()}&%2F&{percent_encode(canonical_query(signed))}"


def rpc_signature(method: str, params: Mapping[str, str], secret: str) -> str:
    """base64(HMAC-SHA1(secret + "&", StringToSign))."""
    digest = hmac.new(f"{secret}&".encode(), rpc_string_to_sign(method, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def acs3_canonical_request(
    method: str, query: Mapping[str, str], headers: Mapping[str, str], signed_headers: Iterable[str], body: bytes
) -> str:
    names = sorted(name.lower() for name in signed_headers)
    lowered = {name.lower(): value for name, value in headers.items()}
    canonical_headers = "".join(f"{name}:{str(lowered[name]).strip()}\n" for name in names)
    return "\n".join(
        [method.upper(), "/", canonical_query(query), canonical_headers, ";".join(names), sha256_hex(body)]
    )


def acs3_signature(
    method: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    signed_headers: Iterable[str],
    body: bytes,
    secret: str,
) -> str:
    """hex(HMAC-SHA256(secret, "ACS3-HMAC-SHA256\\n" + hex(sha256(CanonicalRequest))))."""
    canonical = acs3_canonical_request(method, query, headers, signed_headers, body)
    string_to_sign = f"{ACS3}\n{sha256_hex(canonical.encode())}"
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def acs3_authorization(access_key_id: str, signed_headers: Iterable[str], signature: str) -> str:
    names = ";".join(sorted(name.lower() for name in signed_headers))
    return f"{ACS3} Credential={access_key_id},SignedHeaders={names},Signature={signature}"


def acs3_parse_authorization(value: str) -> dict[str, str] | None:
    """{"Credential", "SignedHeaders", "Signature"} from an Authorization header, or None."""
    scheme, _, rest = value.partition(" ")
    if scheme != ACS3:
        return None
    fields = dict(part.strip().partition("=")[::2] for part in rest.split(",") if "=" in part)
    return fields if {"Credential", "SignedHeaders", "Signature"} <= fields.keys() else None
