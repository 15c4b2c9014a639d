//! Block relay over the network: the I/O around [`crate::relay::Relay`].
//!
//! - A valid new tip (announced by the chain actor before its commit, see
//!   [`ChainEvent::TipValidated`]) goes to the relay core, which says whom
//!   to push the whole block to and whom to announce its header to.
//! - Announcements from peers (AnnounceBlocks) are checked (proof of work)
//!   and handed to the core, which says what to fetch (GetBlock) and when.
//! - Every message to a peer goes through that peer's bounded queue and one
//!   worker task, so a slow peer delays nobody else. When its queue is full
//!   an announcement is dropped (the peer can fetch from others, or sync on
//!   the next heartbeat), a push is turned into nothing (likewise), and a
//!   fetch is handed back to the core to ask the next announcer.
//! - Tips from a bulk import (sync, BroadcastBlockchain) are relayed once,
//!   when the import ends, rather than batch by batch (as Bitcoin Core does
//!   not relay during initial block download).
//!
//! The relay degree: the core works over up to `gossip_fanout` peers this
//! node picks among its usable ones, plus the peers that picked it (any
//! usable peer that announces or pushes to us joins), at most as many as
//! the connections a node keeps (`target_outbound` + `max_inbound`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use p2p_proto::node::{
    AnnounceBlocksRequest, AnnounceBlocksResponse, Block as PbBlock, BlockHeader, GetBlockRequest, SendBlockRequest,
};
use p2p_proto::tls::PeerIdentity;
use prost::Message;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Notify, broadcast, mpsc, watch};

use crate::chain::{Block, ChainEvent, Hash, Origin, validate};
use crate::convert::{self, canonical};
use crate::error::Error;
use crate::metrics::Stats;
use crate::node::NodeHandle;
use crate::relay::{Action, Relay, RelayConfig};

/// Messages queued for one peer.
pub const PEER_QUEUE: usize = 64;
/// Headers one AnnounceBlocks may carry.
pub const MAX_ANNOUNCED: usize = 16;
/// Recently relayed blocks kept in memory for GetBlock (they may not be
/// committed yet when a peer asks).
const RECENT: usize = 32;
/// Blocks being handed to the chain at once (pushed or fetched), tracked so
/// announcements of them fetch nothing meanwhile.
const MAX_ARRIVING: usize = 256;
/// A claimed tip is synced toward only once it has been claimed this long
/// (relay usually brings a new block well within it).
pub const SYNC_GRACE: Duration = Duration::from_millis(500);
/// Claimed tips remembered for [`SYNC_GRACE`].
const MAX_CLAIMS: usize = 1024;
/// A peer worker with nothing to do for this long ends.
const WORKER_IDLE: Duration = Duration::from_secs(60);

/// How many bulk imports are running; gossip holds their tips until none is.
#[derive(Debug, Clone)]
pub struct BulkImports {
    running: Arc<watch::Sender<usize>>,
}

impl Default for BulkImports {
    fn default() -> Self {
        BulkImports { running: Arc::new(watch::Sender::new(0)) }
    }
}

/// Held for the length of a bulk import.
#[derive(Debug)]
pub struct BulkImport {
    running: Arc<watch::Sender<usize>>,
}

impl BulkImports {
    pub fn begin(&self) -> BulkImport {
        self.running.send_modify(|n| *n += 1);
        BulkImport { running: self.running.clone() }
    }

    /// Whether any bulk import is running.
    pub fn active(&self) -> bool {
        *self.running.borrow() > 0
    }

    fn watch(&self) -> watch::Receiver<usize> {
        self.running.subscribe()
    }
}

impl Drop for BulkImport {
    fn drop(&mut self) {
        self.running.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// One message for a peer's worker.
#[derive(Debug)]
enum Out {
    Push(Arc<Block>),
    Announce(BlockHeader),
    Fetch {
        id: Hash,
        graft: bool,
    },
    /// An empty announcement: "you are one of my relay peers".
    Hello,
}

/// The relay state a node shares between its handlers and tasks.
#[derive(Debug)]
pub struct BlockRelay {
    core: Mutex<Relay<String>>,
    recent: Mutex<VecDeque<Arc<Block>>>,
    queues: Mutex<HashMap<String, mpsc::Sender<Out>>>,
    /// Blocks the chain is checking now (with how many copies).
    arriving: Arc<Mutex<HashMap<Hash, usize>>>,
    /// Tips peers claimed that we lack, and when each was first claimed.
    claims: Mutex<VecDeque<(Hash, std::time::Instant)>>,
    /// Wakes the timer when the core may have an earlier deadline.
    wake: Notify,
}

/// A block on its way into the chain; dropped when the chain has answered.
#[derive(Debug)]
pub struct Arriving {
    id: Option<Hash>,
    set: Arc<Mutex<HashMap<Hash, usize>>>,
}

impl Drop for Arriving {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = set.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                set.remove(&id);
            }
        }
    }
}

