//! Argon2id password hashes as PHC strings, computed in a working memory
//! that each hashing thread allocates once and reuses. Allocating 19 MiB per
//! hash either keeps every freed block resident in glibc's arenas (hundreds
//! of MiB after a burst) or, with a fixed mmap threshold, halves the login
//! rate in page faults; reusing one block per thread does neither.

use std::cell::RefCell;

use argon2::password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version, ARGON2ID_IDENT};

/// OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
/// Stored hashes asking for more than this are refused rather than computed.
const MAX_MEMORY_KIB: u32 = 256 * 1024;

thread_local! {
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Make blocks of 4 MiB and more always come from (and go back to) their own
/// mappings. glibc otherwise raises its mmap threshold to the largest block
/// ever freed, and a released 19 MiB working memory would stay resident in
/// a malloc arena. Called once, before the first hash.
pub fn keep_big_blocks_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// Give this thread's working memory back. Hashing threads call it when
/// their queue runs dry, so 19 MiB per thread is held only while logins keep
/// them busy, not by an idle server.
pub fn release_memory() {
    MEMORY.with(|m| *m.borrow_mut() = Vec::new());
}

fn params() -> Params {
    Params::new(MEMORY_KIB, PASSES, 1, None).expect("valid argon2 params")
}

fn compute(params: &Params, password: &[u8], salt: &[u8], out: &mut [u8]) -> Result<(), String> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    MEMORY.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < params.block_count() {
            m.resize(params.block_count(), Block::default());
        }
        let blocks = params.block_count();
        argon
            .hash_password_into_with_memory(password, salt, out, &mut m[..blocks])
            .map_err(|e| e.to_string())
    })
}

/// A new PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) for `password`.
pub fn hash(password: &str) -> Result<String, String> {
    let params = params();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_buf)
        .map_err(|e| e.to_string())?;
    let mut out = [0u8; 32];
    compute(&params, password.as_bytes(), salt_bytes, &mut out)?;
    let phc = PasswordHash {
        algorithm: ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored` (compared in constant time).
pub fn verify(stored: &str, password: &str) -> bool {
    let Ok(h) = PasswordHash::new(stored) else {
        return false;
    };
    if h.algorithm != ARGON2ID_IDENT {
        return false;
    }
    let Ok(params) = Params::try_from(&h) else {
        return false;
    };
    if params.m_cost() > MAX_MEMORY_KIB {
        return false;
    }
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if compute(&params, password.as_bytes(), salt_bytes, &mut out).is_err() {
        return false;
    }
    Output::new(&out).is_ok_and(|o| o == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier;

    #[test]
    fn round_trip_and_interoperability() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify(&phc, "correct horse"));
        assert!(!verify(&phc, "correct horsf"));
        assert!(!verify("not a hash", "x"));
        // The string is standard: the argon2 crate's own verifier accepts it.
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        // And we accept what the crate produces.
        let theirs = argon2::PasswordHasher::hash_password(
            &Argon2::new(Algorithm::Argon2id, Version::V0x13, params()),
            b"pw",
            &SaltString::generate(&mut OsRng),
        )
        .unwrap()
        .to_string();
        assert!(verify(&theirs, "pw"));
        assert!(!verify(&theirs, "pX"));
    }
}
