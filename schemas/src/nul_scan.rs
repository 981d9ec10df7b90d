//! Whether a decoded value holds a NUL character in any text, found by serializing it into
//! nothing but that search (the direct decode has no `Value` tree to walk).
use serde::ser::{self, Serialize};

/// Whether any string (or char, or enum symbol) in `value` holds a NUL.
pub(crate) fn holds_nul<T: Serialize + ?Sized>(value: &T) -> bool {
    matches!(value.serialize(Scan), Err(Stop::Nul))
}

/// Why the scan stopped early.
#[derive(Debug)]
enum Stop {
    Nul,
    /// The value refused to serialize; nothing was found, so the caller's decode stands
    /// (our events always serialize).
    Refused,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Nul => "a NUL in a text",
            Stop::Refused => "the value does not serialize",
        })
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Stop::Refused
    }
}

fn text(s: &str) -> Result<(), Stop> {
    if s.contains('\0') {
        Err(Stop::Nul)
    } else {
        Ok(())
    }
}

struct Scan;

macro_rules! nothing_to_see {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<(), Stop> { Ok(()) })*
    };
}

impl ser::Serializer for Scan {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Scan;
    type SerializeTuple = Scan;
    type SerializeTupleStruct = Scan;
    type SerializeTupleVariant = Scan;
    type SerializeMap = Scan;
    type SerializeStruct = Scan;
    type SerializeStructVariant = Scan;

    nothing_to_see!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_char(self, c: char) -> Result<(), Stop> {
        if c == '\0' {
            Err(Stop::Nul)
        } else {
            Ok(())
        }
    }
    fn serialize_str(self, s: &str) -> Result<(), Stop> {
        text(s)
    }
    fn serialize_none(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<(), Stop> {
        text(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Scan, Stop> {
        Ok(Scan)
    }
    fn serialize_tuple(self, _: usize) -> Result<Scan, Stop> {
        Ok(Scan)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Scan, Stop> {
        Ok(Scan)
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Scan, Stop> {
        Ok(Scan)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Scan, Stop> {
        Ok(Scan)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Scan, Stop> {
        Ok(Scan)
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Scan, Stop> {
        Ok(Scan)
    }
}

impl ser::SerializeSeq for Scan {
    type Ok = ();
    type Error = Stop;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        value.serialize(Scan)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

impl ser::SerializeTuple for Scan {
    type Ok = ();
    type Error = Stop;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        value.serialize(Scan)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Scan {
    type Ok = ();
    type Error = Stop;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        value.serialize(Scan)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Scan {
    type Ok = ();
    type Error = Stop;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        value.serialize(Scan)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

impl ser::SerializeMap for Scan {
    type Ok = ();
    type Error = Stop;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Stop> {
        key.serialize(Scan)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        value.serialize(Scan)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

impl ser::SerializeStruct for Scan {
    type Ok = ();
    type Error = Stop;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> Result<(), Stop> {
        value.serialize(Scan)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Scan {
    type Ok = ();
    type Error = Stop;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> Result<(), Stop> {
        value.serialize(Scan)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Inner {
        text: Option<String>,
        items: Vec<String>,
    }

    #[derive(serde::Serialize)]
    struct Outer {
        n: i64,
        inner: Inner,
    }

    #[test]
    fn a_nul_anywhere_in_a_text_is_found_and_clean_values_pass() {
        let clean = Outer { n: 1, inner: Inner { text: Some("a".into()), items: vec!["b".into()] } };
        assert!(!holds_nul(&clean));
        let in_option = Outer { n: 1, inner: Inner { text: Some("a\0".into()), items: vec![] } };
        assert!(holds_nul(&in_option));
        let in_array = Outer { n: 1, inner: Inner { text: None, items: vec!["ok".into(), "\0".into()] } };
        assert!(holds_nul(&in_array));
    }
}
