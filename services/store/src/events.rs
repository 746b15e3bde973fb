//! The entries of the events streams (`<prefix>:{pN}:events`, read by WatchIncidents and the
//! HTTP event stream), in their two forms:
//! - one entry per change: fields `id`, `s` (status), `d` (department), `r` (region codes joined
//!   by `,`), `e` (the stored timeline entry), and `m` (merged incident ids) for a merge;
//! - one entry per batch (`--packed-events`, written by the transactions of `--transactions`):
//!   one field [`PACKED_FIELD`] whose value is a protobuf [`Packed`] message listing the
//!   batch's changes in order, each with the same five values.
//!
//! A batch of a hundred reports then appends one entry to its partition's stream instead of a
//! hundred or two: the per-entry cost of `XADD` (finding the stream's last node, a new id, the
//! entry's header) is paid once (docs/PERFORMANCE.md). Readers of this release read both forms;
//! a position inside a packed entry is `<entry id>~<changes delivered>` in a cursor
//! ([`crate::subscribe::Cursor`]).

use prost::{
    Message,
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint},
};

use crate::StoreError;

/// The one field of a packed entry.
pub const PACKED_FIELD: &str = "b";

/// A packed entry's value: the changes of one batch, oldest first.
#[derive(Clone, PartialEq, Message)]
pub struct Packed {
    #[prost(message, repeated, tag = "1")]
    pub changes: Vec<Change>,
}

/// One change in a packed entry: what an entry of the first form holds in its fields.
#[derive(Clone, PartialEq, Message)]
pub struct Change {
    /// `id`: the incident.
    #[prost(string, tag = "1")]
    pub incident_id: String,
    /// `s`: its status after the change.
    #[prost(string, tag = "2")]
    pub status: String,
    /// `d`: the department concerned, if any.
    #[prost(string, tag = "3")]
    pub department: String,
    /// `r`: its region codes, joined by `,`.
    #[prost(string, tag = "4")]
    pub regions: String,
    /// `e`: the stored timeline entry.
    #[prost(bytes = "vec", tag = "5")]
    pub event: Vec<u8>,
    /// `m`: merged incident ids, joined by `,`.
    #[prost(string, tag = "6")]
    pub merged: String,
}

/// Reads a packed entry's value.
pub fn unpack(value: &[u8]) -> Result<Packed, StoreError> {
    Packed::decode(value).map_err(|e| StoreError::Corrupt(format!("a packed events entry: {e}")))
}

/// The value of one packed entry, written change by change as a batch is put together
/// (encoded as [`Packed`] without building one: the writers hold borrowed values).
#[derive(Debug, Default)]
pub(crate) struct Packer {
    buf: Vec<u8>,
    changes: usize,
}

impl Packer {
    /// Adds a change (the values of [`Change`], `merged` empty).
    pub(crate) fn push(
        &mut self,
        id: &str,
        status: &str,
        department: &str,
        regions: &str,
        e: &[u8],
    ) {
        let fields: [(u32, &[u8]); 5] = [
            (1, id.as_bytes()),
            (2, status.as_bytes()),
            (3, department.as_bytes()),
            (4, regions.as_bytes()),
            (5, e),
        ];
        // Protobuf leaves empty values out.
        let field_len = |v: &[u8]| 1 + encoded_len_varint(v.len() as u64) + v.len();
        let inner: usize = fields
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(_, v)| field_len(v))
            .sum();
        self.buf.reserve(inner + 12);
        encode_key(1, WireType::LengthDelimited, &mut self.buf);
        encode_varint(inner as u64, &mut self.buf);
        for (tag, v) in fields {
            if !v.is_empty() {
                encode_key(tag, WireType::LengthDelimited, &mut self.buf);
                encode_varint(v.len() as u64, &mut self.buf);
                self.buf.extend_from_slice(v);
            }
        }
        self.changes += 1;
    }

    /// Whether no change was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.changes == 0
    }

    /// The entry's value, counted in `gridroute_events_packed_changes` (called once per entry
    /// written).
    pub(crate) fn value(&self) -> &[u8] {
        metrics::histogram!(gridroute_telemetry::names::EVENTS_PACKED_CHANGES)
            .record(self.changes as f64);
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_packed_value_reads_back_as_the_changes_pushed_in_order() {
        let mut p = Packer::default();
        assert!(p.is_empty());
        p.push("42-1", "reported", "", "", b"\x08\x01");
        p.push("42-1", "dispatched", "water", "4201,420102", &[0u8; 300]);
        p.push("42-2", "reported", "", "", b"");
        let read = unpack(p.value()).unwrap();
        let got: Vec<(&str, &str, &str, &str, usize)> = read
            .changes
            .iter()
            .map(|c| {
                (
                    c.incident_id.as_str(),
                    c.status.as_str(),
                    c.department.as_str(),
                    c.regions.as_str(),
                    c.event.len(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("42-1", "reported", "", "", 2),
                ("42-1", "dispatched", "water", "4201,420102", 300),
                ("42-2", "reported", "", "", 0),
            ]
        );
        assert_eq!(
            read.encode_to_vec(),
            p.value(),
            "the message's own encoding"
        );
    }

    #[test]
    fn a_damaged_value_is_refused_as_corrupt() {
        let mut p = Packer::default();
        p.push("42-1", "reported", "", "", b"abc");
        let cut = &p.value()[..p.value().len() - 2];
        assert!(matches!(unpack(cut), Err(StoreError::Corrupt(_))));
    }
}
