//! The load-test plan: who connects where, with which token.
//!
//! Owns the plan file (JSON, read by the native tool and by the k6 scripts:
//! `{"url_base", "run", "conversations":[{"id", "members":[{"user_id",
//! "token"}]}]}`) and provisioning: `prepare` creates fresh users (names
//! unique per run: `<prefix>_<run>_<conversation>_<member>`) and
//! conversations in the gateway's store through the store's own admin API,
//! and mints their tokens with the gateway's secret.
//!
//! Must never: reuse existing users (a plan's users belong to it alone), or
//! mint tokens with a secret other than the one the gateway resolves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::BenchError;
use chatgate::auth::mint_token;
use chatgate::config::JwtConfig;
use chatgate::store::postgres::Admin as PgAdmin;
use chatgate::store::sqlite::Admin as SqliteAdmin;
use chatgate::store::{ConversationId, StoreError, UserId};

/// A provisioned load test.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    /// Where the gateway was expected to listen (`ws://host:port`).
    pub url_base: String,
    /// The random id of the `prepare` run (part of every username).
    #[serde(default)]
    pub run: String,
    pub conversations: Vec<PlanConversation>,
}

/// One conversation and its members.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanConversation {
    pub id: ConversationId,
    pub members: Vec<PlanMember>,
}

/// One member: a fresh user and its access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanMember {
    pub user_id: UserId,
    pub token: String,
}

impl Plan {
    /// Reads a plan file.
    pub fn load(path: &Path) -> Result<Plan, BenchError> {
        let bytes = std::fs::read(path).map_err(|source| BenchError::PlanFile {
            path: path.to_owned(),
            source,
        })?;
        let plan: Plan =
            serde_json::from_slice(&bytes).map_err(|source| BenchError::PlanFormat {
                path: path.to_owned(),
                source,
            })?;
        if plan.conversations.iter().all(|c| c.members.is_empty()) {
            return Err(BenchError::Invalid(format!(
                "plan {} has no members",
                path.display()
            )));
        }
        Ok(plan)
    }

    /// Writes the plan file (compact JSON, one trailing newline).
    pub fn save(&self, path: &Path) -> Result<(), BenchError> {
        let mut bytes = serde_json::to_vec(self).expect("a plan serializes");
        bytes.push(b'\n');
        std::fs::write(path, bytes).map_err(|source| BenchError::PlanFile {
            path: path.to_owned(),
            source,
        })
    }

    /// Members over all conversations.
    pub fn member_count(&self) -> usize {
        self.conversations.iter().map(|c| c.members.len()).sum()
    }

    /// The first `conversations` conversations with their first `members`
    /// members each (`None`: all).
    pub fn subset(&self, conversations: Option<usize>, members: Option<usize>) -> Plan {
        let convs = self
            .conversations
            .iter()
            .take(conversations.unwrap_or(usize::MAX))
            .map(|c| PlanConversation {
                id: c.id,
                members: c
                    .members
                    .iter()
                    .take(members.unwrap_or(usize::MAX))
                    .cloned()
                    .collect(),
            })
            .collect();
        Plan {
            url_base: self.url_base.clone(),
            run: self.run.clone(),
            conversations: convs,
        }
    }
}

/// Which store to provision.
#[derive(Clone, Debug)]
pub enum StoreTarget {
    /// The embedded SQLite file the gateway is started with (`--database`).
    Sqlite(PathBuf),
    /// The Postgres database (`--database-url`).
    Postgres(String),
}

/// What `prepare` creates.
#[derive(Clone, Debug)]
pub struct PrepareSpec {
    pub conversations: usize,
    pub members: usize,
    /// Username prefix.
    pub prefix: String,
    /// Token lifetime.
    pub ttl: Duration,
    /// Written into the plan as `url_base`.
    pub url_base: String,
}

/// The store operations provisioning needs, over either backend.
enum Provisioner {
    Sqlite(SqliteAdmin),
    Postgres(PgAdmin),
}

impl Provisioner {
    fn open(target: &StoreTarget) -> Result<Self, StoreError> {
        match target {
            StoreTarget::Sqlite(path) => SqliteAdmin::open(path).map(Self::Sqlite),
            StoreTarget::Postgres(url) => PgAdmin::connect(url).map(Self::Postgres),
        }
    }

