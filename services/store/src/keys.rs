//! The key layout. Every key of one partition carries the hash tag `{p<N>}`, so that each Lua
//! script touches a single hash slot and runs unchanged on Redis Cluster, while partitions
//! spread over the cluster's nodes.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<prefix>:{pN}:ingest` | stream | reports waiting for a router (acknowledged entries are trimmed from the head by the routers, `trim_acked.lua`) |
//! | `<prefix>:{pN}:idem:<source>:<request_id>` | string | `hash\|incident id`, expires after 7 days (with `Store::with_claims_kept`, 7 days after its record leaves Redis) |
//! | `<prefix>:{pN}:inc:<id>` | hash | the incident record (`report` without the reporter's contact, which is `contact`: personal data kept once, erased after retention) |
//! | `<prefix>:{pN}:tl:<id>` | list | the incident's timeline after its first two entries (those are the record's `tl0`, `tl1`), `ms\|event bytes` |
//! | `<prefix>:{pN}:dispatch:<department>` | stream | dispatches for one department |
//! | `<prefix>:{pN}:sla` | sorted set | the head of each running case's SLA schedule, `<id>\|<kind>\|<department>` scored by due time (ms); the rest of the schedule is the record's `timers` field |
//! | `<prefix>:{pN}:sla:claimed` | sorted set | due timers a replica claimed and is firing, scored by when the claim lapses (ms) |
//! | `<prefix>:{pN}:events` | stream | every change of every incident of the partition (WatchIncidents): one entry per change, or one per transaction's batch with `--packed-events` (`crate::events`) |
//! | `<prefix>:{pN}:mg:<id>` | set | incidents merged into this one |
//! | `<prefix>:{pN}:geo:<category>` | geo set | open incidents of a duplicate-detection category |
//! | `<prefix>:{pN}:pts:<source>:<reporter>` | list | a reporter's points ledger in this partition, `ms\|incident\|points\|category` |
//! | `<prefix>:{pN}:dlq` | stream | entries no router could process, with the reason |
//! | `<prefix>:{pN}:ix:all`, `:ix:region:<code>` | streams | `i` = incident id (repeated: one entry per dispatch batch), added when it is first routed (append-only); with `--region-index-depth N`, transactions write region entries for the first N levels only, the N-th naming each incident by its finer codes (`<community>\|<grid>` = id) |
//! | `<prefix>:{pN}:ixlag` | sorted set | `first`, `assign`: the longest report → index-entry delay seen (ms) |
//! | `<prefix>:{pN}:ix:dept:<d>` | stream | `i` = incident id (repeated, one entry per batch), added at each assignment to the department (the record's `dept_at` names the one that counts; a first dispatch written by a transaction has none, and its one entry counts) |
//! | `<prefix>:{pN}:closed` | sorted set | incidents closed or cancelled, scored by when (ms): whose reporter contact is erased after the retention period |
//! | `<prefix>:{audit}:log` | stream | the audit trail: `p` principal, `u` person, `m` method, `t` target, `o` outcome, `r` reason, `a` peer (the entry id is the time) |
//! | `<prefix>:meta` | hash | deployment constants (number of partitions; `region_index_depth` and `region_index_since`, ms) |
//! | `<prefix>:{tables}:current` | string | the routing table version in force |
//! | `<prefix>:{tables}:history` | list | one JSON entry per version (version, time, principal, note), newest first |
//! | `<prefix>:{tables}:v:<version>` | hash | a version's `grids` and `rules` sources |
//! | channel `<prefix>:tables:changed` | pub/sub | a new version is in force |

/// Name of the consumer group every router joins.
pub const ROUTER_GROUP: &str = "routers";

/// Key names for one deployment.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    partitions: u16,
    /// `<prefix>:{p<p>}:` of every partition, written once rather than per key.
    heads: std::sync::Arc<[Box<str>]>,
}

/// What follows a partition's hash tag in the keys named after something (an incident, a
/// department, a region): shared by [`Keys`]' methods and by the script calls that write keys
/// straight into their command ([`Keys::write_part`]).
pub(crate) mod kind {
    pub const IDEMPOTENCY: &str = "idem:";
    pub const INCIDENT: &str = "inc:";
    pub const TIMELINE: &str = "tl:";
    pub const DISPATCH: &str = "dispatch:";
    pub const DUPLICATES: &str = "geo:";
    pub const INDEX_DEPARTMENT: &str = "ix:dept:";
    pub const INDEX_REGION: &str = "ix:region:";
    pub const INDEX_ALL: &str = "ix:all";
}

