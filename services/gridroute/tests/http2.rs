//! A client stream of 100,000 small reports, each in its own HTTP/2 DATA frame as Google's
//! grpcio sends them, over a raw h2 connection: the server reads it to the end (h2 keeps a
//! budget for small frames, half the connection window, and used to cut such streams with
//! GOAWAY ENHANCE_YOUR_CALM `too_many_data_frames` while it was busy writing to Redis) and
//! answers every item.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::Env;
use gridroute_proto::v1 as pb;
use prost::Message;

const ITEMS: usize = 100_000;

/// One gRPC message frame (uncompressed).
fn frame(msg: &impl Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut b = BytesMut::with_capacity(5 + body.len());
    b.put_u8(0);
    b.put_u32(body.len() as u32);
    b.put_slice(&body);
    b.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_many_small_data_frames_completes() {
    let env = Env::start().await;
    let grid = env.table().grids.grids()[0].code.clone();
    let addr = env.addr.trim_start_matches("http://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://{addr}/gridroute.v1.IncidentService/ReportIncidents"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header(
        "authorization",
        format!("Bearer {}", env.token("source_system:resident-app")),
    )
    .body(())
    .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    let sender = tokio::spawn(async move {
        for i in 0..ITEMS {
            let item = frame(&pb::ReportIncidentRequest {
                request_id: format!("s{i}"),
                category: "city.sanitation".into(),
                location: Some(pb::Location {
                    kind: Some(pb::location::Kind::GridCode(grid.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            });
            // Each item is its own DATA frame; wait for window like a real client.
            send.reserve_capacity(item.len());
            while send.capacity() < item.len() {
                match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                    Some(Ok(_)) => {}
                    other => return Err(format!("item {i}: {other:?}")),
                }
            }
            send.send_data(item, false)
                .map_err(|e| format!("item {i}: {e}"))?;
        }
        send.send_data(Bytes::new(), true)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    });
    let response = tokio::time::timeout(Duration::from_secs(300), response)
        .await
        .expect("an answer")
        .expect("the stream is not cut");
    let mut body = response.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the stream is not cut");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    sender.await.unwrap().unwrap();
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
        Some("0"),
        "{trailers:?}"
    );
    let answer = pb::ReportIncidentsResponse::decode(&data[5..]).unwrap();
    assert_eq!(answer.results.len(), ITEMS);
    assert_eq!(answer.accepted_count as usize, ITEMS);
}
