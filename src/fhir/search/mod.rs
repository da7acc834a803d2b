//! FHIR search, the pure part: parameter registry, index extraction and query parsing.
//!
//! Stable API used by other modules:
//! - [`SearchQuery::parse`]`(ty, query_string) -> ApiResult<SearchQuery>`: parse a search; bad
//!   parameters go to `SearchQuery::issues`, never an error (only an unknown type is).
//!   Who may see what is not part of a query: the store applies the caller's Visibility
//!   (store::search::restrict) to every row a search touches.
//! - [`extract::extract`]`(ty, &resource) -> IndexRows`: the index rows of a resource.
//! - [`params::SearchParams::get`]: every parameter of every type (drives the CapabilityStatement).
pub mod extract;
pub mod fulltext;
pub mod params;
pub mod query;
pub mod values;

pub use params::{ParamDef, ParamType, SearchParams};
pub use query::{
    Filter, Include, Modifier, Prefix, SearchQuery, SearchValue, SortKey, Summary, Total,
};
