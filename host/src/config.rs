//! The node's configuration: one TOML file, every key overridable by a `LUDUS_*`
//! environment variable (nested keys joined by `__`, e.g.
//! `LUDUS_GATEWAY__GRACE_PERIOD=10s`) and by flags. The defaults work on one machine
//! with nothing else installed.

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use crate::cluster::ClusterConfig;
use crate::gateway::GatewayConfig;
use crate::gateway::auth::AuthConfig;
use crate::matchmaking::MatchmakingConfig;
pub use crate::rollout::GameConfig;
use crate::rooms::RoomsConfig;
#[cfg(test)]
use crate::rooms::SwapPolicy;
use crate::runtime::RuntimeLimits;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP/WebSocket gateway.
    pub listen: SocketAddr,
    pub auth: AuthConfig,
    pub gateway: GatewayConfig,
    pub runtime: RuntimeLimits,
    pub rooms: RoomsConfig,
    /// Cluster membership (etcd); none configured: a single node.
    pub cluster: ClusterConfig,
    /// Games served by this node, by name.
    pub games: BTreeMap<String, GameConfig>,
    /// Room sizes and waits for matches, per game.
    pub matchmaking: MatchmakingConfig,
    /// Where the node keeps its files (the SQLite database unless `storage.url` names
    /// another).
    pub data_dir: std::path::PathBuf,
    /// The database: SQLite in `data_dir` by default, PostgreSQL for a cluster.
    pub storage: crate::storage::StorageConfig,
    /// Leaderboards every node defines at start, by id.
    pub leaderboards: BTreeMap<String, crate::storage::Leaderboard>,
    /// The admin port: health, readiness, metrics and the admin API.
    pub admin: crate::server::admin::AdminConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7350)),
            auth: AuthConfig::default(),
            gateway: GatewayConfig::default(),
            runtime: RuntimeLimits::default(),
            rooms: RoomsConfig::default(),
            cluster: ClusterConfig::default(),
            games: BTreeMap::new(),
            matchmaking: MatchmakingConfig::default(),
            data_dir: "ludus-data".into(),
            storage: crate::storage::StorageConfig::default(),
            leaderboards: BTreeMap::new(),
            admin: Default::default(),
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (if any), then `LUDUS_*` variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            anyhow::ensure!(
                file.exists(),
                "config file {} does not exist",
                file.display()
            );
            figment = figment.merge(Toml::file(file));
        }
        // Only variables naming a setting are read: LUDUS_LOG is the log filter, and
        // tools and Kubernetes set others (LUDUS_PORT, LUDUS_SERVICE_HOST for a Service
        // named ludus) that must not stop a node.
        let env = Env::prefixed("LUDUS_").split("__").filter(|key| {
            let setting = is_setting(key.as_str());
            if !setting {
                tracing::debug!(
                    "LUDUS_{} names no setting: ignored",
                    key.as_str().to_uppercase()
                );
            }
            setting
        });
        figment = figment.merge(env);
        figment
            .extract()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| match file {
                Some(f) => format!(
                    "reading the configuration ({} and LUDUS_* variables)",
                    f.display()
                ),
                None => "reading the configuration (LUDUS_* variables)".to_owned(),
            })
    }
}

impl Config {
    /// Settings that are each valid but do not fit together.
    pub fn check(&self) -> anyhow::Result<()> {
        self.matchmaking.check()?;
        let (frame, message) = (self.gateway.max_frame_bytes, self.runtime.max_message_bytes);
        anyhow::ensure!(
            frame <= message,
            "gateway.max_frame_bytes ({frame}) must not exceed runtime.max_message_bytes \
             ({message}): a player's frame may cross a node link as one message"
        );
        anyhow::ensure!(
            self.runtime.max_message_bytes <= 64 << 20,
            "runtime.max_message_bytes must be at most 64 MiB (what WebSocket clients take by default)"
        );
        Ok(())
    }
}

/// Whether an environment key (`gateway.grace_period` for
/// `LUDUS_GATEWAY__GRACE_PERIOD`) is under one of the config's top-level keys.
fn is_setting(key: &str) -> bool {
    let top = key.split('.').next().unwrap_or_default();
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(keys)) => keys.keys().any(|k| k.eq_ignore_ascii_case(top)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_variables_naming_a_setting_are_read() {
        for key in [
            "gateway.grace_period",
            "LISTEN",
            "cluster.etcd",
            "games.arena.module",
        ] {
            assert!(super::is_setting(key), "{key}");
        }
        for key in ["port", "service_host", "port_7350_tcp_addr", "log"] {
            assert!(!super::is_setting(key), "{key}");
        }
    }

    use super::*;

    /// The configuration reference in README.md is a valid config.
    #[test]
    fn the_readme_config_reference_parses() {
        let readme = include_str!("../../README.md");
        let start =
            readme.find("```toml\n").expect("a toml block in README.md") + "```toml\n".len();
        let block = &readme[start..start + readme[start..].find("```").unwrap()];
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(block))
            .extract()
            .unwrap_or_else(|e| panic!("README config: {e}"));
        assert_eq!(
            config.gateway.grace_period,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(config.games["arena"].policy, SwapPolicy::AllRooms);
        assert_eq!(config.matchmaking.rules("arena").max_players, 8);
        assert_eq!(config.matchmaking.rules("chess").min_players, 2);
        config
            .matchmaking
            .check()
            .expect("the README's rules are valid");
    }

    #[test]
    fn a_frame_limit_over_the_message_limit_is_refused_with_both_names() {
        let mut config = Config::default();
        config.check().expect("the defaults fit together");
        config.gateway.max_frame_bytes = config.runtime.max_message_bytes + 1;
        let err = config.check().unwrap_err().to_string();
        assert!(
            err.contains("gateway.max_frame_bytes") && err.contains("runtime.max_message_bytes"),
            "{err}"
        );
    }

    #[test]
    fn etcd_endpoints_are_a_list_or_one_comma_separated_string() {
        for toml in [
            "[cluster]\netcd = \"http://a:2379, http://b:2379\"\n",
            "[cluster]\netcd = [\"http://a:2379\", \"http://b:2379\"]\n",
        ] {
            let config: Config = Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::string(toml))
                .extract()
                .unwrap_or_else(|e| panic!("{toml}: {e}"));
            assert_eq!(config.cluster.etcd, ["http://a:2379", "http://b:2379"]);
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[gateway]\ngrace = \"1s\"\n"))
            .extract::<Config>()
            .unwrap_err();
        assert!(err.to_string().contains("grace"), "{err}");
    }
}
