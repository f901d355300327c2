//! A client of `tlsnet-msg/1` over any byte stream (the TLS stream of
//! [`crate::net::client::Connector`], or an in-memory pipe): `tlsnet chat` and the tests use it.
//!
//! Requests are answered in order, but messages, receipts and presence changes arrive at any
//! time: the client keeps those that arrive while it waits for an answer, and
//! [`MsgClient::next_event`] returns them first.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{
    Accepted, Ack, CodecError, Decoded, Decoder, ErrorFrame, Frame, History, Outcome, RoomRequest,
    Send, Welcome,
};

/// A client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed.
    #[error("connection failed while {doing}")]
    Io {
        /// What the client was doing.
        doing: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The server closed the connection.
    #[error("the server closed the connection while {0}")]
    Closed(&'static str),
    /// The server said goodbye (it is shutting down).
    #[error("the server is shutting down: {0}")]
    Goodbye(String),
    /// The server refused a request (or the connection) with an `ERROR` frame.
    #[error("server: {} ({})", .0.message, .0.code)]
    Refused(ErrorFrame),
    /// The server's bytes are not frames.
    #[error("the server broke the framing")]
    Codec(#[from] CodecError),
    /// The server sent something that does not answer the request.
    #[error("unexpected {0} frame from the server while {1}")]
    Unexpected(&'static str, &'static str),
    /// Nothing came in time.
    #[error("no answer within {0:?} while {1}")]
    Timeout(Duration, &'static str),
}

impl ClientError {
    /// The server's error code, when the server refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    /// A user.
    User(String),
    /// A room.
    Room(String),
}

/// A messaging session.
pub struct MsgClient<S> {
    stream: S,
    decoder: Decoder,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    events: VecDeque<Frame>,
    next_ref: u64,
    /// What the server said first: who we are, its limits.
    pub welcome: Welcome,
    /// How long a request may wait for its answer.
    pub timeout: Duration,
}

/// Largest frame accepted from a server.
pub const MAX_SERVER_FRAME: u32 = 64 * 1024 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> MsgClient<S> {
    /// Reads the server's `WELCOME` (an `ERROR` there, such as `no_user_id`, is the error).
    pub async fn start(stream: S, timeout: Duration) -> Result<Self, ClientError> {
        let mut client = MsgClient {
            stream,
            decoder: Decoder::new(MAX_SERVER_FRAME),
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            events: VecDeque::new(),
            next_ref: 1,
            welcome: Welcome {
                version: 0,
                user: String::new(),
                max_message_size: 0,
                max_frame: 0,
            },
            timeout,
        };
        let doing = "waiting for the server's welcome";
        match client.read_frame_timeout(timeout, doing).await? {
            Frame::Welcome(w) => client.welcome = w,
            Frame::Error(e) => return Err(ClientError::Refused(e)),
            other => return Err(ClientError::Unexpected(other.name(), doing)),
        }
        Ok(client)
    }

    /// Our user id.
    pub fn user(&self) -> &str {
        &self.welcome.user
    }

    /// Sends raw bytes (tests of hostile input).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let io = |source| ClientError::Io {
            doing: "sending",
            source,
        };
        self.stream.write_all(bytes).await.map_err(io)?;
        self.stream.flush().await.map_err(io)
    }

    /// Sends a frame.
    pub async fn write(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.write_raw(&frame.encode()).await
    }

    async fn read_frame(&mut self, doing: &'static str) -> Result<Frame, ClientError> {
        loop {
            while self.start < self.end {
                let (used, decoded) = self.decoder.feed(&self.buf[self.start..self.end])?;
                self.start += used;
                match decoded {
                    Some(Decoded::Frame(f)) => return Ok(f),
                    Some(Decoded::Invalid(_)) => {
                        return Err(ClientError::Unexpected("invalid", doing));
                    }
                    None => {}
                }
            }
            self.start = 0;
            self.end = 0;
            let n = self
                .stream
                .read(&mut self.buf)
                .await
                .map_err(|source| ClientError::Io { doing, source })?;
            if n == 0 {
                return Err(ClientError::Closed(doing));
            }
            self.end = n;
        }
    }

    async fn read_frame_timeout(
        &mut self,
        limit: Duration,
        doing: &'static str,
    ) -> Result<Frame, ClientError> {
        tokio::time::timeout(limit, self.read_frame(doing))
            .await
            .map_err(|_| ClientError::Timeout(limit, doing))?
    }

    /// Waits for the answer to request `req`; other frames are kept as events.
    async fn answer(&mut self, req: u64, doing: &'static str) -> Result<Frame, ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.read_frame_timeout(left, doing).await?;
            match frame {
                Frame::Accepted(ref a) if a.req == req => return Ok(frame),
                Frame::Result(ref r) if r.req == req => return Ok(frame),
                Frame::Error(e) if e.req == Some(req) || e.fatal || e.req.is_none() => {
                    return Err(ClientError::Refused(e))
                }
                Frame::Goodbye(g) => return Err(ClientError::Goodbye(g.reason)),
                other => self.events.push_back(other),
            }
        }
    }

    fn take_ref(&mut self) -> u64 {
        let r = self.next_ref;
        self.next_ref += 1;
        r
    }

    /// Sends a message; returns once the server has committed it.
    pub async fn send(&mut self, to: To, text: &str) -> Result<Accepted, ClientError> {
        let req = self.take_ref();
        let (to, room) = match to {
            To::User(u) => (Some(u), None),
            To::Room(r) => (None, Some(r)),
        };
        self.write(&Frame::Send(Send {
            req,
            to,
            room,
            text: text.to_owned(),
        }))
        .await?;
        match self
            .answer(req, "waiting for the message's acknowledgement")
            .await?
        {
            Frame::Accepted(a) => Ok(a),
            other => Err(ClientError::Unexpected(other.name(), "sending")),
        }
    }

    async fn room_request(
        &mut self,
        make: fn(RoomRequest) -> Frame,
        room: &str,
    ) -> Result<Outcome, ClientError> {
        let req = self.take_ref();
        self.write(&make(RoomRequest {
            req,
            room: room.to_owned(),
        }))
        .await?;
        match self
            .answer(req, "waiting for the answer about a room")
            .await?
        {
            Frame::Result(r) => Ok(r),
            other => Err(ClientError::Unexpected(other.name(), "a room request")),
        }
    }

    /// Creates a room (we are its first member).
    pub async fn create(&mut self, room: &str) -> Result<(), ClientError> {
        self.room_request(Frame::Create, room).await.map(|_| ())
    }

    /// Joins a room.
    pub async fn join(&mut self, room: &str) -> Result<(), ClientError> {
        self.room_request(Frame::Join, room).await.map(|_| ())
    }

    /// Leaves a room.
    pub async fn leave(&mut self, room: &str) -> Result<(), ClientError> {
        self.room_request(Frame::Leave, room).await.map(|_| ())
    }

    /// A room's members and their presence.
    pub async fn members(
        &mut self,
        room: &str,
    ) -> Result<Vec<super::codec::Presence>, ClientError> {
        Ok(self
            .room_request(Frame::Members, room)
            .await?
            .members
            .unwrap_or_default())
    }

    /// A page of history: up to `limit` messages before `before`, oldest first, and whether
    /// there are older ones.
    pub async fn history(
        &mut self,
        with: To,
        before: Option<u64>,
        limit: u32,
    ) -> Result<(Vec<super::codec::Message>, bool), ClientError> {
        let req = self.take_ref();
        let (with, room) = match with {
            To::User(u) => (Some(u), None),
            To::Room(r) => (None, Some(r)),
        };
        self.write(&Frame::History(History {
            req,
            with,
            room,
            before,
            limit,
        }))
        .await?;
        match self.answer(req, "waiting for history").await? {
            Frame::Result(r) => Ok((r.messages.unwrap_or_default(), r.more.unwrap_or(false))),
            other => Err(ClientError::Unexpected(other.name(), "reading history")),
        }
    }

    /// Acknowledges delivered messages: the server forgets them.
    pub async fn ack(&mut self, ids: &[u64]) -> Result<(), ClientError> {
        self.write(&Frame::Ack(Ack { ids: ids.to_vec() })).await
    }

    /// The next message, receipt, presence change or error, waiting at most `wait`
    /// (`Ok(None)`: nothing came).
    pub async fn next_event(&mut self, wait: Duration) -> Result<Option<Frame>, ClientError> {
        if let Some(f) = self.events.pop_front() {
            return Ok(Some(f));
        }
        match tokio::time::timeout(wait, self.read_frame("waiting for messages")).await {
            Err(_) => Ok(None),
            Ok(Ok(Frame::Goodbye(g))) => Err(ClientError::Goodbye(g.reason)),
            Ok(Ok(Frame::Error(e))) if e.fatal => Err(ClientError::Refused(e)),
            Ok(r) => r.map(Some),
        }
    }

    /// Closes the session (TLS close_notify on a TLS stream).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.stream.shutdown()).await;
    }

    /// The stream, for tests that go on with raw bytes.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}
