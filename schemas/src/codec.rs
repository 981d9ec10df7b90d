//! The Confluent wire format: `[0x00][schema id: u32 big-endian][Avro binary datum]`.
use std::collections::HashMap;
use std::sync::{Arc, Once, RwLock};

use apache_avro::headers::HeaderBuilder;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::{from_value, write_avro_datum_ref, GenericSingleObjectReader, Schema};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{DecodeError, EncodeError};
use crate::event::{Event, EventKind};
use crate::registry::{ManifestRegistry, SchemaRegistry};

const MAGIC_BYTE: u8 = 0;
const HEADER_LEN: usize = 5;

/// The largest single allocation Avro decoding may make. Bytes on a topic are untrusted:
/// without a limit a forged length prefix asks for gigabytes. Our largest field is far
/// below this; an array's item count is bounded by it too.
pub const MAX_DECODE_ALLOCATION_BYTES: usize = 256 * 1024;

static ALLOCATION_LIMIT: Once = Once::new();

/// Encodes and decodes events. Schemas are parsed once, when the codec is built or an id
/// is learned, and shared by every call: parsing per message costs far more than the
/// decode itself.
///
/// Two sources of ids: the manifest built into this binary ([`Codec::new`], the default),
/// or a schema registry, whose ids the caller looks up ([`Codec::for_registry`]) and whose
/// unknown ids it learns before decoding ([`Codec::learn`]). Learning is the only I/O-shaped
/// step and it happens outside: encoding and decoding stay synchronous and pure.
#[derive(Clone)]
pub struct Codec {
    /// What each schema id met so far means. Shared by clones, so an id one member learned
    /// is known to every member of the process; ids never change meaning, so nothing is
    /// ever evicted.
    known: Arc<RwLock<HashMap<u32, Known>>>,
    /// The newest schema of each event kind this binary was built with: written with, and
    /// the reader schema any other writer schema of that kind is resolved into.
    readers: HashMap<EventKind, Arc<Schema>>,
    /// The id an event of each kind is framed with.
    writer_ids: HashMap<EventKind, u32>,
}

#[derive(Clone)]
enum Known {
    Writer(Arc<Writer>),
    /// An id whose schema no record can be read with (not Avro, not an orderflow event,
    /// not readable as the newest version): every record framed with it is poison.
    Unusable(Arc<str>),
}

/// A writer schema of one event kind.
struct Writer {
    kind: EventKind,
    subject: String,
    /// The reader schema itself (same canonical form): decoding needs no resolution step.
    is_reader: bool,
    /// Decodes bodies written with the writer's schema, its named types resolved once here rather
    /// than on every record (`from_avro_datum` resolves them per call: a third of a
    /// decode's time).
    datum: GenericSingleObjectReader,
    /// The same schema for `serde_avro_fast`, which reads a body straight into the event's
    /// type (no `Value` tree in between: several times faster). Only when the writer's
    /// schema is the reader's: it does no schema resolution.
    direct: Option<serde_avro_fast::Schema>,
}

/// The bodies this codec reads carry Confluent's frame, which `frame` takes off: no
/// single-object header follows it.
struct NoHeader;

impl HeaderBuilder for NoHeader {
    fn build_header(&self) -> Vec<u8> {
        Vec::new()
    }
}

impl Writer {
    fn new(kind: EventKind, subject: String, schema: &Schema, is_reader: bool) -> Result<Self, apache_avro::Error> {
        let datum = GenericSingleObjectReader::new_with_header_builder(schema.clone(), NoHeader)?;
        // The canonical form keeps what decoding needs (types, names, order) and nothing
        // else; a schema the direct reader cannot take just goes the general way.
        let direct = if is_reader { schema.canonical_form().parse().ok() } else { None };
        Ok(Writer { kind, subject, is_reader, datum, direct })
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").field("writer_ids", &self.writer_ids).finish()
    }
}

impl Codec {
    /// Builds a codec over a manifest: it knows every id listed there and writes the newest
    /// version of each event's subject.
    pub fn new(registry: &ManifestRegistry) -> Result<Self, EncodeError> {
        set_avro_process_settings();
        let mut readers = HashMap::new();
        let mut writer_ids = HashMap::new();
        for kind in EventKind::ALL {
            let subject = kind.subject();
            let latest = registry.latest(&subject).ok_or(EncodeError::NoSchema { subject })?;
            readers.insert(kind, latest.schema.clone());
            writer_ids.insert(kind, latest.id);
        }
        let mut known = HashMap::new();
        for schema in registry.all() {
            let entry = match EventKind::from_subject(&schema.subject) {
                Some(kind) => {
                    let is_reader = Arc::ptr_eq(&schema.schema, &readers[&kind]);
                    let writer = Writer::new(kind, schema.subject.clone(), &schema.schema, is_reader)
                        .map_err(|cause| EncodeError::Avro { subject: schema.subject.clone(), cause })?;
                    Known::Writer(Arc::new(writer))
                }
                None => Known::Unusable(
                    format!("schema id {} ({}) is not an orderflow event", schema.id, schema.subject).into(),
                ),
            };
            known.insert(schema.id, entry);
        }
        Ok(Codec { known: Arc::new(RwLock::new(known)), readers, writer_ids })
    }

