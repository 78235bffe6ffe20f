//! The JSON text mode: the same frames as Protobuf, as JSON. A room message's payload is
//! embedded as JSON when the game speaks JSON (`"payload": {"seq": 1, ...}`); bytes that
//! are not JSON travel as a JSON string of their (lossy) UTF-8 text.

/// Serde for `RoomMessage.payload` (see build.rs).
pub mod payload {
    use serde::de::Deserializer;
    use serde::ser::Serializer;
    use serde::{Deserialize, Serialize};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| serde_json::from_str::<&RawValue>(text).ok())
        {
            Some(raw) => raw.serialize(s),
            None => String::from_utf8_lossy(bytes).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bytes::Bytes, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(bytes::Bytes::copy_from_slice(raw.get().as_bytes()))
    }
}
