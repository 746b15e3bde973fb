//! A private `redis-server` on a free loopback port, for `gridroute dev` and for tests: they
//! never depend on a server or state that happens to be on the machine. The server keeps
//! nothing on disk and is killed when the handle is dropped.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running private Redis.
#[derive(Debug)]
pub struct LocalRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

/// Why a private Redis could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalRedisError {
    /// `redis-server` is not installed.
    #[error(
        "redis-server not found on PATH ({0}); install it (e.g. apt-get install -y redis-server) or pass --redis-url"
    )]
    NotInstalled(std::io::Error),
    /// It started but did not answer.
    #[error("redis-server on port {0} did not answer within 10 s")]
    NoAnswer(u16),
    /// It exited at start, or another process answers on its port.
    #[error("port {0} is taken by another process")]
    PortTaken(u16),
    /// Another I/O problem.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A free TCP port on 127.0.0.1 (bound and released: another process or thread may take it
/// before the caller binds it, which [`LocalRedis::start`] detects and retries).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits on the calling thread: start-up happens before or outside the runtime's tasks.
fn pause(d: Duration) {
    #[allow(clippy::disallowed_methods)]
    std::thread::sleep(d);
}

impl LocalRedis {
    /// Starts `redis-server` on a free port and waits until it answers. A port taken by
    /// someone else between choosing and binding it (parallel tests pick ports too) is
    /// detected, and another port tried.
    pub fn start() -> Result<Self, LocalRedisError> {
        Self::start_free(false)
    }

    /// Like [`LocalRedis::start`], in a process group of its own, so that a Ctrl-C at the
    /// terminal reaches only gridroute, which stops its routers first and this server last
    /// (`gridroute dev`: a clean shutdown logs no lost connections). Dropping the handle still
    /// stops it.
    pub fn start_for_dev() -> Result<Self, LocalRedisError> {
        Self::start_free(true)
    }

    fn start_free(own_group: bool) -> Result<Self, LocalRedisError> {
        let mut attempt = 0;
        loop {
            let port = free_port()?;
            match Self::start_with(port, &["--port".into(), port.to_string()], own_group) {
                Err(LocalRedisError::PortTaken(_)) if attempt < 5 => attempt += 1,
                other => return other,
            }
        }
    }

    /// Starts `redis-server` on `port` (used to restart one on the same port in tests).
    pub fn start_on(port: u16) -> Result<Self, LocalRedisError> {
        Self::start_with(port, &["--port".into(), port.to_string()], false)
    }

