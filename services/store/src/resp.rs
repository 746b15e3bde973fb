//! The router's own connection for reading its ingest stream (`XREADGROUP`) from one Redis over
//! plain TCP: the command written straight into the socket, and the reply taken apart into
//! entries where it lies in the read buffer.
//!
//! Why: the client library parses every reply into a tree of values with a parser-combinator
//! that resumes across reads, about 1,400 instructions per value; a batch of a hundred reports
//! is five hundred values, and that parse was a fifth of the router's instructions per routed
//! incident (docs/PERFORMANCE.md, "The ingest read without the client's parser"). Here a reply
//! is first checked for completeness by walking its length headers only (no copy, no value),
//! then read once into [`IngestEntry`]s.
//!
//! Scope: plain `redis://` to one Redis, directly or as the primary named by Sentinel, with
//! RESP2 (the store's default), a user and password, and a database number. TLS (`rediss://`),
//! Unix sockets, RESP3 and Redis Cluster keep the client library's connection
//! ([`crate::consumer::Consumer`] chooses). Anything unexpected (an I/O error, a timeout, a
//! reply of another shape, a read abandoned half-way) makes the connection unusable and the
//! call fails as `Unavailable`: the router drops the consumer and connects again, as it does
//! after any lost connection.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::consumer::IngestEntry;
use crate::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT, Result, StoreError};

/// The largest reply accepted (a read of `COUNT` entries is far below it); anything longer is
/// treated as a broken connection rather than buffered without end.
const MAX_REPLY: usize = 256 << 20;

/// A connection of its own to one Redis, for one command at a time.
#[derive(Debug)]
pub(crate) struct Direct {
    stream: TcpStream,
    out: Vec<u8>,
    buf: Vec<u8>,
    timeout: Duration,
    /// A command was sent and its reply not yet read in full (the call was abandoned): what
    /// comes next on the socket belongs to it, so the connection cannot be used again.
    busy: bool,
}

impl Direct {
    /// Connects when `info` is a connection this module serves (see the module's scope), with
    /// replies awaited up to `block` and the usual response timeout beyond it; `None` for the
    /// others.
    pub(crate) async fn connect(info: &ConnectionInfo, block: Duration) -> Result<Option<Self>> {
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Ok(None);
        };
        let settings = info.redis_settings();
        if settings.protocol() != ProtocolVersion::RESP2 {
            return Ok(None);
        }
        let stream =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), *port)))
                .await
                .map_err(|_| unavailable("connect", "timed out"))?
                .map_err(|e| unavailable("connect", e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| unavailable("connect", e))?;
        let mut me = Self {
            stream,
            out: Vec::with_capacity(256),
            buf: Vec::with_capacity(64 << 10),
            timeout: block + RESPONSE_TIMEOUT,
            busy: false,
        };
        if let Some(password) = settings.password() {
            match settings.username() {
                Some(user) => {
                    me.simple(&[b"AUTH", user.as_bytes(), password.as_bytes()])
                        .await?
                }
                None => me.simple(&[b"AUTH", password.as_bytes()]).await?,
            }
        }
        if settings.db() != 0 {
            let db = settings.db().to_string();
            me.simple(&[b"SELECT", db.as_bytes()]).await?;
        }
        Ok(Some(me))
    }

    /// Sends a command whose reply is a stream read (`XREADGROUP`/`XREAD` of one stream) and
    /// returns its entries, each of `partition` and delivered `deliveries` times.
    pub(crate) async fn read_entries(
        &mut self,
        args: &[&[u8]],
        partition: u16,
        deliveries: u64,
    ) -> Result<Vec<IngestEntry>> {
        let len = self.call(args).await?;
        let entries = parse_read(&self.buf[..len], partition, deliveries);
        self.buf.drain(..len);
        entries
    }

    /// Sends a command whose reply is a status (`+OK`).
    async fn simple(&mut self, args: &[&[u8]]) -> Result<()> {
        let len = self.call(args).await?;
        let ok = self.buf[..len].starts_with(b"+");
        self.buf.drain(..len);
        if ok {
            Ok(())
        } else {
            Err(unavailable("handshake", "unexpected reply"))
        }
    }

    /// Sends one command and reads until its reply is complete in the buffer; returns the
    /// reply's length. A reply that is a Redis error is returned as that error.
    async fn call(&mut self, args: &[&[u8]]) -> Result<usize> {
        if self.busy {
            return Err(unavailable(
                "read",
                "an earlier call on this connection was abandoned",
            ));
        }
        self.busy = true;
        self.out.clear();
        encode(&mut self.out, args);
        let read = async {
            self.stream.write_all(&self.out).await?;
            loop {
                match reply_len(&self.buf) {
                    Ok(Some(n)) => return Ok(n),
                    Ok(None) if self.buf.len() < MAX_REPLY => {}
                    Ok(None) | Err(()) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "not a reply this connection expects",
                        ));
                    }
                }
                self.buf.reserve(64 << 10);
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        };
        let len = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| unavailable("read", "timed out"))?
            .map_err(|e| unavailable("read", e))?;
        // One command at a time: a complete reply is all there is.
        if len != self.buf.len() {
            return Err(unavailable("read", "more bytes than one reply"));
        }
        self.busy = false;
        if let Some(e) = server_error(&self.buf[..len]) {
            self.buf.clear();
            return Err(e);
        }
        Ok(len)
    }
}