impl BlockRelay {
    pub fn new(config: RelayConfig) -> Self {
        BlockRelay {
            core: Mutex::new(Relay::new(config)),
            recent: Mutex::new(VecDeque::new()),
            queues: Mutex::new(HashMap::new()),
            arriving: Arc::new(Mutex::new(HashMap::new())),
            claims: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
        }
    }

    fn core(&self) -> MutexGuard<'_, Relay<String>> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `id` as being checked by the chain until the guard drops
    /// (not tracked once [`MAX_ARRIVING`] blocks are).
    pub fn arriving(&self, id: Hash) -> Arriving {
        let mut set = self.arriving.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= MAX_ARRIVING && !set.contains_key(&id) {
            return Arriving { id: None, set: self.arriving.clone() };
        }
        *set.entry(id).or_default() += 1;
        Arriving { id: Some(id), set: self.arriving.clone() }
    }

    /// Whether relay is bringing `id` here: validated (its commit may be
    /// under way), being checked, or announced and being fetched.
    pub fn expects(&self, id: &Hash) -> bool {
        if self.is_arriving(id) {
            return true;
        }
        let core = self.core();
        core.knows(id) || core.is_missing(id)
    }

    /// Whether a sync toward the claimed tip `id` is due: it has been
    /// claimed for [`SYNC_GRACE`] (a heartbeat that lands while relay is
    /// still spreading a block would otherwise download it a second time).
    pub fn sync_due(&self, id: &Hash) -> bool {
        let now = std::time::Instant::now();
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, first)) = claims.iter().find(|(h, _)| h == id) {
            return now.duration_since(*first) >= SYNC_GRACE;
        }
        if claims.len() >= MAX_CLAIMS {
            claims.pop_front();
        }
        claims.push_back((*id, now));
        false
    }

    fn is_arriving(&self, id: &Hash) -> bool {
        self.arriving.lock().unwrap_or_else(|e| e.into_inner()).contains_key(id)
    }

    /// A block relayed recently, if still held.
    pub fn recent(&self, id: &Hash) -> Option<Arc<Block>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|b| b.hash == *id).cloned()
    }

    fn keep(&self, block: Arc<Block>) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.iter().any(|b| b.hash == block.hash) {
            return;
        }
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(block);
    }

    /// Peers we push full blocks to (the tree edges), for status and tests.
    pub fn eager_peers(&self) -> Vec<String> {
        self.core().eager_peers()
    }

    /// Every relay peer, sorted.
    pub fn peers(&self) -> Vec<String> {
        self.core().peers()
    }

    pub fn counts(&self) -> crate::relay::RelayCounts {
        self.core().counts()
    }
}

/// Relays tips until shutdown. `events` is subscribed before the node
/// accepts any block, so no tip is missed.
pub(crate) async fn run(node: NodeHandle, mut events: broadcast::Receiver<ChainEvent>) {
    let mut bulk = node.bulk_imports().watch();
    // The newest tip of a running bulk import, and the peer it came from.
    let mut held: Option<(Arc<Block>, Origin)> = None;
    let timer = {
        let node = node.clone();
        tokio::spawn(async move { timer(node).await })
    };
    loop {
        tokio::select! {
            _ = node.shutdown_token().cancelled() => break,
            ev = events.recv() => match ev {
                Ok(ChainEvent::TipValidated { block, origin } | ChainEvent::TipChanged { block, origin }) => {
                    if origin.is_bulk() && *bulk.borrow() > 0 {
                        held = Some((block, origin));
                    } else {
                        held = None;
                        relay_new(&node, block, &origin);
                    }
                }
                Ok(ChainEvent::Reorg { removed, .. }) => {
                    Stats::add(&node.counters().reorgs, 1);
                    node.observed().reorg_depth.observe(removed.len() as f64);
                }
                Ok(ChainEvent::Votes { .. } | ChainEvent::Finalized(_)) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "gossip fell behind the chain's events; the next tip is relayed");
                }
                Err(RecvError::Closed) => break,
            },
            changed = bulk.changed() => {
                if changed.is_err() {
                    break;
                }
                if *bulk.borrow_and_update() == 0 && let Some((block, origin)) = held.take() {
                    relay_new(&node, block, &origin);
                }
            }
        }
    }
    timer.abort();
}

