//! Accepting reports with plain commands in one `MULTI`/`EXEC` transaction instead of
//! `lua/report.lua` (`gridroute serve --transactions`; one Redis or Sentinel, not Redis
//! Cluster). The stored forms are the script's, field for field, but for one field: a first
//! dispatch written here has no `dept_at`, which readers take as "every entry of the
//! department's index counts", and a first dispatch has exactly one (docs/ARCHITECTURE.md,
//! "Writes without scripts").
//!
//! Why: the scripts' own Lua (arguments and replies converted between Redis and Lua, the
//! tables built per incident) costs Redis about as much as all the commands it runs
//! (docs/PERFORMANCE.md). Exactly-once is kept by optimistic locking instead: one round trip
//! `WATCH`es and reads the batch's idempotency keys; a second one sends `MULTI`, the claims of
//! the new reports and everything they write, and `EXEC`, which Redis refuses (nothing is
//! written) when a watched key changed meanwhile; the batch is then read and written again.
//! A `WATCH` belongs to its connection, so transactions run on connections of their own, one
//! per batch in flight, kept for reuse.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use gridroute_core::lifecycle::Status;
use redis::{RedisWrite, aio::MultiplexedConnection};

use crate::{
    Keys, Result, Store, StoreError,
    dispatch::DispatchWrite,
    ingest::Reporting,
    resp::{Direct, RespBatch},
};

/// How many times a batch is read and written again after a watched claim changed (another
/// replica accepted a report with the same request id at the same moment) before its reports
/// are answered UNAVAILABLE (the callers retry; the retry finds the claim).
const ATTEMPTS: usize = 8;

/// Per report, as `lua/report.lua` answers: (code, incident id), or why it failed.
pub(crate) type Answers = Vec<Result<(i64, String)>>;

/// A connection of a transaction's own: the store's RESP connection where it serves the
/// target (one Redis, or the primary Sentinel names, over plain TCP: `resp::Direct`, which sends
/// the transaction as one write and reads its replies without building a value per reply), the
/// client library's elsewhere (TLS, Unix sockets, RESP3).
pub(crate) enum TxConn {
    Direct(Direct),
    Client(MultiplexedConnection),
}

/// Idle connections for transactions, kept for the next batch.
#[derive(Default)]
pub(crate) struct TxConns(Mutex<Vec<TxConn>>);

impl TxConns {
    fn take(&self) -> Option<TxConn> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn give_back(&self, c: TxConn) {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // More than the batches ever in flight at once would be idle for good.
        if idle.len() < 16 {
            idle.push(c);
        }
    }
}

/// One report to accept, prepared once for either write path (and for `gridroute-redisceiling
/// --mix plain`, which writes the same record).
#[derive(Debug)]
pub struct Prepared<'a> {
    /// The report, its trace context and person.
    pub reporting: Reporting<'a>,
    /// Partition.
    pub partition: u16,
    /// The incident id chosen for it.
    pub id: String,
    /// The payload's identity (`hash` in the idempotency key's `hash|id`).
    pub hash: String,
    /// The report without the reporter's contact.
    pub bytes: Vec<u8>,
    /// The reporter's contact ('' = none).
    pub contact: Vec<u8>,
    /// The report's stored timeline entry.
    pub event: Vec<u8>,
    /// Its first dispatch when routed inline.
    pub routed: Option<DispatchWrite>,
}

impl<'a> Prepared<'a> {
    /// `reporting` as incident `id` of `partition`, with its first dispatch when routed inline.
    pub fn new(
        reporting: Reporting<'a>,
        partition: u16,
        id: String,
        routed: Option<DispatchWrite>,
    ) -> Self {
        let r = reporting.report;
        let (bytes, contact) = crate::ingest::split_contact(r);
        // The payload's identity covers the contact too: the same request id with another
        // contact is another request.
        let hash = format!(
            "{:016x}",
            gridroute_core::table::fnv1a(&bytes)
                ^ gridroute_core::table::fnv1a(&contact).rotate_left(1)
        );
        Self {
            event: crate::ingest::reported_event(r, reporting.person),
            reporting,
            partition,
            id,
            hash,
            bytes,
            contact,
            routed,
        }
    }

    /// The value of its idempotency key: `hash|id`.
    pub fn claim(&self) -> String {
        format!("{}|{}", self.hash, self.id)
    }
}

/// An incident in an index entry: its field (`None`: `i`; else its finer codes) and its id.
type Named = (Option<String>, String);

