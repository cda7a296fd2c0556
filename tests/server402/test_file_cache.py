"""The embedded default's file cache: full, it drops expired entries before live ones."""

import time

from server402.file_cache import FileCache


def test_a_full_cache_drops_the_expired_entries_and_keeps_the_live_ones(tmp_path):
    cache = FileCache(str(tmp_path), {"OPTIONS": {"MAX_ENTRIES": 20, "CULL_FREQUENCY": 2}})
    cache.set("live", "window", timeout=3600)
    for index in range(18):
        cache.set(f"nonce-{index}", 1, timeout=1)
    time.sleep(1.1)

    for index in range(5):
        cache.set(f"another-{index}", "entry", timeout=3600)

    assert cache.get("live") == "window" and all(cache.get(f"another-{index}") for index in range(5))
    assert len(cache._list_cache_files()) == 6


def test_live_entries_alone_are_still_culled_when_they_fill_it(tmp_path):
    cache = FileCache(str(tmp_path), {"OPTIONS": {"MAX_ENTRIES": 10, "CULL_FREQUENCY": 2}})
    for index in range(15):
        cache.set(f"key-{index}", index, timeout=3600)

    assert len(cache._list_cache_files()) < 15
