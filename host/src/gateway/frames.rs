//! Decoding client frames and encoding server frames, in either mode. Decoding never
//! panics: any input is a frame or an error that names the problem.

use prost::Message as _;

use super::pb::{ClientFrame, ServerFrame};

/// How a connection speaks: Protobuf in binary WebSocket messages, or JSON in text ones.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Binary,
    Json,
}

pub fn decode_binary(bytes: &[u8]) -> Result<ClientFrame, String> {
    ClientFrame::decode(bytes).map_err(|e| format!("not a ClientFrame in Protobuf: {e}"))
}

pub fn decode_json(text: &str) -> Result<ClientFrame, String> {
    serde_json::from_str(text).map_err(|e| format!("not a ClientFrame in JSON: {e}"))
}

pub fn encode_binary(frame: &ServerFrame) -> Vec<u8> {
    frame.encode_to_vec()
}

pub fn encode_json(frame: &ServerFrame) -> String {
    // Plain data: serializing to a String cannot fail.
    serde_json::to_string(frame).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::pb::{RoomMessage, client_frame};
    use proptest::prelude::*;

    #[test]
    fn json_payloads_are_embedded_as_json() {
        let frame = decode_json(
            r#"{"seq": 3, "body": {"message": {"room_id": "r", "payload": {"seq": 1, "dx": 2}}}}"#,
        )
        .unwrap();
        assert_eq!(frame.seq, 3);
        let Some(client_frame::Body::Message(RoomMessage { room_id, payload })) = frame.body else {
            panic!("{frame:?}")
        };
        assert_eq!(room_id, "r");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&payload).unwrap()["dx"],
            2
        );
    }

    #[test]
    fn binary_and_json_modes_carry_the_same_frame() {
        let frame = ClientFrame {
            seq: 7,
            ack: 2,
            body: Some(client_frame::Body::Message(RoomMessage {
                room_id: "x".into(),
                payload: bytes::Bytes::from_static(b"[1,2]"),
            })),
        };
        let via_binary = decode_binary(&prost::Message::encode_to_vec(&frame)).unwrap();
        let via_json = decode_json(&serde_json::to_string(&frame).unwrap()).unwrap();
        assert_eq!(via_binary, frame);
        assert_eq!(via_json, frame);
    }

    #[test]
    fn garbage_is_an_error_that_names_the_problem() {
        assert!(
            decode_binary(&[0xff, 0xff, 0xff])
                .unwrap_err()
                .contains("Protobuf")
        );
        assert!(decode_json("{").unwrap_err().contains("JSON"));
        assert!(
            decode_json(r#"{"body": {"teleport": {}}}"#)
                .unwrap_err()
                .contains("teleport")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_binary(&bytes);
            let _ = decode_json(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn decoding_json_shaped_text_never_panics(text in r#"\{("(seq|ack|body|message|room_id|payload|join|create)"|[:,{}\[\]0-9" a-z-])*\}?"#) {
            let _ = decode_json(&text);
        }
    }
}
