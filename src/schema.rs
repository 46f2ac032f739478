//! The plan file's JSON Schema, generated from the raw types so that it can
//! never drift from what the parser accepts (a test compares it with the
//! committed `schemas/plan.schema.json`).

use crate::planfile::raw::RawPlan;

/// The JSON Schema of the plan file, pretty-printed with a trailing newline.
pub fn plan_schema_json() -> String {
    let schema = schemars::schema_for!(RawPlan);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