    /// The codec over the schemas built into this binary.
    pub fn builtin() -> Self {
        let registry =
            crate::registry::ManifestRegistry::builtin().expect("the embedded manifest is validated by tests");
        Codec::new(&registry).expect("the embedded manifest covers every event kind")
    }

    /// A codec whose ids are a schema registry's: `ids` gives the id under which the
    /// registry holds this binary's newest schema of each event kind (every kind must have
    /// one). Those are the only ids known at first; the manifest's own ids mean nothing to
    /// a registry and are not used. Other ids are [`Codec::learn`]ed as records name them.
    pub fn for_registry(ids: &HashMap<EventKind, u32>) -> Result<Self, EncodeError> {
        let builtin = Codec::builtin();
        let mut known = HashMap::new();
        let mut writer_ids = HashMap::new();
        for kind in EventKind::ALL {
            let id = *ids.get(&kind).ok_or_else(|| EncodeError::NoSchema { subject: kind.subject() })?;
            let writer = Writer::new(kind, kind.subject(), &builtin.readers[&kind], true)
                .map_err(|cause| EncodeError::Avro { subject: kind.subject(), cause })?;
            known.insert(id, Known::Writer(Arc::new(writer)));
            writer_ids.insert(kind, id);
        }
        Ok(Codec { known: Arc::new(RwLock::new(known)), readers: builtin.readers, writer_ids })
    }

    /// The schema id an event of this kind is written with.
    pub fn schema_id(&self, kind: EventKind) -> u32 {
        self.writer_ids[&kind]
    }

