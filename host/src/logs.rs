//! The process's log output: lines on stderr, as text or as one JSON object per line
//! (`--log-format json`, `LUDUS_LOG_FORMAT=json`), through a filter (`LUDUS_LOG`, e.g.
//! `warn,ludus=debug`) that can change while the process runs: the live setting
//! `log.level`.

use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the spans (room, session) the line was written in.
    Json,
}

struct Installed {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The filter the process started with.
    start: String,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Installs the process's subscriber: `LUDUS_LOG` if set and valid, else `default`.
/// Once per process; later calls do nothing.
pub fn init(default: &str, format: Format) {
    let start = match std::env::var("LUDUS_LOG") {
        Ok(f) if EnvFilter::try_new(&f).is_ok() => f,
        Ok(f) => {
            eprintln!("LUDUS_LOG `{f}` is not a log filter; using `{default}`");
            default.to_owned()
        }
        Err(_) => default.to_owned(),
    };
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&start));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        Format::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        Format::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if installed.is_ok() {
        let _ = INSTALLED.set(Installed { handle, start });
    }
}

/// Checks a filter without applying it; the error says what is wrong.
pub fn check_filter(filter: &str) -> Result<(), String> {
    EnvFilter::try_new(filter).map(|_| ()).map_err(|e| {
        format!("`{filter}` is not a log filter (e.g. `info`, `warn,ludus=debug`): {e}")
    })
}

/// Applies `filter` to every log line from now on; `None`: the filter the process
/// started with. Fails on an invalid filter (nothing changes) or when this process's
/// logging was not installed by [`init`].
pub fn set_filter(filter: Option<&str>) -> Result<(), String> {
    let installed = INSTALLED
        .get()
        .ok_or("this process's logging cannot change live (not installed by ludus)")?;
    let filter = filter.unwrap_or(&installed.start);
    check_filter(filter)?;
    installed
        .handle
        .reload(EnvFilter::new(filter))
        .map_err(|e| format!("changing the log filter: {e}"))
}

/// The filter the process started with (`None` when [`init`] did not run).
pub fn start_filter() -> Option<String> {
    INSTALLED.get().map(|i| i.start.clone())
}
