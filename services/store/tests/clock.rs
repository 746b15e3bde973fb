//! The cached server clock: `Store::clock_ms` answers Redis' time without a round trip per
//! call, within a few milliseconds of `TIME`, across a re-reading.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gridroute_store::{Store, local::LocalRedis};

#[tokio::test]
async fn the_cached_clock_follows_redis_time() {
    let redis = LocalRedis::start().unwrap();
    let store = Store::connect(&redis.url(), "clock", 4).await.unwrap();
    // The first reading takes a sample, the second reuses it 300 ms later, the third (more
    // than a second after the sample) takes a new one.
    for wait in [0, 300, 1_000] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let before = store.server_time_ms().await.unwrap();
        let cached = store.clock_ms().await.unwrap();
        let after = store.server_time_ms().await.unwrap();
        assert!(
            before - 2 <= cached && cached <= after + 2,
            "clock_ms {cached} outside Redis' TIME {before}..{after} after {wait} ms"
        );
    }
}
