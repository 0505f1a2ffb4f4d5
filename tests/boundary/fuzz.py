"""Shared pieces of the file fuzzers: the example budget, JSON strategies that reach the
corners strangers' files reach (integers of hundreds of digits, NaN, deep nesting),
and the one-line check of the project's error types.

Budget: each fuzzer runs ``examples`` generated inputs with a fixed derandomized seed
(the same inputs every run, as CI needs). Before a release, run them longer and with
fresh random seeds::

    CLAID_FUZZ=release python -m pytest tests/boundary -q      # 20x the examples

(``CLAID_FUZZ_SCALE=N`` multiplies the examples by N with the fixed seed.)
"""

from __future__ import annotations

import os
import resource

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

RELEASE = os.environ.get("CLAID_FUZZ") == "release"
SCALE = 20 if RELEASE else int(os.environ.get("CLAID_FUZZ_SCALE", "1"))
#: address space a fuzzed reader may use (bytes): more is a finding, not a slow test
MEMORY_LIMIT = 3 << 30


def fuzz_settings(examples: int):
    """``examples`` fixed-seed examples in CI (x20 with fresh seeds for a release)."""
    return settings(max_examples=examples * SCALE, derandomize=not RELEASE, deadline=None,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


def limit_memory(limit: int = MEMORY_LIMIT) -> None:
    """Cap this process's address space (a fuzzed reader that allocates without bound
    fails with MemoryError, which the fuzzer reports, instead of taking the machine)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def one_line(err: BaseException) -> None:
    message = str(err)
    assert message and "\n" not in message and len(message) < 2000, repr(message[:300])


#: numbers a hostile file holds
NUMBERS = st.one_of(
    st.integers(-5, 300), st.floats(-1e3, 1e3), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([10**400, -(10**400), 10**30, 1e9, -1e9, 1e308, 2**31, 2**63, True, False, 0, -0.0]),
)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=12))
JSON = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                    max_leaves=12)


def field_value(good):
    """Mostly ``good`` (a strategy of valid values), else any JSON."""
    return st.one_of(good, good, good, JSON)


@st.composite
def mutated_bytes(draw, payload: bytes) -> bytes:
    """``payload`` with one byte-level mutation: truncated, a byte changed, deep
    nesting or a huge integer spliced in (what the JSON reader itself must survive)."""
    kind = draw(st.sampled_from(["keep"] * 6 + ["truncate", "flip", "nest", "digits", "bom", "junk"]))
    at = draw(st.integers(0, max(0, len(payload))))
    if kind == "truncate":
        return payload[:at]
    if kind == "flip" and payload:
        at = min(at, len(payload) - 1)
        return payload[:at] + bytes([draw(st.integers(0, 255))]) + payload[at + 1:]
    if kind == "nest":
        depth = draw(st.sampled_from([900, 5000, 100_000]))
        return payload[:at] + b"[" * depth + b"]" * depth + payload[at:]
    if kind == "digits":
        return payload[:at] + b"9" * draw(st.sampled_from([400, 4301, 5000])) + payload[at:]
    if kind == "bom":
        return b"\xef\xbb\xbf" + payload
    if kind == "junk":
        return payload[:at] + draw(st.binary(max_size=16)) + payload[at:]
    return payload
