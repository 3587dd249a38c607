//! Where log records go (the global `log` logger, or one set per [`FailFast`](crate::FailFast)),
//! and how a group's records are built: fixed keys, then the fields given to the group.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::kv::{self, Key, Value};
use log::{Level, Log};

use crate::sync::lock;

/// Every record of the crate has this target.
pub(crate) const TARGET: &str = "failfast";

/// The logger of one [`FailFast`](crate::FailFast): the global logger unless the builder was
/// given one.
///
/// Records still pass `log::max_level()` first, like every `log` macro call.
#[derive(Clone, Default)]
pub(crate) enum Logger {
    #[default]
    Global,
    Custom(Arc<dyn Log>),
}

impl Logger {
    fn get(&self) -> &dyn Log {
        match self {
            Logger::Global => log::logger(),
            Logger::Custom(logger) => &**logger,
        }
    }

    /// Whether a record at `level` would be written: the same checks a `log` macro makes.
    pub(crate) fn enabled(&self, level: Level) -> bool {
        level <= log::STATIC_MAX_LEVEL
            && level <= log::max_level()
            && self
                .get()
                .enabled(&log::Metadata::builder().level(level).target(TARGET).build())
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

/// A value of a field given to a group with [`Group::log_field`](crate::Group::log_field).
pub(crate) type FieldValue = Box<dyn fmt::Display + Send + Sync>;

/// The records of one group: its logger, its id and the fields it was given.
pub(crate) struct Records {
    logger: Logger,
    group_id: u64,
    fields: Mutex<Vec<(&'static str, FieldValue)>>,
}

impl Records {
    pub(crate) fn new(logger: Logger, group_id: u64) -> Records {
        Records {
            logger,
            group_id,
            fields: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn add_field(&self, key: &'static str, value: FieldValue) {
        lock(&self.fields).push((key, value));
    }

    pub(crate) fn enabled(&self, level: Level) -> bool {
        self.logger.enabled(level)
    }

    /// Writes one record: `group_id`, then `keys`, then the group's fields. Callers check
    /// [`enabled`](Records::enabled) first when building `keys` costs anything.
    pub(crate) fn write(&self, level: Level, message: &str, keys: &[(&str, Value<'_>)]) {
        if !self.enabled(level) {
            return;
        }
        let fields = lock(&self.fields);
        let source = Source {
            group_id: self.group_id,
            keys,
            fields: &fields,
        };
        self.logger.get().log(
            &log::Record::builder()
                .level(level)
                .target(TARGET)
                .module_path_static(Some(module_path!()))
                .args(format_args!("{message}"))
                .key_values(&source)
                .build(),
        );
    }
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("logger", &self.logger)
            .field("group_id", &self.group_id)
            .finish_non_exhaustive()
    }
}

struct Source<'a> {
    group_id: u64,
    keys: &'a [(&'a str, Value<'a>)],
    fields: &'a [(&'static str, FieldValue)],
}

impl kv::Source for Source<'_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn kv::VisitSource<'kvs>) -> Result<(), kv::Error> {
        visitor.visit_pair(Key::from_str("group_id"), Value::from(self.group_id))?;
        for (key, value) in self.keys {
            visitor.visit_pair(Key::from_str(key), value.clone())?;
        }
        for (key, value) in self.fields {
            visitor.visit_pair(Key::from_str(key), Value::from_dyn_display(&**value))?;
        }
        Ok(())
    }
}

/// Any error and its sources, as `outer: inner: ...`, for a log record.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Milliseconds, saturating, for a log record.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
