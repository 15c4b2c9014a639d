//! `p2p.node.v1.Node`: request validation in front of [`NodeHandle`].

use std::pin::Pin;

use futures::Stream;
use p2p_proto::node::node_server::Node as NodeRpc;
use p2p_proto::node::{
    AnnounceBlocksRequest, AnnounceBlocksResponse, AnnounceTransactionsRequest, AnnounceTransactionsResponse,
    Block as PbBlock, BroadcastBlockchainResponse, GetBlockRequest, GetBlocksRequest, GetFinalityRequest,
    GetFinalityResponse, GetMempoolRequest, GetMempoolResponse, GetPeersRequest, GetPeersResponse, GetStatusRequest,
    GetStatusResponse, GetTransactionRequest, GetTransactionResponse, MempoolEntry, PingRequest, PingResponse,
    SendBlockRequest, SendBlockResponse, SendTransactionsRequest, SendTransactionsResponse, SendVotesRequest,
    SendVotesResponse, SubmitTransactionResponse, Transaction as PbTransaction, TransactionStatus,
};
use p2p_proto::tls::ConnInfo;
use tonic::{Request, Response, Status, Streaming};

use crate::chain::{Hash, validate};
use crate::convert;
use crate::error::Error;
use crate::node::NodeHandle;

/// Most locator hashes accepted (a locator for 2^64 blocks needs ~74).
const MAX_LOCATOR: usize = 128;
/// Blocks read from the store per step of a GetBlocks stream: at most
/// this many blocks of one stream are in memory at once, plus what HTTP/2
/// flow control lets sit in the connection's send buffer.
const READ_CHUNK: usize = 16;
/// Default byte budget of a GetBlocks answer when the request sets none.
const DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// GetMempool page size by default and at most.
const MEMPOOL_PAGE: usize = 100;
const MAX_MEMPOOL_PAGE: usize = 1000;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct NodeService {
    node: NodeHandle,
}

impl NodeService {
    pub fn new(node: NodeHandle) -> Self {
        NodeService { node }
    }
}

type BlockStream = Pin<Box<dyn Stream<Item = Result<PbBlock, Status>> + Send>>;

#[tonic::async_trait]
impl NodeRpc for NodeService {
    async fn send_block(&self, request: Request<SendBlockRequest>) -> Result<Response<SendBlockResponse>, Status> {
        let caller = self.node.caller(&ConnInfo::of(&request));
        let req = request.into_inner();
        let block = req.block.ok_or_else(|| Error::invalid("block", "is required"))?;
        let handled = self.node.receive_block(block, caller, req.sender.as_ref()).await?;
        Ok(Response::new(SendBlockResponse {
            outcome: handled.outcome as i32,
            message: convert::outcome_message(handled.outcome).into(),
            height: handled.tip.height,
            tip_hash: handled.tip.hash.to_vec(),
        }))
    }

    async fn broadcast_blockchain(
        &self,
        request: Request<Streaming<PbBlock>>,
    ) -> Result<Response<BroadcastBlockchainResponse>, Status> {
        let offer = self.node.receive_chain(request.into_inner()).await?;
        Ok(Response::new(offer))
    }

    type GetBlocksStream = BlockStream;

