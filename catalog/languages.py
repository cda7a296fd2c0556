"""Telling Chinese text apart, the same way for search and for catalog entries."""

import re

# CJK Unified Ideographs with Extension A: every character a catalog keyword uses.
CJK = re.compile(r"[\u3400-\u9fff]")


def has_cjk(text: str) -> bool:
    return CJK.search(text) is not None