impl Keys {
    /// Keys under `prefix` with `partitions` partitions.
    pub fn new(prefix: &str, partitions: u16) -> Self {
        let partitions = partitions.max(1);
        Self {
            prefix: prefix.to_owned(),
            partitions,
            heads: (0..partitions)
                .map(|p| format!("{prefix}:{{p{p}}}:").into_boxed_str())
                .collect(),
        }
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The partition of an idempotency key. The FNV hashes are finished with MurmurHash3's
    /// 64-bit mixer: sequential request ids (`hotline-000123`, `hotline-000124`, …) differ in
    /// their last bytes only, and without the mixer runs of them landed in one partition.
    pub fn partition_for(&self, source: &str, request_id: &str) -> u16 {
        let mut h = gridroute_core::table::fnv1a(source.as_bytes())
            ^ gridroute_core::table::fnv1a(request_id.as_bytes()).rotate_left(17);
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        (h % u64::from(self.partitions)) as u16
    }

    /// The audit trail (one stream for the deployment, in its own hash slot).
    pub fn audit(&self) -> String {
        format!("{}:{{audit}}:log", self.prefix)
    }

    /// The incidents of a partition that closed, by when: the retention sweep's work list.
    pub fn closed(&self, p: u16) -> String {
        self.part(p, &["closed"])
    }

    /// The incidents of a partition that closed, by when: the archive mover's work list (kept
    /// apart from [`Keys::closed`], which the contact retention sweep empties sooner or later).
    pub fn archive_due(&self, p: u16) -> String {
        self.part(p, &["archive_due"])
    }

    /// The deployment's meta hash (not bound to a partition).
    pub fn meta(&self) -> String {
        format!("{}:meta", self.prefix)
    }

    /// The routing table version in force.
    pub fn table_current(&self) -> String {
        format!("{}:{{tables}}:current", self.prefix)
    }
    /// The history of published versions.
    pub fn table_history(&self) -> String {
        format!("{}:{{tables}}:history", self.prefix)
    }
    /// Prefix of the hashes holding each version's sources.
    pub fn table_version_prefix(&self) -> String {
        format!("{}:{{tables}}:v:", self.prefix)
    }
    /// The pub/sub channel announcing a new version.
    pub fn table_channel(&self) -> String {
        format!("{}:tables:changed", self.prefix)
    }

    /// `<prefix>:{p<p>}:` followed by `pieces`. Built by hand, not with `format!`: every
    /// routed incident names a dozen keys, and the formatting machinery showed in the router's
    /// profile (docs/PERFORMANCE.md).
    fn part(&self, p: u16, pieces: &[&str]) -> String {
        let len = self.prefix.len() + 9 + pieces.iter().map(|s| s.len()).sum::<usize>();
        let mut key = String::with_capacity(len);
        if let Some(head) = self.heads.get(usize::from(p)) {
            key.push_str(head);
            pieces.iter().for_each(|piece| key.push_str(piece));
            return key;
        }
        let mut digits = [0u8; 5];
        for piece in self.part_pieces(p, &mut digits, pieces) {
            key.push_str(piece);
        }
        key
    }

    /// Writes the key `<prefix>:{p<p>}:<pieces>` as the next argument of a command, without
    /// building it on the heap first (the script calls of the router's path name a dozen keys
    /// per incident). The key is put together on the stack and written as one argument: a
    /// writer per piece cost more than the bytes did (docs/PERFORMANCE.md).
    pub(crate) fn write_part(&self, out: &mut impl redis::RedisWrite, p: u16, pieces: &[&str]) {
        let Some(head) = self.heads.get(usize::from(p)) else {
            out.write_arg(self.part(p, pieces).as_bytes());
            return;
        };
        let mut buf = [0u8; 256];
        let mut n = 0;
        for piece in std::iter::once(&**head).chain(pieces.iter().copied()) {
            let end = n + piece.len();
            let Some(to) = buf.get_mut(n..end) else {
                out.write_arg(self.part(p, pieces).as_bytes());
                return;
            };
            to.copy_from_slice(piece.as_bytes());
            n = end;
        }
        out.write_arg(&buf[..n]);
    }

    /// At most how long a key of [`Keys::write_part`] is before its pieces.
    pub(crate) fn part_len(&self) -> usize {
        self.prefix.len() + ":{p65535}:".len()
    }

    fn part_pieces<'s>(
        &'s self,
        p: u16,
        digits: &'s mut [u8; 5],
        pieces: &'s [&'s str],
    ) -> impl Iterator<Item = &'s str> {
        let (mut n, mut i) = (p, digits.len());
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let digits = std::str::from_utf8(&digits[i..]).unwrap_or_default();
        [self.prefix.as_str(), ":{p", digits, "}:"]
            .into_iter()
            .chain(pieces.iter().copied())
    }

    /// The ingest stream of a partition.
    pub fn ingest(&self, p: u16) -> String {
        self.part(p, &["ingest"])
    }
    /// The idempotency key of a request.
    pub fn idempotency(&self, p: u16, source: &str, request_id: &str) -> String {
        self.part(p, &[kind::IDEMPOTENCY, source, ":", request_id])
    }
    /// The incident hash.
    pub fn incident(&self, p: u16, id: &str) -> String {
        self.part(p, &[kind::INCIDENT, id])
    }
    /// The incident's timeline.
    pub fn timeline(&self, p: u16, id: &str) -> String {
        self.part(p, &[kind::TIMELINE, id])
    }
    /// A department's dispatch stream in a partition.
    pub fn dispatch(&self, p: u16, department: &str) -> String {
        self.part(p, &[kind::DISPATCH, department])
    }
    /// The SLA deadlines of a partition.
    pub fn sla(&self, p: u16) -> String {
        self.part(p, &["sla"])
    }
    /// The SLA timers of a partition claimed by a replica that is firing them, scored by when
    /// the claim lapses (then any replica claims them again).
    pub fn sla_claimed(&self, p: u16) -> String {
        self.part(p, &["sla:claimed"])
    }
    /// The longest time between a report and its index entries, in ms (members `first`: first
    /// routing, `assign`: a later assignment), raised with `ZADD GT`: how far after a time
    /// window's end a list must scan to miss nothing.
    pub fn index_lag(&self, p: u16) -> String {
        self.part(p, &["ixlag"])
    }
    /// The dead-letter stream of a partition.
    pub fn dead_letter(&self, p: u16) -> String {
        self.part(p, &["dlq"])
    }
    /// The events stream of a partition.
    pub fn events(&self, p: u16) -> String {
        self.part(p, &["events"])
    }
    /// The set of incidents merged into `id`.
    pub fn merged(&self, p: u16, id: &str) -> String {
        self.part(p, &["mg:", id])
    }
    /// Open incidents of a duplicate-detection category, by location.
    pub fn duplicates(&self, p: u16, category: &str) -> String {
        self.part(p, &[kind::DUPLICATES, category])
    }
    /// A reporter's points ledger in one partition.
    pub fn points(&self, p: u16, source: &str, reporter: &str) -> String {
        self.part(p, &["pts:", source, ":", reporter])
    }
    /// Points of ledger entries folded away, per ledger (field `<source>:<reporter>`).
    pub fn points_carried(&self, p: u16) -> String {
        self.part(p, &["pts_carried"])
    }
    /// The key prefix of a partition (for scripts that derive an incident's keys from its id).
    pub fn partition_prefix(&self, p: u16) -> String {
        self.part(p, &[""])
    }

    /// Index of every incident.
    pub fn index_all(&self, p: u16) -> String {
        self.part(p, &[kind::INDEX_ALL])
    }
    /// Index by primary department.
    pub fn index_department(&self, p: u16, department: &str) -> String {
        self.part(p, &[kind::INDEX_DEPARTMENT, department])
    }
    /// Index by region (every level of the path).
    pub fn index_region(&self, p: u16, code: &str) -> String {
        self.part(p, &[kind::INDEX_REGION, code])
    }
}

