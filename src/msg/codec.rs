//! The `tlsnet-msg/1` frame codec, sans I/O: bytes in, frames out, and frames to bytes. No
//! sockets, no TLS, no async runtime; the service, the client and the fuzz target drive it.
//!
//! A frame is a 6-byte header and a JSON payload (docs/PROTOCOL.md, "Messaging"):
//!
//! | bytes | field |
//! |---|---|
//! | 0 | version, `0x01` |
//! | 1 | frame type (client frames `0x01..=0x7f`, server frames `0x81..=0xff`) |
//! | 2..6 | payload length, unsigned 32-bit big-endian |
//! | 6.. | payload: one UTF-8 JSON object |
//!
//! The length is checked against the decoder's limit before anything is allocated, and the
//! decoder never buffers more than one header plus one payload of at most that limit. A frame
//! with a bad version or a length over the limit is fatal (the stream cannot be trusted past
//! it); a frame of an unknown type or with a payload that is not the type's JSON is skipped
//! whole and reported, and decoding goes on with the next frame.

use serde::{Deserialize, Serialize};

/// The protocol version in every header.
pub const VERSION: u8 = 1;
/// The ALPN id of this protocol.
pub const ALPN: &[u8] = b"tlsnet-msg/1";
/// Header length in bytes.
pub const HEADER_LEN: usize = 6;

/// Frame type bytes.
pub mod kind {
    /// Client: send a message.
    pub const SEND: u8 = 0x01;
    /// Client: acknowledge delivered messages.
    pub const ACK: u8 = 0x02;
    /// Client: create a room (and join it).
    pub const CREATE: u8 = 0x03;
    /// Client: join a room.
    pub const JOIN: u8 = 0x04;
    /// Client: leave a room.
    pub const LEAVE: u8 = 0x05;
    /// Client: list a room's members with their presence.
    pub const MEMBERS: u8 = 0x06;
    /// Client: a page of a conversation's history.
    pub const HISTORY: u8 = 0x07;
    /// Server: the first frame; who the client is and the limits.
    pub const WELCOME: u8 = 0x81;
    /// Server: a message was committed durably.
    pub const ACCEPTED: u8 = 0x82;
    /// Server: a message for the client.
    pub const DELIVER: u8 = 0x83;
    /// Server: a recipient acknowledged one of the client's messages.
    pub const RECEIPT: u8 = 0x84;
    /// Server: someone the client shares a room or conversation with went online or offline.
    pub const PRESENCE: u8 = 0x85;
    /// Server: the answer to create, join, leave, members or history.
    pub const RESULT: u8 = 0x86;
    /// Server: a request failed, or the connection is about to be closed.
    pub const ERROR: u8 = 0x87;
    /// Server: the server is shutting down.
    pub const GOODBYE: u8 = 0x88;
}

/// `SEND`: a message to a user (`to`) or a room (`room`), exactly one of them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// The client's number for this request, echoed in `ACCEPTED` or `ERROR`.
    #[serde(rename = "ref")]
    pub req: u64,
    /// The recipient user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The recipient room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The text (UTF-8; its length in bytes is limited by the server).
    pub text: String,
}

/// `ACK`: these delivered messages are the client's now; the server forgets them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Message ids.
    pub ids: Vec<u64>,
}

/// `CREATE`, `JOIN`, `LEAVE`, `MEMBERS`: a request about one room.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RoomRequest {
    /// The client's number for this request.
    #[serde(rename = "ref")]
    pub req: u64,
    /// The room.
    pub room: String,
}

/// `HISTORY`: up to `limit` messages of a conversation before sequence number `before`
/// (newest first from the end when `before` is absent), returned oldest first.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The client's number for this request.
    #[serde(rename = "ref")]
    pub req: u64,
    /// The other user of a direct conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    /// A room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Only messages with a smaller sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// At most this many (the server caps it at 500).
    pub limit: u32,
}

