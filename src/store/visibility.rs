//! Which stored rows a reader may see. Every read query of the store takes a [`Visibility`] and
//! turns it into SQL predicates (store::search::restrict), so a row outside the caller's access
//! is never loaded, counted or paged over. The store knows nothing of tokens: the service layer
//! (service::context) implements this trait from the request's scopes and boundaries.
use std::collections::BTreeSet;

/// What a reader may see of one resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows<'a> {
    /// Nothing: no scope grants reading the type.
    Hidden,
    /// Every row.
    All,
    /// Rows in the Patient compartments of these patients (for types outside the Patient
    /// compartment this means every row).
    Patients(&'a BTreeSet<String>),
    /// Exactly the rows with these ids.
    Ids(&'a BTreeSet<String>),
}

/// The caller's read access, asked per resource type.
pub trait Visibility: Sync {
    fn rows(&self, ty: &str) -> Rows<'_>;
}

/// Server-internal reads (the write path's own lookups, migrations, the CLI): every row.
pub struct Everything;

impl Visibility for Everything {
    fn rows(&self, _ty: &str) -> Rows<'_> {
        Rows::All
    }
}
