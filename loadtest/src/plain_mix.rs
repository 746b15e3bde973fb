//! `--mix plain`: an experiment for issue 13, not the service's write path. The writes of the
//! inline mix (record with its report, dispatch and both timeline entries, two events
//! entries, a department-stream entry, SLA timers, index entries per batch, idempotency) as
//! plain commands instead of a script: per partition group, one round trip `WATCH`es the
//! idempotency keys and reads them, a second one `SET`s the claims of the new reports and
//! writes everything in one `MULTI`/`EXEC` (aborted, and retried, when a watched key changed).
//! It measures what the same record costs Redis without the scripts' Lua, on a connection of
//! its own per writer (a `WATCH` belongs to its connection).
//!
//! `--events` and `--region-levels` try two other shapes of what is written (each run prints
//! the Redis CPU per routed incident, to set beside `--mix lean` and `--mix inline`):
//! - `--events entry` writes the two events entries per incident as the service does;
//!   `batch` one entry per partition group with the same fields repeated; `packed` one entry
//!   per partition group with one value per event (`id|status|department|regions|event`);
//!   `none` leaves them out (analysis only: the events are a feature of the record).
//! - `--region-levels N` writes region index entries for the first N levels of the grid path
//!   only; the finer codes of an incident go into the field name of its level-N entry
//!   (`<code>|<code> <id>` instead of `i <id>`), so that a query at a finer level could read
//!   the level-N index and keep the fields that name its code. 0 (the default) writes every
//!   level, as the service does.
//!
//! The record and the department-stream entries are written by the store's own code for
//! `gridroute serve --transactions` (`gridroute_store::transact::record`, `deliveries`); with
//! `--events entry` and every region level the mix writes what that path writes (as `--mix inline
//! --transactions` measures them), and the other shapes are what this experiment adds.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use gridroute_proto::v1 as pb;
use gridroute_store::{
    Keys,
    dispatch::DispatchWrite,
    ingest::InlineRoute,
    keys,
    transact::{self, Prepared},
};

/// How the events entries are written (`--events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Events {
    /// Two entries per incident, as the service writes them.
    Entry,
    /// One entry per partition group, the same fields repeated.
    Batch,
    /// One entry per partition group, one packed value per event.
    Packed,
    /// None (analysis only).
    None,
}

/// Where the idempotency claims are kept (`--claims`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Claims {
    /// A key per request with a week's expiry (`SET EX`), as the service keeps them.
    Key,
    /// A key per request as `key`, without an expiry (analysis only: what the expiry costs).
    Persist,
    /// One hash per partition and week, a field per request (`HSET`, the hash expiring two
    /// weeks after its week began); a claim is looked up in this week's hash and the last.
    Bucket,
    /// The record itself: the incident id derived from the request (source and request id),
    /// the payload's identity a field of the record; a claim is the record's existence.
    Record,
    /// A key per request as `key`, claimed first (`SET NX GET EX` per report, its own round
    /// trip, no `WATCH`), then the new reports written in `MULTI`/`EXEC`: what claiming first
    /// costs Redis (analysis only: a process that died between the two would leave claims
    /// without records, which the service must not).
    First,
    /// None (analysis only: what any way of keeping them can at most save).
    None,
}

/// What the plain mix writes besides the record and the department streams.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// How the events entries are written.
    pub events: Events,
    /// Region index levels written (0 = every level).
    pub region_levels: usize,
    /// Where the idempotency claims are kept.
    pub claims: Claims,
}

/// What every writer of the plain mix shares.
#[derive(Clone)]
pub struct Plan {
    /// The store's key names.
    pub keys: Keys,
    /// The inline router: each report's dispatch.
    pub route: InlineRoute,
    /// The sample traffic.
    pub traffic: Arc<super::traffic::Traffic>,
    /// Reports per batch (grouped by partition).
    pub batch: usize,
    /// What is written besides the record.
    pub shape: Shape,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("batch", &self.batch)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// One writer from report number `first` on: batches grouped by partition, written as
/// described above, counted in `counters` (reported, routed) until `stop`.
pub async fn writer(
    mut c: redis::aio::MultiplexedConnection,
    plan: Plan,
    first: u64,
    stop: Arc<AtomicBool>,
    counters: [Arc<AtomicU64>; 2],
) {
    let mut i = first;
    let (mut transactions, mut again) = (0u64, 0u64);
    let keys = &plan.keys;
    while !stop.load(Ordering::Relaxed) {
        let reports: Vec<pb::ReportIncidentRequest> = (i..i + plan.batch as u64)
            .map(|n| plan.traffic.report(n))
            .collect();
        i += plan.batch as u64;
        let mut groups: Vec<Vec<&pb::ReportIncidentRequest>> =
            vec![Vec::new(); usize::from(keys.partitions())];
        for r in &reports {
            groups[usize::from(keys.partition_for(&r.source_system, &r.request_id))].push(r);
        }
        for (p, group) in groups.iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            // `EXEC` answers nil when a watched key changed: read and write again.
            let written = loop {
                transactions += 1;
                if let Some(n) = write_group(&mut c, &plan, p as u16, group).await {
                    break n;
                }
                again += 1;
            };
            // Reported and routed alike: each report is dispatched by its own write.
            for c in &counters {
                c.fetch_add(written, Ordering::Relaxed);
            }
        }
    }
    // What sharing a watched key costs (`--claims bucket`): transactions `EXEC` refused.
    eprintln!(
        "writer from {first}: {again} of {transactions} transactions refused and written again"
    );
}