/// The writes of one transaction that are gathered over its reports: one index entry per
/// index key (`i <id>` repeated, as `lua/batch_index.lua` writes them; a level's index that
/// stands for finer ones names each incident by those codes) and one `ZADD` per timer set.
#[derive(Default)]
struct Gathered {
    /// Per key, each incident's field (`None`: `i`) and id.
    index: Vec<(String, Vec<Named>)>,
    /// Where each key is in `index`: a batch names too many grids and communities to search
    /// the list for each.
    places: HashMap<String, usize>,
    timers: Vec<(String, Vec<(i64, String)>)>,
    /// With `--packed-events`, the changes of each partition's reports, written as one events
    /// entry per partition at the end; `None`: one entry per change, as they come.
    events: Option<Vec<(u16, crate::events::Packer)>>,
}

impl Gathered {
    fn index(&mut self, key: String, field: Option<String>, id: &str) {
        let pair = (field, id.to_owned());
        match self.places.get(&key) {
            Some(&i) => self.index[i].1.push(pair),
            None => {
                self.places.insert(key.clone(), self.index.len());
                self.index.push((key, vec![pair]));
            }
        }
    }

    fn timer(&mut self, key: String, due: i64, member: String) {
        match self.timers.iter_mut().find(|(k, _)| *k == key) {
            Some((_, t)) => t.push((due, member)),
            None => self.timers.push((key, vec![(due, member)])),
        }
    }

    /// A change for the events stream of partition `p`: packed, or as an entry of its own.
    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        tx: &mut redis::Pipeline,
        k: &Keys,
        p: u16,
        id: &str,
        status: &str,
        department: &str,
        regions: &str,
        e: &[u8],
    ) {
        let Some(packed) = &mut self.events else {
            tx.cmd("XADD")
                .arg(k.events(p))
                .arg("*")
                .arg(&[("id", id), ("s", status), ("d", department), ("r", regions)])
                .arg("e")
                .arg(e)
                .ignore();
            return;
        };
        let at = match packed.iter().position(|(q, _)| *q == p) {
            Some(at) => at,
            None => {
                packed.push((p, Default::default()));
                packed.len() - 1
            }
        };
        packed[at].1.push(id, status, department, regions, e);
    }

    fn finish(self, tx: &mut redis::Pipeline, k: &Keys) {
        for (p, packed) in self.events.iter().flatten() {
            tx.cmd("XADD")
                .arg(k.events(*p))
                .arg("*")
                .arg(crate::events::PACKED_FIELD)
                .arg(packed.value())
                .ignore();
        }
        for (key, timers) in self.timers {
            tx.cmd("ZADD").arg(key).arg(timers).ignore();
        }
        for (key, pairs) in self.index {
            let x = tx.cmd("XADD").arg(key).arg("*");
            for (field, id) in &pairs {
                x.arg(field.as_deref().unwrap_or("i")).arg(id);
            }
            x.ignore();
        }
    }
}

impl Store {
    /// Whether writes go by transaction: asked for, and not on Redis Cluster,
    /// whose client routes each command to its node and cannot hold a `WATCH`.
    pub(crate) fn transactions(&self) -> bool {
        self.transactions && !self.target.is_cluster()
    }

    /// Whether a batch of `writes` goes by transaction: transactions on, and the batch at
    /// least `--transaction-min-batch` large. A smaller one is counted as left to the script.
    pub(crate) fn transactions_for(&self, op: &'static str, writes: usize) -> bool {
        if !self.transactions() {
            return false;
        }
        let large = writes >= self.transaction_min_batch;
        if !large {
            metrics::counter!(gridroute_telemetry::names::TRANSACTION_FALLBACKS_TOTAL, "op" => op, "reason" => "small_batch")
                .increment(1);
        }
        large
    }

