//! Routes of one app: method and path pattern (`/todos/:id`, `/files/*rest`)
//! to a function.

use std::collections::HashMap;

use http::Method;

/// One route of the manifest.
#[derive(Debug, Clone)]
pub struct Route {
    /// Pattern with `:param` segments and an optional final `*rest`.
    pub path: String,
    /// Allowed methods; empty means any.
    pub methods: Vec<Method>,
    /// What the route leads to: an index the caller gives meaning to.
    pub target: usize,
}

/// Why routes could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("path `{path}`: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("path `{path}` collides with `{other}`")]
    Collision { path: String, other: String },
}

/// The routes of one app.
#[derive(Default)]
pub struct Router {
    paths: matchit::Router<usize>,
    /// Where a final `*rest` may match nothing: `/files` and `/files/` for
    /// `/files/*rest`, `/` for `/*rest`. Asked only when `paths` has no
    /// match, so a route written for that exact path wins.
    empty_rest: matchit::Router<usize>,
    /// Index into `tables` by [`shape`], so `/a/:x` and `/a/:y` share a table.
    shapes: HashMap<String, usize>,
    /// Per pattern: the pattern as first written and its method table.
    tables: Vec<(String, Vec<(Option<Method>, usize)>)>,
}

/// The outcome of routing a request.
#[derive(Debug, PartialEq)]
pub enum RouteMatch {
    Found {
        target: usize,
        pattern: String,
        params: Vec<(String, String)>,
    },
    NotFound,
    MethodNotAllowed {
        allow: Vec<Method>,
    },
}

impl Router {
    pub fn new(routes: &[Route]) -> Result<Self, RouteError> {
        let mut router = Router::default();
        for route in routes {
            router.add(route)?;
        }
        for (index, (pattern, _)) in router.tables.iter().enumerate() {
            let Some((prefix, last)) = pattern.rsplit_once('/') else {
                continue;
            };
            if rest_param(last).is_some() {
                let paths = match prefix {
                    "" => vec!["/".to_string()],
                    _ => vec![prefix.to_string(), format!("{prefix}/")],
                };
                for path in paths {
                    // Rest routes with one prefix already collided above.
                    let _ = router.empty_rest.insert(to_matchit(&path)?, index);
                }
            }
        }
        Ok(router)
    }

    fn add(&mut self, route: &Route) -> Result<(), RouteError> {
        let matchit_path = to_matchit(&route.path)?;
        let methods: Vec<Option<Method>> = if route.methods.is_empty() {
            vec![None]
        } else {
            route.methods.iter().cloned().map(Some).collect()
        };
        let index = match self.shapes.get(&shape(&route.path)) {
            Some(index) => *index,
            None => {
                let index = self.tables.len();
                self.paths
                    .insert(matchit_path, index)
                    .map_err(|err| RouteError::Collision {
                        path: route.path.clone(),
                        other: match err {
                            matchit::InsertError::Conflict { with } => from_matchit(&with),
                            other => other.to_string(),
                        },
                    })?;
                self.shapes.insert(shape(&route.path), index);
                self.tables.push((route.path.clone(), Vec::new()));
                index
            }
        };
        let (pattern, table) = &mut self.tables[index];
        for method in methods {
            let clash = table
                .iter()
                .any(|(m, _)| m.is_none() || method.is_none() || *m == method);
            if clash {
                return Err(RouteError::Collision {
                    path: format!("{} {}", method_label(&method), route.path),
                    other: pattern.clone(),
                });
            }
            table.push((method, route.target));
        }
        Ok(())
    }

