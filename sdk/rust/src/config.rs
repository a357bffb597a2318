//! The function's variables (`[variables]` in `kiln.toml`).

use crate::bindings::kiln::platform::config as wit;

pub use wit::Error;

/// The variable's value, or `None` when it is not set (or the name is invalid).
pub fn get(name: &str) -> Option<String> {
    try_get(name).ok().flatten()
}

/// The variable's value, with the host's error when the name is invalid.
pub fn try_get(name: &str) -> Result<Option<String>, Error> {
    wit::get(name)
}

/// Every variable, sorted by name.
pub fn all() -> Result<Vec<(String, String)>, Error> {
    wit::get_all()
}
