//! Table definitions shared by both backends (audit_log: only the columns read through the DSL).
diesel::table! {
    resources (pk) {
        pk -> BigInt,
        res_type -> Text,
        res_id -> Text,
        version_id -> BigInt,
        last_updated -> BigInt,
        deleted -> Bool,
        content -> Nullable<Text>,
    }
}

diesel::table! {
    resource_history (hid) {
        hid -> BigInt,
        res_type -> Text,
        res_id -> Text,
        version_id -> BigInt,
        last_updated -> BigInt,
        method -> Text,
        deleted -> Bool,
        content -> Nullable<Text>,
    }
}

diesel::table! {
    audit_log (pk) {
        pk -> BigInt,
        res_type -> Text,
        res_id -> Text,
        version_id -> BigInt,
        last_updated -> BigInt,
        deleted -> Bool,
        content -> Text,
        recorded -> BigInt,
    }
}
