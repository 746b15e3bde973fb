//! The router's own ingest reader (`resp`) against a real redis-server: it authenticates as
//! the URL's user, reads the URL's database, gives entries exactly as written (large batches
//! that arrive in many reads included), keeps Redis' error codes, and after a lost connection or
//! an abandoned read fails as `Unavailable`, so that the router connects again and loses
//! nothing.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gridroute_store::{Store, StoreError, local::LocalRedis};

async fn admin(port: u16) -> redis::aio::MultiplexedConnection {
    let c = redis::Client::open(format!("redis://:adminpw@127.0.0.1:{port}/")).unwrap();
    c.get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test]
async fn the_routers_own_reader_authenticates_reads_its_database_and_reconnects() {
    let redis = LocalRedis::start().unwrap();
    let port = redis.port();
    // The default user needs a password, so that a reader that did not authenticate as the
    // URL's user would be refused; the router's user has one of its own.
    let mut plain = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("ACL")
        .arg(&["SETUSER", "router", "on", ">s3cret", "~*", "&*", "+@all"])
        .query_async::<()>(&mut plain)
        .await
        .unwrap();
    redis::cmd("CONFIG")
        .arg(&["SET", "requirepass", "adminpw"])
        .query_async::<()>(&mut plain)
        .await
        .unwrap();
    let url = format!("redis://router:s3cret@127.0.0.1:{port}/2");
    let store = Store::connect(&url, "direct", 4).await.unwrap();
    store.ensure_groups().await.unwrap();
    let key = store.keys().ingest(1);
    let mut a = admin(port).await;
    redis::cmd("SELECT")
        .arg(2)
        .query_async::<()>(&mut a)
        .await
        .unwrap();
    // A thousand entries of 2 KB (a reply of 2 MB, read in many pieces), values holding every
    // byte, `\r\n` included.
    let value: Vec<u8> = (0..2048u32).map(|i| (i % 256) as u8).collect();
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("id")
            .arg(format!("x-{i}"))
            .arg("v")
            .arg(&value)
            .ignore();
    }
    pipe.query_async::<()>(&mut a).await.unwrap();

    let mut c = store
        .consumer(1, "r1", Duration::from_millis(100))
        .await
        .unwrap();
    assert!(
        c.direct(),
        "one Redis over plain TCP: the router's own reader"
    );
    let got = c.read_new(1000).await.unwrap();
    assert_eq!(got.len(), 1000);
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.text("id"), Some(format!("x-{i}").as_str()));
        assert_eq!(e.field("v"), Some(value.as_slice()));
        assert_eq!((e.partition, e.deliveries), (1, 1));
    }
    // Nothing new: the block time passes and the answer is empty.
    assert!(c.read_new(10).await.unwrap().is_empty());

    // The connection is killed: the read fails as Unavailable (the router reconnects), and a
    // new consumer of the same name finds every entry still pending, delivered a second time.
    redis::cmd("CLIENT")
        .arg(&["KILL", "USER", "router"])
        .query_async::<()>(&mut a)
        .await
        .unwrap();
    let e = c.read_new(10).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    let mut c = store
        .consumer(1, "r1", Duration::from_secs(2))
        .await
        .unwrap();
    let mut again = Vec::new();
    loop {
        let page = c.read_own_pending(300).await.unwrap();
        if page.is_empty() {
            break;
        }
        again.extend(page);
    }
    assert_eq!(again.len(), 1000);
    assert!(
        again
            .iter()
            .all(|e| e.deliveries == 2 && e.field("v") == Some(&value[..]))
    );

    // A read abandoned half-way (its reply still to come) leaves the connection unusable: the
    // next call says so instead of reading the old reply as its own.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), c.read_new(10))
            .await
            .is_err()
    );
    let e = c.read_new(10).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");

    // Redis' error codes come through: a lost group is NOGROUP, which the router recreates.
    let mut c = store
        .consumer(1, "r1", Duration::from_millis(100))
        .await
        .unwrap();
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut a)
        .await
        .unwrap();
    let e = c.read_new(10).await.unwrap_err();
    assert!(matches!(e, StoreError::NoGroup(_)), "{e:?}");

    // A wrong password is refused at connection, as with the client library.
    let wrong = format!("redis://router:nope@127.0.0.1:{port}/2");
    assert!(Store::connect(&wrong, "direct", 4).await.is_err());
}
