//! SIGHUP: read the configuration again (file, environment, the flags given at
//! start) and apply what can change while the broker runs: the log filter, the
//! limits (for connections and sessions that start afterwards), the admin token,
//! the password file and ACL (for every client from now on) and the listeners'
//! certificates (for connections accepted afterwards).
//! An invalid configuration changes nothing: the one in force stays, and a warning
//! says why.

use std::sync::Arc;

use anyhow::Context;
use ringmq_admin::AdminServer;
use ringmq_shard::{BrokerHandle, ListenerConfig, Security};
use tracing::{info, warn};

use crate::access;
use crate::config::{self, Applies, ConfigError, Settings};
use crate::logging::LogFilter;

/// Reads the configuration layers again.
pub type Load = Box<dyn Fn() -> Result<Settings, ConfigError> + Send>;

/// The running broker a reload changes.
pub struct Running {
    pub handle: BrokerHandle,
    pub security: Arc<Security>,
    pub listeners: Vec<ListenerConfig>,
}

/// What a reload reads and what it changes.
pub struct Reloader {
    load: Load,
    /// The settings the broker started with: keys that need a restart keep these.
    started: Settings,
    /// The settings last applied.
    current: Settings,
    running: Running,
    log_filter: LogFilter,
    admin: Option<Arc<AdminServer>>,
}

impl Reloader {
    pub fn new(
        load: Load,
        settings: Settings,
        running: Running,
        log_filter: LogFilter,
        admin: Option<Arc<AdminServer>>,
    ) -> Reloader {
        Reloader {
            load,
            started: settings.clone(),
            current: settings,
            running,
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
        // The files behind the settings may have changed even where the settings
        // did not: the password file, the ACL and the certificates are read
        // every time, and all of them must load before anything changes.
        if let Err(error) = self.apply(&new) {
            warn!(error = %format!("{error:#}"), "configuration not reloaded, the one in force stays");
            return;
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
        let rules = access::rules(new)?;
        // Checked before anything changes; applied after the rest succeeded.
        access::tls_configs(&self.started)?;
        let mut limits = new.limits();
        // The rings were sized at start; saying otherwise would mislead.
        limits.ring_capacity = self.started.ring_capacity;
        let handle = &self.running.handle;
        futures_lite::future::block_on(handle.reload_limits(limits.clone()))
            .context("the shards did not take the new limits")?;
        futures_lite::future::block_on(handle.reload_security(&self.running.security, rules))
            .context("the shards did not take the new security rules")?;
        access::reload_tls(&self.started, &self.running.listeners)?;
        self.log_filter.set(&new.log)?;
        if let Some(admin) = &self.admin {
            admin.set_token(Some(new.admin.token.clone()).filter(|t| !t.is_empty()));
            admin.set_limits(limits);
        }
        Ok(())
    }
}
