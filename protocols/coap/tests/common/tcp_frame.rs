//! Reading CoAP over TCP (RFC 8323 §3.2) back into datagram-layout packets. Shared, through
//! a `#[path]` module, with the gateway's black-box tests (`tests/common/coap.rs`).

use coap_lite::Packet;

/// Parse the frame at the start of `buf`: the packet (datagram layout: type and MID zero)
/// and the number of bytes the frame used; `None` while `buf` holds less than a frame.
pub fn parse_tcp_frame(buf: &[u8]) -> Option<(Packet, usize)> {
    let b0 = *buf.first()?;
    let (nib, tkl) = (b0 >> 4, usize::from(b0 & 0x0F));
    let ext = match nib {
        13 => 1,
        14 => 2,
        15 => 4,
        _ => 0,
    };
    let e = buf.get(1..1 + ext)?;
    let len = match ext {
        0 => usize::from(nib),
        1 => usize::from(e[0]) + 13,
        2 => usize::from(u16::from_be_bytes([e[0], e[1]])) + 269,
        _ => u32::from_be_bytes([e[0], e[1], e[2], e[3]]) as usize + 65_805,
    };
    let total = 2 + ext + tkl + len;
    if buf.len() < total {
        return None;
    }
    let mut d = vec![0x40 | tkl as u8, buf[1 + ext], 0, 0];
    d.extend_from_slice(&buf[2 + ext..total]);
    let p = Packet::from_bytes(&d).expect("the server emits valid CoAP over TCP");
    Some((p, total))
}
