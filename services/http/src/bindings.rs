//! The HTTP bindings of the RPCs, read from the `google.api.http` annotations of the protos (the
//! descriptor set compiled into the binary), and matching a request's verb and path to one.

use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};

/// One RPC's HTTP binding.
#[derive(Debug, Clone)]
pub struct Binding {
    /// `GET`, `POST`, …
    pub verb: http::Method,
    /// The path template as written (`/v1/incidents/{incident_id}:accept`).
    pub template: String,
    segments: Vec<Segment>,
    /// The custom verb after the last segment (`accept`), if any.
    custom: Option<String>,
    /// `*` (the whole request), a field name, or `None` (no body: the query string).
    pub body: Option<String>,
    /// The RPC.
    pub method: MethodDescriptor,
    /// The gRPC path of the RPC (`/gridroute.v1.IncidentService/GetIncident`).
    pub grpc_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// A variable: the request field it sets.
    Field(String),
}

/// Why the annotations could not be read (a build problem, found by the tests).
#[derive(Debug, thiserror::Error)]
#[error("google.api.http of {method}: {why}")]
pub struct BindingError {
    method: String,
    why: String,
}

impl Binding {
    /// The path variables' field names, in order.
    pub fn path_fields(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Field(f) => Some(f.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Whether the RPC streams its responses (served as Server-Sent Events).
    pub fn server_streaming(&self) -> bool {
        self.method.is_server_streaming()
    }

    /// Matches a request path (not decoded) and returns the path variables, decoded.
    fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.strip_prefix('/')?;
        let (path, custom) = match &self.custom {
            Some(verb) => {
                let (head, v) = path.rsplit_once(':')?;
                if v != verb {
                    return None;
                }
                (head, Some(v))
            }
            None => (path, None),
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        // Without a custom verb in the template, `…/{id}:verb` is an unknown verb, not an id.
        if custom.is_none() && parts.last().is_some_and(|p| p.contains(':')) {
            return None;
        }
        let mut vars = Vec::new();
        for (seg, part) in self.segments.iter().zip(parts) {
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Field(f) => {
                    let value = percent_encoding::percent_decode_str(part)
                        .decode_utf8()
                        .ok()?
                        .into_owned();
                    if value.is_empty() {
                        return None;
                    }
                    vars.push((f.clone(), value));
                }
            }
        }
        Some(vars)
    }
}

/// What a request's path and verb found.
#[derive(Debug)]
pub enum Found<'a> {
    /// The binding, with the path variables.
    Rpc(&'a Binding, Vec<(String, String)>),
    /// The path exists with other verbs (405, with `Allow`).
    WrongVerb(Vec<http::Method>),
    /// No such path (404).
    Nothing,
}

/// Every binding of the API.
#[derive(Debug, Clone)]
pub struct Bindings {
    all: Vec<Binding>,
}

impl Bindings {
    /// Reads the `google.api.http` option of every method of every service in `pool`.
    pub fn from_pool(pool: &DescriptorPool) -> Result<Self, BindingError> {
        let Some(ext) = pool.get_extension_by_name("google.api.http") else {
            return Ok(Self { all: Vec::new() });
        };
        let mut all = Vec::new();
        for service in pool.services() {
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&ext) {
                    continue;
                }
                let Value::Message(rule) = options.get_extension(&ext).into_owned() else {
                    continue;
                };
                all.push(binding(&method, &rule)?);
            }
        }
        Ok(Self { all })
    }

    /// Every binding, in the protos' order.
    pub fn all(&self) -> &[Binding] {
        &self.all
    }

    /// The binding of `verb` on `path`.
    pub fn find(&self, verb: &http::Method, path: &str) -> Found<'_> {
        let mut verbs = Vec::new();
        // Templates with a custom verb first: `/v1/incidents:watch` is not the incident
        // "incidents:watch".
        let ordered = self
            .all
            .iter()
            .filter(|b| b.custom.is_some())
            .chain(self.all.iter().filter(|b| b.custom.is_none()));
        for b in ordered {
            if let Some(vars) = b.matches(path) {
                if b.verb == *verb {
                    return Found::Rpc(b, vars);
                }
                verbs.push(b.verb.clone());
            }
        }
        if verbs.is_empty() {
            Found::Nothing
        } else {
            Found::WrongVerb(verbs)
        }
    }
}

