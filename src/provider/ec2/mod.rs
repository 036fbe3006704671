//! The ec2 provider: nodes are EC2 instances made with `RunInstances`, one call for all the
//! nodes of one instance type in a step ([`batch`]), tagged with the environment's lineage, its
//! name, the account and the nodes' ids ([`nodes`]); instances run on them over SSH, exactly as
//! on an ssh account's hosts (the node's address, the account's `user` and `privateKey`). A
//! node's host key is learnt on first contact (enact made the node) and refused if it changes.
//!
//! The EC2 API is reached through [`api::AwsEc2`]: `aws-sdk-ec2`, credentials from the standard
//! AWS chain, the account's `endpoint` when set (an emulator), a client-side rate limit and
//! retries with backoff on throttling and capacity answers.

pub mod api;
pub mod batch;
pub mod nodes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::{ApiOptions, AwsEc2, Ec2Api};
use nodes::{AddressKind, NodeTemplate};

use super::ssh::{SshOptions, SshProvider};
use super::wire::{WireCall, WireError};
use super::{
    LogPlace, NodeRequest, Provider, ProviderError, ProviderResult, StartRequest, Started, Tagged, TaggedNode,
};
use crate::repo::settings::{Ec2Account, Ec2Address, SshHost};
use crate::spec::Memory;
use crate::state::observed::Health;
use crate::state::{InstanceState, NewNode, NodeState};

/// The user enact logs in as on a node when the account names none (Amazon Linux's).
pub const DEFAULT_USER: &str = "ec2-user";

/// The port enact reaches a node's sshd on.
pub const SSH_PORT: u16 = 22;

/// How many requests per second enact sends to the EC2 API when the account does not say.
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 5.0;

/// How often a request answered "later" is tried again.
pub const DEFAULT_RETRIES: u32 = 8;

/// How long a node may take to run, in milliseconds, when the account does not say.
pub const DEFAULT_RUNNING_TIMEOUT_MS: u64 = 300_000;

/// The provider of one ec2 account.
pub struct Ec2Provider {
    account_name: String,
    account: Ec2Account,
    api: Arc<dyn Ec2Api>,
    ssh: SshProvider,
    env: String,
    lineage: String,
    say: Option<fn(&str)>,
}

impl std::fmt::Debug for Ec2Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Provider").field("account", &self.account_name).finish_non_exhaustive()
    }
}

/// What an [`Ec2Provider`] needs besides its account.
#[derive(Clone)]
pub struct Ec2Options {
    /// Relative key and known_hosts paths are taken from here.
    pub repo_root: std::path::PathBuf,
    /// The environment the nodes are for.
    pub env: String,
    /// The environment's lineage (tagged on every node; empty where no node is made).
    pub lineage: String,
    /// Told of every retry of an EC2 request (the progress output).
    pub notify: Option<api::Notify>,
    /// Where a warning that is no step's goes (the progress output); `None`: said nowhere.
    pub say: Option<fn(&str)>,
}

impl std::fmt::Debug for Ec2Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Options").field("env", &self.env).field("lineage", &self.lineage).finish_non_exhaustive()
    }
}

impl Ec2Provider {
    /// The provider of ec2 account `account_name`, with its own API client.
    ///
    /// # Errors
    /// The EC2 client or the SSH runtime cannot be started.
    pub fn new(account_name: &str, account: &Ec2Account, options: Ec2Options) -> ProviderResult<Self> {
        let api = AwsEc2::new(
            ApiOptions {
                region: account.region.clone(),
                endpoint: account.endpoint.clone(),
                requests_per_second: account.requests_per_second.unwrap_or(DEFAULT_REQUESTS_PER_SECOND),
                retries: DEFAULT_RETRIES,
                fixed_credentials: None,
            },
            options.notify.clone(),
        )
        .map_err(|e| ProviderError::new(e.to_string()))?;
        Self::with_api(account_name, account, options, Arc::new(api))
    }

    /// The provider with another EC2 client (a fake in unit tests, fixed credentials for an
    /// emulator).
    ///
    /// # Errors
    /// The SSH runtime cannot be started.
    pub fn with_api(
        account_name: &str,
        account: &Ec2Account,
        options: Ec2Options,
        api: Arc<dyn Ec2Api>,
    ) -> ProviderResult<Self> {
        let template = SshHost {
            address: String::new(),
            port: None,
            user: account.user.clone().unwrap_or_else(|| DEFAULT_USER.to_string()),
            private_key: account.private_key.clone(),
            memory: None,
        };
        let known_hosts = Some(account.known_hosts.clone().unwrap_or_else(|| default_known_hosts(account_name)));
        // Enact made every node it reaches: a node's key is learnt on first contact and
        // refused if it ever changes.
        let ssh = SshProvider::for_any_host(
            account_name,
            template,
            known_hosts,
            SshOptions { repo_root: options.repo_root.clone(), accept_new_host_keys: true },
        )?;
        Ok(Ec2Provider {
            account_name: account_name.to_string(),
            account: account.clone(),
            api,
            ssh,
            env: options.env,
            lineage: options.lineage,
            say: options.say,
        })
    }

