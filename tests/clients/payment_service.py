"""A payment service and a log reader written the way other teams write them: Python's
confluent-kafka with its stock AvroSerializer / AvroDeserializer against the schema
registry, knowing nothing of orderflow but its .avsc files and the topic.

    payment_service.py publish   --brokers B --registry R --topic T --schema F --payments JSON [--out FILE]
    payment_service.py register  --registry R --schema F
    payment_service.py read      --brokers B --registry R --topics T[,T2] --expect N

`publish` serializes one PaymentCaptured per entry of the JSON list ({order_id, amount_minor,
provider_ref, and any fields the schema adds}) under the record-name subject, registering
the schema if the registry lacks it, and produces each keyed by its order id; with --out
it writes the serialized records (key, hex value) to FILE as JSON instead of producing.
`register` registers a schema and prints {"id"} or {"refused": status, "message"}. `read`
deserializes every record of the topics from their beginning and prints a summary.
"""
import argparse
import base64
import datetime
import json
import struct
import sys
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext


def registry_client(args):
    # A bounded wait: the client's default is to wait forever for an answer.
    return SchemaRegistryClient({"url": args.registry, "timeout": 10})


def payment(entry):
    fact = dict(entry)
    fact["envelope"] = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.datetime.now(datetime.timezone.utc),
        "correlation_id": entry["order_id"],
        "causation_id": None,
    }
    return fact


def publish(args):
    registry = registry_client(args)
    with open(args.schema) as f:
        schema = f.read()
    serializer = AvroSerializer(
        registry,
        schema,
        conf={"auto.register.schemas": True, "subject.name.strategy": record_subject_name_strategy},
    )
    context = SerializationContext(args.topic, MessageField.VALUE)
    records = [(e["order_id"], serializer(payment(e), context)) for e in json.loads(args.payments)]
    if args.out:
        with open(args.out, "w") as f:
            json.dump([{"key": k, "value": base64.b64encode(v).decode()} for k, v in records], f)
        print(json.dumps({"serialized": len(records), "schema_id": struct.unpack(">I", records[0][1][1:5])[0]}))
        return
    producer = Producer({"bootstrap.servers": args.brokers, "enable.idempotence": True})
    failures = []
    for key, value in records:
        producer.produce(
            args.topic,
            key=key.encode(),
            value=value,
            headers=[("orderflow-principal", b"payments")],
            on_delivery=lambda err, _msg: failures.append(str(err)) if err else None,
        )
    producer.flush(30)
    if failures:
        sys.exit(f"not delivered: {failures}")
    print(json.dumps({"published": len(records), "schema_id": struct.unpack(">I", records[0][1][1:5])[0]}))


def register(args):
    registry = registry_client(args)
    with open(args.schema) as f:
        schema = Schema(f.read(), "AVRO")
    name = json.loads(schema.schema_str)
    subject = f"{name['namespace']}.{name['name']}"
    try:
        print(json.dumps({"id": registry.register_schema(subject, schema)}))
    except SchemaRegistryError as e:
        print(json.dumps({"refused": e.http_status_code, "message": e.error_message}))


def read(args):
    registry = registry_client(args)
    # The subject is the record's name, as the serializer's: without it the deserializer
    # asks the registry for topic associations first (Confluent's API, not every registry's).
    deserializer = AvroDeserializer(registry, conf={"subject.name.strategy": record_subject_name_strategy})
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": f"python-reader-{uuid.uuid4()}",
        "enable.auto.commit": False,
    })
    assignment = []
    for topic in args.topics.split(","):
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high > low:
                assignment.append(TopicPartition(topic, partition, low))
    consumer.assign(assignment)
    by_schema, errors, read_count = {}, [], 0
    names = {}
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=60)
    while read_count < args.expect and datetime.datetime.now() < deadline:
        message = consumer.poll(1.0)
        if message is None or message.error():
            continue
        read_count += 1
        try:
            value = deserializer(message.value(), SerializationContext(message.topic(), MessageField.VALUE))
            schema_id = struct.unpack(">I", message.value()[1:5])[0]
            if schema_id not in names:
                parsed = json.loads(registry.get_schema(schema_id).schema_str)
                names[schema_id] = parsed["name"]
            name = names[schema_id]
            if not value or "envelope" not in value:
                errors.append(f"{message.topic()}/{message.partition()}@{message.offset()}: no envelope")
            by_schema[name] = by_schema.get(name, 0) + 1
        except Exception as e:  # noqa: BLE001 - every failure is reported, none hidden
            errors.append(f"{message.topic()}/{message.partition()}@{message.offset()}: {e!r}")
    consumer.close()
    print(json.dumps({"read": read_count, "by_schema": by_schema, "errors": errors}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["publish", "register", "read"])
    parser.add_argument("--brokers")
    parser.add_argument("--registry", required=True)
    parser.add_argument("--topic")
    parser.add_argument("--topics")
    parser.add_argument("--schema")
    parser.add_argument("--payments")
    parser.add_argument("--out")
    parser.add_argument("--expect", type=int, default=0)
    args = parser.parse_args()
    {"publish": publish, "register": register, "read": read}[args.command](args)


if __name__ == "__main__":
    main()
