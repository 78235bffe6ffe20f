//! The etcd key layout, written once. Every key is `<prefix><kind>/<name>`; the prefix
//! defaults to `/ludus/<cluster name>/`. Nothing outside this file builds or splits a
//! key by hand.
//!
//! | key | value | lives under |
//! | --- | --- | --- |
//! | `nodes/<node>` | [`NodeInfo`](super::NodeInfo) (JSON) | the node's lease |
//! | `sessions/<player>` | the node id holding the session | the node's lease |
//! | `rooms/<room>` | [`RoomEntry`](super::RoomEntry) (JSON) | the owner's lease |
//! | `games/<game>` | [`GameEntry`](super::GameEntry) (JSON) | no lease |
//! | `modules/<sha256>/<node>` | empty: `node` holds the module's bytes | the node's lease |
//! | `status/<node>/<game>` | [`GameStatus`](super::GameStatus) (JSON) | the node's lease |
//! | `config/<setting>` | [`SettingEntry`](super::SettingEntry) (JSON) | no lease |
//! | `<election>/<lease>` | a candidate's node id (etcd's election API) | the candidate's lease |

/// A key of the layout, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Node(String),
    Session(u64),
    Room(String),
    Game(String),
    /// `node` holds the bytes of module `sha256`.
    Module {
        sha256: String,
        node: String,
    },
    /// What `node` runs of `game`.
    Status {
        node: String,
        game: String,
    },
    /// A live host setting (`log.level`, `rooms.checkpoint_interval`, ...).
    Setting(String),
    /// A candidate in the election `name` (the oldest one leads).
    Candidate {
        election: String,
    },
}

/// The elections the cluster holds (see [`Cluster::campaign`](super::Cluster::campaign)).
pub const MATCHMAKER: &str = "matchmaker";
const ELECTIONS: &[&str] = &[MATCHMAKER];

impl Key {
    /// The full key under `prefix`.
    pub fn under(&self, prefix: &str) -> String {
        match self {
            Key::Node(node) => format!("{prefix}nodes/{node}"),
            Key::Session(player) => format!("{prefix}sessions/{player}"),
            Key::Room(room) => format!("{prefix}rooms/{room}"),
            Key::Game(game) => format!("{prefix}games/{game}"),
            Key::Module { sha256, node } => format!("{prefix}modules/{sha256}/{node}"),
            Key::Status { node, game } => format!("{prefix}status/{node}/{game}"),
            Key::Setting(name) => format!("{prefix}config/{name}"),
            Key::Candidate { election } => election_name(prefix, election),
        }
    }

    /// The key `key` read under `prefix`; `None` for a key outside the layout.
    pub fn parse(prefix: &str, key: &[u8]) -> Option<Key> {
        let rest = std::str::from_utf8(key.strip_prefix(prefix.as_bytes())?).ok()?;
        let (kind, name) = rest.split_once('/')?;
        let pair = || {
            name.split_once('/')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        };
        Some(match kind {
            "nodes" => Key::Node(name.to_owned()),
            "sessions" => Key::Session(name.parse().ok()?),
            "rooms" => Key::Room(name.to_owned()),
            "games" => Key::Game(name.to_owned()),
            "config" => Key::Setting(name.to_owned()),
            "modules" => {
                let (sha256, node) = pair()?;
                Key::Module { sha256, node }
            }
            "status" => {
                let (node, game) = pair()?;
                Key::Status { node, game }
            }
            election if ELECTIONS.contains(&election) => Key::Candidate {
                election: election.to_owned(),
            },
            _ => return None,
        })
    }
}

/// The etcd election `name` (its candidates' keys are `<this>/<lease>`).
pub fn election_name(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// The first 12 hex digits of a sha256, as messages show it.
pub fn short_sha(sha: &str) -> &str {
    prefix(sha, 12)
}

/// The first `n` characters of `s` (all of it if shorter); never splits a character.
pub fn prefix(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_shas_of_short_or_non_ascii_input_do_not_panic() {
        assert_eq!(short_sha("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_sha("abc"), "abc");
        assert_eq!(short_sha(""), "");
        assert_eq!(short_sha("ééééééééééééééé"), "éééééééééééé");
        assert_eq!(prefix("日本語", 2), "日本");
    }

    #[test]
    fn every_key_reads_back_as_itself() {
        let p = "/ludus/t/";
        let keys = [
            Key::Node("a".into()),
            Key::Session(42),
            Key::Room("r-1:x".into()),
            Key::Game("arena".into()),
            Key::Setting("log.level".into()),
            Key::Module {
                sha256: "ab".repeat(32),
                node: "n1".into(),
            },
            Key::Status {
                node: "n1".into(),
                game: "arena".into(),
            },
        ];
        for key in keys {
            let text = key.under(p);
            assert_eq!(Key::parse(p, text.as_bytes()), Some(key), "{text}");
        }
        let candidate = format!("{}/694d7b0a1c2d3e4f", election_name(p, MATCHMAKER));
        assert_eq!(
            Key::parse(p, candidate.as_bytes()),
            Some(Key::Candidate {
                election: MATCHMAKER.into()
            })
        );
    }

    #[test]
    fn keys_outside_the_layout_are_none() {
        let p = "/ludus/t/";
        for bad in [
            "/ludus/other/nodes/a",
            "/ludus/t/nodes",
            "/ludus/t/sessions/not-a-number",
            "/ludus/t/modules/only-sha",
            "/ludus/t/unknown/x",
        ] {
            assert_eq!(Key::parse(p, bad.as_bytes()), None, "{bad}");
        }
    }
}
