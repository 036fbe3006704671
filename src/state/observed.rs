//! What enact saw of the recorded instances when it looked (a refresh): the input `plan` and
//! `apply` take beside the spec and the state, and what `status` shows. Providers produce it;
//! the planner only reads it, so planning stays a pure function of its inputs.
//!
//! Plain data: depends on nothing else of enact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a recorded instance is not healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DownReason {
    /// Its process no longer runs (or its pid now belongs to another process).
    ProcessGone,
    /// The process runs but its port accepts no connection.
    PortClosed,
    /// Its node could not be reached (connection refused, timed out, no route).
    HostUnreachable,
    /// The SSH host presented a different key than the one recorded.
    HostKeyChanged,
    /// The SSH host presented a key that is not recorded at all.
    HostKeyUnknown,
    /// The SSH host refused enact's key.
    AuthRefused,
    /// Anything else the provider could not tell apart.
    Unknown,
}

impl DownReason {
    /// The reason in words, for plans and `status`.
    pub fn describe(self) -> &'static str {
        match self {
            DownReason::ProcessGone => "process gone",
            DownReason::PortClosed => "port closed",
            DownReason::HostUnreachable => "host unreachable",
            DownReason::HostKeyChanged => "SSH host key changed",
            DownReason::HostKeyUnknown => "SSH host key unknown",
            DownReason::AuthRefused => "authentication refused",
            DownReason::Unknown => "unknown",
        }
    }

    /// Whether a new instance would fix it: the instance itself is gone or broken. When the
    /// node cannot be reached or trusted, enact cannot know, and replacing would only pile up
    /// instances it cannot stop; the operator decides.
    pub fn replaceable(self) -> bool {
        matches!(self, DownReason::ProcessGone | DownReason::PortClosed)
    }
}

/// What was seen of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "health", rename_all = "camelCase")]
pub enum Health {
    /// It runs and its port accepts connections.
    Healthy,
    /// It does not serve.
    Down {
        /// Why.
        reason: DownReason,
        /// The provider's own words (an error message), empty when there is nothing to add.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
    },
}

impl Health {
    /// [`Health::Down`] for `reason`, with the provider's `detail`.
    pub fn down(reason: DownReason, detail: impl Into<String>) -> Health {
        Health::Down { reason, detail: detail.into() }
    }

    /// Whether it is [`Health::Healthy`].
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

/// Health by instance id, for every recorded instance that was looked at.
pub type Observations = BTreeMap<String, Health>;