/// One partition group in one transaction; `None` when a watched claim changed meanwhile.
async fn write_group(
    c: &mut redis::aio::MultiplexedConnection,
    plan: &Plan,
    p: u16,
    group: &[&pb::ReportIncidentRequest],
) -> Option<u64> {
    let keys = &plan.keys;
    let claims: Vec<String> = group
        .iter()
        .map(|r| keys.idempotency(p, &r.source_system, &r.request_id))
        .collect();
    let fields: Vec<String> = group
        .iter()
        .map(|r| format!("{}:{}", r.source_system, r.request_id))
        .collect();
    const WEEK_MS: i64 = 7 * 86_400_000;
    let week = now_ms() / WEEK_MS;
    let bucket = |w: i64| keys.idempotency(p, "~week", &w.to_string());
    let held: Vec<bool> = match plan.shape.claims {
        Claims::Key | Claims::Persist => {
            let mut read = redis::pipe();
            read.cmd("WATCH").arg(&claims).ignore();
            read.cmd("MGET").arg(&claims);
            let (held,): (Vec<Option<String>>,) = read.query_async(c).await.unwrap();
            held.iter().map(Option::is_some).collect()
        }
        Claims::Bucket => {
            let mut read = redis::pipe();
            read.cmd("WATCH").arg(bucket(week)).ignore();
            read.cmd("HMGET").arg(bucket(week)).arg(&fields);
            read.cmd("HMGET").arg(bucket(week - 1)).arg(&fields);
            let (this, last): (Vec<Option<String>>, Vec<Option<String>>) =
                read.query_async(c).await.unwrap();
            this.iter()
                .zip(&last)
                .map(|(a, b)| a.is_some() || b.is_some())
                .collect()
        }
        Claims::Record => {
            let mut read = redis::pipe();
            let records: Vec<String> = fields
                .iter()
                .map(|f| keys.incident(p, &derived_id(f, p)))
                .collect();
            read.cmd("WATCH").arg(&records).ignore();
            for r in &records {
                read.cmd("HGET").arg(r).arg("ph");
            }
            let held: Vec<Option<String>> = read.query_async(c).await.unwrap();
            held.iter().map(Option::is_some).collect()
        }
        Claims::First => {
            let mut claim = redis::pipe();
            for (r, key) in group.iter().zip(&claims) {
                // The length of the service's `hash|id`.
                let id = keys::incident_id(&ulid::Ulid::new().to_string(), p);
                let value = format!("{:0>16}|{id}", r.request_id);
                claim
                    .cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("GET")
                    .arg("EX")
                    .arg(gridroute_store::ingest::IDEMPOTENCY_TTL_SECS);
            }
            let held: Vec<Option<String>> = claim.query_async(c).await.unwrap();
            held.iter().map(Option::is_some).collect()
        }
        Claims::None => vec![false; group.len()],
    };
    let now = now_ms();
    let mut tx = redis::pipe();
    tx.atomic();
    let mut batch = Batch::new(keys.events(p));
    let mut bucketed: Vec<(&str, String)> = Vec::new();
    for (((r, claim), field), held) in group.iter().zip(&claims).zip(&fields).zip(&held) {
        if *held {
            continue;
        }
        let id = match plan.shape.claims {
            Claims::Record => derived_id(field, p),
            _ => keys::incident_id(&ulid::Ulid::new().to_string(), p),
        };
        let reporting = gridroute_store::ingest::Reporting {
            report: r,
            traceparent: "",
            person: "",
        };
        let Some(w) = (plan.route)(&reporting, &id, p, now) else {
            continue;
        };
        let new = Prepared::new(reporting, p, id, Some(w));
        match plan.shape.claims {
            Claims::Key => {
                tx.cmd("SET")
                    .arg(claim)
                    .arg(new.claim())
                    .arg("EX")
                    .arg(gridroute_store::ingest::IDEMPOTENCY_TTL_SECS)
                    .ignore();
            }
            Claims::Persist => {
                tx.cmd("SET").arg(claim).arg(new.claim()).ignore();
            }
            Claims::Bucket => bucketed.push((field.as_str(), new.claim())),
            Claims::Record | Claims::First | Claims::None => {}
        }
        // The record and department-stream entries as `gridroute serve --transactions` writes
        // them.
        let mut record = transact::record(keys, &new, now);
        if plan.shape.claims == Claims::Record {
            record.arg("ph").arg(new.claim());
        }
        tx.add_command(record).ignore();
        if let Some(w) = &new.routed {
            transact::deliveries(&mut tx, keys, w);
            batch.add(&mut tx, keys, plan.shape, w, &new.event);
        }
    }
    if !bucketed.is_empty() {
        tx.cmd("HSET").arg(bucket(week)).arg(&bucketed).ignore();
        // Expires two weeks after its week began: a claim is found for at least a week.
        let until = ((week + 2) * WEEK_MS) / 1000;
        tx.cmd("EXPIREAT").arg(bucket(week)).arg(until).ignore();
    }
    let written = batch.written;
    batch.finish(&mut tx, keys, plan.shape, p);
    let done: Option<()> = tx.query_async(c).await.unwrap();
    done.map(|()| written)
}

