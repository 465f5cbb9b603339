//! Per-node address blocks of multi-node networks, claimed through the Kubernetes API.
//!
//! Each network of `--address-pools` has one subnet per address family, carved into blocks.
//! The agent holds blocks for its node as [`KraftyBlock`] objects, one per block, whose name
//! is derived from the network and the block: creating the object is the claim, and the API
//! server's name uniqueness the only lock (AlreadyExists: someone else holds it, try the next).
//! Each object is owned by its Node, so that Kubernetes' garbage collector frees the blocks of
//! a deleted Node. The agent writes its node's blocks to `<stateDir>/blocks/<network>.json`
//! (atomically), which krafty-veth reads on ADD without any API call (`krafty_cni::blocks`).
//!
//! - **When to claim**: when the free addresses of a family's blocks on the node fall to a
//!   quarter of a block or below ([`SubnetPool::claim_threshold`]), checked every second from
//!   the lease files, and on every resync.
//! - **Reclaiming**: a block whose owner Node is absent (no Node of that name, or one with
//!   another uid: the node re-registered) for [`Args::address_block_reclaim_grace`] as seen by
//!   an agent is deleted by it (with the block's uid as precondition, so a new claim of the
//!   same block is never deleted). This covers clusters whose garbage collector does not run.
//!   A Node that still exists keeps its blocks however long it is NotReady: its pods may still
//!   run and hold the addresses. A machine that vanished for good is freed when its Node is
//!   deleted (by the cloud's node lifecycle controller or `kubectl delete node`).
//! - **A block in the node's file that the API does not list as the node's** (a list that
//!   lags behind, a block deleted by hand or reclaimed while the node was away) is claimed
//!   again; when another node holds it already, it leaves the file under the lease lock, so no
//!   new address is handed out from it. AlreadyExists on a claim is looked into: the block may
//!   be the node's own.
//!
//! [`Args::address_block_reclaim_grace`]: crate::cli::Args::address_block_reclaim_grace

pub mod pool;
pub mod resource;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use krafty_cni::blocks::{usable_count, FamilyBlocks, NetworkBlocks, NodeBlocks};
use krafty_cni::naming::fnv1a32;

use crate::cluster::{next_delay, FIRST_RETRY_DELAY};
use crate::metrics::{ErrorKind, Metrics, SubnetBlocks};
pub use pool::{read_pools, AddressPool, PoolError, SubnetPool};
pub use resource::{block_name, KraftyBlock, NETWORK_LABEL};

