//! `kiln:platform/config`: the function's variables, read-only.
//!
//! Manifest: the top-level `[variables]` table, overridden per function by
//! `functions.NAME.variables`. The variables are also the function's only
//! environment variables.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::WasiCtxBuilder;

use super::bindings::kiln::platform::config::{self as wit, Error, Host};
use super::{
    AppManifest, Capability, CapabilityView, ConfigureError, FunctionManifest, Instances,
    Invocation, Pick, instance,
};

/// Longest variable name.
const MAX_NAME_LEN: usize = 64;

const VARIABLE_RULE: &str =
    "a variable name is a letter or `_`, then letters, digits or `_`, at most 64 characters";

/// Whether `name` may name a variable: a letter or `_`, then letters,
/// digits or `_`, at most 64 characters. Checked at deploy and per call.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && name.len() <= MAX_NAME_LEN && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub struct Config;

/// A function's variables, sorted by name.
pub struct Variables(Arc<[(String, String)]>);

impl Capability for Config {
    const APP_KEYS: &'static [&'static str] = &["variables"];
    const FUNCTION_KEYS: &'static [&'static str] = &["variables"];
    type App = ();
    type Configured = Arc<[(String, String)]>;
    type Instance = Variables;

    fn init(_: &super::Backends) -> Self {
        Config
    }

    fn link<T: CapabilityView>(linker: &mut Linker<T>) -> wasmtime::Result<()>
    where
        Instances: Pick<Self>,
    {
        wit::add_to_linker::<T, HasSelf<Variables>>(linker, |t| instance::<Config, T>(t))
    }

    fn configure_app(&self, _: &AppManifest<'_>) -> Result<(), ConfigureError> {
        Ok(())
    }

    fn configure(
        &self,
        _: &(),
        function: &FunctionManifest<'_>,
    ) -> Result<Self::Configured, ConfigureError> {
        let mut variables: BTreeMap<String, String> = function.app_value("variables")?;
        for name in variables.keys() {
            check_name(name, format!("variables.{name}"))?;
        }
        let own: BTreeMap<String, String> = function.function_value("variables")?;
        for name in own.keys() {
            check_name(name, function.function_field(&format!("variables.{name}")))?;
        }
        variables.extend(own);
        Ok(variables.into_iter().collect())
    }

    fn prepare(
        &self,
        configured: &Self::Configured,
        _: &Invocation<'_>,
        wasi: &mut WasiCtxBuilder,
    ) -> Variables {
        wasi.envs(configured);
        Variables(configured.clone())
    }
}

fn check_name(name: &str, field: String) -> Result<(), ConfigureError> {
    match is_valid_name(name) {
        true => Ok(()),
        false => Err(ConfigureError {
            field,
            message: VARIABLE_RULE.into(),
        }),
    }
}

impl Host for Variables {
    async fn get(&mut self, name: String) -> Result<Option<String>, Error> {
        if !is_valid_name(&name) {
            return Err(Error::InvalidInput(format!(
                "`{}` is not a valid variable name",
                name.escape_debug()
            )));
        }
        Ok(self
            .0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone()))
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, Error> {
        Ok(self.0.to_vec())
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
        let mut host = Variables(vec![("greeting".to_string(), "Hi".to_string())].into());
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

    #[test]
    fn the_functions_variables_override_the_apps_and_bad_names_are_refused() {
        let functions: Arc<[Arc<str>]> = vec![Arc::from("api")].into();
        let app: toml::Table = toml::from_str("variables = { a = \"1\", b = \"2\" }").unwrap();
        let own: toml::Table = toml::from_str("variables = { b = \"3\" }").unwrap();
        let manifest = |function_section| FunctionManifest {
            app: "shop",
            function: "api",
            app_functions: &functions,
            app_section: &app,
            function_section,
        };
        let vars = Config.configure(&(), &manifest(&own)).unwrap();
        assert_eq!(
            &*vars,
            &[("a".into(), "1".into()), ("b".into(), "3".into())]
        );
        let bad: toml::Table = toml::from_str("variables = { \"no-dash\" = \"x\" }").unwrap();
        let err = Config.configure(&(), &manifest(&bad)).unwrap_err();
        assert_eq!(err.field, "functions.api.variables.no-dash");
    }
}
