//! SIGHUP: read the configuration again (file, environment, the flags given at
//! start) and apply what can change while the broker runs: the log filter, the
//! limits (for connections and sessions that start afterwards), the admin token.
//! An invalid configuration changes nothing: the one in force stays, and a warning
//! says why.

use std::sync::Arc;

use anyhow::Context;
use ringmq_admin::AdminServer;
use ringmq_shard::BrokerHandle;
use tracing::{info, warn};

use crate::config::{self, Applies, ConfigError, Settings};
use crate::logging::LogFilter;

/// Reads the configuration layers again.
pub type Load = Box<dyn Fn() -> Result<Settings, ConfigError> + Send>;

/// What a reload reads and what it changes.
pub struct Reloader {
    load: Load,
    /// The settings the broker started with: keys that need a restart keep these.
    started: Settings,
    /// The settings last applied.
    current: Settings,
    handle: BrokerHandle,
    log_filter: LogFilter,
    admin: Option<Arc<AdminServer>>,
}

impl Reloader {
    pub fn new(
        load: Load,
        settings: Settings,
        handle: BrokerHandle,
        log_filter: LogFilter,
        admin: Option<Arc<AdminServer>>,
    ) -> Reloader {
        Reloader {
            load,
            started: settings.clone(),
            current: settings,
            handle,
            log_filter,
            admin,
        }
    }

    pub fn reload(&mut self) {
        info!("SIGHUP: reading the configuration again");
        let new = match (self.load)() {
            Ok(new) => new,
            Err(error) => {
                warn!(%error, "configuration not reloaded, the one in force stays");
                return;
            }
        };
        let changes = config::changes(&self.current, &new);
        if changes
            .iter()
            .any(|c| config::applies(&c.key) == Applies::Now)
        {
            if let Err(error) = self.apply(&new) {
                warn!(error = %format!("{error:#}"), "configuration not reloaded, the one in force stays");
                return;
            }
        }
        for change in &changes {
            info!(
                key = %change.key,
                old = %change.old,
                new = %change.new,
                applies = %config::applies(&change.key),
                "setting changed"
            );
        }
        let pending: Vec<String> = config::changes(&self.started, &new)
            .into_iter()
            .filter(|c| config::applies(&c.key) == Applies::AfterRestart)
            .map(|c| c.key)
            .collect();
        if !pending.is_empty() {
            warn!(keys = %pending.join(","), "settings changed that need a restart to take effect");
        }
        info!(changed = changes.len(), "configuration reloaded");
        self.current = new;
    }

    fn apply(&self, new: &Settings) -> anyhow::Result<()> {
        let mut limits = new.limits();
        // The rings were sized at start; saying otherwise would mislead.
        limits.ring_capacity = self.started.ring_capacity;
        futures_lite::future::block_on(self.handle.reload_limits(limits.clone()))
            .context("the shards did not take the new limits")?;
        self.log_filter.set(&new.log)?;
        if let Some(admin) = &self.admin {
            admin.set_token(Some(new.admin.token.clone()).filter(|t| !t.is_empty()));
            admin.set_limits(limits);
        }
        Ok(())
    }
}
