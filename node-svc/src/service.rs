//! `p2p.node.v1.Node`: request validation in front of [`NodeHandle`].

use std::pin::Pin;

use futures::Stream;
use p2p_proto::node::node_server::Node as NodeRpc;
use p2p_proto::node::{
    Block as PbBlock, BroadcastBlockchainResponse, GetBlocksRequest, GetPeersRequest, GetPeersResponse,
    GetStatusRequest, GetStatusResponse, PingRequest, PingResponse, SendBlockRequest, SendBlockResponse,
};
use p2p_proto::tls::ConnInfo;
use tonic::{Request, Response, Status, Streaming};

use crate::chain::{self, Hash, validate};
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
                    bytes += (b.data.len() + chain::params::MESSAGE_OVERHEAD) as u64;
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
        let tip = self.node.chain().tip().await?;
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
            difficulty_bits: config.network.difficulty_bits,
            version: env!("CARGO_PKG_VERSION").into(),
            orphan_count: self.node.chain().orphan_count() as u64,
        }))
    }

    async fn get_peers(&self, request: Request<GetPeersRequest>) -> Result<Response<GetPeersResponse>, Status> {
        let peers = self.node.peers_to_share(request.into_inner().limit);
        Ok(Response::new(GetPeersResponse { peers }))
    }

    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let caller = self.node.caller(&ConnInfo::of(&request));
        Ok(Response::new(self.node.handle_ping(request.into_inner(), caller).await?))
    }
}