    /// Runs a transaction-control statement (`BEGIN`, `COMMIT`, `ROLLBACK`).
    fn control(&self, sql: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(a) => a
                .connection()
                .execute_batch(sql)
                .map_err(|e| StoreError::Database(e.to_string())),
            Self::Postgres(a) => a
                .block_on(a.client().batch_execute(sql))
                .map_err(|e| StoreError::Database(e.to_string())),
        }
    }

    fn create_user(&self, username: &str) -> Result<UserId, StoreError> {
        match self {
            Self::Sqlite(a) => a.create_user(username, "Load", "Test"),
            Self::Postgres(a) => a.create_user(username, "Load", "Test"),
        }
    }

    fn create_conversation(&self, members: &[UserId]) -> Result<ConversationId, StoreError> {
        match self {
            Self::Sqlite(a) => a.create_conversation(members),
            Self::Postgres(a) => a.create_conversation(members),
        }
    }

    /// Creates all users in one transaction (one commit, not one per user).
    fn create_users(&self, names: &[String]) -> Result<Vec<UserId>, StoreError> {
        self.control("BEGIN")?;
        let created: Result<Vec<UserId>, StoreError> =
            names.iter().map(|n| self.create_user(n)).collect();
        match created {
            Ok(ids) => {
                self.control("COMMIT")?;
                Ok(ids)
            }
            Err(e) => {
                let _ = self.control("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// Creates the users and conversations of `spec` and returns the plan.
pub fn prepare(
    target: &StoreTarget,
    jwt: &JwtConfig,
    spec: &PrepareSpec,
) -> Result<Plan, BenchError> {
    if spec.conversations == 0 || spec.members == 0 {
        return Err(BenchError::Invalid(
            "--conversations and --members must be at least 1".into(),
        ));
    }
    let store = Provisioner::open(target)?;
    let run = run_id();
    let names: Vec<String> = (0..spec.conversations)
        .flat_map(|c| (0..spec.members).map(move |m| (c, m)))
        .map(|(c, m)| format!("{}_{run}_{c}_{m}", spec.prefix))
        .collect();
    let ids = store.create_users(&names)?;
    let mut conversations = Vec::with_capacity(spec.conversations);
    for members in ids.chunks(spec.members) {
        let id = store.create_conversation(members)?;
        let members = members
            .iter()
            .map(|&user_id| PlanMember {
                user_id,
                token: mint_token(jwt, user_id, spec.ttl),
            })
            .collect();
        conversations.push(PlanConversation { id, members });
    }
    Ok(Plan {
        url_base: spec.url_base.clone(),
        run,
        conversations,
    })
}

/// Eight random hex digits.
fn run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatgate::auth::Verifier;

    #[test]
    fn prepare_creates_fresh_members_with_valid_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("p.db");
        let jwt = JwtConfig::new("s");
        let spec = PrepareSpec {
            conversations: 3,
            members: 4,
            prefix: "lt".into(),
            ttl: Duration::from_secs(60),
            url_base: "ws://127.0.0.1:1".into(),
        };
        let target = StoreTarget::Sqlite(db.clone());
        let a = prepare(&target, &jwt, &spec).unwrap();
        let b = prepare(&target, &jwt, &spec).unwrap();
        assert_eq!(a.conversations.len(), 3);
        assert_eq!(a.member_count(), 12);
        assert_ne!(a.run, b.run);
        let v = Verifier::new(&jwt);
        for c in &a.conversations {
            for m in &c.members {
                assert_eq!(v.verify(Some(&m.token)).unwrap().user_id, m.user_id);
            }
        }
        let admin = SqliteAdmin::open(&db).unwrap();
        assert_eq!(admin.user_count().unwrap(), 24);
        let path = dir.path().join("plan.json");
        a.save(&path).unwrap();
        assert_eq!(Plan::load(&path).unwrap(), a);
        let s = a.subset(Some(2), Some(1));
        assert_eq!(s.member_count(), 2);
    }
}
