//! Operations on a recorded environment outside a plan: `enact pause` and `enact resume`, in a
//! session of their own ([`Executor::begin`], then the operations, then [`Executor::finish`]).

use super::{Executor, Report, StepError, StepResult};
use crate::apply::journal::Record;
use crate::plan::placement::PlacedInstance;
use crate::state::{AppliedSpec, ServiceState};

impl Executor<'_> {
    /// Ends a session of operations outside a plan: the journal flushed, the live state, and
    /// `failed` (the services whose operation failed, each with why).
    pub fn finish(self, failed: Vec<(String, StepError)>) -> Report {
        let mut report = Report::of(self.take_state());
        if let Err(e) = self.journal.flush() {
            report.node_errors.push(e.into());
        }
        report.failed = failed;
        report.warnings = self.take_warnings();
        report
    }

    /// Records the start of an operation outside a plan (`command` names it in the journal).
    ///
    /// # Errors
    /// The journal cannot be written.
    pub fn begin(&self, command: &str) -> StepResult {
        let (lineage, serial) = {
            let live = self.live();
            (live.lineage.clone(), live.serial)
        };
        self.record(Record::Begin { lineage, serial, command: command.to_string() })
    }

    /// `enact pause`: takes the service's instances out of every consumer's list, then stops
    /// them; they stay in the state, paused.
    ///
    /// # Errors
    /// A consumer cannot be told, an instance cannot be stopped, or the journal cannot be
    /// written.
    pub fn pause(&self, service: &str) -> StepResult {
        {
            let live = self.live();
            self.index_consumers(&live, service);
            self.wiring.capture(&live, service);
        }
        let ids = self.instance_ids(service);
        self.push_leaving(service, &ids)?;
        for id in &ids {
            self.stop_instance_keeping(service, id)?;
        }
        self.record(Record::Paused { service: service.to_string(), paused: true })
    }

    /// `enact resume`: starts the paused instances again where they were, wires them and
    /// announces them.
    ///
    /// # Errors
    /// An instance cannot be started or never gets healthy, a consumer cannot be told, or the
    /// journal cannot be written.
    pub fn resume(&self, service: &str) -> StepResult {
        {
            let live = self.live();
            self.index_consumers(&live, service);
            self.wiring.capture(&live, service);
        }
        let (spec, instances) = {
            let live = self.live();
            match live.services.get(service).map(|s| (&*s.spec, s)) {
                Some((AppliedSpec::Deployable(spec), ServiceState { instances, .. })) => {
                    (spec.clone(), instances.clone())
                }
                _ => return Ok(()),
            }
        };
        let mut fresh = Vec::new();
        for instance in &instances {
            let placed = PlacedInstance {
                service: service.to_string(),
                id: instance.id.clone(),
                node: instance.node.clone(),
                after_stopping: None,
            };
            fresh.push(self.start_instance(service, &spec, &placed)?.id);
        }
        self.record(Record::Paused { service: service.to_string(), paused: false })?;
        self.wire_instances(service, &fresh)?;
        self.push(service)
    }

    /// Stops an instance but keeps it in the state (paused).
    fn stop_instance_keeping(&self, name: &str, id: &str) -> StepResult {
        let Some((instance, node)) = self.instance_on_node(name, id) else {
            return Ok(());
        };
        let provider = self.provider_of_node(&node)?;
        self.stop_process(provider, name, &instance, &node)
    }
}
