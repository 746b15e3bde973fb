//! The real `gridroute` binary as a child process, for tests that run it as users do.

use std::time::Duration;

use tonic::transport::Channel;

/// A child process, stopped when dropped (a failing test leaves nothing running): SIGTERM
/// first, so that `gridroute dev` stops the redis-server it started (a SIGKILL would orphan
/// it), then SIGKILL after 5 s.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            for _ in 0..100 {
                if !matches!(self.0.try_wait(), Ok(None)) {
                    return;
                }
                // Drop cannot await; this runs once per test, at its end.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects to a plaintext gRPC address, waiting up to 10 s for it to open.
pub async fn connect(addr: &str) -> Channel {
    for _ in 0..200 {
        if let Ok(c) = Channel::from_shared(addr.to_owned())
            .unwrap()
            .connect()
            .await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} never opened");
}

/// A redis-server on `127.0.0.1:port` with its files in `dir` and `extra` settings, once it
/// accepts connections.
pub fn redis_server(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    let child = Child(
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        // Called from synchronous set-up code; a few short waits.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("redis-server did not start on port {port}");
}

/// The Prometheus text a process serves on `127.0.0.1:port` (`/metrics`).
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// A fresh directory under the system's temp dir for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gridroute-test-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `msg` with `authorization: Bearer <token>`.
pub fn bearer<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// The tokens `gridroute dev` wrote to its directory's `tokens.json`, by principal.
pub fn dev_tokens(dir: &std::path::Path) -> std::collections::HashMap<String, String> {
    let text = std::fs::read_to_string(dir.join("tokens.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Authentication for a `gridroute serve` child: a development key whose key set is written to
/// a file the child reads with `--jwks`, and tokens made with it.
pub struct ServeAuth {
    pub keys: gridroute_auth::dev::DevKeys,
    pub dir: std::path::PathBuf,
}

impl ServeAuth {
    pub fn new(name: &str) -> Self {
        let dir = temp_dir(name);
        let keys = gridroute_auth::dev::DevKeys::load_or_create(&dir).unwrap();
        Self { keys, dir }
    }

    /// The flags that make `serve` trust this key.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--jwks".into(),
            self.dir
                .join(gridroute_auth::dev::JWKS_FILE)
                .display()
                .to_string(),
            "--token-issuer".into(),
            gridroute_auth::dev::DEV_ISSUER.into(),
        ]
    }

    /// A token for `who` (`kind:id`).
    pub fn token(&self, who: &str) -> String {
        self.keys.token(
            &gridroute_core::access::Principal::parse(who).unwrap(),
            Duration::from_secs(3600),
        )
    }

    /// `msg` sent as `who`.
    pub fn req<T>(&self, who: &str, msg: T) -> tonic::Request<T> {
        bearer(&self.token(who), msg)
    }
}

impl ServeAuth {
    /// `msg` sent as the principal it names, read against the Dawukou sample (see
    /// [`super::Acting`]).
    pub fn signed<T: super::Acting>(&self, msg: T) -> tonic::Request<T> {
        static TABLE: std::sync::OnceLock<gridroute_core::RoutingTable> =
            std::sync::OnceLock::new();
        let who = msg.principal(TABLE.get_or_init(gridroute_benches::dawukou));
        self.req(&who, msg)
    }
}

/// `gridroute <sub>` serving gRPC on `grpc` and metrics on `metrics` (none when `None`), no
/// HTTP, output discarded.
fn command(sub: &str, grpc: u16, metrics: Option<u16>) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_gridroute"));
    let metrics = metrics.map_or("off".to_owned(), |m| format!("127.0.0.1:{m}"));
    c.args([sub, "--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", "off", "--metrics-addr", &metrics])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// `gridroute dev` (its own redis-server, the sample tables) serving gRPC on `grpc` and
/// metrics on `metrics`, no HTTP, with its files in `dir` and output discarded: for a test to
/// add its flags, environment or output before it spawns.
pub fn dev_command(grpc: u16, metrics: u16, dir: &std::path::Path) -> std::process::Command {
    let mut c = command("dev", grpc, Some(metrics));
    c.env_remove("GRIDROUTE_REDIS_URL")
        .env("GRIDROUTE_DEV_DIR", dir);
    c
}

/// `gridroute serve` on `redis`, trusting `auth`'s key, serving gRPC on `grpc` and metrics
/// on `metrics` (none when `None`), no HTTP, output discarded: for a test to add its flags
/// before it spawns.
pub fn serve_command(
    redis: &str,
    grpc: u16,
    metrics: Option<u16>,
    auth: &ServeAuth,
) -> std::process::Command {
    let mut c = command("serve", grpc, metrics);
    c.args(["--redis-url", redis]).args(auth.args());
    c
}

/// Runs [`dev_command`] with `extra` flags.
pub fn start_dev(grpc: u16, metrics: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    Child(
        dev_command(grpc, metrics, dir)
            .args(extra)
            .spawn()
            .expect("the binary starts"),
    )
}

/// Waits up to 10 s for the server behind `channel` to report SERVING on the health service
/// (its overall status), and fails the test if it does not.
pub async fn wait_serving(channel: Channel) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let mut health = HealthClient::new(channel);
    let mut status = 0;
    for _ in 0..200 {
        status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_or(0, |r| r.into_inner().status);
        if status == ServingStatus::Serving as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not SERVING after 10 s (status {status})");
}