/// `WELCOME`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The protocol version.
    pub version: u8,
    /// The client's user id, from its certificate.
    pub user: String,
    /// Largest text, in bytes.
    pub max_message_size: u32,
    /// Largest frame payload the server accepts, in bytes.
    pub max_frame: u32,
}

/// `ACCEPTED`: a message is committed; it will not be lost.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The request number of the `SEND`.
    #[serde(rename = "ref")]
    pub req: u64,
    /// The message id (unique on this server, increasing).
    pub id: u64,
    /// Its sequence number in its conversation (1, 2, ...).
    pub seq: u64,
    /// When the server accepted it, milliseconds since the Unix epoch.
    pub time: u64,
}

/// `DELIVER` (and the entries of a history page): a message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message id.
    pub id: u64,
    /// Its sequence number in its conversation.
    pub seq: u64,
    /// The sender.
    pub from: String,
    /// The recipient of a direct message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The room of a room message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Milliseconds since the Unix epoch, when the server accepted it.
    pub time: u64,
    /// The text.
    pub text: String,
}

/// `RECEIPT`: `by` acknowledged message `id`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The message id.
    pub id: u64,
    /// The recipient who acknowledged it (shared: a user's `ACK` of many messages gives
    /// each sender a receipt, with one copy of the name).
    pub by: std::sync::Arc<str>,
    /// When, milliseconds since the Unix epoch.
    pub time: u64,
}

/// `PRESENCE`, and a member in a `RESULT`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The user.
    pub user: String,
    /// Whether at least one of the user's clients is connected.
    pub online: bool,
    /// When the user was last connected (milliseconds since the Unix epoch; 0: never seen;
    /// now, when online).
    pub last_seen: u64,
}

/// `RESULT`: the answer to a room request or a history request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The request number.
    #[serde(rename = "ref")]
    pub req: u64,
    /// `MEMBERS`: the members, with their presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Presence>>,
    /// `HISTORY`: the page, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    /// `HISTORY`: whether older messages exist (ask with `before` = the first `seq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more: Option<bool>,
}

/// `ERROR`: what went wrong, with a stable code.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The request number it answers, when it answers one.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u64>,
    /// A stable label (`message_too_large`, `rate_limited`, `queue_full`, ...).
    pub code: String,
    /// The cause in words.
    pub message: String,
    /// Whether the server closes the connection after it.
    #[serde(default)]
    pub fatal: bool,
}

/// `GOODBYE`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Goodbye {
    /// Why (`server shutting down`).
    pub reason: String,
}

/// A frame of either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Frame {
    Send(Send),
    Ack(Ack),
    Create(RoomRequest),
    Join(RoomRequest),
    Leave(RoomRequest),
    Members(RoomRequest),
    History(History),
    Welcome(Welcome),
    Accepted(Accepted),
    Deliver(Message),
    Receipt(Receipt),
    Presence(Presence),
    Result(Outcome),
    Error(ErrorFrame),
    Goodbye(Goodbye),
}