fn unavailable(op: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis {op}: {e}"))
}

/// The command in RESP: `*<n>` then `$<len>` and the bytes of each argument.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut n = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(n.format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(n.format(a.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// An error reply (`-CODE message`) as the error the client library would have given, so that
/// callers tell `NOGROUP`, `LOADING` and the rest apart as they always do.
fn server_error(reply: &[u8]) -> Option<StoreError> {
    if !reply.starts_with(b"-") {
        return None;
    }
    match redis::parse_redis_value(reply) {
        Ok(redis::Value::ServerError(e)) => Some(redis::RedisError::from(e).into()),
        _ => Some(StoreError::Internal(format!(
            "redis error: {}",
            String::from_utf8_lossy(reply).trim_end()
        ))),
    }
}

/// The length of the first complete RESP2 reply in `buf`, walking only its headers; `Ok(None)`
/// while it is incomplete, `Err` when the bytes are not RESP2.
fn reply_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    let mut pos = 0;
    // Values still to read: the reply itself, then the elements of each array met.
    let mut pending: usize = 1;
    while pending > 0 {
        let Some(kind) = buf.get(pos).copied() else {
            return Ok(None);
        };
        let Some(end) = line_end(buf, pos + 1) else {
            return Ok(None);
        };
        let head = &buf[pos + 1..end];
        pos = end + 2;
        pending -= 1;
        match kind {
            b'+' | b'-' | b':' => {}
            b'*' => {
                let n = int(head)?;
                if n > 0 {
                    pending = pending
                        .checked_add(usize::try_from(n).map_err(|_| ())?)
                        .ok_or(())?;
                }
            }
            b'$' => {
                let n = int(head)?;
                if n >= 0 {
                    let n = usize::try_from(n).map_err(|_| ())?;
                    pos = pos
                        .checked_add(n)
                        .and_then(|p| p.checked_add(2))
                        .ok_or(())?;
                    if pos > buf.len() {
                        return Ok(None);
                    }
                    if &buf[pos - 2..pos] != b"\r\n" {
                        return Err(());
                    }
                }
            }
            _ => return Err(()),
        }
    }
    Ok(Some(pos))
}

/// Where the line starting at `from` ends (the index of its `\r\n`).
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    let i = rest.windows(2).position(|w| w == b"\r\n")?;
    Some(from + i)
}

/// A RESP integer (`-1` for nil lengths); `Err` for anything else.
fn int(head: &[u8]) -> Result<i64, ()> {
    std::str::from_utf8(head)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(())
}

/// Reads values out of one complete reply (checked by [`reply_len`] first).
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// One value's header: its kind and its number (array length, bulk length) or text.
enum Head<'a> {
    /// `*n`; `None` for a nil array.
    Array(Option<usize>),
    /// `$n` and its bytes; `None` for a nil bulk string.
    Bulk(Option<&'a [u8]>),
    /// `+text` or `:n`.
    Line(&'a [u8]),
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> Result<Head<'a>, ()> {
        let kind = *self.buf.get(self.pos).ok_or(())?;
        let end = line_end(self.buf, self.pos + 1).ok_or(())?;
        let head = &self.buf[self.pos + 1..end];
        self.pos = end + 2;
        match kind {
            b'*' => {
                let n = int(head)?;
                Ok(Head::Array(usize::try_from(n).ok()))
            }
            b'$' => {
                let n = int(head)?;
                let Ok(n) = usize::try_from(n) else {
                    return Ok(Head::Bulk(None));
                };
                let end = self.pos.checked_add(n).ok_or(())?;
                let bytes = self.buf.get(self.pos..end).ok_or(())?;
                self.pos = end + 2;
                Ok(Head::Bulk(Some(bytes)))
            }
            b'+' | b':' => Ok(Head::Line(head)),
            _ => Err(()),
        }
    }

    /// A value that must be an array; its length (0 for nil).
    fn array(&mut self) -> Result<usize, ()> {
        match self.next()? {
            Head::Array(n) => Ok(n.unwrap_or(0)),
            _ => Err(()),
        }
    }

    /// A value that must be a string (bulk or simple); `None` for nil.
    fn bytes(&mut self) -> Result<Option<&'a [u8]>, ()> {
        match self.next()? {
            Head::Bulk(b) => Ok(b),
            Head::Line(l) => Ok(Some(l)),
            Head::Array(_) => Err(()),
        }
    }

    /// Skips one value of any shape.
    fn skip(&mut self) -> Result<(), ()> {
        if let Head::Array(Some(n)) = self.next()? {
            for _ in 0..n {
                self.skip()?;
            }
        }
        Ok(())
    }
}

