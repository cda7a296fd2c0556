"""The Prefer header (RFC 7240): what is read, and what is ignored rather than refused."""

import pytest

from server402.http_preferences import preferences, prefers_respond_async


@pytest.mark.parametrize(("header", "stated"), [
    ("respond-async", {"respond-async": ""}),
    ("Respond-Async, WAIT=10", {"respond-async": "", "wait": "10"}),
    ("return=minimal; foo=bar, respond-async", {"return": "minimal", "respond-async": ""}),
    ('handling="strict, lenient", respond-async', {"handling": "strict, lenient", "respond-async": ""}),
    ('note="a \\"quoted\\" word"', {"note": 'a "quoted" word'}),
    ("wait=1, wait=2", {"wait": "1"}),
    (None, {}), ("", {}), (",,,", {}), (";;;", {}), ('"respond-async"', {}), ("a b", {}), ("=x", {}),
    ("respond-async" + ", x" * 1000, {}),
])
def test_it_reads_the_well_formed_preferences_and_skips_the_rest(header, stated):
    assert preferences(header) == stated


@pytest.mark.parametrize(("header", "asked"), [
    ("respond-async", True), ("wait=5,respond-async", True), ('respond-async=""', True),
    ("respond-async;param", True), ("respond-async=true", False), ("respond-async=0", False),
    ("respond-asyncx", False), ("respond_async", False), ("junk", False), (None, False),
])
def test_respond_async_takes_no_value(header, asked):
    assert prefers_respond_async(header) is asked
