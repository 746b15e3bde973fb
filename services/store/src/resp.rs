//! The router's own connection to one Redis over plain TCP, for its two hot commands: the
//! `XREADGROUP` of its ingest stream, whose reply is taken apart into entries where it lies in
//! the read buffer, and the `EVALSHA` of a dispatch batch, written straight in RESP as its
//! arguments come ([`RespCall`]).
//!
//! Why: the client library parses every reply into a tree of values with a parser-combinator
//! that resumes across reads, about 1,400 instructions per value (a batch of a hundred
//! reports is five hundred values), and copies every argument of a command twice more before
//! it reaches the socket; together about a quarter of the router's instructions per routed
//! incident (docs/PERFORMANCE.md, "The router's own connection"). Here a reply is first
//! checked for completeness by walking its length headers only (no copy, no value), then read
//! once.
//!
//! Scope: plain `redis://` to one Redis, directly or as the primary named by Sentinel, with
//! RESP2 (the store's default), a user and password, and a database number. TLS (`rediss://`),
//! Unix sockets, RESP3 and Redis Cluster keep the client library's connection
//! ([`crate::consumer::Consumer`] chooses). Anything unexpected (an I/O error, a timeout, a
//! reply of another shape, a call abandoned half-way) makes the connection unusable and the
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
pub(crate) struct Direct {
    stream: TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
    /// A command was sent and its reply not yet read in full (the call was abandoned): what
    /// comes next on the socket belongs to it, so the connection cannot be used again.
    busy: bool,
}