/// Incident ids are a ULID (sortable by creation time) and the partition: `<ulid>-<p>`.
pub fn incident_id(ulid: &str, partition: u16) -> String {
    format!("{ulid}-{partition}")
}

/// The partition of an incident id, if the id is well formed for `partitions`.
pub fn partition_of(id: &str, partitions: u16) -> Option<u16> {
    let (ulid, p) = id.rsplit_once('-')?;
    let p: u16 = p.parse().ok()?;
    (ulid.len() == 26 && ulid.bytes().all(|b| b.is_ascii_alphanumeric()) && p < partitions)
        .then_some(p)
}

/// Number of hash slots of a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;

/// The Redis Cluster hash slot of `key`'s bytes (CRC16/XMODEM modulo 16384, as Redis computes
/// it for a hash tag's content).
fn slot_of(key: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in key {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % CLUSTER_SLOTS
}

/// The hash slot of every key of partition `p` (they share the hash tag `{p<N>}`).
pub fn partition_slot(p: u16) -> u16 {
    slot_of(format!("p{p}").as_bytes())
}

/// Slot ranges (`first..=last`) for a cluster of `primaries`, contiguous and covering every
/// slot, so that each primary holds the same number of partitions (±1). Redis's own even split
/// of the slots ignores where the partitions fall: 12 partitions land 3/3/6 on three primaries,
/// and the busiest primary bounds the cluster. Each boundary sits halfway between the last
/// partition slot of one primary and the first of the next, so that the keys outside the
/// partitions (tables, audit) spread too. With fewer partitions than primaries the slots are
/// split evenly (some primaries then hold no partition).
pub fn balanced_slot_ranges(partitions: u16, primaries: u16) -> Vec<(u16, u16)> {
    let primaries = primaries.max(1);
    let mut slots: Vec<u16> = (0..partitions).map(partition_slot).collect();
    slots.sort_unstable();
    let n = slots.len();
    let m = usize::from(primaries);
    let starts: Vec<u16> = (0..m)
        .map(|k| {
            if k == 0 {
                0
            } else if n < m {
                (k * usize::from(CLUSTER_SLOTS) / m) as u16
            } else {
                let i = k * n / m;
                // Halfway between the neighbours, never before the earlier one's next slot.
                ((u32::from(slots[i - 1]) + u32::from(slots[i])) / 2 + 1).min(u32::from(slots[i]))
                    as u16
            }
        })
        .collect();
    (0..m)
        .map(|k| {
            let last = starts
                .get(k + 1)
                .map_or(CLUSTER_SLOTS - 1, |s| s.saturating_sub(1));
            (starts[k], last)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_keys_are_spelled_as_before() {
        let k = Keys::new("gr", 4);
        assert_eq!(k.incident(0, "01J-0"), "gr:{p0}:inc:01J-0");
        assert_eq!(k.index_region(12, "4201"), "gr:{p12}:ix:region:4201");
        assert_eq!(
            k.idempotency(65535, "app", "r-1"),
            "gr:{p65535}:idem:app:r-1"
        );
        assert_eq!(k.partition_prefix(7), "gr:{p7}:");
        assert_eq!(k.ingest(3), format!("{}:{{p{}}}:ingest", "gr", 3));
    }

    #[test]
    fn keys_written_into_a_command_are_the_keys_named() {
        let k = Keys::new("gr", 4);
        let mut written = redis::cmd("X");
        k.write_part(&mut written, 0, &[kind::INCIDENT, "01J-0"]);
        k.write_part(&mut written, 12, &[kind::INDEX_REGION, "4201"]);
        k.write_part(&mut written, 65535, &[kind::IDEMPOTENCY, "app", ":", "r-1"]);
        // A key longer than the stack buffer (a long request id) is built on the heap.
        let long = "r".repeat(300);
        k.write_part(&mut written, 3, &[kind::IDEMPOTENCY, "app", ":", &long]);
        let mut named = redis::cmd("X");
        named
            .arg(k.incident(0, "01J-0"))
            .arg(k.index_region(12, "4201"))
            .arg(k.idempotency(65535, "app", "r-1"))
            .arg(k.idempotency(3, "app", &long));
        assert_eq!(written.get_packed_command(), named.get_packed_command());
    }

    use super::*;

    #[test]
    fn all_keys_of_a_partition_share_a_hash_tag() {
        let k = Keys::new("gr", 4);
        for key in [
            k.ingest(2),
            k.incident(2, "X"),
            k.dispatch(2, "water"),
            k.sla(2),
            k.index_region(2, "1"),
        ] {
            assert!(key.contains("{p2}"), "{key}");
        }
        assert_eq!(partition_of("01JDXK3M4P5Q6R7S8T9V0W1X2Y-3", 4), Some(3));
        assert_eq!(partition_of("01JDXK3M4P5Q6R7S8T9V0W1X2Y-4", 4), None);
        assert_eq!(partition_of("nonsense", 4), None);
        assert!(k.partition_for("app", "r1") < 4);
        // Sequential ids spread over every partition at once.
        let first: std::collections::BTreeSet<u16> = (0..16)
            .map(|i| k.partition_for("12345-hotline", &format!("hotline-{i:06}")))
            .collect();
        assert_eq!(first.len(), 4, "{first:?}");
    }

    #[test]
    fn slots_are_computed_as_redis_does() {
        // `CLUSTER KEYSLOT foo` = 12182, `CLUSTER KEYSLOT gr:{p0}:x` = the slot of `p0`.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(partition_slot(0), slot_of(b"p0"));
    }

    #[test]
    fn balanced_ranges_give_each_primary_its_share_of_partitions() {
        for (partitions, primaries) in [(12, 3), (48, 3), (4, 3), (2, 3), (96, 6), (7, 1)] {
            let ranges = balanced_slot_ranges(partitions, primaries);
            assert_eq!(ranges.len(), usize::from(primaries));
            assert_eq!(ranges[0].0, 0);
            assert_eq!(ranges.last().map(|r| r.1), Some(CLUSTER_SLOTS - 1));
            for w in ranges.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0, "contiguous: {ranges:?}");
            }
            let held: Vec<usize> = ranges
                .iter()
                .map(|&(a, b)| {
                    (0..partitions)
                        .filter(|&p| (a..=b).contains(&partition_slot(p)))
                        .count()
                })
                .collect();
            let (lo, hi) = (held.iter().min(), held.iter().max());
            if partitions >= primaries {
                assert!(
                    hi.zip(lo).is_some_and(|(h, l)| h - l <= 1),
                    "{partitions}/{primaries}: {held:?}"
                );
            }
            assert_eq!(held.iter().sum::<usize>(), usize::from(partitions));
        }
    }
}
