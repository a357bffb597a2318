//! What `kiln check` and `kiln deploy` warn of: collections whose rules let
//! anonymous callers read or write, and filter rules that do not mention
//! the caller (anyone who may act at all reaches every matching document).

use std::collections::BTreeMap;

use super::manifest::{Action, Collection};
use crate::access::Rule;

/// One warning, naming the field (`collections.todos.list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub field: String,
    pub message: String,
}

/// The warnings of an app's collections, in name and action order.
pub fn warnings(collections: &BTreeMap<String, Collection>) -> Vec<Warning> {
    let mut found = Vec::new();
    for (name, collection) in collections {
        for action in Action::ALL {
            let Some(rule) = collection.rule(action) else {
                continue;
            };
            let field = format!("collections.{name}.{}", action.name());
            let verb = match action {
                Action::List | Action::Get => "read",
                _ => "write",
            };
            if rule.admits_anonymous() {
                found.push(Warning {
                    field: field.clone(),
                    message: format!(
                        "anonymous callers may {} `{name}` ({}): anyone on the internet can {verb} it",
                        action.name(),
                        rule.describe()
                    ),
                });
            }
            if let Rule::Filter(filter) = rule
                && !filter.mentions_caller()
            {
                found.push(Warning {
                    field,
                    message: format!(
                        "the filter rule does not mention the caller (`@user.id`, `@user.roles`): every caller it lets {} reaches every matching document",
                        action.name()
                    ),
                });
            }
        }
    }
    found
}
