//! The framing of docs/protocol.md, written with `rmp` by hand.

use std::io;

pub const CALL: u64 = 1;
pub const READY: u8 = 0;
pub const OK: u8 = 2;
pub const ERROR: u8 = 3;
pub const NDARRAY: i8 = 9;

/// `[4-byte length][CALL, id, [module, function, args, nil, session]]` in `frame` (the
/// positional `CALL` body, kwargs nil), with the args array written by `args` (same bytes as
/// pyvisor's `CallBody`).
pub fn call(
    frame: &mut Vec<u8>,
    id: u64,
    module: &str,
    function: &str,
    session: &str,
    args: impl FnOnce(&mut Vec<u8>),
) {
    use rmp::encode::*;
    frame.clear();
    frame.extend_from_slice(&[0; 4]);
    write_array_len(frame, 3).unwrap();
    write_uint(frame, CALL).unwrap();
    write_uint(frame, id).unwrap();
    write_array_len(frame, 5).unwrap();
    write_str(frame, module).unwrap();
    write_str(frame, function).unwrap();
    args(frame);
    write_nil(frame).unwrap();
    write_str(frame, session).unwrap();
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
}

pub fn args_f64(x: f64) -> impl FnOnce(&mut Vec<u8>) {
    move |f| {
        rmp::encode::write_array_len(f, 1).unwrap();
        rmp::encode::write_f64(f, x).unwrap();
    }
}

pub fn args_bin(data: &[u8]) -> impl FnOnce(&mut Vec<u8>) + '_ {
    move |f| {
        rmp::encode::write_array_len(f, 1).unwrap();
        rmp::encode::write_bin_len(f, data.len() as u32).unwrap();
        f.extend_from_slice(data);
    }
}

/// One float64 ndarray argument: ext 9 `[dtype, shape, bin]` (docs/values.md).
pub fn args_ndarray(data: &[u8], len: usize) -> impl FnOnce(&mut Vec<u8>) + '_ {
    move |f| {
        use rmp::encode::*;
        let mut head = Vec::with_capacity(32);
        write_array_len(&mut head, 3).unwrap();
        write_str(&mut head, "<f8").unwrap();
        write_array_len(&mut head, 1).unwrap();
        write_uint(&mut head, len as u64).unwrap();
        write_bin_len(&mut head, data.len() as u32).unwrap();
        write_array_len(f, 1).unwrap();
        write_ext_meta(f, (head.len() + data.len()) as u32, NDARRAY).unwrap();
        f.extend_from_slice(&head);
        f.extend_from_slice(data);
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// `(op, id, body)` of a reply payload.
pub fn split(payload: &[u8]) -> io::Result<(u8, u64, &[u8])> {
    let mut rd = payload;
    if rmp::decode::read_array_len(&mut rd).map_err(|_| bad("envelope"))? != 3 {
        return Err(bad("envelope"));
    }
    let op: u8 = rmp::decode::read_int(&mut rd).map_err(|_| bad("op"))?;
    let id: u64 = rmp::decode::read_int(&mut rd).map_err(|_| bad("id"))?;
    if op == ERROR {
        return Err(io::Error::other(format!(
            "worker error reply: {}",
            String::from_utf8_lossy(rd)
        )));
    }
    Ok((op, id, rd))
}

pub fn f64_of(mut body: &[u8]) -> io::Result<f64> {
    rmp::decode::read_f64(&mut body).map_err(|_| bad("f64"))
}

/// The bytes of a `bin` body, copied out (what a caller that keeps the result must do).
pub fn bin_of(mut body: &[u8]) -> io::Result<Vec<u8>> {
    let n = rmp::decode::read_bin_len(&mut body).map_err(|_| bad("bin"))? as usize;
    body.get(..n).map(<[u8]>::to_vec).ok_or_else(|| bad("bin"))
}

/// The data buffer of an ext-9 ndarray body, copied out.
pub fn ndarray_of(mut body: &[u8]) -> io::Result<Vec<u8>> {
    let meta = rmp::decode::read_ext_meta(&mut body).map_err(|_| bad("ext"))?;
    if meta.typeid != NDARRAY || rmp::decode::read_array_len(&mut body).map_err(|_| bad("nd"))? != 3
    {
        return Err(bad("ndarray"));
    }
    let n = rmp::decode::read_str_len(&mut body).map_err(|_| bad("dtype"))? as usize;
    body = &body[n..];
    let dims = rmp::decode::read_array_len(&mut body).map_err(|_| bad("shape"))?;
    for _ in 0..dims {
        let _: u64 = rmp::decode::read_int(&mut body).map_err(|_| bad("shape"))?;
    }
    bin_of(body)
}