    /// The schema id a framed record names, if it is framed at all.
    pub fn frame_id(bytes: &[u8]) -> Option<u32> {
        match bytes {
            [MAGIC_BYTE, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        }
    }

    /// Whether the codec knows what `id` means (a usable schema or a reason it is not).
    pub fn knows(&self, id: u32) -> bool {
        self.read_known().contains_key(&id)
    }

    /// Learns what schema id `id` means from the schema text a registry gave for it. An
    /// Avro record schema of an orderflow event that the newest reader schema can read
    /// becomes a writer schema; anything else is remembered as unusable, with the reason
    /// every record framed with it is then parked for. Returns that reason, if any.
    pub fn learn(&self, id: u32, schema_text: &str) -> Result<EventKind, String> {
        let learned = self.judge(id, schema_text);
        let entry = match &learned {
            Ok(writer) => Known::Writer(writer.clone()),
            Err(reason) => Known::Unusable(reason.as_str().into()),
        };
        self.known.write().unwrap_or_else(|e| e.into_inner()).insert(id, entry);
        learned.map(|w| w.kind)
    }

    fn judge(&self, id: u32, schema_text: &str) -> Result<Arc<Writer>, String> {
        let schema = Schema::parse_str(schema_text)
            .map_err(|e| format!("schema id {id} is not an Avro schema this reader can parse: {e}"))?;
        let Schema::Record(record) = &schema else {
            return Err(format!("schema id {id} is not an Avro record, so not an orderflow event"));
        };
        let fullname = record.name.fullname(None);
        let kind = EventKind::from_subject(&fullname)
            .ok_or_else(|| format!("schema id {id} ({fullname}) is not an orderflow event"))?;
        let reader = &self.readers[&kind];
        SchemaCompatibility::can_read(&schema, reader).map_err(|e| {
            format!("schema id {id} ({fullname}) cannot be read as this reader's newest {fullname}: {e}")
        })?;
        let is_reader = schema.canonical_form() == reader.canonical_form();
        let writer = Writer::new(kind, fullname.clone(), &schema, is_reader)
            .map_err(|e| format!("schema id {id} ({fullname}) cannot be used for reading: {e}"))?;
        Ok(Arc::new(writer))
    }

    fn read_known(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u32, Known>> {
        self.known.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn encode(&self, event: &Event) -> Result<Vec<u8>, EncodeError> {
        let mut buf = Vec::with_capacity(128);
        self.encode_into(event, &mut buf)?;
        Ok(buf)
    }

    /// Appends the framed event to `buf`, so hot paths can reuse one buffer.
    pub fn encode_into(&self, event: &Event, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let kind = event.kind();
        let writer = Body { subject: kind, schema: &self.readers[&kind] };
        buf.push(MAGIC_BYTE);
        buf.extend_from_slice(&self.writer_ids[&kind].to_be_bytes());
        match event {
            Event::OrderPlaced(e) => writer.write(e, buf),
            Event::OrderCancelled(e) => writer.write(e, buf),
            Event::PaymentAuthorized(e)
            | Event::PaymentCaptured(e)
            | Event::PaymentFailed(e)
            | Event::PaymentRefunded(e) => writer.write(e, buf),
            Event::ShipmentPacked(e) | Event::ShipmentShipped(e) | Event::ShipmentDelivered(e) => writer.write(e, buf),
            Event::StockAdjusted(e) => writer.write(e, buf),
            Event::StockRequested(e) => writer.write(e, buf),
            Event::StockDecided(e) => writer.write(e, buf),
            Event::OrderConfirmed(e) => writer.write(e, buf),
            Event::OrderRejected(e) => writer.write(e, buf),
            Event::OrderExpired(e) => writer.write(e, buf),
            Event::RefundRequested(e) => writer.write(e, buf),
            Event::StockTransferRequested(e) | Event::StockTransferReceived(e) => writer.write(e, buf),
        }
    }

    /// Reads only the frame header: which event this is, without decoding the body.
    /// Consumers use it to skip kinds they do not project.
    pub fn peek_kind(&self, bytes: &[u8]) -> Result<EventKind, DecodeError> {
        self.frame(bytes).map(|(writer, _)| writer.kind)
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Event, DecodeError> {
        let (writer, body) = self.frame(bytes)?;
        let reader = &self.readers[&writer.kind];
        let read = Read { writer: &writer, reader, body };
        Ok(match writer.kind {
            EventKind::OrderPlaced => Event::OrderPlaced(read.body()?),
            EventKind::OrderCancelled => Event::OrderCancelled(read.body()?),
            EventKind::PaymentAuthorized => Event::PaymentAuthorized(read.body()?),
            EventKind::PaymentCaptured => Event::PaymentCaptured(read.body()?),
            EventKind::PaymentFailed => Event::PaymentFailed(read.body()?),
            EventKind::PaymentRefunded => Event::PaymentRefunded(read.body()?),
            EventKind::ShipmentPacked => Event::ShipmentPacked(read.body()?),
            EventKind::ShipmentShipped => Event::ShipmentShipped(read.body()?),
            EventKind::ShipmentDelivered => Event::ShipmentDelivered(read.body()?),
            EventKind::StockAdjusted => Event::StockAdjusted(read.body()?),
            EventKind::StockRequested => Event::StockRequested(read.body()?),
            EventKind::StockDecided => Event::StockDecided(read.body()?),
            EventKind::OrderConfirmed => Event::OrderConfirmed(read.body()?),
            EventKind::OrderRejected => Event::OrderRejected(read.body()?),
            EventKind::OrderExpired => Event::OrderExpired(read.body()?),
            EventKind::RefundRequested => Event::RefundRequested(read.body()?),
            EventKind::StockTransferRequested => Event::StockTransferRequested(read.body()?),
            EventKind::StockTransferReceived => Event::StockTransferReceived(read.body()?),
        })
    }

    fn frame<'a>(&self, bytes: &'a [u8]) -> Result<(Arc<Writer>, &'a [u8]), DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort { len: bytes.len() });
        }
        if bytes[0] != MAGIC_BYTE {
            return Err(DecodeError::WrongMagicByte { found: bytes[0] });
        }
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        match self.read_known().get(&id) {
            Some(Known::Writer(writer)) => Ok((writer.clone(), &bytes[HEADER_LEN..])),
            Some(Known::Unusable(reason)) => Err(DecodeError::UnusableSchema { id, reason: reason.to_string() }),
            None => Err(DecodeError::UnknownSchemaId { id }),
        }
    }
}

/// apache-avro's process-wide settings; both are first-call-wins and must happen before
/// any encode or decode.
fn set_avro_process_settings() {
    ALLOCATION_LIMIT.call_once(|| {
        apache_avro::util::max_allocation_bytes(MAX_DECODE_ALLOCATION_BYTES);
        // Human-readable serde makes a UUID the 36-character text that Avro's `uuid`
        // logical type on `string` means; otherwise it would be written as 16 raw
        // bytes that no other Avro library reads as a UUID.
        if !apache_avro::util::set_serde_human_readable(true) {
            warn_uuids_would_be_raw_bytes();
        }
    });
}

/// Something else in the process fixed apache-avro's serde mode first; UUIDs would then be
/// written as raw bytes. Loud, because that breaks the cross-language contract.
fn warn_uuids_would_be_raw_bytes() {
    eprintln!("orderflow schemas: apache-avro was set to non-human-readable serde before the codec was built");
}

/// Writes one event body with this binary's schema of its kind.
struct Body<'a> {
    subject: EventKind,
    schema: &'a Schema,
}

impl Body<'_> {
    fn write<T: Serialize>(&self, body: &T, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_avro_datum_ref(self.schema, body, buf)
            .map(|_| ())
            .map_err(|e| EncodeError::Avro { subject: self.subject.subject(), cause: e })
    }
}

