//! The second factor: TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, one step
//! of clock skew each way) and single-use recovery codes.

use sha2::{Digest, Sha256};
use totp_rs::{Builder, Secret, Totp};

/// Recovery codes given at enrolment.
pub const RECOVERY_CODES: usize = 10;

/// A new TOTP secret (160 bits, as RFC 4226 recommends), base32.
pub fn new_secret() -> String {
    Secret::from(rand::random::<[u8; 20]>()).to_base32()
}

fn totp(secret: &str, app: &str, account: &str) -> Option<Totp> {
    let bytes = Secret::try_from_base32(secret).ok()?;
    Builder::new()
        .with_secret(bytes)
        .with_issuer(Some(app))
        // An otpauth label may not hold `:`.
        .with_account_name(account.replace(':', "_"))
        .build()
        .ok()
}

/// The `otpauth://` URL an authenticator app scans.
pub fn otpauth_url(secret: &str, app: &str, account: &str) -> Option<String> {
    totp(secret, app, account)?.to_url().ok()
}

/// The step a code matches, if it is one of the current window's and newer
/// than `last_step` (so each code is accepted once).
pub fn check(secret: &str, code: &str, last_step: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = crate::store::platform::now_ms() / 1000;
    totp(secret, "kiln", "user")?
        .check(code, now)
        .filter(|step| *step > last_step)
}

/// New recovery codes (`xxxxx-xxxxx`, 50 bits each) and their stored hashes.
pub fn recovery_codes() -> (Vec<String>, Vec<String>) {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| {
            let chars: String = rand::random::<[u8; 10]>()
                .iter()
                .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
                .collect();
            format!("{}-{}", &chars[..5], &chars[5..])
        })
        .collect();
    let hashes = codes.iter().map(|c| hash_recovery_code(c)).collect();
    (codes, hashes)
}

/// The stored form of a recovery code: case and dashes do not matter.
pub fn hash_recovery_code(code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hex::encode(Sha256::digest(normal.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_accepted_once_and_a_wrong_one_never() {
        let secret = new_secret();
        let now = crate::store::platform::now_ms() / 1000;
        let code = totp(&secret, "shop", "a@b")
            .unwrap()
            .generate(now)
            .to_string();
        let step = check(&secret, &code, 0).expect("the current code");
        assert_eq!(check(&secret, &code, step), None, "replayed");
        assert_eq!(check(&secret, "000000x", 0), None);
        let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
        assert_eq!(check(&secret, &wrong, 0), None);
        assert!(
            otpauth_url(&secret, "shop", "a:b@c")
                .unwrap()
                .starts_with("otpauth://totp/")
        );
    }

    #[test]
    fn recovery_codes_hash_without_regard_to_case_or_dashes() {
        let (codes, hashes) = recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert_eq!(
            hash_recovery_code(&codes[0].to_uppercase().replace('-', "")),
            hashes[0]
        );
    }
}
