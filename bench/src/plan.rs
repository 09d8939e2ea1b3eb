//! Who connects where: the links of a run, their roles, topics and client ids, and
//! which thread drives each. Pure data, built from a [`Config`] before any socket.

use std::ops::Range;

use crate::flags::{Config, Scenario, SessionKind};
use crate::link::Endpoint;

/// What one link does in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Publishes stamped messages on `topic` as publisher `index`.
    Publisher { index: u32, topic: String },
    /// Subscribes to `filter` during set-up; its arrivals count for `sink`, from the
    /// publishers in `publishers`.
    Subscriber {
        sink: u32,
        filter: String,
        publishers: Range<u32>,
    },
    /// Publishes the retained topics before the subscribers start, and clears them at
    /// the end.
    RetainedPublisher { topics: u32 },
    /// Subscribes to `filter` at the start and waits for every retained topic.
    RetainedSubscriber { sink: u32, filter: String },
    /// Connects, and stays connected until the run ends (connect storm).
    Storm { index: u32 },
}

/// One connection of the run.
#[derive(Clone, Debug)]
pub struct LinkPlan {
    pub role: Role,
    pub client_id: String,
    pub endpoint: Endpoint,
}

/// Where a sink's messages come from: the loss count compares what it received with
/// what those publishers sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkPlan {
    pub sink: u32,
    pub publishers: Range<u32>,
}

/// The whole run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub run_id: String,
    /// `<prefix>/<run id>/`: every topic of the run starts with it.
    pub topic_root: String,
    /// Links per generator thread.
    pub threads: Vec<Vec<LinkPlan>>,
    pub sinks: Vec<SinkPlan>,
    /// How many sinks receive each message: the drain waits for sent x this.
    pub copies_per_message: u64,
}

impl Plan {
    pub fn new(config: &Config, run_id: &str) -> Plan {
        let root = format!("{}/{}/", config.topic_prefix, run_id);
        let mut builder = Builder {
            config,
            threads: vec![Vec::new(); config.threads.max(1)],
            next_link: 0,
            run_id,
        };
        let p = config.publishers as u32;
        let s = config.subscribers as u32;
        let scenario = config.scenario.name();
        let mut sinks = Vec::new();
        let copies = match config.scenario {
            Scenario::Pairs => {
                for i in 0..p {
                    let topic = format!("{root}{scenario}/{i}");
                    builder.add(
                        i,
                        's',
                        i,
                        Role::Subscriber {
                            sink: i,
                            filter: topic.clone(),
                            publishers: i..i + 1,
                        },
                    );
                    builder.add(i, 'p', i, Role::Publisher { index: i, topic });
                    sinks.push(SinkPlan {
                        sink: i,
                        publishers: i..i + 1,
                    });
                }
                1
            }
            Scenario::FanIn | Scenario::FanOut | Scenario::Shared => {
                let (filter, shared) = match config.scenario {
                    Scenario::FanOut => (format!("{root}{scenario}"), false),
                    Scenario::Shared => {
                        (format!("$share/{}/{root}{scenario}/+", config.group), true)
                    }
                    _ => (format!("{root}{scenario}/+"), false),
                };
                for j in 0..s {
                    let sink = if shared { 0 } else { j };
                    builder.add(
                        j,
                        's',
                        j,
                        Role::Subscriber {
                            sink,
                            filter: filter.clone(),
                            publishers: 0..p,
                        },
                    );
                    if j == 0 || !shared {
                        sinks.push(SinkPlan {
                            sink,
                            publishers: 0..p,
                        });
                    }
                }
                for i in 0..p {
                    let topic = match config.scenario {
                        Scenario::FanOut => format!("{root}{scenario}"),
                        _ => format!("{root}{scenario}/{i}"),
                    };
                    builder.add(i, 'p', i, Role::Publisher { index: i, topic });
                }
                if shared {
                    1
                } else {
                    u64::from(s)
                }
            }
            Scenario::Connect => {
                for i in 0..config.connections as u32 {
                    builder.add(i, 'c', i, Role::Storm { index: i });
                }
                0
            }
            Scenario::Retained => {
                builder.add(
                    0,
                    'p',
                    0,
                    Role::RetainedPublisher {
                        topics: config.topics as u32,
                    },
                );
                for j in 0..s {
                    builder.add(
                        j,
                        's',
                        j,
                        Role::RetainedSubscriber {
                            sink: j,
                            filter: format!("{root}{scenario}/#"),
                        },
                    );
                    sinks.push(SinkPlan {
                        sink: j,
                        publishers: 0..1,
                    });
                }
                u64::from(s)
            }
        };
        Plan {
            run_id: run_id.to_string(),
            topic_root: root,
            threads: builder.threads,
            sinks,
            copies_per_message: copies,
        }
    }

