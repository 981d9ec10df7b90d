//! A codec whose ids come from a schema registry: it knows only the ids it was given for
//! its own schemas, learns others from their schema text, reads a compatible newer writer
//! into its own version, and refuses what it cannot read with a reason.
use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::Schema;
use schemas::{samples::sample, Codec, DecodeError, Event, EventKind};

fn fixture_text(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(path).expect("fixture")
}

/// A registry's ids for this binary's schemas: 1000 + the kind's place.
fn registry_codec() -> Codec {
    let ids: HashMap<EventKind, u32> = EventKind::ALL.iter().enumerate().map(|(i, k)| (*k, 1000 + i as u32)).collect();
    Codec::for_registry(&ids).expect("every kind has an id")
}

fn framed(id: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// The sample cancellation written by a producer with the v2 schema (an added optional
/// `cancelled_by`), framed with `id`.
fn cancellation_written_with_v2(id: u32, cancelled_by: &str) -> Vec<u8> {
    let v2 = Schema::parse_str(&fixture_text("order_cancelled.v2.compatible.avsc")).expect("v2 parses");
    let v1_bytes = Codec::builtin().encode(&sample(EventKind::OrderCancelled)).expect("encode");
    let v1 = Schema::parse_str(include_str!("../../avro/order_cancelled.v1.avsc")).expect("v1 parses");
    let Value::Record(mut fields) =
        apache_avro::from_avro_datum(&v1, &mut &v1_bytes[5..], Some(&v2)).expect("v1 resolves into v2")
    else {
        panic!("a record");
    };
    for (name, value) in &mut fields {
        if name == "cancelled_by" {
            *value = Value::Union(1, Box::new(Value::String(cancelled_by.into())));
        }
    }
    framed(id, &apache_avro::to_avro_datum(&v2, Value::Record(fields)).expect("v2 writes"))
}

#[test]
fn a_registry_codec_frames_with_the_registry_ids_and_reads_its_own_records() {
    let codec = registry_codec();
    let event = sample(EventKind::PaymentCaptured);
    let bytes = codec.encode(&event).expect("encode");
    assert_eq!(Codec::frame_id(&bytes), Some(codec.schema_id(EventKind::PaymentCaptured)));
    assert_eq!(codec.decode(&bytes).expect("decode"), event);
}

#[test]
fn the_manifest_ids_mean_nothing_to_a_registry_codec() {
    let manifest_framed = Codec::builtin().encode(&sample(EventKind::OrderPlaced)).expect("encode");
    let id = Codec::frame_id(&manifest_framed).expect("framed");
    let codec = registry_codec();
    assert!(!codec.knows(id));
    assert!(
        matches!(codec.decode(&manifest_framed), Err(DecodeError::UnknownSchemaId { id: unknown }) if unknown == id)
    );
}

#[test]
fn a_learned_newer_compatible_version_is_read_into_this_binarys_version() {
    let codec = registry_codec();
    let bytes = cancellation_written_with_v2(2001, "support");
    assert!(!codec.knows(2001));
    assert_eq!(codec.learn(2001, &fixture_text("order_cancelled.v2.compatible.avsc")), Ok(EventKind::OrderCancelled));
    // The field this binary does not know is dropped; everything else reads as written.
    assert_eq!(codec.decode(&bytes).expect("v2 reads"), sample(EventKind::OrderCancelled));
    // Clones share what was learned.
    assert!(codec.clone().knows(2001));
}

#[test]
fn an_id_learned_as_this_binarys_own_schema_reads_without_resolution() {
    let codec = registry_codec();
    let own = codec.encode(&sample(EventKind::OrderCancelled)).expect("encode");
    let text = include_str!("../../avro/order_cancelled.v1.avsc");
    assert_eq!(codec.learn(7, text), Ok(EventKind::OrderCancelled));
    let bytes = framed(7, &own[5..]);
    assert_eq!(codec.decode(&bytes).expect("decode"), sample(EventKind::OrderCancelled));
}

#[test]
fn a_schema_that_is_not_an_orderflow_event_makes_its_records_poison_with_the_reason() {
    let codec = registry_codec();
    let foreign =
        r#"{"type":"record","name":"Invoice","namespace":"com.example","fields":[{"name":"n","type":"long"}]}"#;
    let reason = codec.learn(3001, foreign).expect_err("refused");
    assert!(reason.contains("com.example.Invoice") && reason.contains("not an orderflow event"), "{reason}");
    let decoded = codec.decode(&framed(3001, &[2]));
    assert!(
        matches!(&decoded, Err(DecodeError::UnusableSchema { id: 3001, reason: r }) if *r == reason),
        "{decoded:?}"
    );
    assert!(codec.learn(3002, "not json at all").expect_err("refused").contains("not an Avro schema"));
    assert!(codec.learn(3003, r#""string""#).expect_err("refused").contains("not an Avro record"));
}

#[test]
fn a_version_this_binary_cannot_read_is_refused_when_learned() {
    let codec = registry_codec();
    // A writer whose `order_id` became a number: this binary's reader needs its text.
    let text = include_str!("../../avro/order_cancelled.v1.avsc").replacen(
        r#""name": "order_id",
      "type": {
        "type": "string",
        "logicalType": "uuid"
      }"#,
        r#""name": "order_id", "type": "long""#,
        1,
    );
    assert!(text.contains(r#""order_id", "type": "long""#), "the v1 file changed shape");
    let reason = codec.learn(4001, &text).expect_err("unreadable");
    assert!(reason.contains("cannot be read"), "{reason}");
    let decoded: Result<Event, _> = codec.decode(&framed(4001, &[0]));
    assert!(matches!(decoded, Err(DecodeError::UnusableSchema { id: 4001, .. })));
}