/// The entries of a stream read's reply (RESP2): nil when the block time passed, else
/// `[[key, [[id, [field, value, …]], …]], …]`. An entry whose fields are nil (deleted while
/// pending) comes back with no fields, as the client library's reading gives it.
fn parse_read(reply: &[u8], partition: u16, deliveries: u64) -> Result<Vec<IngestEntry>> {
    let bad =
        || StoreError::Unavailable("redis read: a stream read's reply of another shape".into());
    let mut c = Cursor { buf: reply, pos: 0 };
    let streams = match c.next().map_err(|()| bad())? {
        Head::Array(n) => n.unwrap_or(0),
        Head::Bulk(None) => 0,
        _ => return Err(bad()),
    };
    let mut out = Vec::new();
    for _ in 0..streams {
        if c.array().map_err(|()| bad())? != 2 {
            return Err(bad());
        }
        c.skip().map_err(|()| bad())?; // the stream's key
        let n = c.array().map_err(|()| bad())?;
        out.reserve(n);
        for _ in 0..n {
            out.push(entry(&mut c, partition, deliveries).map_err(|()| bad())?);
        }
    }
    Ok(out)
}

fn entry(c: &mut Cursor<'_>, partition: u16, deliveries: u64) -> Result<IngestEntry, ()> {
    if c.array()? != 2 {
        return Err(());
    }
    let id = c.bytes()?.ok_or(())?;
    let id = std::str::from_utf8(id).map_err(|_| ())?.to_owned();
    let n = c.array()?;
    let mut fields = Vec::with_capacity(n / 2);
    for _ in 0..n / 2 {
        let (Some(k), v) = (c.bytes()?, c.bytes()?) else {
            return Err(());
        };
        // Fields the client library's reading would drop (a name not UTF-8, a nil value) are
        // dropped here too.
        if let (Ok(k), Some(v)) = (std::str::from_utf8(k), v) {
            fields.push((k.to_owned(), v.to_vec()));
        }
    }
    if n % 2 == 1 {
        c.skip()?;
    }
    Ok(IngestEntry::new(partition, id, deliveries, fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
    }

    /// A RESP2 `XREADGROUP` reply of one stream: an entry with two fields, a packed entry whose
    /// value holds `\r\n`, and an entry deleted while pending.
    fn sample() -> Vec<u8> {
        let mut r = b"*1\r\n*2\r\n".to_vec();
        bulk(&mut r, b"gr:{p1}:ingest");
        r.extend_from_slice(b"*3\r\n");
        r.extend_from_slice(b"*2\r\n");
        bulk(&mut r, b"1-0");
        r.extend_from_slice(b"*4\r\n");
        for f in [&b"id"[..], b"a-1", b"g", b"1"] {
            bulk(&mut r, f);
        }
        r.extend_from_slice(b"*2\r\n");
        bulk(&mut r, b"2-0");
        r.extend_from_slice(b"*2\r\n");
        bulk(&mut r, b"p");
        bulk(&mut r, b"1|x-1|0|1700000000000|00-ab-cd-01|\x0a\x03a\r\nb");
        r.extend_from_slice(b"*2\r\n");
        bulk(&mut r, b"3-0");
        r.extend_from_slice(b"*-1\r\n");
        r
    }

    #[test]
    fn a_reply_is_complete_only_with_its_last_byte() {
        let r = sample();
        for cut in 0..r.len() {
            assert_eq!(
                reply_len(&r[..cut]),
                Ok(None),
                "complete at {cut} of {}",
                r.len()
            );
        }
        assert_eq!(reply_len(&r), Ok(Some(r.len())));
        let mut two = r.clone();
        two.extend_from_slice(b"+OK\r\n");
        assert_eq!(reply_len(&two), Ok(Some(r.len())));
        for nil in [
            &b"*-1\r\n"[..],
            b"$-1\r\n",
            b"+OK\r\n",
            b"-NOGROUP no\r\n",
            b":3\r\n",
            b"*0\r\n",
        ] {
            assert_eq!(reply_len(nil), Ok(Some(nil.len())));
        }
    }

    #[test]
    fn a_stream_read_gives_its_entries() {
        let got = parse_read(&sample(), 1, 2).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].entry_id, "1-0");
        assert_eq!(got[0].text("id"), Some("a-1"));
        assert_eq!(got[0].text("g"), Some("1"));
        assert_eq!((got[0].partition, got[0].deliveries), (1, 2));
        // The packed entry reads as its parts, its report bytes (with `\r\n` inside) intact.
        assert_eq!(got[1].text("id"), Some("x-1"));
        assert_eq!(got[1].field("r"), Some(&b"\x0a\x03a\r\nb"[..]));
        // Deleted while pending: the entry, with no fields (it goes to the dead letters).
        assert_eq!(got[2].entry_id, "3-0");
        assert!(got[2].fields.is_empty() && got[2].text("id").is_none());
        // The block time passed: no entries.
        assert!(parse_read(b"*-1\r\n", 1, 1).unwrap().is_empty());
        assert!(parse_read(b"$-1\r\n", 1, 1).unwrap().is_empty());
    }

    /// The same bytes give the same entries as the client library's parser and reading did.
    #[test]
    fn the_entries_are_those_the_client_library_gives() {
        let r = sample();
        let mine = parse_read(&r, 3, 1).unwrap();
        let value = redis::parse_redis_value(&r).unwrap();
        let theirs = crate::consumer::read_reply_entries(value, 3, 1);
        assert_eq!(mine.len(), theirs.len());
        for (a, b) in mine.iter().zip(&theirs) {
            assert_eq!(a.entry_id, b.entry_id);
            assert_eq!(a.fields, b.fields);
            for part in ["id", "g", "t", "tp", "r"] {
                assert_eq!(a.field(part), b.field(part), "{part}");
            }
        }
    }

    /// Bytes that are not RESP, or a reply of another shape, are an error, never a panic or an
    /// endless wait for more.
    #[test]
    fn broken_replies_are_errors() {
        let r = sample();
        for bad in [
            &b"?what\r\n"[..],
            b"*x\r\n",
            b"$3\r\nabcd\r\n",
            b"*99999999999999999999\r\n",
            b"*9223372036854775807\r\n*9223372036854775807\r\n",
            b"$9223372036854775807\r\n",
        ] {
            assert!(matches!(reply_len(bad), Err(()) | Ok(None)), "{bad:?}");
        }
        assert_eq!(reply_len(b"?what\r\n"), Err(()));
        for shape in [
            &b"+OK\r\n"[..],
            b":1\r\n",
            b"*1\r\n*1\r\n$1\r\nk\r\n",
            b"*1\r\n*2\r\n$1\r\nk\r\n:1\r\n",
        ] {
            assert!(parse_read(shape, 1, 1).is_err(), "{shape:?}");
        }
        // Every byte of a good reply flipped: never a panic.
        for i in 0..r.len() {
            for b in [b'*', b'$', b'-', b'0', b'9', b'\r', b'x'] {
                let mut m = r.clone();
                m[i] = b;
                if let Ok(Some(n)) = reply_len(&m) {
                    let _ = parse_read(&m[..n], 1, 1);
                }
            }
        }
    }

    #[test]
    fn commands_are_written_in_resp() {
        let mut out = Vec::new();
        encode(&mut out, &[b"XREADGROUP", b"", b"\r\n"]);
        assert_eq!(out, b"*3\r\n$10\r\nXREADGROUP\r\n$0\r\n\r\n$2\r\n\r\n\r\n");
    }

    #[test]
    fn error_replies_keep_their_code() {
        assert!(matches!(
            server_error(b"-NOGROUP No such key\r\n"),
            Some(StoreError::NoGroup(_))
        ));
        assert!(matches!(
            server_error(b"-LOADING wait\r\n"),
            Some(StoreError::Unavailable(_))
        ));
        assert!(server_error(b"+OK\r\n").is_none());
    }
}