/// Runs the core's fetch deadlines.
async fn timer(node: NodeHandle) {
    loop {
        let next = node.relay().core().next_deadline();
        let wait = match next {
            Some(at) => Duration::from_millis(at.saturating_sub(node.now_ms())),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = node.shutdown_token().cancelled() => return,
            _ = node.relay().wake.notified() => continue,
            _ = tokio::time::sleep(wait) => {}
        }
        let actions = node.relay().core().tick(node.now_ms());
        dispatch(&node, actions);
    }
}

/// The relay peer a block or announcement came from: `from` is a node id
/// (TLS) or an address (plaintext links, sync).
fn peer_key(node: &NodeHandle, from: &str) -> Option<String> {
    if node.peers().node_id_of(from).is_some() || node.peers().contains(from) {
        return Some(from.to_string());
    }
    node.peers().address_of(from)
}

/// Brings the core's peer set in line with the peer table: peers no longer
/// usable leave; up to `gossip_fanout` of the usable ones are ours.
/// Returns the peers that joined.
fn sync_peers(node: &NodeHandle, core: &mut Relay<String>) -> Vec<String> {
    let usable = node.peers().gossip_targets(None, usize::MAX);
    for p in core.peers() {
        if !usable.contains(&p) {
            core.disconnected(&p);
        }
    }
    let want = node.config().gossip_fanout;
    let mut joined = Vec::new();
    for p in usable {
        if core.peer_count() >= want {
            break;
        }
        if !core.is_connected(&p) {
            core.connected(p.clone());
            joined.push(p);
        }
    }
    joined
}

/// Picks relay peers (each heartbeat) and greets the new ones with an
/// empty announcement, so they relay to us before we have anything to
/// relay to them (the relation is symmetric; see [`admit`]).
pub(crate) fn refresh(node: &NodeHandle) {
    let joined = sync_peers(node, &mut node.relay().core());
    for p in joined {
        enqueue(node, p, Out::Hello);
    }
}

/// A usable peer that relays to us joins the core: it picked us, and the
/// relation must be symmetric or a node that nobody with room picked would
/// hear of blocks only from heartbeats. Bounded by the connections a node
/// keeps anyway (`target_outbound` + `max_inbound`).
fn admit(node: &NodeHandle, core: &mut Relay<String>, peer: &str) -> bool {
    if core.is_connected(&peer.to_string()) {
        return true;
    }
    let cap = node.config().target_outbound + node.config().max_inbound;
    if core.peer_count() >= cap.max(node.config().gossip_fanout) || !node.peers().is_usable(peer) {
        return false;
    }
    core.connected(peer.to_string());
    true
}

fn relay_new(node: &NodeHandle, block: Arc<Block>, origin: &Origin) {
    let from = origin.peer().and_then(|p| peer_key(node, p));
    let pushed = matches!(origin, Origin::Gossip { .. });
    if matches!(origin, Origin::Gossip { .. } | Origin::Fetched { .. }) && !node.relay().core().knows(&block.hash) {
        let delay_ms = node.now_ms().saturating_sub(block.timestamp_ms);
        node.observed().propagation_delay.observe(delay_ms as f64 / 1000.0);
    }
    node.relay().keep(block.clone());
    let (actions, joined) = {
        let mut core = node.relay().core();
        let joined = sync_peers(node, &mut core);
        if let Some(f) = &from {
            admit(node, &mut core, f);
        }
        (core.validated(block.hash, from.as_ref(), pushed), joined)
    };
    dispatch_with(node, actions, Some(&block));
    for p in joined {
        enqueue(node, p, Out::Hello);
    }
}

fn dispatch(node: &NodeHandle, actions: Vec<Action<String>>) {
    dispatch_with(node, actions, None)
}

