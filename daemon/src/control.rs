//! Requests that operators send to a running daemon (MQTT commands, SIGHUP), and their answers.
//! `status/` turns MQTT messages into [`Request`]s; `supervisor` carries them out.

use serde::Deserialize;
use tokio::sync::oneshot;

/// One operator command, as JSON on `{prefix}/{device}/cmd`, e.g.
/// `{"command": "pause", "camera": "street", "id": "42"}`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub enum Command {
    /// Stop a camera's pipeline until `resume` (or a restart).
    Pause {
        camera: String,
        #[serde(default)]
        id: Option<String>,
    },
    Resume {
        camera: String,
        #[serde(default)]
        id: Option<String>,
    },
    /// Re-read the configuration file, as SIGHUP does.
    Reload {
        #[serde(default)]
        id: Option<String>,
    },
    /// Flush the outbox to disk and wake the syncer (it sends what it may at once, instead of
    /// at its next poll).
    Flush {
        #[serde(default)]
        id: Option<String>,
    },
    /// List the semantic triggers with their matches so far.
    Triggers {
        #[serde(default)]
        id: Option<String>,
    },
}

impl Command {
    pub fn id(&self) -> Option<&str> {
        match self {
            Command::Pause { id, .. }
            | Command::Resume { id, .. }
            | Command::Reload { id }
            | Command::Flush { id }
            | Command::Triggers { id } => id.as_deref(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::Pause { .. } => "pause",
            Command::Resume { .. } => "resume",
            Command::Reload { .. } => "reload",
            Command::Flush { .. } => "flush",
            Command::Triggers { .. } => "triggers",
        }
    }
}

/// A command and where its answer goes: `Ok(message)` (a sentence, or for `triggers` a list)
/// or `Err(reason)`.
pub struct Request {
    pub command: Command,
    pub reply: oneshot::Sender<Result<serde_json::Value, String>>,
}

/// Parses a command payload; the error names what is wrong, for the result topic.
pub fn parse(payload: &[u8]) -> Result<Command, String> {
    serde_json::from_slice(payload).map_err(|e| {
        format!("not a command ({e}); send JSON such as {{\"command\": \"pause\", \"camera\": \"street\"}}; commands: pause, resume, reload, flush, triggers")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_from_json() {
        assert_eq!(parse(br#"{"command":"pause","camera":"street"}"#), Ok(Command::Pause { camera: "street".into(), id: None }));
        assert_eq!(parse(br#"{"command":"reload","id":"7"}"#).map(|c| c.id().map(str::to_owned)), Ok(Some("7".into())));
    }

    #[test]
    fn malformed_and_unknown_commands_are_explained() {
        for bad in [&b"nonsense"[..], br#"{"command":"explode"}"#, br#"{"command":"pause"}"#, br#"{"command":"flush","extra":1}"#] {
            let err = parse(bad).expect_err("rejected");
            assert!(err.contains("commands: pause, resume, reload, flush, triggers"), "{err}");
        }
    }
}
