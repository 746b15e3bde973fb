//! Client certificates (mTLS) as identities: a verified certificate's subject or subject
//! alternative name is looked up in a configuration file that names the principal, so that a
//! system connecting with its certificate needs no token.
//!
//! ```yaml
//! certificates:
//!   - san_dns: hotline.gateway.city.example      # or san_uri, san_email, subject_cn, subject
//!     principal: source_system:12345-hotline
//!   - subject_cn: water-affairs-gateway
//!     principal: department:water-affairs
//! ```
//!
//! The TLS layer has already verified the certificate against the client CA; this only maps
//! it. The first entry that matches wins; a certificate no entry matches is refused
//! (UNAUTHENTICATED), never let in anonymous.

use gridroute_core::access::Principal;
use x509_parser::{extensions::GeneralName, prelude::FromDer};

use crate::AuthError;

/// One line of the map.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySpec {
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    subject_cn: Option<String>,
    #[serde(default)]
    san_dns: Option<String>,
    #[serde(default)]
    san_uri: Option<String>,
    #[serde(default)]
    san_email: Option<String>,
    principal: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    certificates: Vec<EntrySpec>,
}

/// What part of a certificate an entry matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Subject(String),
    SubjectCn(String),
    SanDns(String),
    SanUri(String),
    SanEmail(String),
}

/// Certificates mapped to principals.
#[derive(Debug, Clone, Default)]
pub struct CertMap {
    entries: Vec<(Matcher, Principal)>,
}

/// The identities a certificate carries.
#[derive(Debug, Default)]
struct Identities {
    subject: String,
    cns: Vec<String>,
    dns: Vec<String>,
    uris: Vec<String>,
    emails: Vec<String>,
}

impl CertMap {
    /// Parses the YAML map; every problem is listed.
    pub fn from_yaml(text: &str) -> Result<Self, Vec<String>> {
        let spec: FileSpec = yaml_serde::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut errors = Vec::new();
        let mut entries = Vec::new();
        for (i, e) in spec.certificates.into_iter().enumerate() {
            let matchers: Vec<Matcher> = [
                e.subject.map(Matcher::Subject),
                e.subject_cn.map(Matcher::SubjectCn),
                e.san_dns.map(|s| Matcher::SanDns(s.to_ascii_lowercase())),
                e.san_uri.map(Matcher::SanUri),
                e.san_email
                    .map(|s| Matcher::SanEmail(s.to_ascii_lowercase())),
            ]
            .into_iter()
            .flatten()
            .collect();
            let principal = Principal::parse(&e.principal);
            match (matchers.as_slice(), principal) {
                ([m], Ok(p)) => entries.push((m.clone(), p)),
                (_, Err(err)) => errors.push(format!("certificates[{i}].principal: {err}")),
                _ => errors.push(format!(
                    "certificates[{i}]: give exactly one of subject, subject_cn, san_dns, san_uri, san_email"
                )),
            }
        }
        if errors.is_empty() {
            Ok(Self { entries })
        } else {
            Err(errors)
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of a verified certificate (DER). The person recorded is `cert:` and the
    /// identity that matched.
    pub fn identify(&self, der: &[u8]) -> Result<Principal, AuthError> {
        let ids = identities(der).ok_or_else(|| AuthError::Unmapped("(unreadable)".into()))?;
        for (m, p) in &self.entries {
            let hit = match m {
                Matcher::Subject(s) => (ids.subject == *s).then(|| s.clone()),
                Matcher::SubjectCn(s) => ids.cns.iter().find(|c| *c == s).cloned(),
                Matcher::SanDns(s) => ids.dns.iter().find(|c| *c == s).cloned(),
                Matcher::SanUri(s) => ids.uris.iter().find(|c| *c == s).cloned(),
                Matcher::SanEmail(s) => ids.emails.iter().find(|c| *c == s).cloned(),
            };
            if let Some(value) = hit {
                return Ok(p.clone().with_person(&format!("cert:{value}")));
            }
        }
        let shown = ids
            .cns
            .first()
            .or(ids.dns.first())
            .or(ids.uris.first())
            .cloned()
            .unwrap_or(ids.subject);
        Err(AuthError::Unmapped(
            format!("{shown:?}").chars().take(130).collect(),
        ))
    }
}

fn identities(der: &[u8]) -> Option<Identities> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let mut ids = Identities {
        subject: cert.subject().to_string(),
        cns: cert
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect(),
        ..Identities::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => ids.dns.push(d.to_ascii_lowercase()),
                GeneralName::URI(u) => ids.uris.push((*u).to_owned()),
                GeneralName::RFC822Name(e) => ids.emails.push(e.to_ascii_lowercase()),
                _ => {}
            }
        }
    }
    Some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_checked_whole() {
        let ok = CertMap::from_yaml(
            "certificates:\n  - {san_dns: Hotline.Example, principal: 'source_system:12345-hotline'}\n  - {subject_cn: gw, principal: 'department:water-affairs'}\n",
        )
        .expect("valid");
        assert_eq!(ok.len(), 2);
        let errors = CertMap::from_yaml(
            "certificates:\n  - {principal: 'department:x'}\n  - {subject_cn: a, san_dns: b, principal: 'department:x'}\n  - {subject_cn: a, principal: 'wizard:x'}\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn a_certificate_maps_by_san_or_cn() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["hotline.example".into()]).expect("p");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hotline-gateway");
        let cert = params.self_signed(&key).expect("cert");
        let map = CertMap::from_yaml(
            "certificates:\n  - {san_dns: hotline.example, principal: 'source_system:12345-hotline'}\n",
        )
        .expect("valid");
        let p = map.identify(cert.der()).expect("mapped");
        assert_eq!(p.label(), "source_system:12345-hotline");
        assert_eq!(p.person, "cert:hotline.example");
        let by_cn = CertMap::from_yaml(
            "certificates:\n  - {subject_cn: hotline-gateway, principal: 'department:water-affairs'}\n",
        )
        .expect("valid");
        assert_eq!(
            by_cn.identify(cert.der()).expect("mapped").label(),
            "department:water-affairs"
        );
        let none = CertMap::from_yaml(
            "certificates:\n  - {subject_cn: someone-else, principal: 'auditor'}\n",
        )
        .expect("valid");
        assert!(matches!(
            none.identify(cert.der()),
            Err(AuthError::Unmapped(_))
        ));
    }
}
