//! SMART App Launch scopes (v1 `patient/Task.read`, v2 `user/Task.cruds`): a hand-written parser.
use std::fmt;

/// Whose data a scope speaks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Context {
    /// `patient/`: the patient in the token's `patient` claim.
    Patient,
    /// `user/`: whatever the user may see (care-team boundary for practitioners).
    User,
    /// `system/`: backend services; no per-user boundary.
    System,
}

/// SMART v2 permission letters, as bits.
pub const C: u8 = 1;
pub const R: u8 = 2;
pub const U: u8 = 4;
pub const D: u8 = 8;
pub const S: u8 = 16;
pub const ALL: u8 = C | R | U | D | S;

/// One resource scope: context, resource type (`None` = `*`) and granted permissions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub context: Context,
    pub resource_type: Option<String>,
    pub perms: u8,
}

impl Scope {
    /// Parse one scope token. `Ok(None)` for well-formed non-resource scopes (`openid`,
    /// `fhirUser`, `launch`, `offline_access`, …) that grant no resource access;
    /// `Err` for malformed resource scopes. v2 scopes with a `?param=value` restriction are
    /// refused (not granted) because this server does not enforce such restrictions.
    pub fn parse(s: &str) -> Result<Option<Scope>, String> {
        let Some((ctx, rest)) = s.split_once('/') else {
            return Ok(None);
        };
        let context = match ctx {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            // launch/patient, launch/encounter and the like.
            "launch" => return Ok(None),
            _ => return Err(format!("unknown scope context '{ctx}' in '{s}'")),
        };
        if rest.contains('?') {
            return Err(format!(
                "scope '{s}': parameter-restricted scopes are not supported"
            ));
        }
        let Some((ty, perm)) = rest.rsplit_once('.') else {
            return Err(format!("scope '{s}' lacks '.permissions'"));
        };
        let resource_type = match ty {
            "*" => None,
            t if !t.is_empty()
                && t.starts_with(|c: char| c.is_ascii_uppercase())
                && t.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                Some(t.to_string())
            }
            _ => return Err(format!("scope '{s}': '{ty}' is not a resource type or '*'")),
        };
        let perms = parse_permissions(perm).ok_or_else(|| {
            format!("scope '{s}': '{perm}' is neither read/write/* nor ordered letters of cruds")
        })?;
        Ok(Some(Scope {
            context,
            resource_type,
            perms,
        }))
    }

    /// Whether this scope grants `perm` on `ty`.
    pub fn grants(&self, ty: &str, perm: u8) -> bool {
        self.perms & perm == perm && self.resource_type.as_deref().is_none_or(|t| t == ty)
    }
}

/// `read` (v1 = r+s), `write` (v1 = c+u+d), `*` (all), or v2 letters in the order c r u d s.
fn parse_permissions(p: &str) -> Option<u8> {
    match p {
        "read" => return Some(R | S),
        "write" => return Some(C | U | D),
        "*" => return Some(ALL),
        "" => return None,
        _ => {}
    }
    let order = [('c', C), ('r', R), ('u', U), ('d', D), ('s', S)];
    let mut bits = 0u8;
    let mut next = 0usize;
    for ch in p.chars() {
        let pos = order[next..].iter().position(|(l, _)| *l == ch)? + next;
        bits |= order[pos].1;
        next = pos + 1;
    }
    Some(bits)
}

impl fmt::Display for Scope {
    /// The canonical v2 spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ctx = match self.context {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        };
        let mut letters = String::new();
        for (l, b) in [('c', C), ('r', R), ('u', U), ('d', D), ('s', S)] {
            if self.perms & b != 0 {
                letters.push(l);
            }
        }
        write!(
            f,
            "{ctx}/{}.{letters}",
            self.resource_type.as_deref().unwrap_or("*")
        )
    }
}

