//! placeholder
use crate::{broker::Broker, config::Config, shutdown::Shutdown};
use std::sync::Arc;
/// placeholder
pub async fn serve<L>(_l: L, _b: Arc<Broker>, _c: Arc<Config>, mut s: Shutdown) {
    s.recv().await
}