// Not derived: the buffers hold reports, whose contact details must not reach a log.
impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("peer", &self.stream.peer_addr().ok())
            .field("busy", &self.busy)
            .finish_non_exhaustive()
    }
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

    /// `WAIT replicas timeout` for the writes sent on this connection (`WAIT` covers one
    /// connection's); how many replicas acknowledged.
    pub(crate) async fn wait(&mut self, replicas: u32, timeout: Duration) -> Result<u32> {
        let (mut a, mut b) = (itoa::Buffer::new(), itoa::Buffer::new());
        let args = [
            &b"WAIT"[..],
            a.format(replicas).as_bytes(),
            b.format(timeout.as_millis() as u64).as_bytes(),
        ];
        let len = self.call_within(&args, timeout + RESPONSE_TIMEOUT).await?;
        let mut c = Cursor {
            buf: &self.buf[..len],
            pos: 0,
        };
        let acked = match c.next() {
            Ok(Head::Int(n)) => Ok(u32::try_from(n).unwrap_or(0)),
            _ => Err(unavailable("WAIT", "unexpected reply")),
        };
        self.buf.clear();
        acked
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
        self.call_within(args, self.timeout).await
    }

    /// [`Direct::call`], waiting up to `timeout` for the reply.
    async fn call_within(&mut self, args: &[&[u8]], timeout: Duration) -> Result<usize> {
        let mut call = RespBatch::with_capacity(args.iter().map(|a| a.len() + 16).sum());
        call.all(args);
        let len = self
            .round_trip(&[call.bytes()], timeout)
            .await?
            .pop()
            .unwrap_or(0);
        if let Some(e) = server_error(&self.buf[..len]) {
            self.buf.clear();
            return Err(e);
        }
        Ok(len)
    }

    /// Sends commands already in RESP ([`RespCall`]) in one write each, without waiting in
    /// between, and returns their replies, each as the client library would give it (an error
    /// reply as a `ServerError` value in its place). Waits up to the response timeout.
    pub(crate) async fn send(&mut self, calls: &[&[u8]]) -> Result<Vec<redis::Value>> {
        let ends = self.round_trip(calls, RESPONSE_TIMEOUT).await?;
        let mut start = 0;
        let mut out = Vec::with_capacity(ends.len());
        for end in ends {
            let mut c = Cursor {
                buf: &self.buf[..end],
                pos: start,
            };
            out.push(value(&mut c).map_err(|()| unavailable("read", "a reply of another shape"))?);
            start = end;
        }
        self.buf.clear();
        Ok(out)
    }

    /// Sends `batch`, a `WATCH` followed by one `HMGET` of `fields` fields per record, and
    /// returns the values read. An error reply to any of them is the error, and the keys are
    /// then still watched ([`Direct::unwatch`]).
    pub(crate) async fn watch_read(&mut self, batch: &RespBatch, fields: usize) -> Result<Rows> {
        let ends = self
            .exchange(&[batch.bytes()], batch.commands(), self.timeout)
            .await?;
        let mut rows = Rows {
            bytes: Vec::with_capacity(self.buf.len()),
            values: Vec::with_capacity(ends.len().saturating_sub(1) * fields),
            fields,
        };
        let read = read_replies(&self.buf, &ends, |c, i| {
            if i == 0 {
                return c.skip();
            }
            if c.array()? != fields {
                return Err(());
            }
            for _ in 0..fields {
                let value = c.bytes()?.map(|v| {
                    let start = rows.bytes.len();
                    rows.bytes.extend_from_slice(v);
                    start..rows.bytes.len()
                });
                rows.values.push(value);
            }
            Ok(())
        });
        self.buf.clear();
        read.map(|_| rows)
    }

    /// Sends `batch`, a transaction (`MULTI`, its commands, `EXEC`): `Ok(true)` when Redis ran
    /// it, `Ok(false)` when it refused it because a watched key changed (nothing was written).
    /// An error reply to any command, queued or run, is the error. Either way nothing stays
    /// watched.
    pub(crate) async fn exec(&mut self, batch: &RespBatch) -> Result<bool> {
        self.exec_packed(batch.bytes(), batch.commands()).await
    }

    /// [`Direct::exec`] of a transaction already in RESP (`commands` of them, `MULTI` and
    /// `EXEC` included: the client library's packed atomic pipeline).
    pub(crate) async fn exec_packed(&mut self, bytes: &[u8], commands: usize) -> Result<bool> {
        let ends = self.exchange(&[bytes], commands, self.timeout).await?;
        let last = ends.len().saturating_sub(1);
        let read = read_replies(&self.buf, &ends, |c, i| {
            if i < last {
                return c.skip().map(|()| Ok(true));
            }
            // `EXEC`: nil when refused, else the replies of the commands run, any of which
            // may be an error.
            match c.next()? {
                Head::Array(None) => Ok(Ok(false)),
                Head::Array(Some(n)) => {
                    let mut failed = None;
                    for _ in 0..n {
                        match c.next()? {
                            Head::Error(line) => {
                                failed.get_or_insert(line);
                            }
                            Head::Array(Some(m)) => {
                                for _ in 0..m {
                                    c.skip()?;
                                }
                            }
                            _ => {}
                        }
                    }
                    Ok(failed.map_or(Ok(true), Err))
                }
                _ => Err(()),
            }
        });
        let ran = match read {
            Ok(replies) => match replies.last() {
                Some(Ok(ran)) => Ok(*ran),
                Some(Err(line)) => Err(server_error(line)
                    .unwrap_or_else(|| unavailable("EXEC", "an error reply of another shape"))),
                None => Err(unavailable("EXEC", "no reply")),
            },
            Err(e) => Err(e),
        };
        self.buf.clear();
        ran
    }

    /// `UNWATCH`: forgets the keys a [`Direct::watch_read`] watched.
    pub(crate) async fn unwatch(&mut self) -> Result<()> {
        let len = self.call(&[b"UNWATCH"]).await?;
        self.buf.drain(..len);
        Ok(())
    }

    /// Writes `calls` and reads until a reply to each is complete in the buffer; returns where
    /// each reply ends.
    async fn round_trip(&mut self, calls: &[&[u8]], timeout: Duration) -> Result<Vec<usize>> {
        self.exchange(calls, calls.len(), timeout).await
    }

    /// Writes `writes` and reads until `replies` replies are complete in the buffer (a write
    /// may hold several commands, [`RespBatch`]); returns where each reply ends.
    async fn exchange(
        &mut self,
        writes: &[&[u8]],
        replies: usize,
        timeout: Duration,
    ) -> Result<Vec<usize>> {
        if self.busy {
            return Err(unavailable(
                "read",
                "an earlier call on this connection was abandoned",
            ));
        }
        self.busy = true;
        let (stream, buf) = (&mut self.stream, &mut self.buf);
        let read = async {
            for w in writes {
                stream.write_all(w).await?;
            }
            let mut ends = Vec::with_capacity(replies);
            let mut at = 0;
            while ends.len() < replies {
                match reply_len(&buf[at..]) {
                    Ok(Some(n)) => {
                        at += n;
                        ends.push(at);
                        continue;
                    }
                    Ok(None) if buf.len() < MAX_REPLY => {}
                    Ok(None) | Err(()) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "not a reply this connection expects",
                        ));
                    }
                }
                buf.reserve(64 << 10);
                if stream.read_buf(buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            Ok(ends)
        };
        let ends = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| unavailable("read", "timed out"))?
            .map_err(|e| unavailable("read", e))?;
        // Commands answered in order, one reply each: the replies are all there is.
        if ends.last().copied().unwrap_or(0) != self.buf.len() {
            return Err(unavailable("read", "more bytes than the replies"));
        }
        self.busy = false;
        Ok(ends)
    }
}

