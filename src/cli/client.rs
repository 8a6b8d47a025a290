//! The CLI's HTTP client of the server's API: where the server is, the token, JSON output,
//! and errors printed as the server words them.

use clap::Args;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::process::ExitCode;

/// How to reach the server.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// The server's API address.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "DOCKMESH_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// An API token (`dockmesh token create` makes one).
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "DOCKMESH_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Trust an `https` server whose certificate its CA issued, the CA named by the SHA-256
    /// fingerprint the server prints at start (`ca_fingerprint`).
    #[arg(
        long,
        global = true,
        value_name = "SHA256",
        env = "DOCKMESH_CA_FINGERPRINT"
    )]
    pub ca_fingerprint: Option<String>,
    /// Trust an `https` server by the CA certificates in this PEM file (its names checked).
    /// Without it or `--ca-fingerprint`, the system's trust store.
    #[arg(
        long,
        global = true,
        value_name = "PEM",
        env = "DOCKMESH_CA_FILE",
        conflicts_with = "ca_fingerprint"
    )]
    pub ca_file: Option<std::path::PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{error}")]
    Api {
        /// The status.
        status: StatusCode,
        /// The server's message.
        error: String,
        /// The server's code.
        code: String,
        /// Advice.
        hint: Option<String>,
        /// Details (a pre-flight report).
        details: Option<Value>,
    },
    /// The server could not be reached or answered something unreadable.
    #[error("{0}")]
    Transport(String),
}

impl ClientError {
    /// 1 for a refusal (4xx), 2 for everything else.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ClientError::Api { status, .. } if status.is_client_error() => ExitCode::from(1),
            _ => ExitCode::from(2),
        }
    }

    /// Print it to stderr and return its exit code.
    pub fn report(&self) -> ExitCode {
        eprintln!("error: {self}");
        if let ClientError::Api { hint: Some(h), .. } = self {
            eprintln!("hint: {h}");
        }
        self.exit_code()
    }
}

/// A client of one server.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// Print JSON.
    pub json: bool,
}

impl Client {
    /// A client for `conn`.
    pub fn new(conn: &Conn) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(120));
        let tls = super::tls::client_tls(conn.ca_fingerprint.as_deref(), conn.ca_file.as_deref())
            .map_err(|e| ClientError::Transport(format!("{e}; {}", e.hint())))?;
        if let Some(config) = tls {
            builder = builder.tls_backend_preconfigured(config);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Transport(format!("building the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: conn.server.trim_end_matches('/').to_owned(),
            token: conn.token.clone(),
            json: conn.json,
        })
    }

    /// Send a request; the JSON answer on success (`null` for an empty one).
    pub async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Value, ClientError> {
        self.send_within(method, path, body, None).await
    }

    /// [`Client::send`] for a request that may take longer than the default timeout (an
    /// upgrade waits for health, and for a rollback when the release fails).
    pub async fn send_within<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Option<std::time::Duration>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            ClientError::Transport(format!(
                "cannot reach the dockmesh server at {}: {} (is `dockmesh server` running? set --server or DOCKMESH_SERVER{})",
                self.base,
                error_chain(&e),
                if self.base.starts_with("https://") {
                    "; trust its CA with --ca-fingerprint or --ca-file"
                } else {
                    "; a server on a non-loopback address speaks https://"
                }
            ))
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            ClientError::Transport(format!("reading the answer to {method} {path}: {e}"))
        })?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(value);
        }
        let field = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
        Err(ClientError::Api {
            status,
            error: field("error").unwrap_or_else(|| format!("{method} {path} answered {status}")),
            code: field("code").unwrap_or_default(),
            hint: field("hint"),
            details: value.get("details").cloned(),
        })
    }

    /// `GET path`, decoded.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        decode(self.send::<()>(Method::GET, path, None).await?)
    }

    /// `POST path` with a JSON body, decoded.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        decode(self.send(Method::POST, path, Some(body)).await?)
    }
}

/// An error and its causes, joined (a TLS refusal is only in the causes).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

/// Decode an answer into `T`.
pub fn decode<T: DeserializeOwned>(v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v)
        .map_err(|e| ClientError::Transport(format!("the server's answer is not understood: {e}")))
}

/// Print `v` as pretty JSON.
pub fn print_json<T: Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("a value serializes")
    );
}

/// Print rows as aligned columns under a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    for l in table_lines(header, rows) {
        println!("{l}");
    }
}

/// Rows as aligned columns under a header, one string per line.
pub fn table_lines(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out
}

/// Human bytes (binary units).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Run an async CLI body on a fresh runtime; its error is reported.
pub fn block_on(f: impl std::future::Future<Output = Result<ExitCode, ClientError>>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => match rt.block_on(f) {
            Ok(code) => code,
            Err(e) => e.report(),
        },
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}

/// Encode a path segment.
pub fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_segments() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        assert_eq!(seg("shop_db-1.x"), "shop_db-1.x");
    }
}