    async fn get_blocks(&self, request: Request<GetBlocksRequest>) -> Result<Response<BlockStream>, Status> {
        let client = ConnInfo::of(&request).ip();
        let req = request.into_inner();
        let max = self.node.config().max_blocks_per_request;
        let limit = match req.limit {
            0 => max.min(500),
            n => n.min(max),
        } as usize;
        if req.locator.len() > MAX_LOCATOR {
            return Err(
                Error::invalid("locator", format!("has {} hashes; at most {MAX_LOCATOR}", req.locator.len())).into()
            );
        }
        let start = if req.locator.is_empty() {
            req.from_height
        } else {
            let locator: Vec<Hash> = req
                .locator
                .iter()
                .map(|h| validate::hash_field("locator", h))
                .collect::<Result<_, _>>()
                .map_err(Error::from)?;
            self.node.chain().read(move |r| r.fork_point(&locator)).await?
        };
        // Held by the producer: a stream nobody reads gives its slot back
        // after the idle timeout.
        let slot = self.node.block_streams().try_acquire(client).map_err(|refused| {
            Error::ResourceExhausted(format!("{refused} (GetBlocks streams are capped per client and in total)"))
        })?;
        let max_bytes = match req.max_bytes {
            0 => DEFAULT_MAX_BYTES,
            n => n,
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<PbBlock, Status>>(1);
        let (chain, idle) = (self.node.chain().clone(), self.node.config().stream_idle_timeout);
        tokio::spawn(async move {
            let _slot = slot;
            let (mut next, mut left, mut bytes) = (start, limit, 0u64);
            while left > 0 {
                let take = left.min(READ_CHUNK);
                let blocks = match chain.read(move |r| r.main_from(next, take)).await {
                    Ok(b) if b.is_empty() => return,
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let n = blocks.len();
                for b in blocks {
                    bytes += b.size() as u64;
                    if bytes > max_bytes && next > start {
                        return;
                    }
                    next += 1;
                    // A reader that takes nothing for the idle timeout is dropped.
                    match tokio::time::timeout(idle, tx.send(Ok(convert::block_to_proto(&b)))).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                left = if n < take { 0 } else { left - n };
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn get_status(&self, _request: Request<GetStatusRequest>) -> Result<Response<GetStatusResponse>, Status> {
        let params = self.node.config().network.clone();
        let ((tip, next), finalized) =
            self.node.chain().read(move |r| Ok((r.next_context(&params)?, r.finalized()?))).await?;
        let config = self.node.config();
        Ok(Response::new(GetStatusResponse {
            node_id: self.node.node_id().to_string(),
            address: config.advertise.clone(),
            height: tip.height,
            tip_hash: tip.hash.to_vec(),
            cumulative_work: p2p_proto::work::to_bytes(tip.work),
            genesis_hash: self.node.chain().genesis_hash().to_vec(),
            peer_count: self.node.peers().active_count() as u32,
            network: config.network.name.clone(),
            bits: next.bits,
            version: env!("CARGO_PKG_VERSION").into(),
            orphan_count: self.node.chain().orphan_count() as u64,
            mempool_count: self.node.mempool().len() as u64,
            mempool_bytes: self.node.mempool().bytes() as u64,
            mining: self.node.mining().enabled(),
            target_block_ms: config.network.block_time_ms,
            finalized_height: finalized.height,
            finalized_hash: finalized.hash.to_vec(),
            validator_count: config.network.finality.validators.len() as u32,
            validator: self.node.is_validator(),
        }))
    }

    async fn get_peers(&self, request: Request<GetPeersRequest>) -> Result<Response<GetPeersResponse>, Status> {
        let peers = self.node.peers_to_share(request.into_inner().limit);
        Ok(Response::new(GetPeersResponse { peers }))
    }

    async fn submit_transaction(
        &self,
        request: Request<PbTransaction>,
    ) -> Result<Response<SubmitTransactionResponse>, Status> {
        let tx = convert::tx_from_proto(request.into_inner()).map_err(|e| Error::invalid(e.field, e.reason))?;
        let result = self.node.mempool().submit(vec![tx], crate::mempool::Source::Client).await;
        let id = result.into_iter().next().ok_or_else(|| Error::Internal("no verdict".into()))?.map_err(Error::from)?;
        Ok(Response::new(SubmitTransactionResponse {
            id: id.to_vec(),
            message: format!("accepted {}; pending until a block confirms it", hex::encode(id)),
        }))
    }

    async fn get_transaction(
        &self,
        request: Request<GetTransactionRequest>,
    ) -> Result<Response<GetTransactionResponse>, Status> {
        let id = validate::hash_field("id", &request.into_inner().id).map_err(|e| Error::invalid("id", e))?;
        // The chain first: a transaction just mined is still in the mempool
        // until the mempool has followed the chain, and it is confirmed.
        if let Some(c) = self.node.chain().read(move |r| r.confirmed(&id)).await? {
            return Ok(Response::new(GetTransactionResponse {
                transaction: Some(convert::tx_to_proto(&c.transaction)),
                status: TransactionStatus::Confirmed as i32,
                block_height: c.height,
                block_hash: c.block_hash.to_vec(),
                confirmations: c.confirmations,
            }));
        }
        let e = self.node.mempool().get(&id).ok_or_else(|| {
            Status::not_found(format!("transaction {} is neither pending nor on the main chain", hex::encode(id)))
        })?;
        Ok(Response::new(GetTransactionResponse {
            transaction: Some(convert::tx_to_proto(&e.tx)),
            status: TransactionStatus::Pending as i32,
            ..Default::default()
        }))
    }

    async fn get_mempool(&self, request: Request<GetMempoolRequest>) -> Result<Response<GetMempoolResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => MEMPOOL_PAGE,
            n => (n as usize).min(MAX_MEMPOOL_PAGE),
        };
        let after = match req.page_token.as_str() {
            "" => None,
            t => Some(t.parse::<u64>().map_err(|_| {
                Error::invalid("page_token", "is not a token this server issued; pass next_page_token back unchanged")
            })?),
        };
        let mempool = self.node.mempool();
        // A page is at most a block's worth of bytes (what a message may carry).
        let (page, more) = mempool.page(after, limit, self.node.config().network.max_block_bytes);
        let next_page_token = match page.last() {
            Some(last) if more => last.seq.to_string(),
            _ => String::new(),
        };
        let entries: Vec<MempoolEntry> = page
            .into_iter()
            .map(|e| MempoolEntry {
                id: e.id.to_vec(),
                transaction: Some(convert::tx_to_proto(&e.tx)),
                received_unix_ms: e.received_ms,
            })
            .collect();
        Ok(Response::new(GetMempoolResponse {
            entries,
            next_page_token,
            count: mempool.len() as u64,
            bytes: mempool.bytes() as u64,
        }))
    }

    async fn announce_transactions(
        &self,
        request: Request<AnnounceTransactionsRequest>,
    ) -> Result<Response<AnnounceTransactionsResponse>, Status> {
        let info = ConnInfo::of(&request);
        let caller = self.node.caller(&info).map(|c| c.node_id);
        let ids = request.into_inner().ids;
        crate::metrics::Stats::add(&self.node.counters().tx_announced, ids.len() as u64);
        let max = self.node.config().max_tx_batch;
        if ids.len() > max {
            return Err(Error::invalid("ids", format!("has {} ids; at most {max} per announcement", ids.len())).into());
        }
        let candidates: Vec<Hash> = ids
            .iter()
            .filter_map(|i| <[u8; 32]>::try_from(i.as_slice()).ok())
            .filter(|i| !self.node.mempool().contains(i))
            .collect();
        let lacking = self
            .node
            .chain()
            .read(move |r| {
                let mut out = Vec::new();
                for id in candidates {
                    if !r.is_confirmed(&id)? {
                        out.push(id);
                    }
                }
                Ok(out)
            })
            .await?;
        // One body on its way at a time: what another peer was just asked
        // for is not asked of this one (it becomes a fallback).
        let announcer = caller.clone().or_else(|| info.remote.map(|r| r.to_string())).unwrap_or_default();
        let now = self.node.now_ms();
        let mut requests = self.node.tx_requests();
        let wanted = lacking
            .into_iter()
            .filter(|id| requests.want(*id, &announcer, caller.as_deref(), now))
            .map(|id| id.to_vec())
            .collect();
        Ok(Response::new(AnnounceTransactionsResponse { wanted }))
    }

    async fn send_transactions(
        &self,
        request: Request<SendTransactionsRequest>,
    ) -> Result<Response<SendTransactionsResponse>, Status> {
        let caller = self.node.caller(&ConnInfo::of(&request)).map(|c| c.node_id);
        let txs = request.into_inner().transactions;
        crate::metrics::Stats::add(&self.node.counters().tx_bodies_received, txs.len() as u64);
        let max = self.node.config().max_tx_batch;
        if txs.len() > max {
            return Err(Error::invalid("transactions", format!("has {}; at most {max} per call", txs.len())).into());
        }
        let accepted = crate::txgossip::receive(&self.node, caller, txs).await;
        Ok(Response::new(SendTransactionsResponse { accepted }))
    }

    async fn send_votes(&self, request: Request<SendVotesRequest>) -> Result<Response<SendVotesResponse>, Status> {
        let caller = self.node.caller(&ConnInfo::of(&request));
        crate::metrics::Stats::add(&self.node.counters().vote_messages_received, 1);
        Ok(Response::new(crate::finality::receive(&self.node, caller, request.into_inner()).await?))
    }

    async fn get_finality(
        &self,
        request: Request<GetFinalityRequest>,
    ) -> Result<Response<GetFinalityResponse>, Status> {
        Ok(Response::new(crate::finality::answer(&self.node, request.into_inner()).await?))
    }

    async fn announce_blocks(
        &self,
        request: Request<AnnounceBlocksRequest>,
    ) -> Result<Response<AnnounceBlocksResponse>, Status> {
        let caller = self.node.caller(&ConnInfo::of(&request));
        Ok(Response::new(crate::gossip::receive_announcement(&self.node, caller, request.into_inner()).await?))
    }

    async fn get_block(&self, request: Request<GetBlockRequest>) -> Result<Response<PbBlock>, Status> {
        let caller = self.node.caller(&ConnInfo::of(&request));
        Ok(Response::new(crate::gossip::serve_block(&self.node, caller, request.into_inner()).await?))
    }

    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let caller = self.node.caller(&ConnInfo::of(&request));
        Ok(Response::new(self.node.handle_ping(request.into_inner(), caller).await?))
    }
}