/// One command written in RESP as its arguments come ([`redis::RedisWrite`]), for
/// [`Direct::send`]: each argument is written once, with its length, into the buffer that goes
/// to the socket. (A `redis::Cmd` keeps its arguments apart and the client then copies them,
/// their lengths formatted, into a pipeline buffer, and that again into its write buffer: on
/// the router's dispatch call, a tenth of its instructions.) The argument count, known only at
/// the end, is written by [`RespCall::finish`] into room left before the first argument.
#[derive(Clone)]
pub(crate) struct RespCall {
    buf: Vec<u8>,
    args: usize,
    start: usize,
}

// Not derived, as for `Direct`: a call holds reports.
impl std::fmt::Debug for RespCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RespCall")
            .field("args", &self.args)
            .field("bytes", &(self.buf.len() - self.start))
            .finish()
    }
}

/// Room for `*<count>\r\n` before the arguments.
const HEAD: usize = 24;

impl RespCall {
    /// A command of about `args` arguments and `bytes` bytes of them.
    pub(crate) fn with_capacity(args: usize, bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEAD + bytes + args * 8);
        buf.resize(HEAD, 0);
        Self {
            buf,
            args: 0,
            start: HEAD,
        }
    }

    /// Writes the argument count; the command is then complete ([`RespCall::bytes`]).
    pub(crate) fn finish(mut self) -> Self {
        let mut n = itoa::Buffer::new();
        let count = n.format(self.args).as_bytes();
        // `*`, the count, `\r\n`, ending where the first argument starts.
        self.start = HEAD - count.len() - 3;
        self.buf[self.start] = b'*';
        self.buf[self.start + 1..HEAD - 2].copy_from_slice(count);
        self.buf[HEAD - 2..HEAD].copy_from_slice(b"\r\n");
        self
    }

    /// The command in RESP (after [`RespCall::finish`]).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl redis::RedisWrite for RespCall {
    fn write_arg(&mut self, arg: &[u8]) {
        bulk(&mut self.buf, arg);
        self.args += 1;
    }

    fn writer_for_next_arg(&mut self) -> impl std::io::Write + '_ {
        Arg(self, Vec::new())
    }
}

/// One argument in RESP: `$<len>\r\n`, put together on the stack, then the argument at once.
fn bulk(buf: &mut Vec<u8>, arg: &[u8]) {
    let mut n = itoa::Buffer::new();
    let len = n.format(arg.len()).as_bytes();
    let mut head = [0u8; 24];
    head[0] = b'$';
    head[1..=len.len()].copy_from_slice(len);
    head[len.len() + 1..len.len() + 3].copy_from_slice(b"\r\n");
    buf.reserve(len.len() + arg.len() + 5);
    buf.extend_from_slice(&head[..len.len() + 3]);
    buf.extend_from_slice(arg);
    buf.extend_from_slice(b"\r\n");
}

