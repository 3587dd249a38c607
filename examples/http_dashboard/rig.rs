//! How the tour starts dashboards: over which backends, with which settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use failfast::Hedge;

use crate::args::Args;
use crate::client::Pool;
use crate::front::{self, Backends, Front, Settings};
use crate::serve;

/// How much longer than a dashboard's deadline the example waits for one of its own
/// requests before it gives up on it (a failed check).
pub const MARGIN: Duration = Duration::from_secs(5);

/// The running backends, and what every dashboard is started with.
pub struct Rig<'a> {
    pub ex: &'a Arc<smol::Executor<'static>>,
    pub args: &'a Args,
    pub profile: SocketAddr,
    pub orders: SocketAddr,
    pub recs: SocketAddr,
}

impl Rig<'_> {
    /// Pools to these three backends.
    pub fn pools(&self, profile: SocketAddr, orders: SocketAddr, recs: SocketAddr) -> Backends {
        let pool = |addr| Arc::new(Pool::new(addr, self.ex.clone()));
        Backends {
            profile: pool(profile),
            orders: pool(orders),
            recs: pool(recs),
        }
    }

    /// Pools to the usual backends.
    pub fn backends(&self) -> Backends {
        self.pools(self.profile, self.orders, self.recs)
    }

    /// The settings from the command line.
    pub fn settings(&self, hedge: Option<Hedge>) -> Settings {
        Settings {
            deadline: self.args.deadline,
            hedge,
            recs_timeout: self.args.recs_timeout,
            header_timeout: serve::HEADER_TIMEOUT,
        }
    }

    /// How long the example waits for a dashboard with the usual deadline.
    pub fn limit(&self) -> Duration {
        self.args.deadline + MARGIN
    }

    /// Starts a dashboard on `127.0.0.1:port` (0: any free port).
    ///
    /// # Errors
    ///
    /// "cannot listen on 127.0.0.1:{port}: " and the bind's error.
    pub async fn front(
        &self,
        port: u16,
        backends: Backends,
        settings: Settings,
    ) -> Result<Front, String> {
        front::start(self.ex, port, backends, settings)
            .await
            .map_err(|err| listen_error(port, &err))
    }
}

/// What the example says when it cannot listen on `port`.
pub fn listen_error(port: u16, err: &std::io::Error) -> String {
    format!("cannot listen on 127.0.0.1:{port}: {err}")
}
