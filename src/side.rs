//! The side runtime: a small tokio runtime on its own threads for
//! everything that is not socket I/O (the Postgres store, the Redis bridge).
//!
//! Owns the runtime's lifetime. Shards reach work running here only through
//! channels (tokio mpsc/oneshot, which monoio can await with its `sync`
//! feature); they never call into tokio otherwise.
//!
//! Must never: run socket I/O of clients, or be dropped while a shard still
//! sends to it (the gateway drops it last).

/// The running side runtime.
pub struct SideRuntime {
    rt: tokio::runtime::Runtime,
}

impl SideRuntime {
    /// Starts `threads` worker threads named `chatgate-side`.
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("chatgate-side")
            .enable_all()
            .build()?;
        Ok(Self { rt })
    }

    /// A handle to spawn tasks on the runtime.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.handle().clone()
    }

    /// Stops the runtime, giving running tasks up to `grace` to finish.
    pub fn shutdown(self, grace: std::time::Duration) {
        self.rt.shutdown_timeout(grace);
    }
}