/// An argument written through `writer_for_next_arg`: the length comes first in RESP, so the
/// argument is gathered, then written.
struct Arg<'a, W: redis::RedisWrite>(&'a mut W, Vec<u8>);

impl<W: redis::RedisWrite> std::io::Write for Arg<'_, W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: redis::RedisWrite> Drop for Arg<'_, W> {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.1);
        self.0.write_arg(&bytes);
    }
}

/// The values of several `HMGET`s of the same fields ([`Direct::watch_read`]), kept in one
/// buffer rather than a vector per value.
#[derive(Default)]
pub(crate) struct Rows {
    bytes: Vec<u8>,
    values: Vec<Option<std::ops::Range<usize>>>,
    fields: usize,
}

// Not derived, as for `Direct`: the values may be a record's.
impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("rows", &self.len())
            .finish_non_exhaustive()
    }
}

impl Rows {
    /// How many records were read.
    pub(crate) fn len(&self) -> usize {
        self.values.len().checked_div(self.fields).unwrap_or(0)
    }

    /// Rows of these values, as a read would give them (for tests of what reads them).
    #[cfg(test)]
    pub(crate) fn of<const N: usize>(rows: &[[Option<&str>; N]]) -> Self {
        let mut out = Self {
            fields: N,
            ..Self::default()
        };
        for v in rows.iter().flatten() {
            out.values.push(v.map(|v| {
                let start = out.bytes.len();
                out.bytes.extend_from_slice(v.as_bytes());
                start..out.bytes.len()
            }));
        }
        out
    }

    /// Field `field` of record `row`; `None` when the record lacks it.
    pub(crate) fn get(&self, row: usize, field: usize) -> Option<&[u8]> {
        if field >= self.fields {
            return None;
        }
        let range = self.values.get(row * self.fields + field)?.clone()?;
        self.bytes.get(range)
    }
}

/// Commands written back to back in RESP, each announced with its argument count
/// ([`RespBatch::command`]), for one write of a whole round trip: one command, a `WATCH` and its reads, or
/// a transaction of hundreds of commands ([`Direct::watch_read`], [`Direct::exec`]).
pub(crate) struct RespBatch {
    buf: Vec<u8>,
    commands: usize,
    /// Arguments the open command announced, and those written since.
    announced: usize,
    written: usize,
    /// A command got another number of arguments than it announced.
    miscounted: bool,
}

// Not derived, as for `Direct`: a batch holds reports.
impl std::fmt::Debug for RespBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RespBatch")
            .field("commands", &self.commands)
            .field("bytes", &self.buf.len())
            .finish()
    }
}

impl RespBatch {
    /// An empty batch with room for about `bytes` bytes.
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            commands: 0,
            announced: 0,
            written: 0,
            miscounted: false,
        }
    }

    /// Starts a command of `args` arguments (its name included), written next.
    pub(crate) fn command(&mut self, args: usize) -> &mut Self {
        self.close();
        let mut n = itoa::Buffer::new();
        self.buf.push(b'*');
        self.buf.extend_from_slice(n.format(args).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        self.commands += 1;
        self.announced = args;
        self.written = 0;
        self
    }

    /// Writes `args` as one complete command.
    pub(crate) fn all(&mut self, args: &[&[u8]]) {
        self.command(args.len());
        for a in args {
            redis::RedisWrite::write_arg(self, a);
        }
    }

    fn close(&mut self) {
        self.miscounted |= self.written != self.announced;
    }

    /// The batch, once every command got the arguments it announced (a miscount is a bug
    /// here, never sent: Redis would read the rest of the batch as other commands).
    pub(crate) fn finish(mut self) -> Result<Self> {
        self.close();
        if self.miscounted {
            return Err(StoreError::Internal(
                "a command of a batch has another number of arguments than it announced".into(),
            ));
        }
        Ok(self)
    }

    /// The commands in RESP.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// How many commands (and so replies).
    pub(crate) fn commands(&self) -> usize {
        self.commands
    }
}

impl redis::RedisWrite for RespBatch {
    fn write_arg(&mut self, arg: &[u8]) {
        bulk(&mut self.buf, arg);
        self.written += 1;
    }

