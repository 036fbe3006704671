//! The nodes of an ec2 account: made in batches (see [`super::batch`]), waited for until they
//! run, terminated in one call, and found again by their tags.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::api::{Ec2Api, Ec2Error, Ec2Instance, Launch};
use super::batch::{ACCOUNT_TAG, Batch, ENV_TAG, LINEAGE_TAG, NODES_TAG, REQUEST_TAG, decode_ids};
use crate::spec::Memory;
use crate::state::NodeState;

/// Which address of an instance enact reaches it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressKind {
    /// Its private IPv4 address (enact runs in the same network).
    #[default]
    Private,
    /// Its public IPv4 address.
    Public,
}

/// What every node of one ec2 account shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTemplate {
    /// The account's name in `enact.json`.
    pub account: String,
    /// The environment's name.
    pub env: String,
    /// The environment's lineage.
    pub lineage: String,
    /// The AMI id.
    pub image_id: String,
    /// The EC2 key pair.
    pub key_name: Option<String>,
    /// The subnet.
    pub subnet_id: Option<String>,
    /// The security groups.
    pub security_group_ids: Vec<String>,
    /// Which address the node is reached on.
    pub address: AddressKind,
    /// How long a node may take to run, in milliseconds.
    pub running_timeout_ms: u64,
}

/// One node request: its id, memory size and instance type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The node id (`aws-3`).
    pub id: String,
    /// The memory size the node was chosen for.
    pub memory: Memory,
    /// Its instance type.
    pub instance_type: String,
}

/// A node EC2 made, not yet running or without an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The EC2 API failed.
    #[error(transparent)]
    Api(#[from] Ec2Error),
    /// EC2 made fewer instances than asked, or answered without launch indexes.
    #[error("EC2 RunInstances for {wanted} node(s) of type {instance_type} answered with {got} instance(s)")]
    Short {
        /// The instance type.
        instance_type: String,
        /// How many were asked for.
        wanted: usize,
        /// How many came back.
        got: usize,
    },
    /// The nodes did not all run in time.
    #[error(
        "EC2 instance(s) {ids} did not run within {seconds} s; they are recorded and the next apply looks at them again"
    )]
    NotRunning {
        /// The instance ids still not running, comma-separated.
        ids: String,
        /// The limit, in seconds.
        seconds: u64,
    },
}

/// The idempotency token (`ClientToken`) of one batch of one request: the request's id and the
/// batch decide it, so every retry of the call sends the same token and EC2 makes the nodes
/// once. At most 64 characters, as EC2 requires.
pub fn client_token(request: &str, batch: &Batch) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{request}\n{}\n{}", batch.instance_type, batch.tag));
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("enact-{hex}")
}

/// The tags of every instance of `batch` made by request `request`.
pub fn tags_of(template: &NodeTemplate, batch: &Batch, request: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LINEAGE_TAG.to_string(), template.lineage.clone()),
        (ENV_TAG.to_string(), template.env.clone()),
        (ACCOUNT_TAG.to_string(), template.account.clone()),
        (NODES_TAG.to_string(), batch.tag.clone()),
        (REQUEST_TAG.to_string(), request.to_string()),
    ])
}

/// The node id an instance of a batch stands for: its launch index into the batch's ids (read
/// from its own [`NODES_TAG`], so an instance found later by its tags is told apart too).
pub fn node_id_of(instance: &Ec2Instance) -> Option<String> {
    let ids = decode_ids(instance.tags.get(NODES_TAG)?)?;
    ids.get(usize::try_from(instance.launch_index?).ok()?).cloned()
}

