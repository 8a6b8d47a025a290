//! Why a stack's files cannot be deployed.

use super::interpolate::{EnvFileError, InterpolationError};

/// Why a stack's files cannot be deployed. Nothing has been changed on the engine when this is
/// returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComposeError {
    /// `compose.yaml` is not valid YAML.
    #[error("compose.yaml is not valid YAML: {message}")]
    Yaml {
        /// The parser's message.
        message: String,
    },
    /// `.env` or an `env_file` is malformed.
    #[error(transparent)]
    EnvFile(#[from] EnvFileError),
    /// An `env_file` could not be read.
    #[error("service `{service}`: env_file {path} cannot be read")]
    EnvFileRead {
        /// The service.
        service: String,
        /// The file, as resolved.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Interpolation failed at a place in the file.
    #[error("{location} cannot be interpolated")]
    Interpolation {
        /// Where (`services.web.environment.PASSWORD`).
        location: String,
        /// What failed.
        #[source]
        source: InterpolationError,
    },
    /// A key dockmesh does not support.
    #[error(
        "{location} uses `{key}`, which dockmesh does not support (supported here: {supported})"
    )]
    UnsupportedKey {
        /// Where (`service `web``, `top level`, `volume `data``).
        location: String,
        /// The key.
        key: String,
        /// The keys supported at that place.
        supported: String,
    },
    /// A service wants to be built; there are no builds here.
    #[error("service `{service}` uses `build`, which dockmesh does not support")]
    Build {
        /// The service.
        service: String,
    },
    /// Several of the problems above, every one the file has.
    #[error("the compose file has {} problems", problems.len())]
    Several {
        /// Each problem, in file order.
        problems: Vec<ComposeError>,
    },
    /// A value is invalid, or something refers to what does not exist.
    #[error("{location}: {message}")]
    Invalid {
        /// Where.
        location: String,
        /// What is wrong.
        message: String,
    },
}

impl ComposeError {
    /// What to do about it, when there is more to say than what happened.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ComposeError::Build { .. } => Some(
                "Images are never built or pulled here: build the image elsewhere, load it on \
                 the host (`docker load`) and name it with `image:`.",
            ),
            ComposeError::UnsupportedKey { .. } => {
                Some("Remove the key, or deploy this stack with `docker compose` instead.")
            }
            _ => None,
        }
    }

    /// The whole story for a person: what happened, each underlying cause (`: …`), and the
    /// hint.
    pub fn report(&self) -> String {
        if let ComposeError::Several { problems } = self {
            let mut out = format!("{self}:");
            for (i, p) in problems.iter().enumerate() {
                out.push_str(&format!("\n  {}. {}", i + 1, p.report()));
            }
            return out;
        }
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        if let Some(hint) = self.hint() {
            out.push_str(". ");
            out.push_str(hint);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_do_not_repeat_their_source_and_advice_is_a_hint() {
        let io = std::io::Error::other("permission denied");
        let e = ComposeError::EnvFileRead {
            service: "web".into(),
            path: "/s/web.env".into(),
            source: io,
        };
        assert!(!e.to_string().contains("permission denied"), "{e}");
        assert!(
            e.report().ends_with(": permission denied"),
            "{}",
            e.report()
        );
        let e = ComposeError::Interpolation {
            location: "services.web.image".into(),
            source: InterpolationError::TooDeep { limit: 32 },
        };
        assert!(!e.to_string().contains("32"), "{e}");
        assert!(e.report().contains("limit of 32 levels"), "{}", e.report());
        let e = ComposeError::EnvFile(EnvFileError {
            file: ".env".into(),
            line: 3,
            reason: "no `=`".into(),
        });
        assert_eq!(e.to_string(), ".env line 3: no `=`");
        assert!(std::error::Error::source(&e).is_none(), "transparent");
        let e = ComposeError::Build {
            service: "web".into(),
        };
        assert!(!e.to_string().contains("docker load"), "{e}");
        assert!(e.hint().unwrap().contains("docker load"));
        assert!(e.report().contains("docker load"));
    }
}
