//! The JSON text mode: the same frames as Protobuf, as JSON. A room message's payload is
//! embedded as JSON when the game speaks JSON (`"payload": {"seq": 1, ...}`); bytes that
//! are not JSON travel as a JSON string of their (lossy) UTF-8 text. An error's `code` is
//! its name (`"rate_limited"`), not its number.

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

/// Serde for `Error.code` (see build.rs): the code's name in snake case, e.g.
/// `"frame_too_large"`; a number is read too.
pub mod error_code {
    use crate::gateway::pb::ErrorCode;
    use serde::de::{Deserializer, Error as _};
    use serde::ser::Serializer;
    use serde::{Deserialize, Serialize};

    /// The name clients see for a code (`ERROR_CODE_RATE_LIMITED` -> `rate_limited`).
    pub fn name(code: ErrorCode) -> String {
        let full = code.as_str_name();
        full.strip_prefix("ERROR_CODE_")
            .unwrap_or(full)
            .to_ascii_lowercase()
    }

    pub fn serialize<S: Serializer>(code: &i32, s: S) -> Result<S::Ok, S::Error> {
        match ErrorCode::try_from(*code) {
            Ok(code) => name(code).serialize(s),
            Err(_) => code.serialize(s),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NameOrNumber {
        Name(String),
        Number(i32),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        match NameOrNumber::deserialize(d)? {
            NameOrNumber::Number(n) => Ok(n),
            NameOrNumber::Name(text) => {
                let full = format!("ERROR_CODE_{}", text.to_ascii_uppercase());
                ErrorCode::from_str_name(&full)
                    .map(|c| c as i32)
                    .ok_or_else(|| D::Error::custom(format!("unknown error code `{text}`")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::gateway::pb::{self, ErrorCode, ServerFrame, server_frame::Body};

    #[test]
    fn error_codes_travel_by_name() {
        let frame = ServerFrame {
            seq: 1,
            ack: 0,
            body: Some(Body::Error(pb::Error {
                code: ErrorCode::RateLimited as i32,
                message: "slow down".into(),
                in_reply_to: 3,
                address: String::new(),
            })),
        };
        let text = serde_json::to_string(&frame).unwrap();
        assert!(text.contains(r#""code":"rate_limited""#), "{text}");
        assert_eq!(serde_json::from_str::<ServerFrame>(&text).unwrap(), frame);
        assert_eq!(
            super::error_code::name(ErrorCode::FrameTooLarge),
            "frame_too_large"
        );
        assert_eq!(super::error_code::name(ErrorCode::RoomQuota), "room_quota");
    }
}
