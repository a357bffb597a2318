//! Who may call a route (`auth` of a `[[routes]]` entry), checked by the
//! host before an instance is created.

use super::Identity;

/// A route's policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Policy {
    /// Anyone; a valid token still names the user.
    #[default]
    Public,
    /// Any signed-in user.
    User,
    /// A signed-in user with this role.
    Role(String),
    /// A signed-in user whose session passed the second factor.
    Mfa,
}

/// Why a request does not meet its route's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No valid token (401).
    SignInRequired,
    /// Signed in, but without the role (403).
    MissingRole(String),
    /// Signed in, without the second factor (403).
    SecondFactorRequired,
}

pub const POLICY_RULE: &str = "is `public`, `user`, `mfa` or `role:NAME` (NAME: 1 to 64 of a-z, A-Z, 0-9, `_`, `-`, `.`, `:`)";

impl Policy {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "public" => Ok(Policy::Public),
            "user" => Ok(Policy::User),
            "mfa" => Ok(Policy::Mfa),
            other => match other.strip_prefix("role:") {
                Some(role) if is_valid_role(role) => Ok(Policy::Role(role.to_string())),
                _ => Err(format!("`{}` {POLICY_RULE}", other.escape_debug())),
            },
        }
    }

    /// Whether `identity` (none: anonymous) may call the route.
    pub fn check(&self, identity: Option<&Identity>) -> Result<(), Refusal> {
        let signed_in = || identity.ok_or(Refusal::SignInRequired);
        match self {
            Policy::Public => Ok(()),
            Policy::User => signed_in().map(|_| ()),
            Policy::Role(role) => match signed_in()?.roles.iter().any(|r| r == role) {
                true => Ok(()),
                false => Err(Refusal::MissingRole(role.clone())),
            },
            Policy::Mfa => match signed_in()?.mfa {
                true => Ok(()),
                false => Err(Refusal::SecondFactorRequired),
            },
        }
    }
}

/// Roles are plain strings of a bounded alphabet, so they fit in a policy
/// and a log line as they are.
pub fn is_valid_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 64
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(roles: &[&str], mfa: bool) -> Identity {
        Identity {
            user: "u".into(),
            session: "s".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            mfa,
        }
    }

    #[test]
    fn parses_every_policy_and_refuses_the_rest() {
        assert_eq!(Policy::parse("public"), Ok(Policy::Public));
        assert_eq!(
            Policy::parse("role:admin"),
            Ok(Policy::Role("admin".into()))
        );
        for bad in ["", "users", "role:", "role:a b", "ROLE:x", "any"] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checks_sign_in_role_and_second_factor() {
        let admin = identity(&["admin"], false);
        assert_eq!(Policy::User.check(None), Err(Refusal::SignInRequired));
        assert_eq!(Policy::Public.check(None), Ok(()));
        assert_eq!(Policy::Role("admin".into()).check(Some(&admin)), Ok(()));
        assert_eq!(
            Policy::Role("staff".into()).check(Some(&admin)),
            Err(Refusal::MissingRole("staff".into()))
        );
        assert_eq!(
            Policy::Mfa.check(Some(&admin)),
            Err(Refusal::SecondFactorRequired)
        );
        assert_eq!(Policy::Mfa.check(Some(&identity(&[], true))), Ok(()));
    }
}