    /// Routes `method path` (the app-relative path, without query).
    pub fn route(&self, method: &Method, path: &str) -> RouteMatch {
        let (m, rest_is_empty) = match self.paths.at(path) {
            Ok(m) => (m, false),
            Err(_) => match self.empty_rest.at(path) {
                Ok(m) => (m, true),
                Err(_) => return RouteMatch::NotFound,
            },
        };
        let (pattern, table) = &self.tables[*m.value];
        let mut params: Vec<(String, String)> = m
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // The prefix a rest matched nothing at has no rest parameter.
        if rest_is_empty
            && let Some(rest) = pattern
                .rsplit_once('/')
                .and_then(|(_, last)| rest_param(last))
        {
            params.push((rest.to_string(), String::new()));
        }
        let hit = table
            .iter()
            .find(|(m, _)| m.as_ref() == Some(method))
            .or_else(|| table.iter().find(|(m, _)| m.is_none()));
        match hit {
            Some((_, target)) => RouteMatch::Found {
                target: *target,
                pattern: pattern.clone(),
                params,
            },
            None => RouteMatch::MethodNotAllowed {
                allow: table.iter().filter_map(|(m, _)| m.clone()).collect(),
            },
        }
    }
}

/// The parameter a rest segment (`*name`, or Spin's `...`) takes the
/// rest of the path into; none for any other segment.
fn rest_param(segment: &str) -> Option<&str> {
    match segment {
        "..." => Some(SPIN_REST),
        _ => segment.strip_prefix('*'),
    }
}

/// The parameter Spin's `/...` wildcard is known by here.
const SPIN_REST: &str = "rest";

fn method_label(method: &Option<Method>) -> &str {
    method.as_ref().map_or("*", Method::as_str)
}

/// The pattern with parameter names erased: patterns that differ only in
/// parameter names are one route.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|s| match s.chars().next() {
            Some(':') => ":",
            _ if rest_param(s).is_some() => "*",
            _ => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `/todos/:id` becomes matchit's `/todos/{id}`; `/files/*rest` (or Spin's
/// `/files/...`) becomes `/files/{*rest}`.
fn to_matchit(path: &str) -> Result<String, RouteError> {
    let invalid = |reason: &str| RouteError::InvalidPath {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    if !path.starts_with('/') {
        return Err(invalid("must start with `/`"));
    }
    if path.contains(['{', '}', '?', '#']) {
        return Err(invalid("may not contain `{`, `}`, `?` or `#`"));
    }
    if super::dispatch::is_platform_path(path) {
        return Err(invalid(&format!(
            "`{}/...` is reserved for the platform's endpoints",
            super::PLATFORM_PREFIX
        )));
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let mut out = String::new();
    for (i, segment) in segments.iter().enumerate() {
        out.push('/');
        if let Some(name) = segment.strip_prefix(':') {
            check_param(name).map_err(|r| invalid(&r))?;
            out.push_str(&format!("{{{name}}}"));
        } else if let Some(name) = rest_param(segment) {
            check_param(name).map_err(|r| invalid(&r))?;
            if i + 1 != segments.len() {
                return Err(invalid("`*rest` (or `...`) must be the last segment"));
            }
            out.push_str(&format!("{{*{name}}}"));
        } else if segment.contains([':', '*']) {
            return Err(invalid("`:` and `*` may only start a segment"));
        } else {
            out.push_str(segment);
        }
    }
    Ok(out)
}

fn check_param(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "parameter name `{name}` must be letters, digits or `_`"
        ));
    }
    Ok(())
}