impl Frame {
    /// The frame type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Send(_) => kind::SEND,
            Frame::Ack(_) => kind::ACK,
            Frame::Create(_) => kind::CREATE,
            Frame::Join(_) => kind::JOIN,
            Frame::Leave(_) => kind::LEAVE,
            Frame::Members(_) => kind::MEMBERS,
            Frame::History(_) => kind::HISTORY,
            Frame::Welcome(_) => kind::WELCOME,
            Frame::Accepted(_) => kind::ACCEPTED,
            Frame::Deliver(_) => kind::DELIVER,
            Frame::Receipt(_) => kind::RECEIPT,
            Frame::Presence(_) => kind::PRESENCE,
            Frame::Result(_) => kind::RESULT,
            Frame::Error(_) => kind::ERROR,
            Frame::Goodbye(_) => kind::GOODBYE,
        }
    }

    /// The frame's name in logs and errors.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind()).unwrap_or("?")
    }

    /// The frame as bytes: header and payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the frame (header and payload) to `out`, with no other allocation: the
    /// payload is serialized in place and its length written into the header after.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[VERSION, self.kind(), 0, 0, 0, 0]);
        let written = match self {
            Frame::Send(f) => serde_json::to_writer(&mut *out, f),
            Frame::Ack(f) => serde_json::to_writer(&mut *out, f),
            Frame::Create(f) | Frame::Join(f) | Frame::Leave(f) | Frame::Members(f) => {
                serde_json::to_writer(&mut *out, f)
            }
            Frame::History(f) => serde_json::to_writer(&mut *out, f),
            Frame::Welcome(f) => serde_json::to_writer(&mut *out, f),
            Frame::Accepted(f) => serde_json::to_writer(&mut *out, f),
            Frame::Deliver(f) => serde_json::to_writer(&mut *out, f),
            Frame::Receipt(f) => serde_json::to_writer(&mut *out, f),
            Frame::Presence(f) => serde_json::to_writer(&mut *out, f),
            Frame::Result(f) => serde_json::to_writer(&mut *out, f),
            Frame::Error(f) => serde_json::to_writer(&mut *out, f),
            Frame::Goodbye(f) => serde_json::to_writer(&mut *out, f),
        };
        // These structs hold only strings, numbers and lists: serializing cannot fail.
        if written.is_err() {
            out.truncate(start + HEADER_LEN);
            out.extend_from_slice(b"{}");
        }
        let len = u32::try_from(out.len() - start - HEADER_LEN).unwrap_or(u32::MAX);
        out[start + 2..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    }
}

/// A header and `payload` as bytes (any type byte; the tests and the fuzz target use it for
/// frames the codec would not make). A payload longer than `u32::MAX` bytes is cut there.
pub fn encode_raw(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_raw_into(kind, payload, &mut out);
    out
}

/// Appends a frame of type `kind` with `payload` (already the type's JSON) to `out`: the
/// server sends a stored message this way, as it was stored, with no decoding and encoding
/// again per recipient. A payload longer than `u32::MAX` bytes is cut there.
pub fn encode_raw_into(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.reserve(HEADER_LEN + len as usize);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload[..len as usize]);
}

/// The name of a frame type, `None` for an unknown one.
pub fn kind_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        kind::SEND => "SEND",
        kind::ACK => "ACK",
        kind::CREATE => "CREATE",
        kind::JOIN => "JOIN",
        kind::LEAVE => "LEAVE",
        kind::MEMBERS => "MEMBERS",
        kind::HISTORY => "HISTORY",
        kind::WELCOME => "WELCOME",
        kind::ACCEPTED => "ACCEPTED",
        kind::DELIVER => "DELIVER",
        kind::RECEIPT => "RECEIPT",
        kind::PRESENCE => "PRESENCE",
        kind::RESULT => "RESULT",
        kind::ERROR => "ERROR",
        kind::GOODBYE => "GOODBYE",
        _ => return None,
    })
}

/// A fatal decoding error: the stream cannot be read past it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The header's version is not ours.
    #[error("unsupported protocol version {0} (this server speaks version {VERSION})")]
    Version(u8),
    /// The payload length is over the limit.
    #[error("frame of {len} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The length the header announced.
        len: u32,
        /// The decoder's limit.
        limit: u32,
    },
}

impl CodecError {
    /// A stable label (the `code` of the `ERROR` frame sent for it).
    pub fn code(&self) -> &'static str {
        match self {
            CodecError::Version(_) => "unsupported_version",
            CodecError::TooLarge { .. } => "frame_too_large",
        }
    }
}

/// A frame that was read whole but not understood; decoding goes on after it.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The type byte is not one of ours.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The payload is not the JSON of its type.
    #[error("{name} frame has an invalid payload")]
    BadPayload {
        /// The frame type's name.
        name: &'static str,
        /// The JSON parser's reason.
        #[source]
        source: serde_json::Error,
    },
}

impl FrameError {
    /// A stable label (the `code` of the `ERROR` frame sent for it).
    pub fn code(&self) -> &'static str {
        match self {
            FrameError::UnknownType(_) => "unknown_frame_type",
            FrameError::BadPayload { .. } => "bad_frame",
        }
    }
}

