//! Bytes on a topic are untrusted. Each malformed input gets its own typed error; none
//! panics and none allocates without bound.
use schemas::samples::zigzag;
use schemas::{samples::sample, Codec, DecodeError, EventKind};

fn codec() -> Codec {
    Codec::builtin()
}

fn framed(id: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

#[test]
fn empty_record_is_too_short() {
    assert!(matches!(codec().decode(&[]), Err(DecodeError::TooShort { len: 0 })));
}

#[test]
fn header_without_body_is_too_short_or_invalid() {
    assert!(matches!(codec().decode(&[0, 0, 0]), Err(DecodeError::TooShort { len: 3 })));
    let id = codec().schema_id(EventKind::OrderCancelled);
    assert!(matches!(codec().decode(&framed(id, &[])), Err(DecodeError::InvalidBody { .. })));
}

#[test]
fn wrong_magic_byte_is_rejected() {
    let mut bytes = codec().encode(&sample(EventKind::OrderPlaced)).expect("encode");
    bytes[0] = 1;
    assert!(matches!(codec().decode(&bytes), Err(DecodeError::WrongMagicByte { found: 1 })));
}

#[test]
fn json_text_is_a_wrong_magic_byte() {
    assert!(matches!(codec().decode(br#"{"order_id":"x"}"#), Err(DecodeError::WrongMagicByte { found: b'{' })));
}

#[test]
fn unknown_schema_id_is_rejected() {
    let bytes = framed(999_999, &[2, 3, 4]);
    assert!(matches!(codec().decode(&bytes), Err(DecodeError::UnknownSchemaId { id: 999_999 })));
}

#[test]
fn every_truncation_of_every_event_is_an_error() {
    let codec = codec();
    for kind in EventKind::ALL {
        let bytes = codec.encode(&sample(kind)).expect("encode");
        for cut in 0..bytes.len() {
            assert!(codec.decode(&bytes[..cut]).is_err(), "{kind:?} cut at {cut} decoded");
        }
    }
}

#[test]
fn body_of_another_record_type_is_rejected() {
    // A StockAdjusted body framed with the OrderPlaced schema id.
    let codec = codec();
    let stock = codec.encode(&sample(EventKind::StockAdjusted)).expect("encode");
    let placed_id = codec.schema_id(EventKind::OrderPlaced);
    let forged = framed(placed_id, &stock[5..]);
    assert!(codec.decode(&forged).is_err());
}

#[test]
fn bytes_left_after_the_body_are_rejected() {
    let codec = codec();
    let mut bytes = codec.encode(&sample(EventKind::OrderCancelled)).expect("encode");
    bytes.extend_from_slice(&[7, 7]);
    assert!(matches!(codec.decode(&bytes), Err(DecodeError::TrailingBytes { trailing: 2, .. })));
}

#[test]
fn huge_array_length_prefix_is_refused_without_allocating() {
    // OrderPlaced up to the `lines` array, then a claimed count of 2^40 lines.
    let codec = codec();
    let schemas::Event::OrderPlaced(mut placed) = sample(EventKind::OrderPlaced) else { unreachable!() };
    placed.lines.clear();
    let bytes = codec.encode(&schemas::Event::OrderPlaced(placed)).expect("encode");
    // With no lines the array is one 0 byte, followed by ship_to (country, union index, code).
    let tail_len = 1 + 1 + 2 + 1 + 1 + 5;
    let mut forged = bytes[..bytes.len() - tail_len].to_vec();
    forged.extend(zigzag(1 << 40));
    forged.extend_from_slice(&[0; 16]);
    let err = codec.decode(&forged).expect_err("must not decode");
    assert!(matches!(err, DecodeError::InvalidBody { .. }), "{err:?}");
}

#[test]
fn huge_string_length_prefix_is_refused() {
    // OrderCancelled starts with the envelope's event_id string: claim 2^50 bytes.
    let codec = codec();
    let id = codec.schema_id(EventKind::OrderCancelled);
    let mut body = zigzag(1 << 50);
    body.extend_from_slice(b"abc");
    assert!(matches!(codec.decode(&framed(id, &body)), Err(DecodeError::InvalidBody { .. })));
}

#[test]
fn random_bytes_never_panic() {
    // A fixed-seed xorshift, so a failure reproduces.
    let codec = codec();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let ids: Vec<u32> = EventKind::ALL.iter().map(|k| codec.schema_id(*k)).collect();
    let mut errors = 0;
    for round in 0..20_000 {
        let len = (next() % 200) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && bytes.len() >= 5 {
            // Half the inputs get a valid frame so the Avro decoder itself is exercised.
            bytes[0] = 0;
            bytes[1..5].copy_from_slice(&ids[round % ids.len()].to_be_bytes());
        }
        if codec.decode(&bytes).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 19_000, "random bytes decoded suspiciously often: {errors} errors");
}

#[test]
fn text_holding_a_nul_character_is_refused_naming_the_field() {
    let mut event = sample(EventKind::OrderPlaced);
    if let schemas::Event::OrderPlaced(e) = &mut event {
        e.customer_id = "c\0-1".into();
    }
    let bytes = codec().encode(&event).expect("the encoder writes any string");
    match codec().decode(&bytes) {
        Err(DecodeError::NulInText { field, .. }) => assert_eq!(field, "customer_id"),
        other => panic!("expected NulInText, got {other:?}"),
    }
}
