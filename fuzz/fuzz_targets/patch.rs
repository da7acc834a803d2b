//! JSON Patch, JSON Merge Patch and FHIRPath Patch application. The input is two JSON
//! documents one after the other: the resource, then the patch; every format is applied, and
//! a patched resource is validated as the server does before storing it.
//! Oracles: no panic; a merge patch applied twice changes nothing more (RFC 7386 is
//! idempotent).
#![no_main]
use icm_fhir::fhir::patch::{merge_patch, PatchFormat};
use icm_fhir::fhir::validate::validate;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let mut docs = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let (Some(Ok(doc)), Some(Ok(patch))) = (docs.next(), docs.next()) else {
        return;
    };
    for format in [PatchFormat::Json, PatchFormat::Merge, PatchFormat::FhirPath] {
        if let Ok(out) = format.apply(&doc, &patch) {
            if out.get("resourceType").is_some() {
                let _ = validate(&out);
            }
            if format == PatchFormat::Merge {
                assert_eq!(merge_patch(&out, &patch), out, "merge patch is idempotent");
            }
        }
    }
});
