"""What a response body may be before we use it: JSON, not nested deeper than a limit. Pure; no I/O.

The byte and time bounds of a read are the HTTP seam's (``shared.adapters.aml_http``); the shape bound is
here, so the seam and the tests share one rule. Python's json module recurses in C and raises
``RecursionError`` near 1,000 levels; anything deeper than ``MAX_RESPONSE_DEPTH`` is refused, so nothing
downstream (scrubbing, subject matching, ``json.dumps``) ever recurses further than that.
"""

from __future__ import annotations

import json
from typing import Any

from shared.domain.errors import UnreadableResponseError

# Azure ML documents nest about 10 levels (a run's properties, a pipeline graph); user-supplied JSON in
# tags or properties adds a few. 64 is generous for data and far from any stack limit.
MAX_RESPONSE_DEPTH = 64


def nests_deeper_than(value: Any, limit: int) -> bool:
    """True when ``value`` nests deeper than ``limit`` (iterative: a hostile document must not blow the stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def too_deep(limit: int = MAX_RESPONSE_DEPTH) -> UnreadableResponseError:
    return UnreadableResponseError(f"the response nests deeper than {limit} levels; it was not used", code="response_too_deep")


def parse_json_document(content: bytes, *, max_depth: int = MAX_RESPONSE_DEPTH) -> Any:
    """JSON bytes -> value. Raises ``ValueError`` when it is not JSON, ``UnreadableResponseError``
    (``response_too_deep``) when it nests deeper than ``max_depth``. ``NaN``/``Infinity`` are read as
    floats here and turned into ``null`` (counted) where records are written (``shared.domain.scrub``)."""
    try:
        value = json.loads(content)
    except RecursionError:
        raise too_deep(max_depth) from None
    if nests_deeper_than(value, max_depth):
        raise too_deep(max_depth)
    return value
