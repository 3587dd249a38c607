//! What the examples share: a smol executor run by two threads, plugged into failfast with the
//! one-line closure form, so that the examples run on default features. With the `smol`
//! feature, `executor::Smol::new(ex)` does the same, except that it keeps each task's handle
//! and frees the finished task on the group's thread (faster for large groups).

use std::sync::Arc;
use std::thread::JoinHandle;

use futures::future::BoxFuture;

/// A smol `Executor` run by two threads until dropped.
pub struct SmolRunner {
    ex: Arc<smol::Executor<'static>>,
    stop: Option<smol::channel::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl SmolRunner {
    pub fn new() -> SmolRunner {
        let ex = Arc::new(smol::Executor::new());
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let threads = (0..2)
            .map(|_| {
                let (ex, stopped) = (ex.clone(), stopped.clone());
                std::thread::spawn(move || {
                    let _ = smol::block_on(ex.run(stopped.recv()));
                })
            })
            .collect();
        SmolRunner {
            ex,
            stop: Some(stop),
            threads,
        }
    }

    /// The smol executor itself, for tasks of the example's own (servers, clients).
    #[allow(dead_code)] // not every example spawns tasks of its own
    pub fn ex(&self) -> Arc<smol::Executor<'static>> {
        self.ex.clone()
    }

    /// A failfast executor that spawns on this runner.
    #[allow(dead_code)] // not every example spawns its calls
    pub fn executor(&self) -> impl Fn(BoxFuture<'static, ()>) + Clone + Send + Sync + 'static {
        let ex = self.ex.clone();
        move |task| ex.spawn(task).detach()
    }
}

impl Drop for SmolRunner {
    fn drop(&mut self) {
        drop(self.stop.take()); // closes the channel: every runner thread returns
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
