//! Care-manager worklist ordering (filled in later).
