//! Block1 reassembly (RFC 7959 §2.5): atomic uploads, keyed so that
//! libcoap's new-token-per-block and RFC 9175 Request-Tag work and two
//! concurrent uploads from one client do not mix. Shared by the UDP endpoint
//! and the TCP connection; bounded in count (overall and per peer), size and
//! time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::ResponseType;

use crate::path::UriPath;
use crate::request::{BlockOption, Parsed};

/// Key of a Block1 transfer: peer, Request-Tag values and Uri-Path. The
/// token is deliberately not part of it (libcoap sends a new one per block).
type TransferKey = (SocketAddr, Vec<Vec<u8>>, UriPath);

/// An upload being reassembled from Block1 requests.
#[derive(Debug)]
struct Transfer {
    /// The bytes received so far, in order.
    body: Vec<u8>,
    /// Dropped when the client stalls for this long.
    expires: Instant,
}

/// Limits of a [`Reassembler`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest reassembled body (→ 4.13 with Size1).
    pub(crate) max_body: usize,
    /// Concurrent transfers overall (→ 5.03).
    pub(crate) max_transfers: usize,
    /// Concurrent transfers of one peer (→ 5.03).
    pub(crate) max_per_peer: usize,
    /// Idle time after which a transfer is forgotten.
    pub(crate) lifetime: Duration,
}

/// The uploads in progress.
#[derive(Debug, Default)]
pub(crate) struct Reassembler {
    /// Transfers by key.
    transfers: HashMap<TransferKey, Transfer>,
}

/// Why a Block1 upload step is refused (RFC 7959 §2.5, §2.9). The
/// `Display` text is the diagnostic payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Block1Error {
    /// The body (announced by Size1 or accumulated) exceeds the cap → 4.13 + Size1.
    #[error("request body of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced or accumulated size.
        size: usize,
        /// `Config::max_body_size`.
        max: usize,
    },
    /// A block with NUM > 0 but no transfer in progress → 4.08.
    #[error("Block1 NUM {num} without an upload in progress")]
    NoTransfer {
        /// The received block number.
        num: u32,
    },
    /// A block that does not continue where the last one ended → 4.08.
    #[error("Block1 starts at byte {offset}, expected {received}")]
    Gap {
        /// Offset the received block starts at.
        offset: usize,
        /// Bytes received so far.
        received: usize,
    },
    /// A non-final block shorter or longer than its size → 4.00.
    #[error("Block1 with M=1 carries {len} bytes, not its block size {size}")]
    ShortBlock {
        /// Received payload length.
        len: usize,
        /// Size announced by SZX.
        size: usize,
    },
    /// The reassembly table (or this peer's share of it) is full → 5.03.
    #[error("too many concurrent uploads (limit {max})")]
    TooManyTransfers {
        /// The limit that was reached.
        max: usize,
    },
}

impl Block1Error {
    /// The response code for this error.
    pub(crate) fn code(&self) -> ResponseType {
        match self {
            Self::TooLarge { .. } => ResponseType::RequestEntityTooLarge,
            Self::NoTransfer { .. } | Self::Gap { .. } => ResponseType::RequestEntityIncomplete,
            Self::ShortBlock { .. } => ResponseType::BadRequest,
            Self::TooManyTransfers { .. } => ResponseType::ServiceUnavailable,
        }
    }

    /// Size1 to send with the error (the body limit, for 4.13).
    pub(crate) fn size1(&self) -> Option<u32> {
        match self {
            Self::TooLarge { max, .. } => Some(u32::try_from(*max).unwrap_or(u32::MAX)),
            _ => None,
        }
    }
}

impl Reassembler {
    /// Adds one Block1 block to its transfer. Returns the whole body after
    /// the last block, `None` while more are expected, or the error answer.
    pub(crate) fn add(
        &mut self,
        now: Instant,
        limits: Limits,
        peer: SocketAddr,
        parsed: &Parsed,
        block: BlockOption,
        payload: &[u8],
    ) -> Result<Option<Bytes>, Block1Error> {
        let max = limits.max_body;
        let key: TransferKey = (peer, parsed.request_tag.clone(), parsed.path.clone());
        if let Some(announced) = parsed.size1.filter(|s| *s as usize > max) {
            self.transfers.remove(&key);
            return Err(Block1Error::TooLarge {
                size: announced as usize,
                max,
            });
        }
        if block.num == 0 {
            if !self.transfers.contains_key(&key) {
                if self.transfers.len() >= limits.max_transfers {
                    return Err(Block1Error::TooManyTransfers {
                        max: limits.max_transfers,
                    });
                }
                let mine = self.transfers.keys().filter(|k| k.0 == peer).count();
                if mine >= limits.max_per_peer {
                    return Err(Block1Error::TooManyTransfers {
                        max: limits.max_per_peer,
                    });
                }
            }
            self.transfers.insert(
                key.clone(),
                Transfer {
                    body: Vec::new(),
                    expires: now,
                },
            );
        }
        let Some(transfer) = self.transfers.get_mut(&key) else {
            return Err(Block1Error::NoTransfer { num: block.num });
        };
        let offset = block.num as usize * block.size();
        let received = transfer.body.len();
        let error = if offset != received {
            Some(Block1Error::Gap { offset, received })
        } else if block.more && payload.len() != block.size() {
            Some(Block1Error::ShortBlock {
                len: payload.len(),
                size: block.size(),
            })
        } else if received + payload.len() > max {
            Some(Block1Error::TooLarge {
                size: received + payload.len(),
                max,
            })
        } else {
            None
        };
        if let Some(error) = error {
            self.transfers.remove(&key);
            return Err(error);
        }
        transfer.body.extend_from_slice(payload);
        transfer.expires = now + limits.lifetime;
        if block.more {
            return Ok(None);
        }
        Ok(self.transfers.remove(&key).map(|t| Bytes::from(t.body)))
    }

    /// Forgets stalled transfers.
    pub(crate) fn expire(&mut self, now: Instant) {
        self.transfers.retain(|_, t| t.expires > now);
    }

    /// The earliest expiry, for the driver's timer.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.transfers.values().map(|t| t.expires).min()
    }
}
