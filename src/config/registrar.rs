//! The `[registrar]` section: registration times and the contact limit.

use super::file::FileRegistrar;
use super::origin::Source;
use super::{Overrides, RegistrarConfig};

pub(super) fn resolve(
    o: &Overrides,
    f: &FileRegistrar,
    src: Source,
) -> Result<RegistrarConfig, String> {
    let (min, min_at) = src.pick(
        "--min-expires",
        o.min_expires,
        "registrar.min_expires",
        f.min_expires,
    );
    let (max, max_at) = src.pick(
        "--max-expires",
        o.max_expires,
        "registrar.max_expires",
        f.max_expires,
    );
    let (contacts, contacts_at) = src.pick(
        "--max-contacts",
        o.max_contacts,
        "registrar.max_contacts",
        f.max_contacts,
    );
    let r = RegistrarConfig {
        min_expires: min.unwrap_or(60),
        max_expires: max.unwrap_or(86400),
        default_expires: o.default_expires.or(f.default_expires).unwrap_or(3600),
        max_contacts: contacts.unwrap_or(10),
    };
    if r.max_expires < r.min_expires.max(1) {
        return Err(format!(
            "registrar: max_expires ({}, {max_at}) is below min_expires ({}, {min_at})",
            r.max_expires, r.min_expires
        ));
    }
    if r.max_contacts == 0 {
        return Err(format!("{contacts_at}: must be at least 1"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_over_file_over_defaults() {
        let src = Source::new("FILE");
        let o = Overrides {
            max_expires: Some(7200),
            ..Default::default()
        };
        let f = FileRegistrar {
            max_expires: Some(100),
            max_contacts: Some(3),
            ..Default::default()
        };
        let r = resolve(&o, &f, src).unwrap();
        assert_eq!(
            (
                r.min_expires,
                r.max_expires,
                r.default_expires,
                r.max_contacts
            ),
            (60, 7200, 3600, 3)
        );
    }

    #[test]
    fn errors() {
        let src = Source::new("FILE");
        let o = Overrides {
            min_expires: Some(100),
            max_expires: Some(50),
            ..Default::default()
        };
        assert_eq!(
            resolve(&o, &FileRegistrar::default(), src).unwrap_err(),
            "registrar: max_expires (50, --max-expires) is below min_expires (100, --min-expires)"
        );
        let f = FileRegistrar {
            max_contacts: Some(0),
            ..Default::default()
        };
        assert_eq!(
            resolve(&Overrides::default(), &f, src).unwrap_err(),
            "FILE: key 'registrar.max_contacts': must be at least 1"
        );
        let o = Overrides {
            max_contacts: Some(0),
            ..Default::default()
        };
        assert_eq!(
            resolve(&o, &f, src).unwrap_err(),
            "--max-contacts: must be at least 1"
        );
    }
}
