//! The secure command's primitives (SECURE-COMMAND.md: Primitives), on the `des` crate: E(K, X)
//! = 3DES-EDE2 ECB of one block, Div(K, X), padding method 2, 3DES-CBC with a zero IV and the
//! retail MAC (ISO/IEC 9797-1 MAC algorithm 3). Shared by the platform's frame builder and the
//! simulated meter; everything above them is written twice, on purpose.

use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use des::{Des, TdesEde2};

/// A two-key 3DES key, K1 ‖ K2.
pub type Key16 = [u8; 16];
/// One DES block.
pub type Block = [u8; 8];

fn tdes(key: &Key16) -> TdesEde2 {
    TdesEde2::new(GenericArray::from_slice(key))
}

fn des(key: &[u8]) -> Des {
    Des::new(GenericArray::from_slice(key))
}

/// E(K, X): 3DES-EDE2 ECB encryption of one block.
pub fn encrypt_block(key: &Key16, block: &Block) -> Block {
    let mut b = GenericArray::clone_from_slice(block);
    tdes(key).encrypt_block(&mut b);
    b.into()
}

/// Div(K, X) = E(K, X) ‖ E(K, X ⊕ FF…FF).
pub fn diversify(key: &Key16, data: &Block) -> Key16 {
    let left = encrypt_block(key, data);
    let inverted = data.map(|b| !b);
    let right = encrypt_block(key, &inverted);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&left);
    out[8..].copy_from_slice(&right);
    out
}

/// ISO/IEC 9797-1 padding method 2: 0x80, then zeros to a multiple of 8 (a whole block when
/// the data is one already).
pub fn pad(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(data);
    out.push(0x80);
    while out.len() % 8 != 0 {
        out.push(0);
    }
    out
}

/// The data before method-2 padding, or `None` when the padding is not well formed.
pub fn unpad(data: &[u8]) -> Option<&[u8]> {
    if data.is_empty() || data.len() % 8 != 0 {
        return None;
    }
    let end = data.iter().rposition(|b| *b != 0)?;
    (data[end] == 0x80 && data.len() - end <= 8).then(|| &data[..end])
}

/// 3DES-CBC with a zero IV over whole blocks (`None` for a length not a multiple of 8).
pub fn cbc_encrypt(key: &Key16, data: &[u8]) -> Option<Vec<u8>> {
    if data.len() % 8 != 0 {
        return None;
    }
    let cipher = tdes(key);
    let mut chain = [0u8; 8];
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.chunks_exact(8) {
        let mut block = GenericArray::clone_from_slice(chunk);
        for (b, c) in block.iter_mut().zip(chain) {
            *b ^= c;
        }
        cipher.encrypt_block(&mut block);
        chain.copy_from_slice(&block);
        out.extend_from_slice(&block);
    }
    Some(out)
}

/// The inverse of [`cbc_encrypt`].
pub fn cbc_decrypt(key: &Key16, data: &[u8]) -> Option<Vec<u8>> {
    if data.len() % 8 != 0 {
        return None;
    }
    let cipher = tdes(key);
    let mut chain = [0u8; 8];
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.chunks_exact(8) {
        let mut block = GenericArray::clone_from_slice(chunk);
        cipher.decrypt_block(&mut block);
        for (b, c) in block.iter_mut().zip(chain) {
            *b ^= c;
        }
        chain.copy_from_slice(chunk);
        out.extend_from_slice(&block);
    }
    Some(out)
}

/// The retail MAC with padding method 2: single-DES CBC with K1 (zero IV) over the padded data,
/// then the last block decrypted with K2 and encrypted with K1.
pub fn retail_mac(key: &Key16, data: &[u8]) -> Block {
    let (k1, k2) = (des(&key[..8]), des(&key[8..]));
    let mut chain = GenericArray::clone_from_slice(&[0u8; 8]);
    for chunk in pad(data).chunks_exact(8) {
        for (b, d) in chain.iter_mut().zip(chunk) {
            *b ^= d;
        }
        k1.encrypt_block(&mut chain);
    }
    k2.decrypt_block(&mut chain);
    k1.encrypt_block(&mut chain);
    chain.into()
}

/// Equal bytes, compared in time that does not depend on where they differ (MACs).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_method_2_round_trips_and_refuses_bad_padding() {
        assert_eq!(pad(&[]), [0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(pad(&[1; 8]).len(), 16, "a whole block is added");
        for n in 0..20 {
            let data = vec![0xAB; n];
            assert_eq!(unpad(&pad(&data)), Some(&data[..]));
        }
        assert_eq!(unpad(&[0; 8]), None);
        assert_eq!(unpad(&[1, 2, 3, 4, 5, 6, 7, 8]), None);
        assert_eq!(unpad(&[0x80, 0, 0]), None);
    }

    #[test]
    fn cbc_round_trips_and_chains() {
        let key = [7u8; 16];
        let data = [0x11u8; 24];
        let sealed = cbc_encrypt(&key, &data).unwrap();
        assert_ne!(sealed[..8], sealed[8..16], "chained: equal blocks differ");
        assert_eq!(cbc_decrypt(&key, &sealed).unwrap(), data);
        assert_eq!(cbc_encrypt(&key, &[0; 7]), None);
    }
}
