//! Rows as the database holds them, and their mapping to the core's records.

use super::*;

#[derive(sqlx::FromRow)]
pub(super) struct AgentRow {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) version: String,
    pub(super) commit_sha: Option<String>,
    pub(super) protocol_version: i64,
    pub(super) arch: String,
    pub(super) docker_version: String,
    pub(super) last_seen: Option<Ts>,
    pub(super) connection: String,
    pub(super) upgrade: Json<UpgradeState>,
}

impl AgentRow {
    pub(super) fn into_record(self) -> Result<AgentRecord, StoreError> {
        let connection = match self.connection.as_str() {
            "connected" => ConnectionState::Connected,
            "disconnected" => ConnectionState::Disconnected,
            other => {
                return Err(corrupt(format!(
                    "agent {}: unknown connection state {other:?}",
                    self.id
                )));
            }
        };
        Ok(AgentRecord {
            protocol_version: u32::try_from(self.protocol_version).map_err(|_| {
                corrupt(format!(
                    "agent {}: protocol version {} out of range",
                    self.id, self.protocol_version
                ))
            })?,
            id: HostId(self.id),
            name: self.name,
            version: self.version,
            commit: self.commit_sha,
            arch: self.arch,
            docker_version: self.docker_version,
            last_seen: self.last_seen.map(|t| t.0),
            connection,
            upgrade: self.upgrade.0,
        })
    }
}

pub(super) fn connection_text(c: ConnectionState) -> &'static str {
    match c {
        ConnectionState::Connected => "connected",
        ConnectionState::Disconnected => "disconnected",
    }
}

pub(super) fn kind_text(k: TokenKind) -> &'static str {
    match k {
        TokenKind::Enrollment => "enrollment",
        TokenKind::Api => "api",
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct TokenRow {
    pub(super) hash: String,
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) created_at: Ts,
    pub(super) expires_at: Option<Ts>,
    pub(super) one_time: bool,
    pub(super) used_at: Option<Ts>,
    pub(super) scope: Option<String>,
}