/// What one transaction writes once for all its incidents: the events entry (`batch`,
/// `packed`), the head timers and the index entries.
struct Batch {
    events: redis::Cmd,
    index: Vec<(String, Vec<(String, String)>)>,
    timers: Vec<(i64, String)>,
    written: u64,
}

impl Batch {
    fn new(events_key: String) -> Self {
        let mut events = redis::cmd("XADD");
        events.arg(events_key).arg("*");
        Self {
            events,
            index: Vec::new(),
            timers: Vec::new(),
            written: 0,
        }
    }

    /// One incident's events (per `shape.events`), index entries and head timer.
    fn add(
        &mut self,
        tx: &mut redis::Pipeline,
        keys: &Keys,
        shape: Shape,
        w: &DispatchWrite,
        reported: &[u8],
    ) {
        let (p, id) = (w.partition, w.incident_id.as_str());
        let regions = w.region_codes.join(",");
        let both = [
            ("reported", "", "", reported),
            (
                "dispatched",
                w.department.as_str(),
                regions.as_str(),
                &w.event,
            ),
        ];
        for (status, dept, regions, e) in both {
            let fields = [("id", id), ("s", status), ("d", dept), ("r", regions)];
            match shape.events {
                Events::Entry => {
                    let x = tx.cmd("XADD").arg(keys.events(p)).arg("*").arg(&fields);
                    x.arg("e").arg(e).ignore();
                }
                Events::Batch => {
                    self.events.arg(&fields).arg("e").arg(e);
                }
                Events::Packed => {
                    let head = format!("{id}|{status}|{dept}|{regions}|");
                    self.events.arg("e").arg([head.as_bytes(), e].concat());
                }
                Events::None => {}
            }
        }
        self.gather(keys.index_all(p), "i", id);
        let all = w.region_codes.len();
        let levels = match shape.region_levels {
            0 => all,
            n => n.min(all),
        };
        for (level, code) in w.region_codes.iter().take(levels).enumerate() {
            // The last level written carries the finer codes in its field name.
            let field = if level + 1 == levels && levels < all {
                w.region_codes[levels..].join("|")
            } else {
                "i".to_owned()
            };
            self.gather(keys.index_region(p, code), &field, id);
        }
        self.gather(keys.index_department(p, &w.department), "i", id);
        if let Some((due, member)) = &w.schedule.head {
            self.timers.push((*due, member.clone()));
        }
        self.written += 1;
    }

    /// One index entry per index key, listing its incidents (`field id` pairs).
    fn gather(&mut self, key: String, field: &str, id: &str) {
        let pair = (field.to_owned(), id.to_owned());
        match self.index.iter_mut().find(|(k, _)| *k == key) {
            Some((_, fields)) => fields.push(pair),
            None => self.index.push((key, vec![pair])),
        }
    }

    /// Adds the batch's own writes to the transaction.
    fn finish(self, tx: &mut redis::Pipeline, keys: &Keys, shape: Shape, p: u16) {
        if self.written > 0 && matches!(shape.events, Events::Batch | Events::Packed) {
            tx.add_command(self.events).ignore();
        }
        if !self.timers.is_empty() {
            tx.cmd("ZADD").arg(keys.sla(p)).arg(&self.timers).ignore();
        }
        for (key, fields) in &self.index {
            tx.cmd("XADD").arg(key).arg("*").arg(fields).ignore();
        }
    }
}

/// `--claims record`: an incident id of the same shape as the service's, derived from the
/// request (two 64-bit FNV-1a hashes, of the request and of it with a byte more, written in
/// Crockford base 32).
fn derived_id(request: &str, p: u16) -> String {
    use gridroute_core::table::fnv1a;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let salted = [request.as_bytes(), b"#"].concat();
    let n = (u128::from(fnv1a(request.as_bytes())) << 64) | u128::from(fnv1a(&salted));
    let id: String = (0..26)
        .map(|i| char::from(ALPHABET[((n >> (5 * i)) & 31) as usize]))
        .collect();
    keys::incident_id(&id, p)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
