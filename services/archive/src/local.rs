//! A private PostgreSQL server on a free loopback port, for tests (and anyone trying the
//! archive on a laptop): like the private `redis-server` of the store, it never depends on a
//! server or state that happens to be on the machine, keeps its files in a temporary directory
//! and is stopped when the handle is dropped.
//!
//! Debian keeps the server binaries off the PATH (`/usr/lib/postgresql/<major>/bin`); they are
//! looked up there too. PostgreSQL refuses to run as root: as root the server runs as the
//! `postgres` user (`setpriv`, which execs, so that killing the child kills the server).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running private PostgreSQL.
#[derive(Debug)]
pub struct LocalPostgres {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    user: Option<(u32, u32)>,
}

/// Why a private PostgreSQL could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalPostgresError {
    /// The server binaries are not installed.
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin; install them (apt-get install -y postgresql)"
    )]
    NotInstalled,
    /// A step failed.
    #[error("{0}")]
    Failed(String),
    /// Another I/O problem.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The directory holding `initdb`, `postgres`, `pg_dump` … (the newest installed major).
pub fn bin_dir() -> Option<PathBuf> {
    // A PATH entry may be a symlink to the versioned directory: the other programs are there.
    if let Ok(path) = std::env::var("PATH")
        && let Some(initdb) = std::env::split_paths(&path)
            .map(|d| d.join("initdb"))
            .find(|f| f.is_file())
        && let Some(dir) = std::fs::canonicalize(initdb)
            .ok()
            .and_then(|f| f.parent().map(Path::to_path_buf))
    {
        return Some(dir);
    }
    let mut majors: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    majors.sort_by_key(|d| {
        d.parent()
            .and_then(|m| m.file_name())
            .and_then(|m| m.to_str())
            .and_then(|m| m.parse::<u32>().ok())
    });
    majors.pop()
}

fn pause(d: Duration) {
    #[allow(clippy::disallowed_methods)]
    std::thread::sleep(d);
}

fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// How a TLS-only server authenticates its TCP clients.
enum TcpAuth<'a> {
    Trust,
    /// A certificate this CA (PEM) signed, its common name the user.
    Cert(&'a str),
    /// SCRAM-SHA-256 with the `postgres` user's password.
    Password(&'a str),
}

impl LocalPostgres {
    /// Creates a cluster in a temporary directory and starts it on a free port.
    pub fn start() -> Result<Self, LocalPostgresError> {
        Self::start_with(None)
    }

    /// [`LocalPostgres::start`], serving TLS with this certificate and key (PEM) and refusing
    /// plain TCP connections, so that a client that gets in has used TLS.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Result<Self, LocalPostgresError> {
        Self::start_with(Some((cert_pem, key_pem, TcpAuth::Trust)))
    }

    /// [`LocalPostgres::start_with_tls`], and TCP clients authenticate as `postgres` with this
    /// password by SCRAM-SHA-256 (with channel binding when the client offers it).
    pub fn start_with_password(
        cert_pem: &str,
        key_pem: &str,
        password: &str,
    ) -> Result<Self, LocalPostgresError> {
        Self::start_with(Some((cert_pem, key_pem, TcpAuth::Password(password))))
    }

    /// [`LocalPostgres::start_with_tls`], and every TCP client must also present a certificate
    /// that `client_ca_pem` signed, whose common name is the database user (`pg_hba.conf`'s
    /// `cert` method).
    pub fn start_with_client_certs(
        cert_pem: &str,
        key_pem: &str,
        client_ca_pem: &str,
    ) -> Result<Self, LocalPostgresError> {
        Self::start_with(Some((cert_pem, key_pem, TcpAuth::Cert(client_ca_pem))))
    }

    fn start_with(tls: Option<(&str, &str, TcpAuth<'_>)>) -> Result<Self, LocalPostgresError> {
        let bin = bin_dir().ok_or(LocalPostgresError::NotInstalled)?;
        let user = if id(&["-u"]) == Some(0) {
            Some((
                id(&["-u", "postgres"]).ok_or_else(|| {
                    LocalPostgresError::Failed("running as root and no postgres user".into())
                })?,
                id(&["-g", "postgres"]).unwrap_or(0),
            ))
        } else {
            None
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("gridroute-pg-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data"))?;
        let mut me = Self {
            child: None,
            port,
            dir,
            bin,
            user,
        };
        me.own(&me.dir)?;
        me.own(&me.dir.join("data"))?;
        let mut initdb = me.command("initdb");
        initdb
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
            .arg("--no-sync")
            .arg("-D")
            .arg(me.dir.join("data"));
        if let Some((_, _, TcpAuth::Password(password))) = &tls {
            let file = me.dir.join("pwfile");
            std::fs::write(&file, password)?;
            me.own(&file)?;
            initdb.arg(format!("--pwfile={}", file.display()));
        }
        let out = initdb.output()?;
        if !out.status.success() {
            return Err(LocalPostgresError::Failed(format!(
                "initdb: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        if let Some((cert, key, auth)) = tls {
            me.tls_only(cert, key, auth)?;
        }
        me.run()?;
        Ok(me)
    }

    fn tls_only(&self, cert_pem: &str, key_pem: &str, auth: TcpAuth<'_>) -> std::io::Result<()> {
        use std::{io::Write, os::unix::fs::PermissionsExt};
        let data = self.dir.join("data");
        let mut files = vec![("server.crt", cert_pem), ("server.key", key_pem)];
        if let TcpAuth::Cert(ca) = auth {
            files.push(("root.crt", ca));
        }
        for (name, text) in files {
            let path = data.join(name);
            std::fs::write(&path, text)?;
            // PostgreSQL refuses a key others can read.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            self.own(&path)?;
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
        )?;
        let method = match auth {
            TcpAuth::Trust => "trust",
            TcpAuth::Cert(_) => {
                writeln!(conf, "ssl_ca_file = 'root.crt'")?;
                "cert"
            }
            TcpAuth::Password(_) => "scram-sha-256",
        };
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\nhostssl all all 127.0.0.1/32 {method}\nhostnossl all all 127.0.0.1/32 reject\n"
            ),
        )
    }

    fn own(&self, path: &Path) -> std::io::Result<()> {
        match self.user {
            Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }

    /// One of the server's programs, run as the server's user.
    pub fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.user {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// Starts the server on its port and waits until it accepts connections.
    fn run(&mut self) -> Result<(), LocalPostgresError> {
        let log = std::fs::File::create(self.dir.join("postgres.log"))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=off", "-c", "max_connections=50"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            // Ready once it says so and its port answers.
            let ready = std::fs::read_to_string(self.dir.join("postgres.log"))
                .is_ok_and(|l| l.contains("ready to accept connections"))
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if ready {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && !matches!(c.try_wait(), Ok(None))
            {
                return Err(LocalPostgresError::Failed(format!(
                    "postgres exited at start (port {}): {}",
                    self.port,
                    self.log_tail()
                )));
            }
            pause(Duration::from_millis(50));
        }
        Err(LocalPostgresError::Failed(format!(
            "postgres on port {} did not answer within 30 s: {}",
            self.port,
            self.log_tail()
        )))
    }

    /// The end of the server's log, for error messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of one of its databases.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Kills the server, as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
