//! Positions in the message log as the broker core sees them ([`Seq`]).
//!
//! Under load the lane puts a run of writes to one subject into one log message (a batch,
//! [`super::envelope::encode_batch`]): JetStream then stores, acknowledges and delivers one
//! message for the run instead of one per write, which is where a cluster node's and the
//! NATS server's CPU per write went. The broker core still needs one position per write
//! (persistent sessions resume after the last one they got, exchanges name theirs), so a
//! position is the log message's stream sequence times [`SLOTS`] plus the write's index in
//! it. Unbatched messages are index 0. Positions keep the log's order and never collide;
//! "everything of stream message `s`" is [`through`]`(s)`.

use crate::durable::Seq;

/// Writes one log message may carry (and positions per stream sequence).
pub const SLOTS: u64 = 1024;

/// The position of entry `index` of stream message `stream_seq` (≥ 1).
pub fn at(stream_seq: u64, index: usize) -> Option<Seq> {
    Seq::new(stream_seq.saturating_mul(SLOTS) + index as u64 % SLOTS)
}

/// The last position stream message `stream_seq` can hold: "up to and including it".
pub fn through(stream_seq: u64) -> u64 {
    stream_seq.saturating_mul(SLOTS) + (SLOTS - 1)
}

/// The stream message holding position `pos`, and the entry's index in it.
pub fn split(pos: u64) -> (u64, usize) {
    (pos / SLOTS, (pos % SLOTS) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_keep_the_log_order_and_split_back() {
        let a = at(7, 0).map(Seq::get);
        let b = at(7, 1023).map(Seq::get);
        let c = at(8, 0).map(Seq::get);
        assert!(a < b && b < c);
        assert_eq!(b, Some(through(7)));
        assert_eq!(split(at(7, 5).map_or(0, Seq::get)), (7, 5));
        assert_eq!(split(through(9)), (9, 1023));
        // "After everything of message 9" is the first position of message 10.
        assert_eq!(split(through(9) + 1), (10, 0));
    }
}