/// How often the node's leases are looked at (local files only, no API call).
pub const LEASE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often the node's blocks are compared with the API's even when nothing runs short.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// How often blocks of absent Nodes are looked for.
pub const RECLAIM_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum BlocksError {
    #[error("the Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("node {0} has no uid")]
    NodeWithoutUid(String),
    #[error(transparent)]
    Node(#[from] krafty_cni::Error),
    #[error("a blocks file task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What one [`BlockAgent::sync`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Blocks claimed in this pass.
    pub claimed: Vec<IpNet>,
    /// Blocks taken out of the node's files in this pass.
    pub dropped: Vec<IpNet>,
    /// Subnets whose every block is held while the node still runs short.
    pub exhausted: Vec<IpNet>,
}

/// One node's agent for every pool.
pub struct BlockAgent {
    blocks: Api<KraftyBlock>,
    nodes: Api<Node>,
    node: String,
    pools: Vec<AddressPool>,
    state_dir: PathBuf,
    reclaim_grace: Duration,
    metrics: Arc<Metrics>,
    /// The subnets the last sync found exhausted: running short there triggers no sync before
    /// the next resync.
    exhausted: BTreeSet<IpNet>,
    /// Blocks of absent owners, by object uid, and when they were first seen absent.
    absent_since: HashMap<String, Instant>,
}

impl BlockAgent {
    pub fn new(
        client: kube::Client,
        node: String,
        pools: Vec<AddressPool>,
        state_dir: PathBuf,
        reclaim_grace: Duration,
        metrics: Arc<Metrics>,
    ) -> BlockAgent {
        BlockAgent {
            blocks: Api::all(client.clone()),
            nodes: Api::all(client),
            node,
            pools,
            state_dir,
            reclaim_grace,
            metrics,
            exhausted: BTreeSet::new(),
            absent_since: HashMap::new(),
        }
    }

    fn files(&self, pool: &AddressPool) -> NetworkBlocks {
        NetworkBlocks::new(&self.state_dir, &pool.network)
    }

    /// Whether a family of some network runs short of free addresses on the node (local files
    /// only). Errors count as running short: the sync that follows reports them.
    pub fn needs_claim(&self) -> bool {
        self.pools.iter().any(|pool| {
            let files = self.files(pool);
            let Ok(leased) = files.leased() else {
                return true;
            };
            let Ok(Some(current)) = files.read() else {
                return true;
            };
            let mut short = false;
            for subnet in &pool.subnets {
                let held = held_in(&current, subnet.subnet);
                let free = free_addresses(subnet, &held, &leased);
                let exhausted = self.exhausted.contains(&subnet.subnet);
                self.record(pool, subnet, held.len(), free, exhausted);
                short |= !exhausted && free <= subnet.claim_threshold();
            }
            short
        })
    }

    /// Compares the node's blocks with the API's, claims blocks where a family runs short,
    /// and rewrites the blocks files that change.
    pub async fn sync(&mut self) -> Result<SyncReport, BlocksError> {
        let node_uid = self
            .nodes
            .get(&self.node)
            .await?
            .metadata
            .uid
            .ok_or_else(|| BlocksError::NodeWithoutUid(self.node.clone()))?;
        let mut report = SyncReport::default();
        for pool in self.pools.clone() {
            self.sync_pool(&pool, &node_uid, &mut report).await?;
        }
        self.exhausted = report.exhausted.iter().copied().collect();
        Ok(report)
    }

    async fn sync_pool(
        &self,
        pool: &AddressPool,
        node_uid: &str,
        report: &mut SyncReport,
    ) -> Result<(), BlocksError> {
        let listed = self
            .blocks
            .list(&ListParams::default().labels(&format!("{NETWORK_LABEL}={}", pool.network)))
            .await?;
        let files = self.files(pool);
        let current = files.read()?;
        let leased = files.leased()?;
        let mut families = Vec::new();
        for subnet in &pool.subnets {
            let in_file = current
                .as_ref()
                .map(|c| held_in(c, subnet.subnet))
                .unwrap_or_default();
            let mut taken: HashMap<IpNet, String> = listed
                .items
                .iter()
                .filter(|b| b.spec.network == pool.network && subnet.subnet.contains(&b.spec.cidr))
                .map(|b| (b.spec.cidr, b.spec.node.clone()))
                .collect();
            let mut held: BTreeSet<IpNet> = taken
                .iter()
                .filter(|(_, node)| **node == self.node)
                .map(|(block, _)| *block)
                .collect();
            // Blocks in the node's file that the list does not show as the node's: a list that
            // lags behind, or a block deleted under the node. Claimed again unless another
            // node holds it.
            let unlisted: Vec<IpNet> = in_file.difference(&held).copied().collect();
            for block in &unlisted {
                if !taken.contains_key(block) && self.create(pool, *block, node_uid).await? {
                    held.insert(*block);
                    taken.insert(*block, self.node.clone());
                    continue;
                }
                taken.entry(*block).or_default();
                if leased.iter().any(|ip| block.contains(ip)) {
                    tracing::error!(
                        "network {}: block {block} is held by another node while pods of node \
                         {} still use it; no new address is handed out from it",
                        pool.network,
                        self.node
                    );
                }
                report.dropped.push(*block);
            }
            // Claim until the family has enough free addresses, or no block is left.
            let offset = fnv1a32(self.node.as_bytes());
            let mut candidates = subnet.blocks_from(offset);
            while free_addresses(subnet, &held, &leased) <= subnet.claim_threshold() {
                let Some(block) = candidates.find(|b| !taken.contains_key(b)) else {
                    tracing::warn!(
                        "network {}: every block of {} is held; ADD on node {} answers code 11 \
                         once its blocks are full",
                        pool.network,
                        subnet.subnet,
                        self.node
                    );
                    report.exhausted.push(subnet.subnet);
                    break;
                };
                taken.insert(block, String::new());
                if self.create(pool, block, node_uid).await? {
                    tracing::info!(
                        "network {}: claimed block {block} for node {}",
                        pool.network,
                        self.node
                    );
                    held.insert(block);
                    report.claimed.push(block);
                }
            }
            let free = free_addresses(subnet, &held, &leased);
            let exhausted = report.exhausted.contains(&subnet.subnet);
            self.record(pool, subnet, held.len(), free, exhausted);
            families.push(FamilyBlocks {
                subnet: subnet.subnet,
                gateway: subnet.gateway,
                blocks: held.into_iter().collect(),
            });
        }
        let wanted = NodeBlocks {
            network: pool.network.clone(),
            node: self.node.clone(),
            families,
        };
        if current.as_ref() != Some(&wanted) {
            tokio::task::spawn_blocking(move || write_under_lease_lock(&files, &wanted)).await??;
        }
        Ok(())
    }

    fn record(
        &self,
        pool: &AddressPool,
        subnet: &SubnetPool,
        blocks: usize,
        free: u128,
        exhausted: bool,
    ) {
        let held = SubnetBlocks {
            blocks,
            free_addresses: free,
            exhausted,
        };
        let subnet = subnet.subnet.to_string();
        self.metrics.set_subnet_blocks(&pool.network, &subnet, held);
    }

    /// Creates the block's object: `true` when this node now holds it, `false` when someone
    /// else does. AlreadyExists is looked into: the object may be this node's own (a list that
    /// lagged behind, or an earlier create whose answer was lost).
    async fn create(
        &self,
        pool: &AddressPool,
        block: IpNet,
        node_uid: &str,
    ) -> Result<bool, BlocksError> {
        let claim = KraftyBlock::claim(&pool.network, block, &self.node, node_uid);
        match self.blocks.create(&PostParams::default(), &claim).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(response)) if response.reason == "AlreadyExists" => {
                let name = block_name(&pool.network, block);
                let holder = self.blocks.get_opt(&name).await?;
                Ok(holder.is_some_and(|held| held.spec.node == self.node))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes the blocks whose owner Node has been absent for the grace period as of `now`;
    /// returns their names.
    pub async fn reclaim(&mut self, now: Instant) -> Result<Vec<String>, BlocksError> {
        let nodes: HashMap<String, String> = self
            .nodes
            .list_metadata(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|node| Some((node.metadata.name?, node.metadata.uid?)))
            .collect();
        let blocks = self.blocks.list(&ListParams::default()).await?.items;
        let mut absent = HashMap::new();
        for block in &blocks {
            let present = match (nodes.get(&block.spec.node), block.owner_uid()) {
                (Some(uid), Some(owner)) => uid == owner,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if let (false, Some(uid)) = (present, block.uid()) {
                let since = self.absent_since.get(&uid).copied().unwrap_or(now);
                absent.insert(uid, (since, block));
            }
        }
        self.absent_since = absent
            .iter()
            .map(|(uid, (s, _))| (uid.clone(), *s))
            .collect();
        let mut reclaimed = Vec::new();
        for (uid, (since, block)) in absent {
            if now.saturating_duration_since(since) < self.reclaim_grace {
                continue;
            }
            let name = block.name_any();
            let params = DeleteParams::default().preconditions(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            });
            match self.blocks.delete(&name, &params).await {
                Ok(_) => {
                    tracing::info!(
                        "reclaimed block {} of network {} from node {}, absent for {:?}",
                        block.spec.cidr,
                        block.spec.network,
                        block.spec.node,
                        now.saturating_duration_since(since)
                    );
                    reclaimed.push(name);
                }
                // Gone already, or claimed anew: either way not ours to delete.
                Err(kube::Error::Api(response)) if matches!(response.code, 404 | 409) => {}
                Err(error) => return Err(error.into()),
            }
            self.absent_since.remove(&uid);
        }
        Ok(reclaimed)
    }
}

/// The blocks of `subnet` in a blocks file.
fn held_in(file: &NodeBlocks, subnet: IpNet) -> BTreeSet<IpNet> {
    file.families
        .iter()
        .filter(|family| family.subnet == subnet)
        .flat_map(|family| family.blocks.iter().copied())
        .collect()
}

/// Addresses of `held` no pod holds.
fn free_addresses(subnet: &SubnetPool, held: &BTreeSet<IpNet>, leased: &[IpAddr]) -> u128 {
    let usable: u128 = held
        .iter()
        .map(|block| usable_count(subnet.subnet, subnet.gateway, *block))
        .sum();
    let used = leased
        .iter()
        .filter(|ip| held.iter().any(|block| block.contains(*ip)))
        .count() as u128;
    usable.saturating_sub(used)
}

/// Writes the file under the lease lock ADD takes, so no ADD reads the old file and then
/// leases an address from a block that has left it.
fn write_under_lease_lock(files: &NetworkBlocks, blocks: &NodeBlocks) -> Result<(), BlocksError> {
    let _lock = files.lock()?;
    files.write(blocks)?;
    Ok(())
}

/// Keeps the node's blocks in step until shutdown: a sync when a family runs short (at most
/// once per backoff step after a failure) and every [`RESYNC_INTERVAL`], a reclaim pass every
/// [`RECLAIM_INTERVAL`].
pub async fn run(mut agent: BlockAgent, shutdown: CancellationToken) {
    let mut next_sync = Instant::now();
    let mut not_before = Instant::now();
    let mut next_reclaim = Instant::now() + RECLAIM_INTERVAL;
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        let now = Instant::now();
        if now >= next_sync || (now >= not_before && agent.needs_claim()) {
            match agent.sync().await {
                Ok(_) => {
                    next_sync = now + RESYNC_INTERVAL;
                    not_before = now;
                    delay = FIRST_RETRY_DELAY;
                }
                Err(error) => {
                    tracing::warn!("address blocks of node {}: {error}", agent.node);
                    agent.metrics.count_error(ErrorKind::AddressBlocks);
                    next_sync = now + delay;
                    not_before = next_sync;
                    delay = next_delay(delay);
                }
            }
        }
        if now >= next_reclaim {
            if let Err(error) = agent.reclaim(now).await {
                tracing::warn!("reclaiming blocks of absent nodes: {error}");
                agent.metrics.count_error(ErrorKind::AddressBlocks);
            }
            next_reclaim = now + RECLAIM_INTERVAL;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(LEASE_CHECK_INTERVAL) => {},
        }
    }
}
