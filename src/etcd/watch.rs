//! What follow mode asks of etcd: a watch over the source range with
//! previous values, the source head, the proof that revisions in between
//! left the range alone, and the checkpoint key.

use etcd_client::{EventType, GetOptions, Txn, TxnOp, WatchOptions, WatchResponse};

use super::side::Op;
use super::{EtcdError, Side};

/// One event of the source, reduced to what follow needs.
#[derive(Debug, Clone)]
pub struct SourceEvent {
    pub revision: i64,
    pub key: Vec<u8>,
    /// `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The key's value before the event, `None` when it was absent.
    pub prev: Option<Vec<u8>>,
    /// The lease of the put (0: none), and of the previous value.
    pub lease: i64,
    pub prev_lease: i64,
}

/// What one watch response says.
#[derive(Debug, Clone)]
pub enum WatchMessage {
    /// Events (possibly none), and the revision of the response header.
    Events {
        header_revision: i64,
        events: Vec<SourceEvent>,
    },
    /// History was compacted past the start of the watch.
    Compacted { compact_revision: i64 },
    /// The server cancelled the watch for another reason.
    Cancelled { reason: String },
}

/// A watch of `[start, end)` with previous values.
pub struct Watch {
    // Kept alive: dropping the request half ends the watch.
    _requests: etcd_client::WatchRequestSender,
    responses: etcd_client::WatchResponseStream,
}

impl Watch {
    /// Opens a watch of `[start, end)` from `from_revision`.
    pub async fn open(
        side: &Side,
        start: &[u8],
        end: &[u8],
        from_revision: i64,
    ) -> Result<Watch, EtcdError> {
        let options = WatchOptions::new()
            .with_range(end.to_vec())
            .with_start_revision(from_revision)
            .with_prev_key();
        let op = Op {
            action: "read",
            prefix: start,
        };
        let stream = side
            .call(op, |c| {
                let (start, options) = (start.to_vec(), options.clone());
                async move { c.watch_client().watch(start, Some(options)).await }
            })
            .await?;
        let (requests, responses) = stream.split();
        Ok(Watch {
            _requests: requests,
            responses,
        })
    }

    /// The next message; `None` when the stream broke or ended (reopen it).
    pub async fn next(&mut self) -> Option<WatchMessage> {
        match self.responses.message().await {
            Ok(Some(resp)) => Some(message_of(&resp)),
            Ok(None) | Err(_) => None,
        }
    }
}

fn message_of(resp: &WatchResponse) -> WatchMessage {
    if resp.canceled() {
        if resp.compact_revision() > 0 {
            return WatchMessage::Compacted {
                compact_revision: resp.compact_revision(),
            };
        }
        return WatchMessage::Cancelled {
            reason: resp.cancel_reason().to_string(),
        };
    }
    let events = resp
        .events()
        .iter()
        .filter_map(|e| {
            let kv = e.kv()?;
            Some(SourceEvent {
                revision: kv.mod_revision(),
                key: kv.key().to_vec(),
                value: (e.event_type() == EventType::Put).then(|| kv.value().to_vec()),
                prev: e.prev_kv().map(|p| p.value().to_vec()),
                lease: kv.lease(),
                prev_lease: e.prev_kv().map_or(0, |p| p.lease()),
            })
        })
        .collect();
    WatchMessage::Events {
        header_revision: resp.header().map_or(0, |h| h.revision()),
        events,
    }
}

/// The side's current revision (a count-only read of one key).
pub async fn head_revision(side: &Side, key: &[u8]) -> Result<i64, EtcdError> {
    let resp = get(side, key, GetOptions::new().with_count_only()).await?;
    Ok(resp.header().map_or(0, |h| h.revision()))
}

/// Whether some key of `[start, end)` has a mod revision in
/// `(after, at]`, read at revision `at`.
pub async fn changed_between(
    side: &Side,
    start: &[u8],
    end: &[u8],
    after: i64,
    at: i64,
) -> Result<bool, EtcdError> {
    let options = GetOptions::new()
        .with_range(end.to_vec())
        .with_revision(at)
        .with_min_mod_revision(after + 1)
        .with_keys_only()
        .with_limit(1);
    Ok(!get(side, start, options).await?.kvs().is_empty())
}

/// How many keys `[start, end)` held at revision `at`.
pub async fn count_at(side: &Side, start: &[u8], end: &[u8], at: i64) -> Result<i64, EtcdError> {
    let options = GetOptions::new()
        .with_range(end.to_vec())
        .with_revision(at)
        .with_count_only();
    Ok(get(side, start, options).await?.count())
}

async fn get(
    side: &Side,
    key: &[u8],
    options: GetOptions,
) -> Result<etcd_client::GetResponse, EtcdError> {
    let op = Op {
        action: "read",
        prefix: key,
    };
    side.call(op, move |mut c| {
        let (key, options) = (key.to_vec(), options.clone());
        async move { c.get(key, Some(options)).await }
    })
    .await
}

/// One key's current value, `None` when absent.
pub async fn get_value(side: &Side, key: &[u8]) -> Result<Option<Vec<u8>>, EtcdError> {
    let resp = get(side, key, GetOptions::new()).await?;
    Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
}

/// Puts one key, unguarded (follow mode's checkpoint on its own).
pub async fn put_value(side: &Side, key: &[u8], value: &[u8]) -> Result<(), EtcdError> {
    let op = Op {
        action: "write",
        prefix: key,
    };
    let put = TxnOp::put(key.to_vec(), value.to_vec(), None);
    side.call(op, |mut c| {
        let txn = Txn::new().and_then([put.clone()]);
        async move { c.txn(txn).await }
    })
    .await
    .map(|_| ())
}
