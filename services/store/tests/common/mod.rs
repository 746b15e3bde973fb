//! Helpers shared by the store's tests against a real redis-server.

#![allow(dead_code, clippy::unwrap_used)]

use gridroute_proto::v1 as pb;

/// A plain client connection, for looking at what the store wrote.
pub async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    let c = redis::Client::open(url).unwrap();
    c.get_multiplexed_async_connection().await.unwrap()
}

/// A report of an abandoned car at a point in Wuhan (a category with duplicate detection).
pub fn report(request_id: &str) -> pb::ReportIncidentRequest {
    pb::ReportIncidentRequest {
        request_id: request_id.into(),
        source_system: "app".into(),
        category: "city.vehicle".into(),
        location: Some(pb::Location {
            kind: Some(pb::location::Kind::Point(pb::LatLng {
                latitude: 30.5928,
                longitude: 114.3055,
            })),
            ..Default::default()
        }),
        description: "abandoned car".into(),
        ..Default::default()
    }
}
