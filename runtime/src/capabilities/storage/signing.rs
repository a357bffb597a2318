//! URLs Kiln signs for its own file endpoints: anyone holding one may do
//! its one method on its one file until it expires. The signature is
//! HMAC-SHA256 over the method, the app, the key and the expiry, under a key
//! derived from the admin key, so every node sharing the admin key verifies
//! every other node's URLs.

use ring::hmac;

/// Longest a signed URL lives.
pub const MAX_EXPIRY_SECS: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signed URL expired")]
    Expired,
    #[error("the signed URL's signature does not match it")]
    Invalid,
}

pub struct UrlSigner {
    key: hmac::Key,
}

fn message(method: &str, app: &str, key: &str, expires: u64) -> Vec<u8> {
    // NUL never appears in a key or an app name, so fields cannot run together.
    format!("kiln file url\0{method}\0{app}\0{key}\0{expires}").into_bytes()
}

impl UrlSigner {
    pub fn new(admin_key: &str) -> Self {
        let derived = ring::digest::digest(
            &ring::digest::SHA256,
            format!("kiln signed file urls\n{admin_key}").as_bytes(),
        );
        UrlSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// The hex signature of `method` on `key` of `app` until `expires`
    /// (seconds since the Unix epoch).
    pub fn sign(&self, method: &str, app: &str, key: &str, expires: u64) -> String {
        hex::encode(hmac::sign(&self.key, &message(method, app, key, expires)).as_ref())
    }

    /// Checks a URL's signature (in constant time), then its expiry. Only
    /// the lower-case hex Kiln writes is read: a signed URL has one spelling.
    pub fn verify(
        &self,
        method: &str,
        app: &str,
        key: &str,
        expires: u64,
        signature: &str,
        now_secs: u64,
    ) -> Result<(), SignatureError> {
        if !signature
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(SignatureError::Invalid);
        }
        let signature = hex::decode(signature).map_err(|_| SignatureError::Invalid)?;
        hmac::verify(&self.key, &message(method, app, key, expires), &signature)
            .map_err(|_| SignatureError::Invalid)?;
        if now_secs >= expires {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_method_app_key_and_expiry() {
        let signer = UrlSigner::new("admin");
        let sig = signer.sign("GET", "shop", "a/b.png", 1000);
        assert_eq!(
            signer.verify("GET", "shop", "a/b.png", 1000, &sig, 999),
            Ok(())
        );
        assert_eq!(
            signer.verify("GET", "shop", "a/b.png", 1000, &sig, 1000),
            Err(SignatureError::Expired)
        );
        for (method, app, key, expires) in [
            ("PUT", "shop", "a/b.png", 1000),
            ("GET", "shop2", "a/b.png", 1000),
            ("GET", "shop", "a/b.pn", 1000),
            ("GET", "shop", "a/b.png", 1001),
        ] {
            assert_eq!(
                signer.verify(method, app, key, expires, &sig, 0),
                Err(SignatureError::Invalid),
                "{method} {app} {key} {expires}"
            );
        }
        assert_eq!(
            signer.verify("GET", "shop", "a/b.png", 1000, "zz", 0),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            signer.verify("GET", "shop", "a/b.png", 1000, &sig.to_uppercase(), 0),
            Err(SignatureError::Invalid),
            "another spelling of the same signature"
        );
        let other = UrlSigner::new("another admin key");
        assert_eq!(
            other.verify("GET", "shop", "a/b.png", 1000, &sig, 0),
            Err(SignatureError::Invalid)
        );
    }
}
