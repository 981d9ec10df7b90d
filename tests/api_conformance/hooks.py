"""Schemathesis hooks for orderflow's conformance run.

An Idempotency-Key names one request: reusing a key with another body is answered 422 by
design (as the IETF Idempotency-Key draft says). A schema cannot say "one body per key",
so every valid generated key is made unique, as a well-behaved client's keys are; invalid
keys (negative tests) are sent as generated.
"""
import uuid

import schemathesis

MAX_KEY_LEN = 255


def _valid(key):
    return 1 <= len(key) <= MAX_KEY_LEN and all(0x21 <= ord(c) <= 0x7E for c in key)


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name, key in list(headers.items()):
        if name.lower() != "idempotency-key" or not isinstance(key, str) or not _valid(key):
            continue
        suffix = "-" + uuid.uuid4().hex
        if len(key) + len(suffix) <= MAX_KEY_LEN:
            headers[name] = key + suffix
        else:
            headers[name] = key[: len(key) - len(suffix)] + suffix
    case.headers = headers
