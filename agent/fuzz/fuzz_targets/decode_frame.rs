//! Any bytes through both frame decoders, keyed and open: `decode_body`
//! (the whole message) and the agent's own path, `open` then `decode_part`
//! of the kind the frame holds. Each must return `Ok` or `Err`, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_core::wire::{
    self, decode_body, decode_part, kind, open, Beacon, Cipher, Command, CommandResult, Delta,
    Digest, Farewell, Header, KeyConfirm, KeyOffer, MeshKey, PeerList, RouteList, MAX_FRAME,
};

fuzz_target!(|data: &[u8]| {
    let cipher = Cipher::new(&MeshKey([7; 32]));
    for mesh_id in [0x5348_0001, 0] {
        let Ok(header) = Header::parse(data, mesh_id) else {
            continue;
        };
        for key in [None, Some(&cipher)] {
            let _ = decode_body(&header, data, key);
            let mut buf = [0u8; MAX_FRAME];
            let Ok((kind, body)) = open(&header, data, key, &mut buf) else {
                continue;
            };
            let _ = match kind {
                kind::BEACON => decode_part::<Beacon>(body).map(drop),
                kind::DIGEST => decode_part::<Digest>(body).map(drop),
                kind::DELTA => decode_part::<Delta>(body).map(drop),
                kind::PEERS => decode_part::<PeerList>(body).map(drop),
                kind::ROUTES => decode_part::<RouteList>(body).map(drop),
                kind::COMMAND => decode_part::<Command>(body).map(drop),
                kind::COMMAND_RESULT => decode_part::<CommandResult>(body).map(drop),
                kind::LEAVE => decode_part::<Farewell>(body).map(drop),
                kind::KEY_OFFER => decode_part::<KeyOffer>(body).map(drop),
                kind::KEY_CONFIRM => decode_part::<KeyConfirm>(body).map(drop),
                _ => Err(wire::DecodeError::UnknownMessage),
            };
        }
    }
});
