"""Where a request comes from, for the limits on callers who present no API key.

REMOTE_ADDR is the peer of the connection. Each proxy in front of the server
appends the address it was reached from to X-Forwarded-For, so behind
TRUSTED_PROXY_COUNT of them the client is the entry that many places from the
right: the first one a trusted proxy wrote. Entries further left were sent by
the client itself and prove nothing, and without trusted proxies the header is
not read at all (anyone can send it).
"""

import ipaddress

from django.conf import settings

# An IPv6 client usually holds a whole /64: counting single addresses would give it billions of budgets.
_IPV6_PREFIX = 64


def _normalized(text: str) -> str | None:
    text = text.strip()
    # Some proxies (Azure Application Gateway, for one) append the client's port as well: "203.0.113.9:51234",
    # "[2001:db8::1]:443". Unread, every client would count as the proxy itself.
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{_IPV6_PREFIX}", strict=False))
    return str(address)


def client_address(request) -> str:
    """The client's address (an IPv6 client's /64), as far as the configured proxies can vouch for it."""
    remote = _normalized(request.META.get("REMOTE_ADDR", "")) or "unknown"
    trusted = settings.TRUSTED_PROXY_COUNT
    if not trusted:
        return remote
    entries = [entry for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if entry.strip()]
    if not entries:
        return remote
    # Fewer entries than proxies: the request skipped the outer ones, and every entry is a trusted proxy's.
    chosen = entries[-trusted] if len(entries) >= trusted else entries[0]
    return _normalized(chosen) or remote