/// Parse a space-separated scope string: the resource scopes granted, and the malformed ones
/// (ignored, i.e. granting nothing; reported for the log).
pub fn parse_scopes(s: &str) -> (Vec<Scope>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for tok in s.split_ascii_whitespace() {
        match Scope::parse(tok) {
            Ok(Some(sc)) => ok.push(sc),
            Ok(None) => {}
            Err(e) => bad.push(e),
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Scope {
        Scope::parse(s).unwrap().unwrap()
    }

    #[test]
    fn v1_and_v2_forms() {
        assert_eq!(p("patient/Task.read").perms, R | S);
        assert_eq!(p("user/*.write").perms, C | U | D);
        assert_eq!(p("system/*.*").perms, ALL);
        assert_eq!(p("patient/CarePlan.rs").perms, R | S);
        assert_eq!(p("user/Task.cruds").perms, ALL);
        assert_eq!(p("user/Task.cruds").context, Context::User);
        assert_eq!(p("system/*.*").resource_type, None);
        assert_eq!(
            p("patient/Task.read").resource_type.as_deref(),
            Some("Task")
        );
        assert_eq!(p("user/Observation.c").perms, C);
        assert_eq!(p("user/Observation.ds").perms, D | S);
    }

    #[test]
    fn non_resource_scopes_grant_nothing() {
        for s in [
            "openid",
            "fhirUser",
            "launch",
            "launch/patient",
            "offline_access",
            "online_access",
            "profile",
        ] {
            assert_eq!(Scope::parse(s), Ok(None), "{s}");
        }
    }

    #[test]
    fn malformed_scopes_are_errors() {
        for s in [
            "patient/Task",
            "patient/Task.",
            "patient/Task.rc",
            "patient/Task.rr",
            "patient/Task.x",
            "patient/Task.readwrite",
            "admin/Task.read",
            "patient/task.read",
            "patient/.read",
            "patient/Ta-sk.read",
            "patient/Observation.rs?category=laboratory",
        ] {
            assert!(Scope::parse(s).is_err(), "{s} should be refused");
        }
    }

    #[test]
    fn grants_by_type_and_letter() {
        let s = p("patient/Task.rs");
        assert!(s.grants("Task", R));
        assert!(s.grants("Task", S));
        assert!(!s.grants("Task", U));
        assert!(!s.grants("CarePlan", R));
        assert!(p("user/*.cruds").grants("CarePlan", D));
    }

    #[test]
    fn scope_string_mixes() {
        let (ok, bad) = parse_scopes("openid fhirUser  patient/Task.read bogus/x.y user/*.c");
        assert_eq!(ok.len(), 2);
        assert_eq!(bad.len(), 1);
    }

    fn perms_strategy() -> impl Strategy<Value = u8> {
        1u8..=ALL
    }

    proptest! {
        /// Display then parse is the identity for every scope.
        #[test]
        fn roundtrip(ctx in 0..3u8, ty in proptest::option::of("[A-Z][a-zA-Z]{0,20}"), perms in perms_strategy()) {
            let context = [Context::Patient, Context::User, Context::System][ctx as usize];
            let sc = Scope { context, resource_type: ty, perms };
            prop_assert_eq!(Scope::parse(&sc.to_string()), Ok(Some(sc.clone())));
        }

        /// Any subsequence of "cruds" parses to exactly its letters; any other order fails.
        #[test]
        fn letters(mask in perms_strategy(), shuffle in any::<bool>()) {
            let mut letters: Vec<char> = "cruds".chars().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, c)| c).collect();
            let ordered = letters.clone();
            if shuffle && letters.len() > 1 { letters.reverse(); }
            let s = format!("user/Task.{}", letters.iter().collect::<String>());
            let r = Scope::parse(&s);
            if letters == ordered {
                let bits = letters.iter().map(|c| match c { 'c' => C, 'r' => R, 'u' => U, 'd' => D, _ => S }).fold(0, |a, b| a | b);
                prop_assert_eq!(r.unwrap().unwrap().perms, bits);
            } else {
                prop_assert!(r.is_err());
            }
        }

        /// The parser never panics and a granted scope never exceeds ALL.
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            if let Ok(Some(sc)) = Scope::parse(&s) {
                prop_assert!(sc.perms != 0 && sc.perms & !ALL == 0);
            }
        }
    }
}
