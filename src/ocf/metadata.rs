//! The meta-data document, and the parameters as it documents them.

use super::params::PARAM_NAMES;

/// The meta-data document, embedded at build time so that `meta-data`
/// prints exactly the bytes of `ocf-metadata.xml` and needs nothing at run
/// time (ocf-tester runs it as `nobody`, with no libvirt anywhere).
pub const METADATA: &str = include_str!("../../ocf-metadata.xml");

/// One parameter as `ocf-metadata.xml` documents it. The CLI's flags and
/// their help come from here, so `--help` and meta-data cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamDoc {
    pub name: &'static str,
    pub shortdesc: &'static str,
    pub longdesc: &'static str,
    pub content_type: &'static str,
    pub default: Option<&'static str>,
}

/// The text of the first `<tag ...>TEXT</tag>` in `s`.
fn element<'a>(s: &'a str, tag: &str) -> Option<&'a str> {
    let open = s.find(&format!("<{tag}"))?;
    let body = open + s[open..].find('>')? + 1;
    let end = body + s[body..].find(&format!("</{tag}>"))?;
    Some(s[body..end].trim())
}

/// The value of `attr="..."` in `s`.
fn attribute<'a>(s: &'a str, attr: &str) -> Option<&'a str> {
    let key = format!(" {attr}=\"");
    let start = s.find(&key)? + key.len();
    Some(&s[start..start + s[start..].find('"')?])
}

/// The parameters documented in [`METADATA`], in order. The document is
/// ours and fixed at build time (a unit test parses all of it), so a plain
/// scan is enough; no XML parser is linked for it.
pub fn param_docs() -> Vec<ParamDoc> {
    METADATA
        .split("<parameter ")
        .skip(1)
        .filter_map(|p| {
            let p = &p[..p.find("</parameter>")?];
            Some(ParamDoc {
                name: attribute(&format!(" {p}"), "name")
                    .and_then(|n| PARAM_NAMES.into_iter().find(|&k| k == n))?,
                shortdesc: element(p, "shortdesc")?,
                longdesc: element(p, "longdesc")?,
                content_type: p
                    .find("<content")
                    .and_then(|i| attribute(&p[i..], "type"))?,
                default: p
                    .find("<content")
                    .and_then(|i| attribute(&p[i..], "default"))
                    .filter(|d| !d.is_empty()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocf::params::{
        DEFAULT_DOWNTIME_MAX_MS, DEFAULT_DOWNTIME_MS, DEFAULT_HYPERVISOR, DEFAULT_SUFFIX,
    };

    #[test]
    fn metadata_documents_every_parameter_with_our_defaults() {
        let docs = param_docs();
        let names: Vec<_> = docs.iter().map(|d| d.name).collect();
        assert_eq!(names, PARAM_NAMES);
        let default = |n: &str| docs.iter().find(|d| d.name == n).unwrap().default;
        assert_eq!(default("hypervisor"), Some(DEFAULT_HYPERVISOR));
        assert_eq!(default("migration_network_suffix"), Some(DEFAULT_SUFFIX));
        assert_eq!(default("migration_transport"), Some("ssh"));
        assert_eq!(default("migration_speed"), Some("0"));
        assert_eq!(
            default("migration_downtime"),
            Some(DEFAULT_DOWNTIME_MS.to_string().as_str())
        );
        assert_eq!(
            default("migration_downtime_max"),
            Some(DEFAULT_DOWNTIME_MAX_MS.to_string().as_str())
        );
        assert_eq!(default("migration_postcopy"), Some("false"));
        assert_eq!(default("migration_parallel"), Some("1"));
        assert_eq!(default("force_stop"), Some("false"));
        assert_eq!(default("name"), None);
        assert!(docs
            .iter()
            .all(|d| !d.shortdesc.is_empty() && !d.longdesc.is_empty()));
        assert_eq!(docs[6].content_type, "integer");
    }
}
