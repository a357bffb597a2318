//! `kiln:platform/config`: the function's variables, read-only.

use wasmtime::component::{HasData, Linker};

use super::bindings::kiln::platform::config::{self as wit, Error, Host};
use crate::engine::InvocationState;

/// Longest variable name.
const MAX_NAME_LEN: usize = 64;

pub(super) fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, Config>(linker, |state| ConfigHost {
        variables: &state.context.variables,
    })
}

/// Whether `name` may name a variable: a letter or `_`, then letters,
/// digits or `_`, at most 64 characters. Checked at deploy and per call.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && name.len() <= MAX_NAME_LEN && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct Config;

impl HasData for Config {
    type Data<'a> = ConfigHost<'a>;
}

struct ConfigHost<'a> {
    /// Sorted by name (the manifest keeps them in a BTreeMap).
    variables: &'a [(String, String)],
}

impl Host for ConfigHost<'_> {
    async fn get(&mut self, name: String) -> Result<Option<String>, Error> {
        if !is_valid_name(&name) {
            return Err(Error::InvalidInput(format!(
                "`{}` is not a valid variable name",
                name.escape_debug()
            )));
        }
        Ok(self
            .variables
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone()))
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, Error> {
        Ok(self.variables.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_variable_names() {
        for ok in ["greeting", "API_KEY", "_x1"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "1abc", "a-b", "é", &"x".repeat(65)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn reads_one_variable_or_none() {
        let vars = vec![("greeting".to_string(), "Hi".to_string())];
        let mut host = ConfigHost { variables: &vars };
        assert_eq!(
            host.get("greeting".into()).await.unwrap(),
            Some("Hi".into())
        );
        assert_eq!(host.get("other".into()).await.unwrap(), None);
        assert!(matches!(
            host.get("no-dash".into()).await,
            Err(Error::InvalidInput(_))
        ));
    }
}
