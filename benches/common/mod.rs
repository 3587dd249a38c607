//! What the benches share.
#![allow(dead_code)]

#[cfg(feature = "smol")]
use std::sync::Arc;

/// Runs a smol executor on one thread (the other core runs the benchmark) until dropped.
#[cfg(feature = "smol")]
pub struct SmolThread {
    pub ex: Arc<smol::Executor<'static>>,
    stop: Option<smol::channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(feature = "smol")]
impl SmolThread {
    pub fn start() -> SmolThread {
        let ex = Arc::new(smol::Executor::new());
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let runner = ex.clone();
        let thread = std::thread::spawn(move || {
            let _ = smol::block_on(runner.run(stopped.recv()));
        });
        SmolThread {
            ex,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

#[cfg(feature = "smol")]
impl Drop for SmolThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
