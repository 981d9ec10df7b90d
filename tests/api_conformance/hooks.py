"""Schemathesis hooks for orderflow's conformance run.

An Idempotency-Key names one request: reusing a key with another body is answered 422 by
design (as the IETF Idempotency-Key draft says). A schema cannot say "one body per key",
so every valid generated key is made unique, as a well-behaved client's keys are; invalid
keys (negative tests) are sent as generated.
"""
import os
import random
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


# The orders the runner seeded in every state (seed.py): reads ask for them half the time,
# so the answers validated against the document hold every status the API can show.
SEEDED_ORDERS = [o for o in os.environ.get("ORDERFLOW_CONFORMANCE_ORDERS", "").split(",") if o]


def _is_uuid(value):
    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    operation = getattr(context, "operation", None)
    if not SEEDED_ORDERS or path_parameters is None or getattr(operation, "method", "").upper() != "GET":
        return path_parameters
    order_id = path_parameters.get("order_id")
    # Only values that are valid already: a negative case stays the invalid value it is.
    if _is_uuid(order_id) and random.random() < 0.5:
        path_parameters["order_id"] = random.choice(SEEDED_ORDERS)
    return path_parameters
