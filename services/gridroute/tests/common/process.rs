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