/// Queues each action on its peer's worker.
fn dispatch_with(node: &NodeHandle, actions: Vec<Action<String>>, block: Option<&Arc<Block>>) {
    if !actions.is_empty() {
        node.relay().wake.notify_one();
    }
    let genesis = node.chain().genesis_hash();
    let mut announce_to: Vec<(String, Hash)> = Vec::new();
    for action in actions {
        let (to, out) = match action {
            Action::Push { to, id } => {
                let Some(b) = block.filter(|b| b.hash == id).cloned().or_else(|| node.relay().recent(&id)) else {
                    continue;
                };
                Stats::add(&node.counters().blocks_pushed, 1);
                (to, Out::Push(b))
            }
            Action::Announce { to, id } => {
                announce_to.push((to, id));
                continue;
            }
            Action::Fetch { from, id, graft } => {
                Stats::add(&node.counters().block_fetches, 1);
                (from, Out::Fetch { id, graft })
            }
        };
        enqueue(node, to, out);
    }
    if !announce_to.is_empty() {
        let (node, block) = (node.clone(), block.cloned());
        let delay = Duration::from_millis(node.relay().core().config().announce_delay_ms);
        node.tasks().clone().spawn(async move {
            tokio::select! {
                _ = node.shutdown_token().cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            for (to, id) in announce_to {
                let Some(b) = block.clone().filter(|b| b.hash == id).or_else(|| node.relay().recent(&id)) else {
                    continue;
                };
                if !node.relay().core().still_to_announce(id, &to) {
                    continue;
                }
                Stats::add(&node.counters().blocks_announced, 1);
                enqueue(&node, to, Out::Announce(convert::header_to_proto(&b, &genesis)));
            }
        });
    }
}

fn enqueue(node: &NodeHandle, to: String, out: Out) {
    let mut queues = node.relay().queues.lock().unwrap_or_else(|e| e.into_inner());
    let tx = queues
        .entry(to.clone())
        .or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let (node, peer) = (node.clone(), to.clone());
            node.tasks().clone().spawn(async move { worker(node, peer, rx).await });
            tx
        })
        .clone();
    drop(queues);
    match tx.try_send(out) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(out) | mpsc::error::TrySendError::Closed(out)) => {
            Stats::add(&node.counters().relay_dropped, 1);
            tracing::debug!(peer = %to, "relay queue full: message dropped");
            if let Out::Fetch { id, .. } = out {
                node.relay().core().fetch_failed(id, &to);
                node.relay().wake.notify_one();
            }
        }
    }
}

