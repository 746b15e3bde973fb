//! The real `gridroute` binary as a child process, for tests that run it as users do.

use std::time::Duration;

use tonic::transport::Channel;

/// A child process, killed when dropped (a failing test leaves nothing running).
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
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
