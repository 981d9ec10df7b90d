//! The Confluent wire format: `[0x00][schema id: u32 big-endian][Avro binary datum]`.
use std::collections::HashMap;
use std::sync::{Arc, Once};

use apache_avro::{from_avro_datum, from_value, write_avro_datum_ref, Schema};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{DecodeError, EncodeError};
use crate::event::{Event, EventKind};
use crate::registry::{RegisteredSchema, SchemaRegistry};

const MAGIC_BYTE: u8 = 0;
const HEADER_LEN: usize = 5;

/// The largest single allocation Avro decoding may make. Bytes on a topic are untrusted:
/// without a limit a forged length prefix asks for gigabytes. Our largest field is far
/// below this; an array's item count is bounded by it too.
pub const MAX_DECODE_ALLOCATION_BYTES: usize = 256 * 1024;

static ALLOCATION_LIMIT: Once = Once::new();

/// Encodes and decodes events. Schemas are parsed once, when the codec is built, and
/// shared by every call: parsing per message costs far more than the decode itself.
#[derive(Clone)]
pub struct Codec {
    registry: Arc<dyn SchemaRegistry>,
    writers: HashMap<EventKind, RegisteredSchema>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").field("event_kinds", &self.writers.len()).finish()
    }
}

impl Codec {
    /// Builds a codec writing the newest version of each event's subject.
    pub fn new(registry: Arc<dyn SchemaRegistry>) -> Result<Self, EncodeError> {
        ALLOCATION_LIMIT.call_once(|| {
            // Both settings are process-wide and first-call-wins; they must happen before
            // any encode or decode.
            apache_avro::util::max_allocation_bytes(MAX_DECODE_ALLOCATION_BYTES);
            // Human-readable serde makes a UUID the 36-character text that Avro's `uuid`
            // logical type on `string` means; otherwise it would be written as 16 raw
            // bytes that no other Avro library reads as a UUID.
            if !apache_avro::util::set_serde_human_readable(true) {
                warn_uuids_would_be_raw_bytes();
            }
        });
        let mut writers = HashMap::new();
        for kind in EventKind::ALL {
            let subject = kind.subject();
            let latest = registry.latest(&subject).ok_or(EncodeError::NoSchema { subject })?;
            writers.insert(kind, latest.clone());
        }
        Ok(Codec { registry, writers })
    }

    /// The codec over the schemas built into this binary.
    pub fn builtin() -> Self {
        let registry = crate::ManifestRegistry::builtin().expect("the embedded manifest is validated by tests");
        Codec::new(Arc::new(registry)).expect("the embedded manifest covers every event kind")
    }

    /// The schema id an event of this kind is written with.
    pub fn schema_id(&self, kind: EventKind) -> u32 {
        self.writers[&kind].id
    }

    pub fn encode(&self, event: &Event) -> Result<Vec<u8>, EncodeError> {
        let mut buf = Vec::with_capacity(128);
        self.encode_into(event, &mut buf)?;
        Ok(buf)
    }

    /// Appends the framed event to `buf`, so hot paths can reuse one buffer.
    pub fn encode_into(&self, event: &Event, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let writer = &self.writers[&event.kind()];
        buf.push(MAGIC_BYTE);
        buf.extend_from_slice(&writer.id.to_be_bytes());
        match event {
            Event::OrderPlaced(e) => write_body(writer, e, buf),
            Event::OrderCancelled(e) => write_body(writer, e, buf),
            Event::PaymentAuthorized(e)
            | Event::PaymentCaptured(e)
            | Event::PaymentFailed(e)
            | Event::PaymentRefunded(e) => write_body(writer, e, buf),
            Event::ShipmentPacked(e) | Event::ShipmentShipped(e) | Event::ShipmentDelivered(e) => {
                write_body(writer, e, buf)
            }
            Event::StockAdjusted(e) => write_body(writer, e, buf),
            Event::StockRequested(e) => write_body(writer, e, buf),
            Event::StockDecided(e) => write_body(writer, e, buf),
            Event::OrderConfirmed(e) => write_body(writer, e, buf),
            Event::OrderRejected(e) => write_body(writer, e, buf),
            Event::OrderExpired(e) => write_body(writer, e, buf),
            Event::RefundRequested(e) => write_body(writer, e, buf),
        }
    }