fn binding(method: &MethodDescriptor, rule: &DynamicMessage) -> Result<Binding, BindingError> {
    let err = |why: String| BindingError {
        method: method.full_name().to_owned(),
        why,
    };
    let text = |name: &str| {
        rule.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let (verb, template) = [
        (http::Method::GET, "get"),
        (http::Method::PUT, "put"),
        (http::Method::POST, "post"),
        (http::Method::DELETE, "delete"),
        (http::Method::PATCH, "patch"),
    ]
    .into_iter()
    .map(|(v, name)| (v, text(name)))
    .find(|(_, t)| !t.is_empty())
    .ok_or_else(|| err("no verb".into()))?;
    let path = template
        .strip_prefix('/')
        .ok_or_else(|| err(format!("{template:?} does not start with /")))?;
    let (path, custom) = match path.rsplit_once(':') {
        Some((head, verb)) if !verb.contains('/') && !verb.contains('}') => {
            (head, Some(verb.to_owned()))
        }
        _ => (path, None),
    };
    let input = method.input();
    let segments = path
        .split('/')
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(field) if input.get_field_by_name(field).is_some() => {
                    Ok(Segment::Field(field.to_owned()))
                }
                Some(field) => Err(err(format!("no field {field:?} in {}", input.full_name()))),
                None => Ok(Segment::Literal(s.to_owned())),
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    let body = Some(text("body")).filter(|b| !b.is_empty());
    Ok(Binding {
        verb,
        template,
        segments,
        custom,
        body,
        grpc_path: format!("/{}/{}", method.parent_service().full_name(), method.name()),
        method: method.clone(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn bindings() -> Bindings {
        let pool = DescriptorPool::decode(gridroute_proto::FILE_DESCRIPTOR_SET).unwrap();
        Bindings::from_pool(&pool).unwrap()
    }

    #[test]
    fn every_rpc_of_the_api_has_a_binding() {
        let pool = DescriptorPool::decode(gridroute_proto::FILE_DESCRIPTOR_SET).unwrap();
        let b = Bindings::from_pool(&pool).unwrap();
        let rpcs: usize = pool
            .services()
            .filter(|s| s.package_name() == "gridroute.v1")
            .map(|s| s.methods().len())
            .sum();
        assert_eq!(b.all().len(), rpcs);
    }

    #[test]
    fn paths_find_their_rpc_and_variables() {
        let b = bindings();
        let Found::Rpc(get, vars) = b.find(&http::Method::GET, "/v1/incidents/01JX%2DA") else {
            panic!("get");
        };
        assert_eq!(get.grpc_path, "/gridroute.v1.IncidentService/GetIncident");
        assert_eq!(vars, [("incident_id".to_owned(), "01JX-A".to_owned())]);
        let Found::Rpc(accept, _) = b.find(&http::Method::POST, "/v1/incidents/abc:accept") else {
            panic!("accept");
        };
        assert_eq!(
            accept.grpc_path,
            "/gridroute.v1.DispatchService/AcceptIncident"
        );
        let Found::Rpc(watch, vars) = b.find(&http::Method::GET, "/v1/incidents:watch") else {
            panic!("watch");
        };
        assert!(watch.server_streaming() && vars.is_empty());
        assert!(matches!(
            b.find(&http::Method::DELETE, "/v1/incidents/abc"),
            Found::WrongVerb(v) if v == [http::Method::GET]
        ));
        assert!(matches!(
            b.find(&http::Method::GET, "/v1/nothing"),
            Found::Nothing
        ));
        assert!(matches!(
            b.find(&http::Method::POST, "/v1/incidents/abc:explode"),
            Found::Nothing
        ));
    }
}