    fn writer_for_next_arg(&mut self) -> impl std::io::Write + '_ {
        Arg(self, Vec::new())
    }
}

/// Reads each reply of a round trip (ending at `ends` in `buf`) with `read`, given its cursor
/// and its place; an error reply is the error (the first one, once every reply is read).
fn read_replies<'a, T>(
    buf: &'a [u8],
    ends: &[usize],
    mut read: impl FnMut(&mut Cursor<'a>, usize) -> Result<T, ()>,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(ends.len());
    let mut failed = None;
    let mut start = 0;
    for (i, &end) in ends.iter().enumerate() {
        if let Some(e) = server_error(&buf[start..end]) {
            failed.get_or_insert(e);
        } else {
            let mut c = Cursor {
                buf: &buf[..end],
                pos: start,
            };
            out.push(
                read(&mut c, i).map_err(|()| unavailable("read", "a reply of another shape"))?,
            );
        }
        start = end;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn unavailable(op: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis {op}: {e}"))
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
        let Some(end) = line_end(buf, pos + 1)? else {
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

/// Where the line starting at `from` ends (the index of its `\r\n`); `Ok(None)` while it is
/// incomplete, `Err` for a `\r` not followed by `\n` (not RESP2).
fn line_end(buf: &[u8], from: usize) -> Result<Option<usize>, ()> {
    let Some(rest) = buf.get(from..) else {
        return Ok(None);
    };
    let Some(i) = rest.iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    match rest.get(i + 1) {
        Some(b'\n') => Ok(Some(from + i)),
        Some(_) => Err(()),
        None => Ok(None),
    }
}

/// A RESP integer (`-1` for nil lengths); `Err` for anything else (the client library's
/// reading of lengths: an optional `-`, then digits, within `i64`).
fn int(head: &[u8]) -> Result<i64, ()> {
    let (negative, digits) = match head {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, head),
    };
    if digits.is_empty() {
        return Err(());
    }
    // Counted below zero, where `i64` reaches one further.
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(());
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_sub(i64::from(d - b'0')))
            .ok_or(())?;
    }
    if negative {
        Ok(n)
    } else {
        n.checked_neg().ok_or(())
    }
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
    /// `+text`.
    Line(&'a [u8]),
    /// `:n`.
    Int(i64),
    /// `-CODE message`, the whole line with its `\r\n`.
    Error(&'a [u8]),
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> Result<Head<'a>, ()> {
        let start = self.pos;
        let kind = *self.buf.get(start).ok_or(())?;
        let end = line_end(self.buf, self.pos + 1)?.ok_or(())?;
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
            b'+' => Ok(Head::Line(head)),
            b':' => Ok(Head::Int(int(head)?)),
            b'-' => Ok(Head::Error(&self.buf[start..end + 2])),
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
            Head::Array(_) | Head::Int(_) | Head::Error(_) => Err(()),
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

/// One reply as the client library's value (small replies: a script's answers).
fn value(c: &mut Cursor<'_>) -> Result<redis::Value, ()> {
    use redis::Value;
    Ok(match c.next()? {
        Head::Array(None) | Head::Bulk(None) => Value::Nil,
        Head::Array(Some(n)) => {
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                items.push(value(c)?);
            }
            Value::Array(items)
        }
        Head::Bulk(Some(b)) => Value::BulkString(b.to_vec()),
        Head::Line(b"OK") => Value::Okay,
        Head::Line(l) => Value::SimpleString(std::str::from_utf8(l).map_err(|_| ())?.to_owned()),
        Head::Int(i) => Value::Int(i),
        // Rare (a script that failed): the client library reads the error's code and text.
        Head::Error(line) => redis::parse_redis_value(line).map_err(|_| ())?,
    })
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
        let mut call = RespBatch::with_capacity(0);
        call.all(&[b"XREADGROUP", b"", b"\r\n"]);
        assert_eq!(
            call.bytes(),
            b"*3\r\n$10\r\nXREADGROUP\r\n$0\r\n\r\n$2\r\n\r\n\r\n"
        );
    }

    /// A batch is the client library's pipeline of the same commands, byte for byte; a
    /// command given more or fewer arguments than it announced is never sent.
    #[test]
    fn a_batch_is_the_client_librarys_pipeline_and_counts_its_arguments() {
        use redis::RedisWrite;
        let mut b = RespBatch::with_capacity(0);
        b.all(&[b"MULTI"]);
        b.command(4).write_arg(b"HSET");
        b.write_arg(b"k");
        b.write_arg(b"f");
        let _ = std::io::Write::write_all(&mut b.writer_for_next_arg(), b"v\r\n");
        b.all(&[b"EXEC"]);
        let b = b.finish().unwrap();
        let mut pipe = redis::pipe();
        pipe.cmd("MULTI")
            .cmd("HSET")
            .arg("k")
            .arg("f")
            .arg("v\r\n")
            .cmd("EXEC");
        assert_eq!(b.bytes(), pipe.get_packed_pipeline().as_slice());
        assert_eq!(b.commands(), 3);
        for (announced, given) in [(3, 2), (2, 3)] {
            let mut b = RespBatch::with_capacity(0);
            b.command(announced).write_arg(b"SET");
            for _ in 1..given {
                b.write_arg(b"x");
            }
            b.all(&[b"PING"]);
            assert!(matches!(b.finish(), Err(StoreError::Internal(_))));
        }
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

    /// Script replies read as the client library's values: answers, nil, status, and an error
    /// in a pipeline's place (a script that failed) with its code.
    #[test]
    fn script_replies_are_the_client_librarys_values() {
        for reply in [
            &b"*3\r\n:1\r\n:0\r\n$-1\r\n"[..],
            b"*2\r\n$3\r\nabc\r\n*1\r\n+OK\r\n",
            b"+QUEUED\r\n",
            b"-NOSCRIPT No matching script\r\n",
            b"*-1\r\n",
            b":-7\r\n",
        ] {
            let mut c = Cursor { buf: reply, pos: 0 };
            let mine = value(&mut c).unwrap();
            assert_eq!(c.pos, reply.len());
            assert_eq!(mine, redis::parse_redis_value(reply).unwrap(), "{reply:?}");
        }
    }

    #[test]
    fn a_call_counts_its_arguments_in_front() {
        use redis::RedisWrite;
        use std::io::Write;
        let mut call = RespCall::with_capacity(1, 1);
        for i in 0..12 {
            call.write_arg(format!("a{i}").as_bytes());
        }
        let _ = write!(call.writer_for_next_arg(), "{:.2}", 1.5);
        let mut cmd = redis::cmd("a0");
        for i in 1..12 {
            cmd.arg(format!("a{i}"));
        }
        cmd.arg("1.50");
        assert_eq!(call.finish().bytes(), cmd.get_packed_command().as_slice());
    }

    /// Integers read as `str::parse` reads them (lengths and counts), on every string of up to
    /// four characters from digits, `-`, `+` and `x`, and at the limits of `i64`.
    #[test]
    fn integers_read_as_the_standard_parser_reads_them() {
        let alphabet = b"-+0129x";
        let mut all: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..4 {
            let longer: Vec<Vec<u8>> = all
                .iter()
                .filter(|s| s.len() == all.last().map_or(0, Vec::len))
                .flat_map(|s| {
                    alphabet.iter().map(move |&c| {
                        let mut t = s.clone();
                        t.push(c);
                        t
                    })
                })
                .collect();
            all.extend(longer);
        }
        all.extend([
            b"9223372036854775807".to_vec(),
            b"9223372036854775808".to_vec(),
            b"-9223372036854775807".to_vec(),
            b"00000000000000000001".to_vec(),
            b"-9223372036854775808".to_vec(),
            b"-9223372036854775809".to_vec(),
        ]);
        for s in all {
            let std: Option<i64> = std::str::from_utf8(&s)
                .ok()
                .and_then(|t| t.parse().ok())
                .filter(|_| !s.starts_with(b"+"));
            assert_eq!(int(&s).ok(), std, "{:?}", String::from_utf8_lossy(&s));
        }
    }
}