/// Sends one peer's messages in order; consecutive announcements go as one.
async fn worker(node: NodeHandle, peer: String, mut rx: mpsc::Receiver<Out>) {
    loop {
        let first = tokio::select! {
            _ = node.shutdown_token().cancelled() => break,
            m = tokio::time::timeout(WORKER_IDLE, rx.recv()) => match m {
                Ok(Some(m)) => m,
                _ => break,
            },
        };
        match first {
            Out::Announce(h) => {
                let mut headers = vec![h];
                let mut next = None;
                while headers.len() < MAX_ANNOUNCED {
                    match rx.try_recv() {
                        Ok(Out::Announce(h)) => headers.push(h),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                announce(&node, &peer, headers).await;
                if let Some(m) = next {
                    handle(&node, &peer, m).await;
                }
            }
            other => handle(&node, &peer, other).await,
        }
    }
    // Close first, so an enqueue racing with this exit sees a closed queue;
    // then leave the map unless a new worker already took the slot.
    rx.close();
    let mut queues = node.relay().queues.lock().unwrap_or_else(|e| e.into_inner());
    if queues.get(&peer).is_some_and(|tx| tx.is_closed()) {
        queues.remove(&peer);
    }
}

async fn handle(node: &NodeHandle, peer: &str, m: Out) {
    match m {
        Out::Push(b) => push(node, peer, &b).await,
        Out::Announce(h) => announce(node, peer, vec![h]).await,
        Out::Hello => announce(node, peer, Vec::new()).await,
        Out::Fetch { id, graft } => fetch(node, peer, id, graft).await,
    }
}

/// The link to `peer`, or None (counted: the message is lost).
fn link_to(node: &NodeHandle, peer: &str) -> Option<p2p_proto::dial::Link> {
    let link = node.link(peer);
    if link.is_none() {
        Stats::add(&node.counters().relay_dropped, 1);
        tracing::debug!(peer, "no link to the peer: relay message dropped");
    }
    link
}

async fn push(node: &NodeHandle, peer: &str, block: &Block) {
    let Some(link) = link_to(node, peer) else { return };
    let req = SendBlockRequest { block: Some(convert::block_to_proto(block)), sender: Some(node.sender()) };
    Stats::add(&node.counters().gossip_sent, 1);
    Stats::add(&node.counters().bytes_sent_push, req.encoded_len() as u64);
    let mut client = node.peer_client(&link);
    match tokio::time::timeout(node.config().gossip_timeout, client.send_block(req)).await {
        Ok(Ok(resp)) => {
            let duplicate = resp.get_ref().outcome == p2p_proto::node::BlockOutcome::Duplicate as i32;
            node.relay().core().push_answered(block.hash, &peer.to_string(), duplicate);
        }
        Ok(Err(status)) => {
            tracing::debug!(peer, code = ?status.code(), msg = status.message(), "peer refused pushed block")
        }
        Err(_) => {
            tracing::debug!(peer, "block push timed out");
            node.peers().failed(peer, node.now_ms());
        }
    }
}

async fn announce(node: &NodeHandle, peer: &str, headers: Vec<BlockHeader>) {
    let Some(link) = link_to(node, peer) else { return };
    let req = AnnounceBlocksRequest { headers, sender: Some(node.sender()) };
    Stats::add(&node.counters().bytes_sent_announce, req.encoded_len() as u64);
    let mut client = node.peer_client(&link);
    match tokio::time::timeout(node.config().gossip_timeout, client.announce_blocks(req)).await {
        Ok(Ok(_)) => {}
        Ok(Err(status)) => {
            tracing::debug!(peer, code = ?status.code(), msg = status.message(), "peer refused announcement")
        }
        Err(_) => node.peers().failed(peer, node.now_ms()),
    }
}

async fn fetch(node: &NodeHandle, peer: &str, id: Hash, graft: bool) {
    let failed = |node: &NodeHandle| {
        node.relay().core().fetch_failed(id, &peer.to_string());
        node.relay().wake.notify_one();
    };
    let Some(link) = link_to(node, peer) else { return failed(node) };
    let req = GetBlockRequest { hash: id.to_vec(), graft, sender: Some(node.sender()) };
    let mut client = node.peer_client(&link);
    let timeout = Duration::from_millis(node.relay().core().config().fetch_timeout_ms);
    let answer = tokio::time::timeout(timeout, client.get_block(req)).await;
    let block = match answer {
        Ok(Ok(b)) => {
            let b = b.into_inner();
            Stats::add(&node.counters().bytes_received_fetched, b.encoded_len() as u64);
            b
        }
        Ok(Err(status)) => {
            tracing::debug!(peer, code = ?status.code(), msg = status.message(), "block fetch refused");
            return failed(node);
        }
        Err(_) => return failed(node),
    };
    let from = node.culprit_at(peer);
    match node.receive_fetched(block, id, from).await {
        Ok(true) => {}
        Ok(false) => node.relay().core().duplicate(id, &peer.to_string(), false),
        Err(e) => {
            tracing::debug!(peer, error = %e, "fetched block refused");
            failed(node);
        }
    }
}

/// Headers a peer announced: the new ones whose proof of work holds go to
/// the core; answers how many it will fetch. `peer` is the relay key of a
/// verified sender.
pub(crate) async fn announced(node: &NodeHandle, peer: &str, headers: Vec<(Hash, u64)>) -> u32 {
    let mut fresh = Vec::new();
    {
        let mut core = node.relay().core();
        // Whoever relays to us picked us: it joins our relay peers even when
        // it tells us nothing new (a node that is always late would
        // otherwise never be relayed to).
        if !admit(node, &mut core, peer) {
            return 0;
        }
        for (id, height) in headers {
            if core.knows(&id) {
                // Remembered: it is not told about a block it announced.
                let _ = core.announced(id, &peer.to_string(), node.now_ms());
            } else if !node.relay().is_arriving(&id) {
                fresh.push((id, height));
            }
        }
    }
    if fresh.is_empty() {
        return 0;
    }
    // Blocks we store already (e.g. synced) are not fetched.
    let ids: Vec<Hash> = fresh.iter().map(|(id, _)| *id).collect();
    let stored = node
        .chain()
        .read(move |r| ids.iter().map(|id| r.contains(id)).collect::<Result<Vec<bool>, _>>())
        .await
        .unwrap_or_default();
    let now = node.now_ms();
    let (actions, wanted) = {
        let mut core = node.relay().core();
        if !admit(node, &mut core, peer) {
            return 0;
        }
        let mut actions = Vec::new();
        let mut wanted = 0;
        for (i, (id, _)) in fresh.into_iter().enumerate() {
            if stored.get(i).copied().unwrap_or(false) {
                continue;
            }
            wanted += 1;
            actions.extend(core.announced(id, &peer.to_string(), now));
        }
        (actions, wanted)
    };
    // A block that waits for a push has a deadline the timer must see,
    // whether or not anything is sent now.
    node.relay().wake.notify_one();
    dispatch(node, actions);
    wanted
}

/// A peer fetched `id` from us; `graft`: it wants pushes from now on.
pub(crate) fn served(node: &NodeHandle, peer: &str, id: Hash, graft: bool) {
    let mut core = node.relay().core();
    if admit(node, &mut core, peer) {
        core.fetched_from_us(id, &peer.to_string(), graft);
    }
}

/// A pushed block arrived that we had: the sender sees our answer and stops
/// pushing to us; the core stops expecting its pushes.
pub(crate) fn duplicate_push(node: &NodeHandle, from: &str, id: Hash) {
    if let Some(peer) = peer_key(node, from) {
        node.relay().core().duplicate(id, &peer, true);
    }
}

/// The key a verified caller (node id) or, on plaintext links, the address
/// it names is relayed to by.
pub(crate) fn relay_key(node: &NodeHandle, caller: Option<&str>, hint: Option<&str>) -> Option<String> {
    match caller {
        Some(id) => node.peers().address_of(id),
        None if node.config().plaintext => hint.filter(|a| node.peers().contains(a)).map(str::to_string),
        None => None,
    }
}

/// AnnounceBlocks from `caller` (the identity its link proved, if any).
pub(crate) async fn receive_announcement(
    node: &NodeHandle,
    caller: Option<PeerIdentity>,
    req: AnnounceBlocksRequest,
) -> Result<AnnounceBlocksResponse, Error> {
    if req.headers.len() > MAX_ANNOUNCED {
        return Err(Error::invalid("headers", format!("has {} headers; at most {MAX_ANNOUNCED}", req.headers.len())));
    }
    Stats::add(&node.counters().announcements_received, req.headers.len() as u64);
    Stats::add(&node.counters().bytes_received_announce, req.encoded_len() as u64);
    let hint = req.sender.as_ref().filter(|s| !s.address.is_empty()).map(|s| canonical(&s.address));
    let id = caller.map(|c| c.node_id);
    if let Some(id) = &id {
        if node.peers().is_node_banned(id, node.now_ms()) {
            return Err(Error::Banned { peer: id.clone() });
        }
        if let Some(address) = &hint {
            node.peers().learn(address, p2p_proto::node::PeerSource::Inbound, Some(id));
        }
    }
    let Some(peer) = relay_key(node, id.as_deref(), hint.as_deref()) else {
        return Err(Error::FailedPrecondition(
            "block announcements are taken only from peers whose link proved their node id (mutual TLS) and \
             whose address is known; submit a block with SendBlock instead"
                .into(),
        ));
    };
    let culprit = id.unwrap_or_else(|| peer.clone());
    let params = &node.config().network;
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers {
        let checked = convert::header_from_proto(&h).map_err(Error::from).and_then(|(header, hash)| {
            validate::check_proof_of_work(&header, h.nonce, &hash, params).map_err(Error::from)?;
            Ok((hash, header.index))
        });
        match checked {
            Ok(v) => headers.push(v),
            Err(e) => {
                node.misbehaved(Some(&culprit), &e.to_string());
                return Err(e);
            }
        }
    }
    let wanted = announced(node, &peer, headers).await;
    Ok(AnnounceBlocksResponse { wanted })
}

/// GetBlock: a block relayed recently (perhaps not committed yet) or
/// stored; a verified caller asking with `graft` gets pushes from now on.
pub(crate) async fn serve_block(
    node: &NodeHandle,
    caller: Option<PeerIdentity>,
    req: GetBlockRequest,
) -> Result<PbBlock, Error> {
    let hash = validate::hash_field("hash", &req.hash).map_err(Error::from)?;
    let block = match node.relay().recent(&hash) {
        Some(b) => b,
        None => match node.chain().read(move |r| r.block(&hash)).await? {
            Some(b) => Arc::new(b),
            None => return Err(Error::NotFound(format!("no block {} here", hex::encode(hash)))),
        },
    };
    Stats::add(&node.counters().blocks_served, 1);
    let hint = req.sender.as_ref().filter(|s| !s.address.is_empty()).map(|s| canonical(&s.address));
    if let Some(peer) = relay_key(node, caller.as_ref().map(|c| c.node_id.as_str()), hint.as_deref()) {
        served(node, &peer, hash, req.graft);
    }
    let answer = convert::block_to_proto(&block);
    Stats::add(&node.counters().bytes_sent_served, answer.encoded_len() as u64);
    Ok(answer)
}
