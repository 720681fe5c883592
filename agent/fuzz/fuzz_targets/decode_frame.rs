//! Any bytes through the frame decoder, with and without a mesh key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_core::wire::{decode_body, Cipher, Header, MeshKey};

fuzz_target!(|data: &[u8]| {
    let cipher = Cipher::new(&MeshKey([7; 32]));
    for mesh_id in [0x5348_0001, 0] {
        if let Ok(header) = Header::parse(data, mesh_id) {
            let _ = decode_body(&header, data, None);
            let _ = decode_body(&header, data, Some(&cipher));
        }
    }
});