    /// Accepts `reports` in one transaction (see the module documentation). Answers per report
    /// as `lua/report.lua` does: (0, id) new, (3, id) new and dispatched, (1, original id) a
    /// retry of the same payload, (2, original id) the same request id with another payload.
    /// With a durability setting, the second value tells whether the replicas have the writes.
    #[tracing::instrument(name = "report_transaction", level = "debug", skip_all, fields(reports = reports.len()))]
    pub(crate) async fn report_transaction(
        &self,
        reports: &[Prepared<'_>],
    ) -> Result<(Answers, bool)> {
        let started = std::time::Instant::now();
        let mut c = match self.tx_conns.take() {
            Some(c) => c,
            None => match self.target.direct(Duration::ZERO).await? {
                Some(d) => TxConn::Direct(d),
                None => match self.target.blocking(Duration::ZERO).await? {
                    crate::conn::Conn::Blocking(c) => TxConn::Client(c),
                    _ => return Err(StoreError::Internal("no connection of its own".into())),
                },
            },
        };
        // At most as many reports per transaction as per script call: `EXEC` blocks Redis
        // while it runs, as a script does.
        let mut answers = Vec::with_capacity(reports.len());
        let mut failed = None;
        for chunk in reports.chunks(crate::ingest::REPORTS_PER_SCRIPT) {
            match self.transact(&mut c, chunk).await {
                Ok(a) => answers.extend(a),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let answers = match failed {
            None => answers,
            Some(e) => {
                // The connection may hold a `WATCH` or a half-read reply: not reused. (`MGET`
                // reads a key of another type as absent: no single report's key fails a batch.)
                crate::record_error("report_transaction", &e);
                return Err(e);
            }
        };
        let replicated = match &mut c {
            TxConn::Direct(d) => self.replicated_direct(d, "report").await,
            TxConn::Client(m) => self.replicated_on(m, "report").await,
        };
        metrics::histogram!(
            gridroute_telemetry::names::REDIS_DURATION_SECONDS,
            "op" => "report_transaction"
        )
        .record(started.elapsed().as_secs_f64());
        let replicated = replicated?;
        self.tx_conns.give_back(c);
        Ok((answers, replicated))
    }

    /// [`Store::attempt`] until `EXEC` is not refused, at most [`ATTEMPTS`] times (then each
    /// report is answered UNAVAILABLE).
    async fn transact(&self, c: &mut TxConn, reports: &[Prepared<'_>]) -> Result<Answers> {
        for attempt in 0..ATTEMPTS {
            if let Some(answers) = self.attempt(c, reports).await? {
                return Ok(answers.into_iter().map(Ok).collect());
            }
            metrics::counter!(
                gridroute_telemetry::names::TRANSACTION_RETRIES_TOTAL,
                "op" => "report"
            )
            .increment(1);
            tracing::debug!(
                attempt,
                "a watched claim changed: the batch is written again"
            );
        }
        let why = "another replica kept claiming the same request ids; retry";
        Ok(reports
            .iter()
            .map(|_| Err(StoreError::Unavailable(why.into())))
            .collect())
    }

    /// One read and one transaction; `None` when `EXEC` was refused (a watched claim changed).
    async fn attempt(
        &self,
        c: &mut TxConn,
        reports: &[Prepared<'_>],
    ) -> Result<Option<Vec<(i64, String)>>> {
        let claims = self.watch_claims(c, reports).await?;
        self.write_watched(c, reports, claims).await
    }

    /// The first round trip: `WATCH`es the reports' idempotency keys and reads them.
    async fn watch_claims(
        &self,
        c: &mut TxConn,
        reports: &[Prepared<'_>],
    ) -> Result<Vec<(String, Option<String>)>> {
        let k = self.keys();
        let claims: Vec<String> = reports
            .iter()
            .map(|r| {
                let rep = r.reporting.report;
                k.idempotency(r.partition, &rep.source_system, &rep.request_id)
            })
            .collect();
        let held: Vec<Option<String>> = match c {
            TxConn::Direct(d) => {
                let mut read =
                    RespBatch::with_capacity(claims.iter().map(|c| 2 * c.len() + 16).sum());
                for name in [&b"WATCH"[..], b"MGET"] {
                    read.command(1 + claims.len()).write_arg(name);
                    for claim in &claims {
                        read.write_arg(claim.as_bytes());
                    }
                }
                // `MGET`'s values, as one row of as many fields as claims. (After an error the
                // keys may stay watched: the connection is then not reused.)
                let rows = d.watch_read(&read.finish()?, claims.len()).await?;
                (0..claims.len())
                    .map(|i| {
                        rows.get(0, i)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                    .collect()
            }
            TxConn::Client(m) => {
                let mut read = redis::pipe();
                read.cmd("WATCH").arg(&claims).ignore();
                read.cmd("MGET").arg(&claims);
                let (held,): (Vec<Option<String>>,) = read.query_async(m).await?;
                held
            }
        };
        Ok(claims.into_iter().zip(held).collect())
    }

    /// The second round trip: the transaction of the reports whose keys [`Store::watch_claims`]
    /// found free; `None` when Redis refused it (a watched key changed since).
    async fn write_watched(
        &self,
        c: &mut TxConn,
        reports: &[Prepared<'_>],
        claims: Vec<(String, Option<String>)>,
    ) -> Result<Option<Vec<(i64, String)>>> {
        let ttl = self.claim_ttl();
        // Redis' clock, at the earliest: an index entry written by `EXEC` is never before its
        // record's `reported_at`, as a list's time window assumes.
        let now = self.clock_floor_ms().await?;
        let mut tx = redis::pipe();
        tx.atomic();
        let mut gathered = Gathered {
            events: self.packed_events.then(Vec::new),
            ..Default::default()
        };
        let mut answers = Vec::with_capacity(reports.len());
        // Claims made earlier in this batch (the same request id twice in one batch).
        let mut claimed: HashMap<&str, String> = HashMap::new();
        for (r, (claim, held)) in reports.iter().zip(&claims) {
            if let Some(prev) = held
                .as_deref()
                .or_else(|| claimed.get(claim.as_str()).map(String::as_str))
            {
                let (hash, id) = prev.split_once('|').unwrap_or(("", prev));
                answers.push((if hash == r.hash { 1 } else { 2 }, id.to_owned()));
                continue;
            }
            let value = r.claim();
            let set = tx.cmd("SET").arg(claim).arg(&value);
            // 0: kept with the record (`Store::with_claims_kept`).
            if ttl > 0 {
                set.arg("EX").arg(ttl);
            }
            set.ignore();
            claimed.insert(claim, value);
            self.write_report(&mut tx, &mut gathered, r, now);
            answers.push((if r.routed.is_some() { 3 } else { 0 }, r.id.clone()));
        }
        gathered.finish(&mut tx, self.keys());
        // A refused `EXEC` answers nil; an accepted one the replies of the commands (ignored).
        let done = match c {
            TxConn::Direct(d) => {
                // The packed pipeline holds `MULTI` and `EXEC` around the commands.
                d.exec_packed(&tx.get_packed_pipeline(), tx.len() + 2)
                    .await?
            }
            TxConn::Client(m) => tx.query_async::<Option<()>>(m).await?.is_some(),
        };
        Ok(done.then_some(answers))
    }

    /// What one new report writes: as `lua/report.lua` (record, events, and either its first
    /// dispatch or its ingest entry for the routers).
    fn write_report(
        &self,
        tx: &mut redis::Pipeline,
        gathered: &mut Gathered,
        r: &Prepared<'_>,
        now: i64,
    ) {
        let k = self.keys();
        let (p, id) = (r.partition, r.id.as_str());
        tx.add_command(record(k, r, now)).ignore();
        let reported = Status::Reported.as_str();
        gathered.event(tx, k, p, id, reported, "", "", &r.event);
        let Some(w) = &r.routed else {
            let now = now.to_string();
            tx.cmd("XADD")
                .arg(k.ingest(p))
                .arg("*")
                .arg(crate::consumer::PACKED_FIELD)
                .arg(crate::consumer::pack(
                    id,
                    "0",
                    &now,
                    r.reporting.traceparent,
                    &r.bytes,
                ))
                .ignore();
            return;
        };
        let regions = w.region_codes.join(",");
        let dispatched = Status::Dispatched.as_str();
        gathered.event(tx, k, p, id, dispatched, &w.department, &regions, &w.event);
        gathered.index(k.index_department(p, &w.department), None, id);
        gathered.index(k.index_all(p), None, id);
        let depth = self.region_index_depth;
        for (code, field) in crate::dispatch::region_entries(&w.region_codes, depth) {
            gathered.index(k.index_region(p, code), field, id);
        }
        if let Some((due, member)) = &w.schedule.head {
            gathered.timer(k.sla(p), *due, member.clone());
        }
        deliveries(tx, k, w);
    }
}

/// A new report's record (`HSET`), field for field what `lua/report.lua` writes: the report and
/// its timeline entry, reported at `now` (Redis' clock, ms), and when routed inline its first
/// dispatch, but for `dept_at` (see the module documentation).
pub fn record(k: &Keys, r: &Prepared<'_>, now: i64) -> redis::Cmd {
    let reported = now.to_string();
    let stamped = |at: &str, e: &[u8]| -> Vec<u8> { [at.as_bytes(), b"|", e].concat() };
    let status = match r.routed {
        Some(_) => Status::Dispatched,
        None => Status::Reported,
    };
    let mut h = redis::cmd("HSET");
    h.arg(k.incident(r.partition, &r.id))
        .arg("report")
        .arg(&r.bytes)
        .arg("status")
        .arg(status.as_str())
        .arg("gen")
        .arg("0")
        .arg("reported_at")
        .arg(&reported)
        .arg("tl0")
        .arg(stamped(&reported, &r.event));
    if !r.contact.is_empty() {
        h.arg("contact").arg(&r.contact);
    }
    let Some(w) = &r.routed else {
        return h;
    };
    // Never dispatched before it was reported.
    let at = w.dispatched_ms.max(now).to_string();
    h.arg("dept")
        .arg(&w.department)
        .arg("decision")
        .arg(&w.decision)
        .arg("dispatched_at")
        .arg(&at)
        .arg("accept_due")
        .arg(w.accept_due_ms)
        .arg("resolve_due")
        .arg(w.resolve_due_ms)
        .arg("timers")
        .arg(&w.schedule.text)
        .arg("regions")
        .arg(w.region_codes.join(","))
        .arg("v")
        .arg("1")
        .arg("first_dispatched_at")
        .arg(&at)
        .arg("ix")
        .arg("1")
        .arg("tl1")
        .arg(stamped(&at, &w.event));
    if w.estimated {
        h.arg("est").arg("1");
    }
    h
}

/// A first dispatch's entries in its departments' streams (heads: the report and the decision
/// are read from the record on delivery, as `lua/dispatch.lua` writes them).
pub fn deliveries(tx: &mut redis::Pipeline, k: &Keys, w: &DispatchWrite) {
    let id = w.incident_id.as_str();
    for (dept, payload) in &w.deliveries {
        tx.cmd("XADD")
            .arg(k.dispatch(w.partition, dept))
            .arg("*")
            .arg(&[("id", id), ("g", "0")])
            .arg("d")
            .arg(payload)
            .arg("tp")
            .arg(&w.traceparent)
            .ignore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridroute_proto::v1 as pb;

    fn prepared<'a>(store: &Store, report: &'a pb::ReportIncidentRequest) -> Prepared<'a> {
        let partition = store
            .keys()
            .partition_for(&report.source_system, &report.request_id);
        let id = crate::keys::incident_id(&ulid::Ulid::new().to_string(), partition);
        let reporting = Reporting {
            report,
            traceparent: "",
            person: "",
        };
        Prepared::new(reporting, partition, id, None)
    }

    #[tokio::test]
    async fn the_clock_floor_is_never_past_redis_time() {
        // `reported_at` of a transaction's report: no index entry written after it may be
        // older (the entries' ids are Redis' time when `EXEC` runs).
        let redis = crate::local::LocalRedis::start().unwrap();
        let store = Store::connect(&redis.url(), "t", 4).await.unwrap();
        for wait in [0, 200, 1_100] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let floor = store.clock_floor_ms().await.unwrap();
            let after = store.server_time_ms().await.unwrap();
            let estimate = store.clock_ms().await.unwrap();
            assert!(floor <= after, "floor {floor} past Redis' TIME {after}");
            // Half a round trip apart: milliseconds, unless the host starves the test.
            assert!(
                floor <= estimate && estimate - floor <= 1_000,
                "{floor} .. {estimate}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_a_durability_setting_a_report_is_accepted_once_the_replica_has_it() {
        let primary = crate::local::LocalRedis::start().unwrap();
        let mut replica = crate::local::LocalRedis::start().unwrap();
        let replica_url = replica.url();
        let mut rc = redis::Client::open(replica_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(primary.port())
            .query_async(&mut rc)
            .await
            .unwrap();
        // Generous for the replica that is up (tests run in parallel on two cores); short for
        // the one that is gone, since `WAIT` then waits it out.
        let url = primary.url();
        let durable = |timeout: Duration| {
            let url = url.clone();
            async move {
                Store::connect(&url, "t", 4)
                    .await
                    .unwrap()
                    .with_transactions(true)
                    .with_replication(crate::Replication {
                        replicas: 1,
                        timeout,
                    })
                    .unwrap()
            }
        };
        let (patient, hasty) = (
            durable(Duration::from_secs(10)).await,
            durable(Duration::from_millis(300)).await,
        );
        let mut c = patient.conn();
        let mut online = false;
        for _ in 0..400 {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut c)
                .await
                .unwrap();
            if info.contains("state=online") {
                online = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(online, "the replica never came online");
        let report = |id: &str| pb::ReportIncidentRequest {
            request_id: id.into(),
            source_system: "hotline".into(),
            ..Default::default()
        };
        let accepted = patient
            .report_batch(&[report("durable-1")], "", "")
            .await
            .unwrap();
        assert!(
            matches!(accepted[0], Ok(crate::ingest::Accepted::New(_))),
            "{accepted:?}"
        );
        // The replica gone: written, but not acknowledged (the caller retries).
        replica.stop();
        let unacked = hasty
            .report_batch(&[report("durable-2")], "", "")
            .await
            .unwrap();
        assert!(
            matches!(&unacked[0], Err(StoreError::Unavailable(why)) if why.contains("replicas")),
            "{unacked:?}"
        );
    }

    /// On the store's own connection and on the client library's alike.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_made_between_the_read_and_exec_refuses_the_transaction_whole() {
        for direct in [true, false] {
            claim_raced(direct).await;
        }
    }

    async fn claim_raced(direct: bool) {
        let redis = crate::local::LocalRedis::start().unwrap();
        let store = Store::connect(&redis.url(), "t", 4)
            .await
            .unwrap()
            .with_transactions(true);
        let report = pb::ReportIncidentRequest {
            request_id: "raced-1".into(),
            source_system: "hotline".into(),
            ..Default::default()
        };
        let other = pb::ReportIncidentRequest {
            request_id: "free-1".into(),
            ..report.clone()
        };
        let ours = [prepared(&store, &report), prepared(&store, &other)];
        let mut c = if direct {
            TxConn::Direct(store.target.direct(Duration::ZERO).await.unwrap().unwrap())
        } else {
            match store.target.blocking(Duration::ZERO).await.unwrap() {
                crate::conn::Conn::Blocking(c) => TxConn::Client(c),
                _ => unreachable!("one Redis"),
            }
        };
        let claims = store.watch_claims(&mut c, &ours).await.unwrap();
        assert!(claims.iter().all(|(_, held)| held.is_none()));
        // Another replica claims the first key in between.
        let mut theirs = store.conn();
        let _: () = redis::cmd("SET")
            .arg(&claims[0].0)
            .arg(format!("{}|theirs-1", ours[0].hash))
            .query_async(&mut theirs)
            .await
            .unwrap();
        let refused = store
            .write_watched(&mut c, &ours, claims.clone())
            .await
            .unwrap();
        assert_eq!(refused, None, "EXEC refused");
        // Nothing of the refused transaction was written, not even the free report's.
        let k = store.keys();
        for r in &ours {
            let exists: bool = redis::cmd("EXISTS")
                .arg(k.incident(r.partition, &r.id))
                .query_async(&mut theirs)
                .await
                .unwrap();
            assert!(!exists);
        }
        let free: Option<String> = redis::cmd("GET")
            .arg(&claims[1].0)
            .query_async(&mut theirs)
            .await
            .unwrap();
        assert_eq!(free, None);
        // Written again: the first is the other replica's incident, the second is new.
        let answers = store.transact(&mut c, &ours).await.unwrap();
        let answers: Vec<(i64, String)> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers[0], (1, "theirs-1".to_owned()));
        assert_eq!(answers[1], (0, ours[1].id.clone()));
        let status: Option<String> = redis::cmd("HGET")
            .arg(k.incident(ours[1].partition, &ours[1].id))
            .arg("status")
            .query_async(&mut theirs)
            .await
            .unwrap();
        assert_eq!(status.as_deref(), Some("reported"));
    }

    #[test]
    fn index_entries_list_each_incident_once_per_key_in_order() {
        let mut g = Gathered::default();
        g.index("a".into(), None, "x-1");
        g.index("b".into(), Some("c|g".into()), "x-1");
        g.index("a".into(), None, "y-2");
        let mut tx = redis::pipe();
        g.finish(&mut tx, &Keys::new("t", 1));
        let cmds: Vec<Vec<Vec<u8>>> = tx
            .cmd_iter()
            .map(|c| {
                c.args_iter()
                    .map(|a| match a {
                        redis::Arg::Simple(b) => b.to_vec(),
                        _ => Vec::new(),
                    })
                    .collect()
            })
            .collect();
        let text = |v: &Vec<Vec<u8>>| -> Vec<String> {
            v.iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect()
        };
        assert_eq!(text(&cmds[0]), ["XADD", "a", "*", "i", "x-1", "i", "y-2"]);
        assert_eq!(text(&cmds[1]), ["XADD", "b", "*", "c|g", "x-1"]);
    }
}