/// Makes the nodes of `batch` in one `RunInstances` call, waits until they run, and returns
/// them as recorded nodes (node id → node), in the batch's order.
///
/// # Errors
/// [`NodeError`] when EC2 refuses, makes too few, or the nodes do not run within the template's
/// limit (they are terminated then, so nothing is left that state does not know).
pub fn make(
    api: &dyn Ec2Api,
    template: &NodeTemplate,
    batch: &Batch,
    memory: &BTreeMap<String, Memory>,
    request: &str,
    token: &str,
) -> Result<Vec<(String, NodeState)>, NodeError> {
    let launch = Launch {
        image_id: template.image_id.clone(),
        instance_type: batch.instance_type.clone(),
        count: u32::try_from(batch.ids.len()).unwrap_or(u32::MAX),
        key_name: template.key_name.clone(),
        subnet_id: template.subnet_id.clone(),
        security_group_ids: template.security_group_ids.clone(),
        tags: tags_of(template, batch, request),
        client_token: token.to_string(),
    };
    let made = api.run_instances(&launch)?;
    if made.len() != batch.ids.len() || made.iter().any(|i| node_id_of(i).is_none()) {
        let ids: Vec<String> = made.iter().map(|i| i.id.clone()).collect();
        let _ = api.terminate(&ids);
        return Err(NodeError::Short {
            instance_type: batch.instance_type.clone(),
            wanted: batch.ids.len(),
            got: made.len(),
        });
    }
    let running = wait_running(api, template, made)?;
    let mut nodes: Vec<(String, NodeState)> = running
        .into_iter()
        .filter_map(|instance| {
            let id = node_id_of(&instance)?;
            let node = node_state(template, &instance, memory.get(&id).copied());
            Some((id, node))
        })
        .collect();
    let order: BTreeMap<&str, usize> = batch.ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    nodes.sort_by_key(|(id, _)| order.get(id.as_str()).copied().unwrap_or(usize::MAX));
    Ok(nodes)
}

/// The recorded node of a running instance.
pub fn node_state(template: &NodeTemplate, instance: &Ec2Instance, memory: Option<Memory>) -> NodeState {
    let address = match template.address {
        AddressKind::Private => instance.private_ip.clone(),
        AddressKind::Public => instance.public_ip.clone().or_else(|| instance.private_ip.clone()),
    };
    NodeState {
        account: template.account.clone(),
        provider: "ec2".to_string(),
        address: address.unwrap_or_default(),
        memory,
        size: Some(instance.instance_type.clone()),
        provider_id: Some(instance.id.clone()),
        spare: false,
    }
}

/// Polls until every instance of `made` runs and has its address; the ones that do not in time
/// are terminated.
fn wait_running(
    api: &dyn Ec2Api,
    template: &NodeTemplate,
    made: Vec<Ec2Instance>,
) -> Result<Vec<Ec2Instance>, NodeError> {
    let deadline = Instant::now() + Duration::from_millis(template.running_timeout_ms);
    let ready = |i: &Ec2Instance| {
        i.state == "running"
            && match template.address {
                AddressKind::Private => i.private_ip.is_some(),
                AddressKind::Public => i.public_ip.is_some() || i.private_ip.is_some(),
            }
    };
    let mut current = made;
    let mut wait = Duration::from_millis(100);
    loop {
        if current.iter().all(ready) {
            return Ok(current);
        }
        if Instant::now() >= deadline {
            let late: Vec<String> = current.iter().filter(|i| !ready(i)).map(|i| i.id.clone()).collect();
            let all: Vec<String> = current.iter().map(|i| i.id.clone()).collect();
            let _ = api.terminate(&all);
            return Err(NodeError::NotRunning { ids: late.join(", "), seconds: template.running_timeout_ms / 1000 });
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(2));
        let ids: Vec<String> = current.iter().map(|i| i.id.clone()).collect();
        let seen = api.describe(&BTreeMap::new(), &ids)?;
        // Keep the launch indexes and tags of the first answer if a later one lacks them.
        for instance in &mut current {
            if let Some(now) = seen.iter().find(|s| s.id == instance.id) {
                instance.state.clone_from(&now.state);
                if now.private_ip.is_some() {
                    instance.private_ip.clone_from(&now.private_ip);
                }
                if now.public_ip.is_some() {
                    instance.public_ip.clone_from(&now.public_ip);
                }
            }
        }
    }
}

/// The live instances of `lineage` (any account, any environment of that lineage), as EC2
/// knows them.
///
/// # Errors
/// [`Ec2Error`] when the lookup fails.
pub fn tagged(api: &dyn Ec2Api, lineage: &str) -> Result<Vec<Ec2Instance>, Ec2Error> {
    let found = api.describe(&BTreeMap::from([(LINEAGE_TAG.to_string(), lineage.to_string())]), &[])?;
    Ok(found.into_iter().filter(Ec2Instance::is_live).collect())
}
