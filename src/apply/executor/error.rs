//! Why a step of an apply (or a node's creation or freeing) failed: [`StepError`]. Each variant
//! names the service, instance, node or account it is about; its text is what the apply's
//! summary prints after the service's name.

use crate::apply::journal::JournalError;
use crate::apply::readiness::ReadinessError;
use crate::provider::ProviderError;

/// What a step of the executor returns: `T` when it did its part, else why not.
pub type StepResult<T = ()> = Result<T, StepError>;

/// Why a step, or a node's creation or freeing, failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    /// The journal could not be written: the apply must not go on (see [`JournalError`]).
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// No provider was made for an account a node is in (a bug: the executor makes one for
    /// every account the state or the plan names).
    #[error("no provider for account `{account}`")]
    NoProvider {
        /// The account.
        account: String,
    },
    /// The state has nodes in an account enact.json no longer defines.
    #[error(
        "the state has nodes in account `{account}`, which enact.json no longer defines; restore the account to apply"
    )]
    AccountGone {
        /// The account.
        account: String,
    },
    /// The provider of an account could not be made (an ssh account without keys, an ec2
    /// account this build does not run).
    #[error("account `{account}`: {source}")]
    Account {
        /// The account.
        account: String,
        /// Why, and what to do.
        #[source]
        source: ProviderError,
    },
    /// An instance is placed on a node that was not created (its creation failed).
    #[error("node `{node}` for instance {instance} was not created")]
    NodeMissing {
        /// The node id.
        node: String,
        /// The instance id.
        instance: String,
    },
    /// A service's package could not be found on this machine; the reason names its
    /// `packageUri` and what to fix.
    #[error("{source}")]
    Package {
        /// The service.
        service: String,
        /// Why, and what to do.
        source: std::sync::Arc<crate::provider::package::PackageError>,
    },
    /// The provider could not start an instance.
    #[error("instance {instance}: {source}")]
    Start {
        /// The instance id.
        instance: String,
        /// Why, and what to do.
        #[source]
        source: ProviderError,
    },
    /// A started instance never passed its health or readiness check within its timeout; it was
    /// stopped, its log stays. `output` is the end of its log, when it wrote anything.
    #[error("{}{}", unready_text(instance, check), output_text(output))]
    Unready {
        /// The instance id.
        instance: String,
        /// The check it failed.
        check: Check,
        /// Its last lines of output (empty when none).
        output: String,
    },
    /// The provider could not stop an instance.
    #[error("{source}")]
    Stop {
        /// The instance id.
        instance: String,
        /// Why, and what to do.
        #[source]
        source: ProviderError,
    },
    /// A consumer could not be told a list (`setInvocationAddress`), after its retries.
    #[error("cannot wire {consumer}: {source}")]
    Wire {
        /// The consumer instance's `nativeUri` (or a legacy service's URI).
        consumer: String,
        /// Why.
        source: crate::provider::wire::WireError,
    },
    /// The provider could not create a batch of nodes.
    #[error("account `{account}`: cannot create {count} node(s): {source}")]
    NodeCreate {
        /// The account.
        account: String,
        /// How many nodes the batch had.
        count: usize,
        /// Why, and what to do.
        #[source]
        source: ProviderError,
    },
    /// The provider could not free a node.
    #[error("{source}")]
    Destroy {
        /// The node id.
        node: String,
        /// Why, and what to do.
        #[source]
        source: ProviderError,
    },
    /// A node the plan leaves empty could not be freed: it stays in the state, and the next
    /// apply tries again.
    #[error("node `{node}`: cannot free it: {cause}")]
    NodeFree {
        /// The node id.
        node: String,
        /// Why.
        cause: Box<StepError>,
    },
    /// The intents to free nodes could not be journaled: none was freed.
    #[error("cannot free {count} node(s): {cause}")]
    FreeIntents {
        /// How many nodes were to be freed.
        count: usize,
        /// Why.
        cause: JournalError,
    },
    /// Several instances or consumers of one step failed: each error, in order (printed joined
    /// by `; `).
    #[error("{}", join(.0))]
    Several(Vec<StepError>),
    /// A thread of the step panicked (a bug): `what` is the thread (`an instance's thread`,
    /// `wiring`).
    #[error("{what} panicked")]
    Panicked {
        /// Which thread.
        what: &'static str,
    },
    /// The step itself panicked (a bug): the journal holds what it did.
    #[error(
        "enact hit a bug in this step ({message}); the journal holds what it did: run `enact apply` again, and please report it"
    )]
    Bug {
        /// The panic's message.
        message: String,
    },
    /// The step never started: the apply was asked to stop (Ctrl-C). What depends on it is
    /// skipped too; running the command again finishes it.
    #[error("not started: enact was interrupted")]
    Interrupted,
}

/// Which check a new instance failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Check {
    /// The provider's health check: the port never accepted connections, or the process exited.
    #[error("{0}")]
    Health(ProviderError),
    /// The `readiness` setting's check (an HTTP check and `minReadyMs`).
    #[error("{0}")]
    Readiness(ReadinessError),
}

impl StepError {
    /// One error for a list of them: none, the one, or [`StepError::Several`].
    pub fn from_all(mut errors: Vec<StepError>) -> StepResult {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(StepError::Several(errors)),
        }
    }
}

/// The readiness failure names the instance; a provider's health error already does.
fn unready_text(instance: &str, check: &Check) -> String {
    match check {
        Check::Health(e) => e.to_string(),
        Check::Readiness(e) => format!("instance {instance}: {e}"),
    }
}

/// The end of an instance's log, indented under its error; nothing when it wrote nothing.
fn output_text(output: &str) -> String {
    if output.trim().is_empty() {
        String::new()
    } else {
        format!("\n  last output:\n    {}", output.replace('\n', "\n    "))
    }
}

/// The errors' texts joined by `; `.
fn join(errors: &[StepError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_those_the_summary_prints() {
        let unready = StepError::Unready {
            instance: "web-1".into(),
            check: Check::Readiness(ReadinessError::Exited { instance: "web-1".into() }),
            output: "boom\nbang".into(),
        };
        assert_eq!(
            unready.to_string(),
            "instance web-1: web-1 exited before it was ready\n  last output:\n    boom\n    bang"
        );
        let both = StepError::from_all(vec![
            StepError::Start { instance: "a-1".into(), source: ProviderError::new("no such file") },
            StepError::Wire {
                consumer: "http://h:1/b".into(),
                source: crate::provider::wire::WireError::Unanswered {
                    consumer: "http://h:1/b".into(),
                    role: "r".into(),
                    provider: "b".into(),
                    url: "http://h:1/b/setInvocationAddress".into(),
                    tries: 3,
                    reason: "refused".into(),
                },
            },
        ])
        .unwrap_err();
        assert!(matches!(&both, StepError::Several(errors) if errors.len() == 2));
        assert_eq!(
            both.to_string(),
            "instance a-1: no such file; cannot wire http://h:1/b: setInvocationAddress(r, b) failed after 3 tries: \
             http://h:1/b/setInvocationAddress: refused"
        );
        let one = StepError::from_all(vec![StepError::Interrupted]).unwrap_err();
        assert!(matches!(one, StepError::Interrupted));
        assert!(StepError::from_all(Vec::new()).is_ok());
    }
}
