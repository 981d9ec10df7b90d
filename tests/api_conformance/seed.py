"""Drives a checkout (with every consumer group running) into every state the query API can
show, so that schemathesis validates real answers against the document: orders pending,
confirmed, paid, shipped, delivered, rejected (out of stock), expired (unpaid past the
payment timeout), cancelled; payments authorized, captured, failed, refunded, partially
refunded; fulfilment awaiting payment, ready to ship, packed, shipped, delivered, cancelled,
rejected, expired; dead letters parked, retried and skipped.

Prints the order ids it made, comma-separated, for the hooks to use as path parameters.

    seed.py CHECKOUT_URL QUERY_URL TOKEN ORDERFLOW_BIN DATABASE_URL BROKERS TOPIC
"""
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

from confluent_kafka import Producer

checkout, query, token, binary, database_url, brokers, topic = sys.argv[1:8]


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
        request.add_header("Idempotency-Key", uuid.uuid4().hex)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def post(path, body):
    status, answer = call("POST", checkout + path, body)
    assert status == 202, f"POST {path}: {status} {answer}"
    return answer


placed_on = {}


def order(sku, quantity=1):
    body = {"customer_id": "c-seed", "currency": "EUR",
            "lines": [{"sku": sku, "quantity": quantity, "unit_price_minor": 1000}],
            "ship_to": {"country": "DE", "postal_code": "10115"}}
    answer = post("/orders", body)
    placed_on[answer["order_id"]] = answer["position"]["partition"]
    return answer["order_id"]


def unreadable(order_id):
    """Bytes no schema reads, keyed by the order on its partition: parked, with the order."""
    producer = Producer({"bootstrap.servers": brokers})
    producer.produce(topic, key=order_id, value=b"no schema reads this", partition=placed_on[order_id])
    assert producer.flush(30) == 0, "the unreadable record was not acknowledged"


def status_of(order_id):
    status, answer = call("GET", f"{query}/orders/{order_id}")
    return answer.get("status", {}).get("status") if status == 200 and answer.get("status") else None


def wait_for(order_id, wanted, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if status_of(order_id) in wanted:
            return
        time.sleep(0.2)
    raise SystemExit(f"order {order_id} never reached {wanted} (is {status_of(order_id)})")


def pay(order_id, status, amount=1000):
    post(f"/orders/{order_id}/payments", {"status": status, "amount_minor": amount, "provider_ref": "psp-seed"})


def ship(order_id, status):
    post(f"/orders/{order_id}/shipments", {"status": status, "warehouse": "berlin"})


def dead_letters(group):
    out = subprocess.run([binary, "dead-letters", "list", "--group", group, "--all", "--json",
                          "--database-url", database_url], check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


post("/inventory/SKU-SEED/adjustments", {"warehouse": "berlin", "delta": 100, "reason": "received"})
post("/inventory/SKU-LOW/adjustments", {"warehouse": "berlin", "delta": 2, "reason": "counted"})
post("/inventory/SKU-LOW/adjustments", {"warehouse": "berlin", "delta": -1, "reason": "damaged"})
time.sleep(1)
made = {name: order("SKU-SEED") for name in
        ["delivered", "shipped", "packed", "ready", "unpaid", "cancelled", "refunded", "partial", "failed",
         "parked", "retried", "skipped"]}
made["rejected"] = order("SKU-NEVER-STOCKED")
for name, order_id in made.items():
    wait_for(order_id, {"rejected"} if name == "rejected" else {"confirmed"})
for name in ["delivered", "shipped", "packed", "ready", "refunded", "partial"]:
    pay(made[name], "authorized")
    pay(made[name], "captured")
for name, steps in [("delivered", ["packed", "shipped", "delivered"]), ("shipped", ["packed", "shipped"]),
                    ("packed", ["packed"])]:
    for step in steps:
        ship(made[name], step)
pay(made["refunded"], "refunded")
pay(made["partial"], "refunded", 400)
pay(made["failed"], "failed")
post(f"/orders/{made['cancelled']}/cancel", {"reason": "changed my mind"})
# A refund before any capture is refused by the payment projection and recorded (skipped);
# it holds nothing back. Bytes no schema reads park the order; the capture behind them parks
# too (an order's events apply in order).
for name in ["parked", "retried", "skipped"]:
    pay(made[name], "refunded", 1)
    unreadable(made[name])
    pay(made[name], "captured")
wait_for(made["delivered"], {"delivered"})
wait_for(made["cancelled"], {"cancelled"})
deadline = time.time() + 60
while len([d for d in dead_letters("orderflow-payment")
           if d["order_id"] == made["skipped"] and d["status"] == "parked"]) < 2:
    assert time.time() < deadline, "the unreadable records were never parked"
    time.sleep(0.2)
operator = [binary, "dead-letters"]
common = ["--group", "orderflow-payment", "--database-url", database_url, "--operator", "conformance"]
subprocess.run(operator + ["skip"] + common + ["--order", made["skipped"]], check=True, capture_output=True)
first = [d["id"] for d in dead_letters("orderflow-payment")
         if d["order_id"] == made["retried"] and d["status"] == "parked"][0]
subprocess.run(operator + ["skip"] + common + [str(first)], check=True, capture_output=True)
subprocess.run(operator + ["retry"] + common + ["--order", made["retried"]], check=True, capture_output=True)
states = {d["status"] for d in dead_letters("orderflow-payment")}
assert states == {"parked", "retried", "skipped"}, states
# The unpaid order expires after the payment timeout the consumers were started with.
wait_for(made["unpaid"], {"expired"})
print(",".join(made.values()))
