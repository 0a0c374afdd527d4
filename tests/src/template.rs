//! `template.yaml`, read as the tests need it: the resources and each function's DynamoDB
//! grants.

use serde_json::Value;

/// The template as JSON (it uses long-form intrinsics only, so it is plain YAML).
pub fn template() -> Value {
    let path = crate::workspace_root().join("template.yaml");
    let text = std::fs::read_to_string(&path).expect("read template.yaml");
    serde_yaml_ng::from_str(&text).expect("template.yaml is plain YAML (long-form intrinsics only)")
}

/// The resource `name`.
pub fn resource<'a>(template: &'a Value, name: &str) -> &'a Value {
    template["Resources"]
        .get(name)
        .unwrap_or_else(|| panic!("template.yaml has no resource {name}"))
}

/// The `(target, action)` pairs the policies of function `name` grant. The target is `table`
/// (with its key condition, if any), an index's name, or another resource's name; a statement
/// under `Fn::If` has its condition's name before it (`if UsesSqs: TaskQueue`).
pub fn granted_actions(template: &Value, name: &str) -> Vec<(String, String)> {
    let mut granted = Vec::new();
    for policy in resource(template, name)["Properties"]["Policies"]
        .as_array()
        .expect("policies")
    {
        for statement in policy["Statement"].as_array().expect("statements") {
            let (prefix, statement) = match statement["Fn::If"].as_array() {
                Some(branches) => (
                    format!("if {}: ", branches[0].as_str().unwrap_or_default()),
                    &branches[1],
                ),
                None => (String::new(), statement),
            };
            let target = match &statement["Resource"] {
                Value::Object(map)
                    if map.contains_key("Fn::GetAtt") && map["Fn::GetAtt"][0] != "TasksTable" =>
                {
                    map["Fn::GetAtt"][0].as_str().unwrap_or_default().to_owned()
                }
                Value::Object(map) if map.contains_key("Fn::GetAtt") => {
                    match statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
                        .as_array()
                    {
                        Some(keys) => format!("table keys {keys:?}"),
                        None => "table".to_owned(),
                    }
                }
                Value::Object(map) => map["Fn::Sub"]
                    .as_str()
                    .and_then(|s| s.rsplit('/').next())
                    .unwrap_or_default()
                    .to_owned(),
                other => panic!("unexpected resource {other}"),
            };
            let list = match &statement["Action"] {
                Value::String(one) => vec![one.clone()],
                Value::Array(many) => many
                    .iter()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect(),
                other => panic!("unexpected action {other}"),
            };
            granted.extend(list.into_iter().map(|a| (format!("{prefix}{target}"), a)));
        }
    }
    granted.sort();
    granted
}
