//! `p2pctl tx send|get` and `p2pctl mempool`: transactions from a terminal.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use ed25519_dalek::Signer;
use p2p_proto::node::node_client::NodeClient;
use p2p_proto::node::{GetMempoolRequest, GetStatusRequest, GetTransactionRequest, Transaction, TransactionStatus};
use serde_json::json;

use crate::connect;
use crate::output::{Table, print_json, relative};

#[derive(Debug, Subcommand)]
pub enum TxCmd {
    /// Sign PAYLOAD with an ed25519 key and submit it; prints its id.
    Send {
        payload: String,
        /// The sender's key file (64 hex characters; created when missing).
        /// Default: ~/.p2pctl/key.
        #[arg(long, env = "P2PCTL_KEY")]
        key: Option<PathBuf>,
        /// The nonce (per sender, strictly increasing on the chain, gaps
        /// allowed); default: the time in ms, which a sender on one clock
        /// never repeats.
        #[arg(long)]
        nonce: Option<u64>,
    },
    /// A transaction by id: pending, or in block N with its confirmations.
    Get { id: String },
}

/// The canonical bytes a transaction's signature covers (README
/// "Transactions"): written here from the spec, so p2pctl needs no node code.
fn signing_bytes(genesis: &[u8], sender: &[u8], nonce: u64, ts: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = b"p2p.node.v1.Transaction\0".to_vec();
    out.extend_from_slice(genesis);
    out.extend_from_slice(sender);
    out.extend_from_slice(&nonce.to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn default_key() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("no --key given and no HOME to keep a default key in")?;
    Ok(PathBuf::from(home).join(".p2pctl").join("key"))
}

pub fn tx_json(t: &Transaction) -> serde_json::Value {
    json!({
        "sender": hex::encode(&t.sender), "nonce": t.nonce, "timestamp_unix_ms": t.timestamp_unix_ms,
        "payload": String::from_utf8_lossy(&t.payload), "payload_hex": hex::encode(&t.payload),
        "signature": hex::encode(&t.signature),
    })
}

pub fn tx_from_json(v: &serde_json::Value) -> anyhow::Result<Transaction> {
    let field = |name: &str| v.get(name).with_context(|| format!("a transaction has no {name:?} field"));
    let hexf = |name: &str| -> anyhow::Result<Vec<u8>> {
        hex::decode(field(name)?.as_str().with_context(|| format!("{name:?} must be a hex string"))?)
            .with_context(|| format!("{name:?} is not valid hex"))
    };
    let num = |name: &str| -> anyhow::Result<u64> {
        field(name)?.as_u64().with_context(|| format!("{name:?} must be a number"))
    };
    Ok(Transaction {
        sender: hexf("sender")?,
        nonce: num("nonce")?,
        timestamp_unix_ms: num("timestamp_unix_ms")?,
        payload: hexf("payload_hex")?,
        signature: hexf("signature")?,
    })
}

pub async fn run(endpoint: &str, cmd: TxCmd, json_out: bool) -> anyhow::Result<()> {
    let mut client = NodeClient::new(connect::channel("node", endpoint).await?).max_decoding_message_size(16 << 20);
    match cmd {
        TxCmd::Send { payload, key, nonce } => {
            let path = match key {
                Some(k) => k,
                None => default_key()?,
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).ok();
            }
            let (key, created) = p2p_proto::identity::load_or_create(&path)?;
            if created {
                eprintln!("created key {}", path.display());
            }
            // Signed for this node's network: its genesis hash.
            let status = client.get_status(GetStatusRequest {}).await.map_err(connect::status)?.into_inner();
            let now = p2p_proto::unix_ms_now();
            let nonce = nonce.unwrap_or(now);
            let sender = key.verifying_key().to_bytes();
            let payload = payload.into_bytes();
            let signature = key.sign(&signing_bytes(&status.genesis_hash, &sender, nonce, now, &payload)).to_bytes();
            let tx = Transaction {
                sender: sender.to_vec(),
                nonce,
                timestamp_unix_ms: now,
                payload,
                signature: signature.to_vec(),
            };
            let r = client.submit_transaction(tx).await.map_err(connect::status)?.into_inner();
            if json_out {
                print_json(&json!({"id": hex::encode(&r.id), "nonce": nonce, "message": r.message}));
            } else {
                println!("{}", hex::encode(&r.id));
                eprintln!("{} (sender {}, nonce {nonce})", r.message, hex::encode(sender));
            }
        }
        TxCmd::Get { id } => {
            let id = hex::decode(id.trim()).context("the id is not hex")?;
            let r = client.get_transaction(GetTransactionRequest { id }).await.map_err(connect::status)?.into_inner();
            let status = r.status();
            if json_out {
                print_json(&json!({
                    "status": status.as_str_name(), "block_height": r.block_height,
                    "block_hash": hex::encode(&r.block_hash), "confirmations": r.confirmations,
                    "transaction": r.transaction.as_ref().map(tx_json),
                }));
            } else {
                match status {
                    TransactionStatus::Confirmed => println!(
                        "confirmed in block {} ({}), {} confirmations",
                        r.block_height,
                        hex::encode(&r.block_hash),
                        r.confirmations
                    ),
                    _ => println!("pending in the mempool"),
                }
                if let Some(t) = r.transaction {
                    println!("payload: {}", String::from_utf8_lossy(&t.payload));
                }
            }
        }
    }
    Ok(())
}

/// `p2pctl mempool`: what a node has pending, oldest first.
pub async fn mempool(endpoint: &str, limit: u32, json_out: bool) -> anyhow::Result<()> {
    let mut client = NodeClient::new(connect::channel("node", endpoint).await?).max_decoding_message_size(64 << 20);
    let r = client
        .get_mempool(GetMempoolRequest { limit, page_token: String::new() })
        .await
        .map_err(connect::status)?
        .into_inner();
    if json_out {
        print_json(&json!({
            "count": r.count, "bytes": r.bytes, "next_page_token": r.next_page_token,
            "entries": r.entries.iter().map(|e| json!({
                "id": hex::encode(&e.id), "received_unix_ms": e.received_unix_ms,
                "transaction": e.transaction.as_ref().map(tx_json),
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let mut t = Table::new(&["ID", "SENDER", "NONCE", "RECEIVED", "PAYLOAD"]);
    for e in &r.entries {
        let tx = e.transaction.clone().unwrap_or_default();
        let mut payload = String::from_utf8_lossy(&tx.payload).into_owned();
        if payload.chars().count() > 40 {
            payload = payload.chars().take(39).collect::<String>() + "…";
        }
        t.row(vec![
            hex::encode(&e.id[..e.id.len().min(8)]),
            hex::encode(&tx.sender[..tx.sender.len().min(8)]),
            tx.nonce.to_string(),
            relative(e.received_unix_ms),
            payload,
        ]);
    }
    t.print();
    println!("{} pending, {} bytes", r.count, r.bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    /// p2pctl writes the encoding from the spec; the node's own code must agree.
    #[test]
    fn the_cli_signs_exactly_what_the_node_verifies() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let genesis = [9u8; 32];
        let node_tx = node_svc::chain::Transaction::sign(&key, &genesis, 7, 11, b"vote".to_vec());
        let ours = super::signing_bytes(&genesis, &key.verifying_key().to_bytes(), 7, 11, b"vote");
        assert_eq!(ours, node_tx.signing_bytes(&genesis));
    }
}
