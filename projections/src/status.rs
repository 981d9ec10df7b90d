//! Statuses kept as text in the database and in JSON, defined once each (`status_enum!`).

/// A status kept as text in the database and in JSON: one definition gives the enum, its
/// stored text, parsing back, `Display`, serde and the OpenAPI schema. Serde and the schema
/// are both written from `as_str` (one rename rule), so the document's enum is exactly what
/// the wire carries; `derive(ToSchema)` would not see a `serde(rename)` made by a macro and
/// would document the variants' Rust names instead.
macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
                Self::parse(&text).ok_or_else(|| {
                    let expected: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    serde::de::Error::custom(format!("unknown {} {text:?}; expected one of {}", stringify!($name), expected.join(", ")))
                })
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some(Self::ALL.iter().map(|v| v.as_str())))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::schema::Schema;
    use utoipa::openapi::RefOr;
    use utoipa::PartialSchema;

    /// The values an enum's schema allows and the values serde writes, for one status type.
    fn documented_and_emitted<T>(all: &[T]) -> (Vec<String>, Vec<String>)
    where
        T: PartialSchema + serde::Serialize,
    {
        let documented = match T::schema() {
            RefOr::T(Schema::Object(object)) => object
                .enum_values
                .unwrap_or_default()
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect(),
            _ => panic!("a status is a string enum"),
        };
        let emitted = all
            .iter()
            .map(|v| serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())
            .collect();
        (documented, emitted)
    }

    macro_rules! assert_documented_as_emitted {
        ($($ty:ty),+) => {$(
            let (documented, emitted) = documented_and_emitted(<$ty>::ALL);
            assert_eq!(documented, emitted, "{}: the document's enum is not the wire's", stringify!($ty));
            for (value, text) in <$ty>::ALL.iter().zip(&emitted) {
                assert_eq!(serde_json::from_value::<$ty>(serde_json::json!(text)).ok(), Some(*value));
                assert_eq!(value.as_str(), text);
            }
        )+};
    }

    #[test]
    fn every_status_is_documented_exactly_as_it_is_written_on_the_wire() {
        assert_documented_as_emitted!(
            crate::model::fulfilment::FulfilmentStatus,
            crate::model::inventory::ReservationStatus,
            crate::model::payment::PaymentStatus,
            crate::process::order::OrderStatus,
            crate::store::DeadLetterStatus
        );
        assert!(serde_json::from_value::<crate::store::DeadLetterStatus>(serde_json::json!("Parked")).is_err());
    }
}