/// One record's body with its writer schema and the reader schema of its kind.
struct Read<'a> {
    writer: &'a Writer,
    reader: &'a Schema,
    body: &'a [u8],
}

impl Read<'_> {
    /// Decodes with the writer's schema and, when the writer used another version,
    /// resolves into the newest one this binary has (Avro schema resolution), so older
    /// records and a compatible newer producer's stay readable.
    fn body<T: DeserializeOwned + Serialize>(&self) -> Result<T, DecodeError> {
        if let Some(decoded) = self.direct() {
            return decoded;
        }
        self.general()
    }

    /// The direct read ([`Writer::direct`]), when it applies and succeeds. Anything it
    /// refuses is read again the general way, whose error is the one reported: both ways
    /// refuse and accept the same bodies, the direct one is only faster.
    fn direct<T: DeserializeOwned + Serialize>(&self) -> Option<Result<T, DecodeError>> {
        let schema = self.writer.direct.as_ref()?;
        // The general way refuses any single allocation above the limit; a body within it
        // cannot hold a longer string or array.
        if self.body.len() > MAX_DECODE_ALLOCATION_BYTES {
            return None;
        }
        let mut state = serde_avro_fast::de::DeserializerState::from_slice(self.body, schema);
        let value = T::deserialize(state.deserializer()).ok()?;
        let trailing = std::io::BufRead::fill_buf(&mut state.into_reader()).map_or(0, |rest| rest.len());
        if trailing > 0 {
            return None;
        }
        // A text with a NUL is refused by the general way, which names the field.
        (!crate::nul_scan::holds_nul(&value)).then_some(Ok(value))
    }

    fn general<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        let subject = &self.writer.subject;
        let invalid = |e: apache_avro::Error| DecodeError::InvalidBody { subject: subject.clone(), cause: e };
        let mut body = self.body;
        let mut value = self.writer.datum.read_value(&mut body).map_err(invalid)?;
        if !self.writer.is_reader {
            value = value.resolve(self.reader).map_err(invalid)?;
        }
        if !body.is_empty() {
            return Err(DecodeError::TrailingBytes { subject: subject.clone(), trailing: body.len() });
        }
        if let Some(field) = nul_in_text(&value) {
            return Err(DecodeError::NulInText { subject: subject.clone(), field });
        }
        from_value(&value).map_err(invalid)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::sample;

    /// Both reads of one framed event, through the writer its frame names.
    fn both<T: DeserializeOwned + Serialize>(codec: &Codec, bytes: &[u8]) -> (Option<Result<T, DecodeError>>, T) {
        let (writer, body) = codec.frame(bytes).expect("framed");
        let read = Read { writer: &writer, reader: &codec.readers[&writer.kind], body };
        (read.direct(), read.general().expect("the general read"))
    }

    #[test]
    fn the_direct_read_takes_every_kind_and_gives_what_the_general_read_gives() {
        let codec = Codec::builtin();
        for kind in EventKind::ALL {
            let event = sample(kind);
            let bytes = codec.encode(&event).expect("encode");
            let (writer, _) = codec.frame(&bytes).expect("framed");
            assert!(writer.direct.is_some(), "{kind:?}: the newest schema is read directly");
            assert_eq!(codec.decode(&bytes).expect("decode"), event, "{kind:?}");
        }
        let placed = codec.encode(&sample(EventKind::OrderPlaced)).expect("encode");
        let (direct, general) = both::<crate::OrderPlaced>(&codec, &placed);
        assert_eq!(direct.expect("taken").expect("read"), general);
    }

    #[test]
    fn what_the_direct_read_refuses_is_left_to_the_general_read() {
        let codec = Codec::builtin();
        let mut placed = codec.encode(&sample(EventKind::OrderPlaced)).expect("encode");
        placed.push(0);
        let (writer, body) = codec.frame(&placed).expect("framed");
        let read = Read { writer: &writer, reader: &codec.readers[&writer.kind], body };
        assert!(read.direct::<crate::OrderPlaced>().is_none(), "trailing bytes");
        assert!(matches!(codec.decode(&placed), Err(DecodeError::TrailingBytes { .. })));
        placed.truncate(placed.len() - 3);
        let (writer, body) = codec.frame(&placed).expect("framed");
        let read = Read { writer: &writer, reader: &codec.readers[&writer.kind], body };
        assert!(read.direct::<crate::OrderPlaced>().is_none(), "truncated");
    }
}