/// What one complete frame decoded to.
#[derive(Debug)]
pub enum Decoded {
    /// A frame.
    Frame(Frame),
    /// A frame that was skipped, and why.
    Invalid(FrameError),
}

/// Decodes frames from bytes that arrive in pieces.
#[derive(Debug)]
pub struct Decoder {
    max_payload: u32,
    header: [u8; HEADER_LEN],
    have_header: usize,
    payload: Vec<u8>,
    /// Payload bytes still to come for the frame whose header was read.
    want: Option<(u8, u32)>,
}

impl Decoder {
    /// A decoder that refuses payloads longer than `max_payload` bytes.
    pub fn new(max_payload: u32) -> Self {
        Decoder {
            max_payload,
            header: [0; HEADER_LEN],
            have_header: 0,
            payload: Vec::new(),
            want: None,
        }
    }

    /// Whether the decoder holds part of a frame.
    pub fn is_mid_frame(&self) -> bool {
        self.have_header > 0 || self.want.is_some()
    }

    /// Takes bytes from `data`, at most up to the end of the next frame, and returns how many
    /// it took and, when a frame is complete, what it decoded to. Call again with the rest.
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, Option<Decoded>), CodecError> {
        let mut used = 0;
        if self.want.is_none() {
            let take = (HEADER_LEN - self.have_header).min(data.len());
            self.header[self.have_header..self.have_header + take].copy_from_slice(&data[..take]);
            self.have_header += take;
            used += take;
            if self.have_header < HEADER_LEN {
                return Ok((used, None));
            }
            if self.header[0] != VERSION {
                return Err(CodecError::Version(self.header[0]));
            }
            let len = u32::from_be_bytes([
                self.header[2],
                self.header[3],
                self.header[4],
                self.header[5],
            ]);
            if len > self.max_payload {
                return Err(CodecError::TooLarge {
                    len,
                    limit: self.max_payload,
                });
            }
            // Checked above: at most max_payload bytes are ever reserved.
            self.payload = Vec::with_capacity(len as usize);
            self.want = Some((self.header[1], len));
        }
        let Some((kind, len)) = self.want else {
            return Ok((used, None));
        };
        let missing = len as usize - self.payload.len();
        let take = missing.min(data.len() - used);
        self.payload.extend_from_slice(&data[used..used + take]);
        used += take;
        if self.payload.len() < len as usize {
            return Ok((used, None));
        }
        self.want = None;
        self.have_header = 0;
        let payload = std::mem::take(&mut self.payload);
        Ok((used, Some(decode_payload(kind, &payload))))
    }
}

/// Decodes one frame's payload by its type.
pub fn decode_payload(kind: u8, payload: &[u8]) -> Decoded {
    fn parse<T: for<'de> Deserialize<'de>>(
        name: &'static str,
        payload: &[u8],
        wrap: fn(T) -> Frame,
    ) -> Decoded {
        match serde_json::from_slice::<T>(payload) {
            Ok(v) => Decoded::Frame(wrap(v)),
            Err(source) => Decoded::Invalid(FrameError::BadPayload { name, source }),
        }
    }
    let Some(name) = kind_name(kind) else {
        return Decoded::Invalid(FrameError::UnknownType(kind));
    };
    match kind {
        kind::SEND => parse(name, payload, Frame::Send),
        kind::ACK => parse(name, payload, Frame::Ack),
        kind::CREATE => parse(name, payload, Frame::Create),
        kind::JOIN => parse(name, payload, Frame::Join),
        kind::LEAVE => parse(name, payload, Frame::Leave),
        kind::MEMBERS => parse(name, payload, Frame::Members),
        kind::HISTORY => parse(name, payload, Frame::History),
        kind::WELCOME => parse(name, payload, Frame::Welcome),
        kind::ACCEPTED => parse(name, payload, Frame::Accepted),
        kind::DELIVER => parse(name, payload, Frame::Deliver),
        kind::RECEIPT => parse(name, payload, Frame::Receipt),
        kind::PRESENCE => parse(name, payload, Frame::Presence),
        kind::RESULT => parse(name, payload, Frame::Result),
        kind::ERROR => parse(name, payload, Frame::Error),
        _ => parse(name, payload, Frame::Goodbye),
    }
}