    /// Reads only the frame header: which event this is, without decoding the body.
    /// Consumers use it to skip kinds they do not project.
    pub fn peek_kind(&self, bytes: &[u8]) -> Result<EventKind, DecodeError> {
        self.frame(bytes).map(|(kind, _, _)| kind)
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Event, DecodeError> {
        let (kind, writer, body) = self.frame(bytes)?;
        let reader = &self.writers[&kind];
        Ok(match kind {
            EventKind::OrderPlaced => Event::OrderPlaced(read_body(writer, reader, body)?),
            EventKind::OrderCancelled => Event::OrderCancelled(read_body(writer, reader, body)?),
            EventKind::PaymentAuthorized => Event::PaymentAuthorized(read_body(writer, reader, body)?),
            EventKind::PaymentCaptured => Event::PaymentCaptured(read_body(writer, reader, body)?),
            EventKind::PaymentFailed => Event::PaymentFailed(read_body(writer, reader, body)?),
            EventKind::PaymentRefunded => Event::PaymentRefunded(read_body(writer, reader, body)?),
            EventKind::ShipmentPacked => Event::ShipmentPacked(read_body(writer, reader, body)?),
            EventKind::ShipmentShipped => Event::ShipmentShipped(read_body(writer, reader, body)?),
            EventKind::ShipmentDelivered => Event::ShipmentDelivered(read_body(writer, reader, body)?),
            EventKind::StockAdjusted => Event::StockAdjusted(read_body(writer, reader, body)?),
            EventKind::StockRequested => Event::StockRequested(read_body(writer, reader, body)?),
            EventKind::StockDecided => Event::StockDecided(read_body(writer, reader, body)?),
            EventKind::OrderConfirmed => Event::OrderConfirmed(read_body(writer, reader, body)?),
            EventKind::OrderRejected => Event::OrderRejected(read_body(writer, reader, body)?),
            EventKind::OrderExpired => Event::OrderExpired(read_body(writer, reader, body)?),
            EventKind::RefundRequested => Event::RefundRequested(read_body(writer, reader, body)?),
        })
    }

    fn frame<'a>(&'a self, bytes: &'a [u8]) -> Result<(EventKind, &'a RegisteredSchema, &'a [u8]), DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort { len: bytes.len() });
        }
        if bytes[0] != MAGIC_BYTE {
            return Err(DecodeError::WrongMagicByte { found: bytes[0] });
        }
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let writer = self.registry.by_id(id).ok_or(DecodeError::UnknownSchemaId { id })?;
        let kind = EventKind::from_subject(&writer.subject)
            .ok_or_else(|| DecodeError::NotAnEvent { id, subject: writer.subject.clone() })?;
        Ok((kind, writer, &bytes[HEADER_LEN..]))
    }
}

/// Something else in the process fixed apache-avro's serde mode first; UUIDs would then be
/// written as raw bytes. Loud, because that breaks the cross-language contract.
fn warn_uuids_would_be_raw_bytes() {
    eprintln!("orderflow schemas: apache-avro was set to non-human-readable serde before the codec was built");
}

fn write_body<T: Serialize>(writer: &RegisteredSchema, body: &T, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    write_avro_datum_ref(&writer.schema, body, buf)
        .map(|_| ())
        .map_err(|e| EncodeError::Avro { subject: writer.subject.clone(), cause: e })
}

/// Decodes with the writer's schema and, when the writer used an older version, resolves
/// into the newest one (Avro schema resolution), so old records stay readable.
fn read_body<T: DeserializeOwned>(
    writer: &RegisteredSchema,
    reader: &RegisteredSchema,
    mut body: &[u8],
) -> Result<T, DecodeError> {
    let invalid = |e: apache_avro::Error| DecodeError::InvalidBody { subject: writer.subject.clone(), cause: e };
    let reader_schema: Option<&Schema> = (reader.id != writer.id).then_some(&reader.schema);
    let value = from_avro_datum(&writer.schema, &mut body, reader_schema).map_err(invalid)?;
    if !body.is_empty() {
        return Err(DecodeError::TrailingBytes { subject: writer.subject.clone(), trailing: body.len() });
    }
    if let Some(field) = nul_in_text(&value) {
        return Err(DecodeError::NulInText { subject: writer.subject.clone(), field });
    }
    from_value(&value).map_err(invalid)
}

/// The first string field (dotted path) holding a NUL character, if any. No orderflow
/// text may hold one: the HTTP API refuses control characters, and PostgreSQL cannot
/// store NUL in text, so an event carrying one from another producer is refused here,
/// the same for every projection database.
fn nul_in_text(value: &apache_avro::types::Value) -> Option<String> {
    use apache_avro::types::Value;
    match value {
        Value::String(s) | Value::Enum(_, s) => s.contains('\0').then(String::new),
        Value::Union(_, inner) => nul_in_text(inner),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, v)| nul_in_text(v).map(|f| join(&i.to_string(), &f)))
        }
        Value::Map(entries) => entries.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(String::from("<map key>"))
            } else {
                nul_in_text(v).map(|f| join(k, &f))
            }
        }),
        Value::Record(fields) => fields.iter().find_map(|(name, v)| nul_in_text(v).map(|f| join(name, &f))),
        _ => None,
    }
}

fn join(outer: &str, inner: &str) -> String {
    if inner.is_empty() {
        outer.to_string()
    } else {
        format!("{outer}.{inner}")
    }
}
