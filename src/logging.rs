//! Logs to stderr, as text or JSON, through a filter a reload can replace.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{LogFormat, Settings};

/// Changes the log filter of the running process.
#[derive(Clone, Debug)]
pub struct LogFilter(reload::Handle<EnvFilter, Registry>);

impl LogFilter {
    /// Replaces the filter (a level or directives such as `info,ringmq_shard=debug`).
    pub fn set(&self, directives: &str) -> anyhow::Result<()> {
        let filter = parse(directives)?;
        self.0
            .reload(filter)
            .context("cannot replace the log filter")
    }
}

fn parse(directives: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(directives)
        .with_context(|| format!("log = {directives:?}: not a log level or filter"))
}

/// Installs the process's logger; the filter it returns changes what passes.
pub fn init(settings: &Settings) -> anyhow::Result<LogFilter> {
    let (filter, handle) = reload::Layer::new(parse(&settings.log)?);
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Text => registry
            .with(layer.with_ansi(std::io::stderr().is_terminal()))
            .try_init(),
        LogFormat::Json => registry.with(layer.json()).try_init(),
    }
    .context("cannot install the logger")?;
    Ok(LogFilter(handle))
}