/// Decodes every whole frame in `data` (for tests and the fuzz target): the frames and
/// skipped frames in order, then the fatal error if one ended it.
pub fn decode_all(max_payload: u32, mut data: &[u8]) -> (Vec<Decoded>, Option<CodecError>) {
    let mut decoder = Decoder::new(max_payload);
    let mut out = Vec::new();
    while !data.is_empty() {
        match decoder.feed(data) {
            Ok((used, frame)) => {
                data = &data[used..];
                out.extend(frame);
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(text: &str) -> Frame {
        Frame::Send(Send {
            req: 7,
            to: Some("bob".into()),
            room: None,
            text: text.into(),
        })
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let frames = vec![
            send("hello"),
            Frame::Ack(Ack { ids: vec![1, 2, 3] }),
            Frame::Error(ErrorFrame {
                req: None,
                code: "x".into(),
                message: "y".into(),
                fatal: true,
            }),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut decoder = Decoder::new(1024);
        let mut got = Vec::new();
        for b in &bytes {
            let (used, frame) = decoder.feed(std::slice::from_ref(b)).unwrap();
            assert_eq!(used, 1);
            if let Some(Decoded::Frame(f)) = frame {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert!(!decoder.is_mid_frame());
    }

    #[test]
    fn encode_into_appends_whole_frames() {
        let mut out = b"before".to_vec();
        send("one").encode_into(&mut out);
        send("two").encode_into(&mut out);
        let (frames, err) = decode_all(1024, &out[6..]);
        assert!(err.is_none());
        assert_eq!(frames.len(), 2);
        assert!(matches!(&frames[1], Decoded::Frame(f) if *f == send("two")));
    }

    #[test]
    fn header_is_as_documented() {
        let bytes = send("hi").encode();
        assert_eq!(bytes[0], 1);
        assert_eq!(bytes[1], 0x01);
        let len = u32::from_be_bytes(bytes[2..6].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 6);
        let json: serde_json::Value = serde_json::from_slice(&bytes[6..]).unwrap();
        assert_eq!(json["ref"], 7);
        assert_eq!(json["to"], "bob");
        assert!(json.get("room").is_none());
    }

    #[test]
    fn oversize_is_refused_from_the_header_alone() {
        // Only the header: nothing of the announced 4 GiB is read or reserved.
        let header = [1, kind::SEND, 0xff, 0xff, 0xff, 0xff];
        let mut decoder = Decoder::new(1000);
        assert_eq!(
            decoder.feed(&header).unwrap_err(),
            CodecError::TooLarge {
                len: u32::MAX,
                limit: 1000
            }
        );
        assert_eq!(
            Decoder::new(10).feed(&[2, 1, 0, 0, 0, 0]).unwrap_err(),
            CodecError::Version(2)
        );
    }

    #[test]
    fn unknown_types_and_bad_json_are_skipped() {
        let mut bytes = encode_raw(0x42, b"{}");
        bytes.extend(encode_raw(kind::SEND, b"not json"));
        bytes.extend(send("after").encode());
        let (out, err) = decode_all(1024, &bytes);
        assert!(err.is_none());
        assert!(matches!(
            &out[0],
            Decoded::Invalid(FrameError::UnknownType(0x42))
        ));
        assert!(matches!(&out[1], Decoded::Invalid(e) if e.code() == "bad_frame"));
        assert!(matches!(&out[2], Decoded::Frame(f) if *f == send("after")));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let bytes = encode_raw(kind::ACK, br#"{"ids":[5],"later":"field"}"#);
        let (out, _) = decode_all(1024, &bytes);
        assert!(matches!(&out[0], Decoded::Frame(Frame::Ack(a)) if a.ids == [5]));
    }
}
