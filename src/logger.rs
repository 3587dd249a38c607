//! Where log records go: the global `log` logger, or one set per aggregator.

use std::fmt;
use std::sync::Arc;

/// The logger of one aggregator: the global logger unless the builder was given one.
///
/// Records still pass `log::max_level()` first, like every `log` macro call.
#[derive(Clone, Default)]
pub(crate) enum Logger {
    #[default]
    Global,
    Custom(Arc<dyn log::Log>),
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        match self {
            Logger::Global => log::logger().enabled(metadata),
            Logger::Custom(logger) => logger.enabled(metadata),
        }
    }

    fn log(&self, record: &log::Record<'_>) {
        match self {
            Logger::Global => log::logger().log(record),
            Logger::Custom(logger) => logger.log(record),
        }
    }

    fn flush(&self) {
        match self {
            Logger::Global => log::logger().flush(),
            Logger::Custom(logger) => logger.flush(),
        }
    }
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Logger::Global => "Global",
            Logger::Custom(_) => "Custom",
        })
    }
}