impl TokenRow {
    pub(super) fn into_record(self) -> Result<TokenRecord, StoreError> {
        let kind = match self.kind.as_str() {
            "enrollment" => TokenKind::Enrollment,
            "api" => TokenKind::Api,
            other => return Err(corrupt(format!("token: unknown kind {other:?}"))),
        };
        let scope = match self.scope.as_deref().map(str::parse::<Scope>) {
            Some(Ok(scope)) => scope,
            Some(Err(e)) => return Err(corrupt(format!("token {:?}: {e}", self.name))),
            None => return Err(corrupt(format!("token {:?} has no scope", self.name))),
        };
        Ok(TokenRecord {
            hash: self.hash,
            kind,
            name: self.name,
            created_at: self.created_at.0,
            expires_at: self.expires_at.map(|t| t.0),
            one_time: self.one_time,
            used_at: self.used_at.map(|t| t.0),
            scope,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct StackRow {
    pub(super) name: String,
    pub(super) compose: String,
    pub(super) env: Option<String>,
    pub(super) host: Option<String>,
    pub(super) updated_at: Ts,
}

impl StackRow {
    pub(super) fn into_record(self) -> StackRecord {
        StackRecord {
            name: self.name,
            compose: self.compose,
            env: self.env,
            host: self.host.map(HostId),
            updated_at: self.updated_at.0,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ReleaseRow {
    pub(super) stack: String,
    pub(super) rev: i64,
    pub(super) at: Ts,
    pub(super) host: String,
    pub(super) compose: String,
    pub(super) env: Option<String>,
    pub(super) images: Json<BTreeMap<String, String>>,
    pub(super) outcome: String,
    pub(super) detail: Option<String>,
    pub(super) from_rev: Option<i64>,
    pub(super) actor: String,
}

pub(super) fn outcome_name(o: ReleaseOutcome) -> &'static str {
    match o {
        ReleaseOutcome::Deployed => "deployed",
        ReleaseOutcome::RolledBack => "rolled_back",
        ReleaseOutcome::Failed => "failed",
    }
}

impl ReleaseRow {
    pub(super) fn into_record(self) -> Result<ReleaseRecord, StoreError> {
        let outcome = match self.outcome.as_str() {
            "deployed" => ReleaseOutcome::Deployed,
            "rolled_back" => ReleaseOutcome::RolledBack,
            "failed" => ReleaseOutcome::Failed,
            other => {
                return Err(corrupt(format!(
                    "release {} of stack {} has an unknown outcome {other:?}",
                    self.rev, self.stack
                )));
            }
        };
        let rev = |v: i64| {
            u64::try_from(v).map_err(|_| {
                corrupt(format!(
                    "release of stack {} has a negative revision {v}",
                    self.stack
                ))
            })
        };
        Ok(ReleaseRecord {
            rev: rev(self.rev)?,
            from_rev: self.from_rev.map(rev).transpose()?,
            stack: self.stack.clone(),
            at: self.at.0,
            host: HostId(self.host),
            compose: self.compose,
            env: self.env,
            images: self.images.0,
            outcome,
            detail: self.detail,
            actor: self.actor,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct DeployRow {
    pub(super) id: i64,
    pub(super) stack: String,
    pub(super) at: Ts,
    pub(super) host: String,
    pub(super) action: String,
    pub(super) actor: String,
}

#[derive(sqlx::FromRow)]
pub(super) struct MigrationRow {
    pub(super) id: uuid::Uuid,
    pub(super) stack: String,
    pub(super) source: String,
    pub(super) target: String,
    pub(super) requested_at: Ts,
    pub(super) requested_by: String,
    pub(super) retention: String,
}

impl MigrationRow {
    pub(super) fn into_spec(self) -> Result<MigrationSpec, StoreError> {
        let retention = SignedDuration::from_str(&self.retention).map_err(|e| {
            corrupt(format!(
                "migration {}: retention {:?}: {e}",
                self.id, self.retention
            ))
        })?;
        Ok(MigrationSpec {
            id: MigrationId(self.id),
            stack: self.stack,
            source: HostId(self.source),
            target: HostId(self.target),
            requested_at: self.requested_at.0,
            requested_by: self.requested_by,
            retention,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    pub(super) body: Json<MigrationEvent>,
}

#[derive(sqlx::FromRow)]
pub(super) struct DrainRow {
    pub(super) id: uuid::Uuid,
    pub(super) created_at: Ts,
    pub(super) plan: Json<DrainPlan>,
    pub(super) migrations: Json<Vec<MigrationId>>,
    pub(super) state: Option<Json<DrainProgress>>,
}

/// The execution state of a drain, kept in `drain_states` (absent: never executed, running).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct DrainProgress {
    #[serde(default)]
    pub(super) state: DrainState,
    #[serde(default)]
    pub(super) acknowledged: Vec<MigrationId>,
}

impl DrainRow {
    pub(super) fn into_record(self) -> DrainRecord {
        let progress = self.state.map(|j| j.0).unwrap_or_default();
        DrainRecord {
            id: self.id,
            created_at: self.created_at.0,
            plan: self.plan.0,
            migrations: self.migrations.0,
            state: progress.state,
            acknowledged: progress.acknowledged,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    pub(super) seq: i64,
    pub(super) at: Ts,
    pub(super) actor: String,
    pub(super) action: String,
    pub(super) target: String,
    pub(super) detail: Json<BTreeMap<String, String>>,
    pub(super) prev_hash: String,
    pub(super) hash: String,
}

impl AuditRow {
    pub(crate) fn into_entry(self) -> Result<AuditEntry, StoreError> {
        Ok(AuditEntry {
            seq: u64::try_from(self.seq)
                .map_err(|_| corrupt(format!("audit entry with sequence number {}", self.seq)))?,
            event: AuditEvent {
                at: self.at.0,
                actor: self.actor,
                action: self.action,
                target: self.target,
                detail: self.detail.0,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

pub(crate) const AUDIT_COLUMNS: &str = "seq, at, actor, action, target, detail, prev_hash, hash";
pub(super) const AGENT_COLUMNS: &str = "SELECT id, name, version, commit_sha, protocol_version, arch, docker_version, last_seen, connection, upgrade FROM agents";
pub(super) const TOKEN_COLUMNS: &str = "SELECT hash, kind, name, created_at, expires_at, one_time, used_at, \
     scope FROM tokens LEFT JOIN token_scopes USING (hash)";
pub(super) const MIGRATION_COLUMNS: &str =
    "SELECT id, stack, source, target, requested_at, requested_by, retention FROM migrations";