    /// The EC2 client (to count its requests).
    pub fn api(&self) -> &dyn Ec2Api {
        self.api.as_ref()
    }

    /// Makes `wanted` batch by batch into `made` (node id → node), then waits until every
    /// node's sshd answers.
    fn make_all(
        &self,
        template: &NodeTemplate,
        wanted: &[NewNode],
        request: &str,
        made: &mut BTreeMap<String, NodeState>,
    ) -> ProviderResult<()> {
        let memory: BTreeMap<String, Memory> = wanted.iter().map(|n| (n.id.clone(), n.memory)).collect();
        let per_call = self.account.nodes_per_call.map_or(usize::MAX, |n| n as usize);
        for batch in batch::batches(wanted.iter().map(|n| (n.id.as_str(), n.size.as_str())), per_call) {
            let token = nodes::client_token(request, &batch);
            let nodes = nodes::make(self.api.as_ref(), template, &batch, &memory, request, &token)
                .map_err(|e| ProviderError::new(format!("ec2 account `{}`: {e}", self.account_name)))?;
            made.extend(nodes);
        }
        // A node runs before its sshd answers: wait for its SSH port, as long as a node may
        // take to run.
        let deadline = std::time::Instant::now() + Duration::from_millis(template.running_timeout_ms);
        for (id, node) in made.iter() {
            let mut pause = Duration::from_millis(50);
            while !super::port_answers(&node.address, SSH_PORT) {
                if std::time::Instant::now() >= deadline {
                    return Err(ProviderError::new(format!(
                        "ec2 account `{}`: node {id} ({}) runs but its SSH port {SSH_PORT} does not answer after {} s",
                        self.account_name,
                        node.address,
                        template.running_timeout_ms / 1000
                    )));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
        Ok(())
    }

    /// Forgets the host keys of terminated nodes: EC2 may give their addresses to later nodes,
    /// whose keys would otherwise be refused as changed. A file that cannot be rewritten is said
    /// on stderr (the keys stay; the nodes are gone all the same).
    fn forget(&self, addresses: &[&str]) {
        let addresses: Vec<&str> = addresses.iter().copied().filter(|a| !a.is_empty()).collect();
        if let (Err(e), Some(say)) = (self.ssh.forget_hosts(&addresses), self.say) {
            say(&format!("ec2 account `{}`: {e}", self.account_name));
        }
    }

    fn template(&self) -> NodeTemplate {
        NodeTemplate {
            account: self.account_name.clone(),
            env: self.env.clone(),
            lineage: self.lineage.clone(),
            image_id: self.account.image_id.clone(),
            key_name: self.account.key_name.clone(),
            subnet_id: self.account.subnet_id.clone(),
            security_group_ids: self.account.security_group_ids.clone(),
            address: match self.account.address.unwrap_or_default() {
                Ec2Address::Private => AddressKind::Private,
                Ec2Address::Public => AddressKind::Public,
            },
            running_timeout_ms: self.account.running_timeout_ms.unwrap_or(DEFAULT_RUNNING_TIMEOUT_MS),
        }
    }
}

/// Where an ec2 account's learnt host keys go when it names no `knownHosts`: beside the state,
/// one file per account (relative to the repository).
pub fn default_known_hosts(account_name: &str) -> String {
    format!("state/.known_hosts-{account_name}")
}

impl Provider for Ec2Provider {
    fn kind(&self) -> &'static str {
        "ec2"
    }

    fn create_nodes(&self, wanted: &[NewNode], request: &NodeRequest<'_>) -> ProviderResult<Vec<NodeState>> {
        if self.lineage.is_empty() {
            return Err(ProviderError::new(format!(
                "ec2 account `{}`: nodes are made only by an apply, which knows the environment's lineage",
                self.account_name
            )));
        }
        let template = self.template();
        let mut made: BTreeMap<String, NodeState> = BTreeMap::new();
        if let Err(e) = self.make_all(&template, wanted, request.id, &mut made) {
            // Nothing is left that state would not know: what this call made goes again.
            let ids: Vec<String> = made.values().filter_map(|n| n.provider_id.clone()).collect();
            let _ = self.api.terminate(&ids);
            return Err(e);
        }
        wanted
            .iter()
            .map(|n| {
                made.remove(&n.id).ok_or_else(|| {
                    ProviderError::new(format!(
                        "ec2 account `{}`: EC2 made no instance for node {}",
                        self.account_name, n.id
                    ))
                })
            })
            .collect()
    }

    fn destroy_node(&self, id: &str, node: &NodeState) -> ProviderResult<()> {
        let Some(instance) = &node.provider_id else {
            return Ok(());
        };
        self.api.terminate(std::slice::from_ref(instance)).map_err(|e| {
            ProviderError::new(format!("ec2 account `{}`: node {id} ({instance}): {e}", self.account_name))
        })?;
        self.forget(&[node.address.as_str()]);
        Ok(())
    }

    fn destroy_nodes(&self, nodes: &[(&str, &NodeState)]) -> Vec<ProviderResult<()>> {
        let ids: Vec<String> = nodes.iter().filter_map(|(_, n)| n.provider_id.clone()).collect();
        match self.api.terminate(&ids) {
            Ok(()) => {
                self.forget(&nodes.iter().map(|(_, n)| n.address.as_str()).collect::<Vec<_>>());
                nodes.iter().map(|_| Ok(())).collect()
            }
            Err(e) => {
                let why = format!("ec2 account `{}`: terminating {} node(s): {e}", self.account_name, ids.len());
                nodes.iter().map(|_| Err(ProviderError::new(why.clone()))).collect()
            }
        }
    }

    fn start(&self, request: &StartRequest<'_>) -> ProviderResult<Started> {
        self.ssh.start(request)
    }

    fn wait_healthy(
        &self,
        instance: &InstanceState,
        node: &NodeState,
        port: u16,
        timeout: Duration,
    ) -> ProviderResult<()> {
        self.ssh.wait_healthy(instance, node, port, timeout)
    }

    fn stop(&self, instance: &InstanceState, node: &NodeState, grace: Duration) -> ProviderResult<()> {
        self.ssh.stop(instance, node, grace)
    }

    fn alive(&self, instance: &InstanceState, node: &NodeState) -> bool {
        self.ssh.alive(instance, node)
    }

    fn logs(
        &self,
        instance: &InstanceState,
        node: &NodeState,
        log: LogPlace<'_>,
        lines: usize,
    ) -> ProviderResult<String> {
        self.ssh.logs(instance, node, log, lines)
    }

    fn follows_logs(&self) -> bool {
        true
    }

    fn log_since(
        &self,
        instance: &InstanceState,
        node: &NodeState,
        log: LogPlace<'_>,
        since: Option<crate::provider::LogMark>,
        lines: usize,
    ) -> ProviderResult<(String, crate::provider::LogMark)> {
        self.ssh.log_since(instance, node, log, since, lines)
    }

    fn observe(&self, node: &NodeState, instances: &[(&InstanceState, u16)]) -> Vec<Health> {
        self.ssh.observe(node, instances)
    }

    fn remove_logs(&self, instance: &InstanceState, node: &NodeState, log: LogPlace<'_>) -> ProviderResult<()> {
        self.ssh.remove_logs(instance, node, log)
    }

    fn find(&self, node: &NodeState, token: &str) -> Option<Started> {
        self.ssh.find(node, token)
    }

    fn tagged(&self, node: &NodeState, lineage: &str) -> ProviderResult<Vec<Tagged>> {
        self.ssh.tagged(node, lineage)
    }

    fn tagged_nodes(&self, lineage: &str) -> ProviderResult<Vec<TaggedNode>> {
        let found = nodes::tagged(self.api.as_ref(), lineage)
            .map_err(|e| ProviderError::new(format!("ec2 account `{}`: {e}", self.account_name)))?;
        let template = self.template();
        Ok(found
            .into_iter()
            .filter(|i| i.tags.get(batch::ACCOUNT_TAG).is_none_or(|a| *a == self.account_name))
            .map(|i| {
                let node = nodes::node_state(&template, &i, None);
                TaggedNode {
                    node: nodes::node_id_of(&i),
                    provider_id: i.id,
                    account: self.account_name.clone(),
                    address: node.address,
                    size: i.instance_type,
                    request: i.tags.get(batch::REQUEST_TAG).cloned(),
                }
            })
            .collect())
    }

    fn destroy_untracked(&self, nodes: &[TaggedNode]) -> ProviderResult<()> {
        let ids: Vec<String> = nodes.iter().map(|n| n.provider_id.clone()).collect();
        self.api
            .terminate(&ids)
            .map_err(|e| ProviderError::new(format!("ec2 account `{}`: {e}", self.account_name)))?;
        self.forget(&nodes.iter().map(|n| n.address.as_str()).collect::<Vec<_>>());
        Ok(())
    }

    fn wire(&self, call: &WireCall<'_>) -> Result<(), WireError> {
        self.ssh.wire(call)
    }
}