    /// Starts `redis-server` speaking only TLS on a free port, with this certificate, key and
    /// CA (for tests of `rediss://` URLs; clients are not asked for certificates).
    pub fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> Result<Self, LocalRedisError> {
        let port = free_port()?;
        let path = |p: &std::path::Path| p.display().to_string();
        Self::start_with(
            port,
            &[
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                path(cert),
                "--tls-key-file".into(),
                path(key),
                "--tls-ca-cert-file".into(),
                path(ca),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            false,
        )
    }

    fn start_with(port: u16, listen: &[String], own_group: bool) -> Result<Self, LocalRedisError> {
        let dir =
            std::env::temp_dir().join(format!("gridroute-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut cmd = Command::new("redis-server");
        if own_group {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        let child = cmd
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            // Incident records keep the compact encoding (values such as the decision exceed
            // the 64-byte default): faster writes and less memory (docs/OPERATIONS.md "Redis").
            .args(["--hash-max-listpack-value", "4096"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(LocalRedisError::NotInstalled)?;
        let mut me = Self {
            child: Some(child),
            port,
            dir,
        };
        // A TLS-only server cannot be asked in plain text: it is ours if it answers on the port
        // and is still running a moment later (a server that could not bind exits at once).
        let tls = listen.iter().any(|a| a == "--tls-port");
        let mut tls_answered = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if me.exited() {
                me.stop();
                return Err(LocalRedisError::PortTaken(port));
            }
            if tls_answered || (!tls && me.answers()) {
                return Ok(me);
            }
            tls_answered = tls && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            pause(Duration::from_millis(if tls_answered { 100 } else { 20 }));
        }
        me.stop();
        Err(LocalRedisError::NoAnswer(port))
    }

    /// Whether the child process has exited.
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Whether this server, not another process on its port, answers: its `dir` is ours.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"CONFIG GET dir\r\n").is_err() {
            return false;
        }
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        // Redis reports the directory it changed into, symlinks resolved.
        let dir = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        let want = dir.display().to_string();
        String::from_utf8_lossy(&buf[..n]).contains(&want)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL (plain TCP; a TLS server's is `rediss://localhost:<port>/`).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (as a crash would: nothing is saved).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A private Redis Cluster of three primaries on free loopback ports (tests of
/// `redis+cluster://`): started, joined with `redis-cli --cluster create`, and waited for.
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<LocalRedis>,
}

impl LocalCluster {
    /// Starts three cluster-enabled servers and forms the cluster.
    pub fn start() -> Result<Self, LocalRedisError> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port()?;
            nodes.push(LocalRedis::start_with(
                port,
                &[
                    "--port".into(),
                    port.to_string(),
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    format!("nodes-{port}.conf"),
                    "--cluster-node-timeout".into(),
                    "5000".into(),
                ],
                false,
            )?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !created.success() {
            return Err(LocalRedisError::Io(std::io::Error::other(
                "redis-cli --cluster create failed",
            )));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &n.port().to_string(), "cluster", "info"])
                    .output()?;
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(LocalRedisError::NoAnswer(n.port()));
                }
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(Self { nodes })
    }

    /// Its URL: every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}/", hosts.join(","))
    }
}

/// A private primary, its replica and one Sentinel watching them as `mymaster` (tests of
/// `redis+sentinel://` and of failover).
#[derive(Debug)]
pub struct LocalSentinel {
    /// The primary at start.
    pub primary: LocalRedis,
    /// Its replica.
    pub replica: LocalRedis,
    sentinel: LocalRedis,
}

impl LocalSentinel {
    /// Starts the three and waits until the Sentinel knows the replica.
    pub fn start() -> Result<Self, LocalRedisError> {
        let primary = LocalRedis::start()?;
        let rport = free_port()?;
        let replica = LocalRedis::start_with(
            rport,
            &[
                "--port".into(),
                rport.to_string(),
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.port().to_string(),
            ],
            false,
        )?;
        let sport = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("gridroute-sentinel-{sport}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sport}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\nsentinel down-after-milliseconds mymaster 2000\nsentinel failover-timeout mymaster 10000\n",
                dir.display(),
                primary.port()
            ),
        )?;
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(LocalRedisError::NotInstalled)?;
        let sentinel = LocalRedis {
            child: Some(child),
            port: sport,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("redis-cli")
                .args(["-p", &sport.to_string(), "sentinel", "replicas", "mymaster"])
                .output()?;
            if String::from_utf8_lossy(&out.stdout).contains(&rport.to_string()) {
                break;
            }
            if Instant::now() > deadline {
                return Err(LocalRedisError::NoAnswer(sport));
            }
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self {
            primary,
            replica,
            sentinel,
        })
    }

    /// The Sentinel URL of the service.
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://127.0.0.1:{}/mymaster",
            self.sentinel.port()
        )
    }

    /// The Sentinel's own port (its commands: `SENTINEL …`).
    pub fn sentinel_port(&self) -> u16 {
        self.sentinel.port()
    }

    /// The port of the primary the Sentinel names now.
    pub fn primary_port(&self) -> Option<u16> {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &self.sentinel.port().to_string(),
                "sentinel",
                "get-master-addr-by-name",
                "mymaster",
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)?
            .trim()
            .parse()
            .ok()
    }

    /// Asks the Sentinel to fail over to the replica.
    pub fn failover(&self) -> std::io::Result<bool> {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &self.sentinel.port().to_string(),
                "sentinel",
                "failover",
                "mymaster",
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).contains("OK"))
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