    /// Topic of retained topic `i`.
    pub fn retained_topic(&self, i: u32) -> String {
        format!("{}retained/{i}", self.topic_root)
    }
}

struct Builder<'a> {
    config: &'a Config,
    threads: Vec<Vec<LinkPlan>>,
    next_link: usize,
    run_id: &'a str,
}

impl Builder<'_> {
    /// Adds a link: `spread` picks its thread (so publisher i and subscriber i of a
    /// pair share one), the link's position picks its host and source address.
    fn add(&mut self, spread: u32, kind: char, index: u32, role: Role) {
        let c = self.config;
        let n = self.next_link;
        self.next_link += 1;
        let endpoint = Endpoint {
            host: c
                .hosts
                .get(n % c.hosts.len().max(1))
                .copied()
                .unwrap_or(([127, 0, 0, 1], 1883).into()),
            source: c.source_addrs.get(n % c.source_addrs.len().max(1)).copied(),
        };
        // Persistent sessions keep their client ids from run to run; clean ones get
        // the run id so two runs never take over each other's sessions.
        let client_id = match c.session {
            SessionKind::Persistent => format!("rb-{}-{kind}{index}", c.scenario.name()),
            SessionKind::Clean => format!("rb{}{kind}{index}", self.run_id),
        };
        let thread = spread as usize % self.threads.len().max(1);
        if let Some(list) = self.threads.get_mut(thread) {
            list.push(LinkPlan {
                role,
                client_id,
                endpoint,
            });
        }
    }
}

/// A short id, unique enough to keep concurrent and successive runs apart.
pub fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(16)
        });
    format!(
        "{:06x}",
        (nanos ^ std::process::id().rotate_left(8)) & 0xFF_FFFF
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::flags::Cli;
    use clap::Parser;

    fn plan(args: &str) -> Plan {
        let argv = std::iter::once("ringmq-bench").chain(args.split_whitespace());
        let config = Cli::try_parse_from(argv)
            .unwrap()
            .scenario
            .validate()
            .unwrap();
        Plan::new(&config, "abc123")
    }

    fn roles(plan: &Plan) -> Vec<&Role> {
        plan.threads.iter().flatten().map(|l| &l.role).collect()
    }

    #[test]
    fn pairs_share_a_thread_and_own_a_topic() {
        let plan = plan("pairs --pairs 3 --threads 2");
        assert_eq!(plan.threads[0].len(), 4);
        assert_eq!(plan.threads[1].len(), 2);
        assert_eq!(
            plan.threads[1][1].role,
            Role::Publisher {
                index: 1,
                topic: "bench/abc123/pairs/1".into()
            }
        );
        assert_eq!(plan.sinks.len(), 3);
        assert_eq!(plan.copies_per_message, 1);
    }

    #[test]
    fn shared_subscribers_form_one_sink() {
        let plan = plan("shared --publishers 2 --subscribers 3 --group g");
        assert_eq!(
            plan.sinks,
            vec![SinkPlan {
                sink: 0,
                publishers: 0..2
            }]
        );
        assert_eq!(plan.copies_per_message, 1);
        assert!(roles(&plan).iter().any(|r| matches!(r,
            Role::Subscriber { filter, .. } if filter == "$share/g/bench/abc123/shared/+")));
    }

    #[test]
    fn fan_out_delivers_one_copy_per_subscriber() {
        let plan = plan("fan-out --subscribers 5");
        assert_eq!(plan.copies_per_message, 5);
        assert_eq!(plan.sinks.len(), 5);
    }

    #[test]
    fn links_are_spread_over_hosts_and_sources() {
        let plan = plan("connect --connections 4 --host 127.0.0.1:1 --host 127.0.0.1:2 --source-addrs 127.0.0.2,127.0.0.3,127.0.0.4");
        let links: Vec<_> = plan.threads.iter().flatten().collect();
        let ports: Vec<u16> = links.iter().map(|l| l.endpoint.host.port()).collect();
        assert_eq!(ports, vec![1, 2, 1, 2]);
        let last = links[3].endpoint.source.unwrap();
        assert_eq!(last, "127.0.0.2".parse::<std::net::IpAddr>().unwrap());
    }

    #[test]
    fn persistent_client_ids_are_stable_across_runs() {
        let a = plan("pairs --pairs 1 --persistent");
        assert_eq!(a.threads[0][0].client_id, "rb-pairs-s0");
        let b = plan("pairs --pairs 1");
        assert_eq!(b.threads[0][0].client_id, "rbabc123s0");
    }

    #[test]
    fn run_ids_are_short_hex() {
        let id = new_run_id();
        assert_eq!(id.len(), 6);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
