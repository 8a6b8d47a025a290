//! The reference server: the operations users ask for ([`ops`]), which the REST API ([`api`])
//! and the web dashboard ([`web`]) both call, on the API listener ([`serve()`], HTTPS by
//! [`tls`]), API-token authentication ([`auth`], [`scope`], [`limit`]), the migration
//! supervisor ([`supervisor`]), drains ([`drains`]), stack upgrades ([`stack_upgrade`]), host
//! policies ([`host_policy`]), health and metrics ([`metrics`]).
//!
//! Hosts: the registry of runtimes ([`hosts`]), what hosts report as it happens ([`events`]:
//! each host's event stream held open, its recent events kept), and their cached snapshots
//! ([`snapshots`]).
//!
//! Agents: the listener that accepts their connections ([`agent_listener`]), the registry that
//! admits them ([`agents`]), certificate renewal ([`renew`]), and the rollout evaluator that
//! sends them upgrade orders with signed binaries ([`rollout`]).

pub mod agent_listener;
pub mod agents;
pub mod api;
pub mod auth;
pub mod drains;
pub mod error;
pub mod events;
pub mod host_policy;
pub mod hosts;
pub mod limit;
pub mod metrics;
pub mod ops;
pub mod rates;
pub mod renew;
pub mod rollout;
pub mod scope;
pub mod serve;
pub mod snapshots;
pub mod stack_upgrade;
pub mod state;
pub mod supervisor;
pub mod tls;
pub mod web;

pub use agent_listener::{AcceptError, AgentAcceptor, AgentGate, AgentListener};
pub use hosts::Hosts;
pub use serve::{ServeError, serve, serve_with};
pub use state::{Lifecycle, ServerConfig, ServerState};