fn from_matchit(path: &str) -> String {
    path.replace("{*", "*").replace('{', ":").replace('}', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, methods: &[Method], target: usize) -> Route {
        Route {
            path: path.into(),
            methods: methods.to_vec(),
            target,
        }
    }

    #[test]
    fn matches_params_and_rest() {
        let router = Router::new(&[
            route("/todos/:id", &[Method::GET], 0),
            route("/files/*rest", &[], 1),
        ])
        .unwrap();
        assert_eq!(
            router.route(&Method::GET, "/todos/42"),
            RouteMatch::Found {
                target: 0,
                pattern: "/todos/:id".into(),
                params: vec![("id".into(), "42".into())]
            }
        );
        assert_eq!(
            router.route(&Method::PUT, "/files/a/b.txt"),
            RouteMatch::Found {
                target: 1,
                pattern: "/files/*rest".into(),
                params: vec![("rest".into(), "a/b.txt".into())]
            }
        );
        assert_eq!(router.route(&Method::GET, "/nope"), RouteMatch::NotFound);
        assert_eq!(
            router.route(&Method::DELETE, "/todos/1"),
            RouteMatch::MethodNotAllowed {
                allow: vec![Method::GET]
            }
        );
    }

    #[test]
    fn same_path_with_different_methods_goes_to_different_functions() {
        let router = Router::new(&[
            route("/todos/:id", &[Method::GET], 0),
            route("/todos/:todo", &[Method::DELETE], 1),
        ])
        .unwrap();
        assert!(matches!(
            router.route(&Method::DELETE, "/todos/1"),
            RouteMatch::Found { target: 1, .. }
        ));
    }

    #[test]
    fn rejects_colliding_routes() {
        let same = Router::new(&[
            route("/a/:id", &[Method::GET], 0),
            route("/a/:id", &[Method::GET, Method::POST], 1),
        ]);
        assert!(matches!(same, Err(RouteError::Collision { .. })));
        let any = Router::new(&[route("/a", &[], 0), route("/a", &[Method::GET], 1)]);
        assert!(matches!(any, Err(RouteError::Collision { .. })));
        let rest = Router::new(&[route("/a/*x", &[], 0), route("/a/*y", &[Method::GET], 1)]);
        assert!(matches!(rest, Err(RouteError::Collision { .. })));
    }

    #[test]
    fn a_final_rest_also_matches_nothing() {
        let router = Router::new(&[route("/*rest", &[], 0)]).unwrap();
        for path in ["/", "/a", "/a/b/"] {
            let RouteMatch::Found { params, .. } = router.route(&Method::GET, path) else {
                panic!("{path} not found");
            };
            assert_eq!(
                params,
                vec![("rest".into(), path[1..].to_string())],
                "{path}"
            );
        }
        let router = Router::new(&[
            route("/files/*key", &[], 0),
            route("/files/", &[Method::POST], 1),
        ])
        .unwrap();
        assert!(matches!(
            router.route(&Method::GET, "/files"),
            RouteMatch::Found { target: 0, ref params, .. } if params == &[("key".to_string(), String::new())]
        ));
        // A route written for the exact path wins over the empty rest.
        assert!(matches!(
            router.route(&Method::POST, "/files/"),
            RouteMatch::Found { target: 1, .. }
        ));
        assert!(matches!(
            router.route(&Method::GET, "/files/"),
            RouteMatch::MethodNotAllowed { .. }
        ));
        assert_eq!(router.route(&Method::GET, "/filesx"), RouteMatch::NotFound);
    }

    #[test]
    fn spins_wildcard_is_a_rest_named_rest() {
        let router = Router::new(&[route("/api/...", &[], 0)]).unwrap();
        for (path, rest) in [("/api", ""), ("/api/", ""), ("/api/a/b", "a/b")] {
            assert_eq!(
                router.route(&Method::GET, path),
                RouteMatch::Found {
                    target: 0,
                    pattern: "/api/...".into(),
                    params: vec![("rest".into(), rest.into())]
                },
                "{path}"
            );
        }
        let same = Router::new(&[route("/api/...", &[], 0), route("/api/*x", &[], 1)]);
        assert!(matches!(same, Err(RouteError::Collision { .. })));
    }

    #[test]
    fn rejects_malformed_patterns() {
        for bad in [
            "todos",
            "/a/:",
            "/a/*rest/b",
            "/a/b:c",
            "/a/{x}",
            "/a/:x-y",
            "/.../a",
            "/_kiln",
            "/_kiln/auth",
        ] {
            assert!(
                matches!(
                    Router::new(&[route(bad, &[], 0)]),
                    Err(RouteError::InvalidPath { .. })
                ),
                "{bad}"
            );
        }
    }
}
