//! Static checks of the deployment artefacts (no Docker engine, no AWS account):
//! the CloudFormation templates' IAM is least-privilege for S3 and SQS, the
//! autoscaling and dashboard render to what AWS accepts, every parameter the
//! deploy walkthrough (docs/deploy.md) names exists, and the Dockerfile's runtime
//! stage copies exactly what its builder stage builds.
//!
//! Templates use long-form intrinsics only, so they parse as plain YAML; a small
//! evaluator below resolves `Ref`, `Fn::Sub`, `Fn::If`, `Fn::Join`,
//! `Fn::FindInMap` and `Fn::GetAtt` for a given set of parameter values, the way
//! CloudFormation would, so the assertions see the policies AWS would see.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use testsupport::workspace_root;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

// ---------------------------------------------------------------- loading

fn template_paths() -> Vec<PathBuf> {
    let dir = workspace_root().join("cloudformation");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no templates in {}", dir.display());
    out
}

fn load_template(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let v: Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{} does not parse as YAML: {e}", path.display()));
    assert!(
        v.get("Resources").and_then(Value::as_object).is_some(),
        "{}: no Resources",
        path.display()
    );
    v
}

fn main_template() -> Value {
    load_template(&workspace_root().join("cloudformation/s3-migration.yaml"))
}

fn read(rel: &str) -> String {
    let p = workspace_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

// ---------------------------------------------------------------- evaluator

/// Resolves a template's intrinsic functions for one set of parameter values.
struct Eval<'a> {
    tpl: &'a Value,
    params: BTreeMap<String, String>,
}

/// Required parameters (no Default) get these values unless a test overrides them.
fn sample_params() -> BTreeMap<String, String> {
    [
        ("ImageTag", "v1"),
        ("SourceBucket", "source-bucket"),
        ("TargetBucket", "target-bucket"),
        ("Subnets", "subnet-11111111,subnet-22222222"),
        ("SecurityGroups", "sg-33333333"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other}"),
    }
}

impl<'a> Eval<'a> {
    fn new(tpl: &'a Value, overrides: &[(&str, &str)]) -> Self {
        let mut params = BTreeMap::new();
        let declared = tpl["Parameters"].as_object().expect("Parameters");
        let samples = sample_params();
        for (name, decl) in declared {
            let value = match decl.get("Default") {
                Some(d) => scalar_string(d),
                None => samples
                    .get(name)
                    .unwrap_or_else(|| panic!("no sample value for required parameter {name}"))
                    .clone(),
            };
            params.insert(name.clone(), value);
        }
        for (k, v) in overrides {
            assert!(
                declared.contains_key(*k),
                "override of unknown parameter {k}"
            );
            params.insert(k.to_string(), v.to_string());
        }
        Eval { tpl, params }
    }

    fn is_list_param(&self, name: &str) -> bool {
        let ty = self.tpl["Parameters"][name]["Type"].as_str().unwrap_or("");
        ty == "CommaDelimitedList" || ty.starts_with("List<")
    }

    fn condition(&self, name: &str) -> bool {
        let expr = self.tpl["Conditions"]
            .get(name)
            .unwrap_or_else(|| panic!("unknown condition {name}"));
        self.cond_expr(expr)
    }

    fn cond_expr(&self, v: &Value) -> bool {
        let (k, arg) = single_key(v).unwrap_or_else(|| panic!("bad condition {v}"));
        match k {
            "Condition" => self.condition(arg.as_str().expect("condition name")),
            "Fn::Not" => !self.cond_expr(&arg[0]),
            "Fn::And" => arg
                .as_array()
                .expect("And list")
                .iter()
                .all(|c| self.cond_expr(c)),
            "Fn::Or" => arg
                .as_array()
                .expect("Or list")
                .iter()
                .any(|c| self.cond_expr(c)),
            "Fn::Equals" => {
                let a = self.resolve(&arg[0]).map(|v| flatten_scalar(&v));
                let b = self.resolve(&arg[1]).map(|v| flatten_scalar(&v));
                a == b
            }
            other => panic!("unsupported condition function {other}"),
        }
    }

    fn pseudo(&self, name: &str) -> Option<String> {
        Some(
            match name {
                "AWS::Region" => REGION,
                "AWS::AccountId" => ACCOUNT,
                "AWS::Partition" => "aws",
                "AWS::URLSuffix" => "amazonaws.com",
                "AWS::StackName" => "s3mig",
                _ => return None,
            }
            .to_string(),
        )
    }

    /// `Ref` of a name: a parameter, a pseudo parameter, or a resource (`<Id>`).
    fn reference(&self, name: &str) -> Option<Value> {
        if name == "AWS::NoValue" {
            return None;
        }
        if let Some(p) = self.pseudo(name) {
            return Some(Value::String(p));
        }
        if let Some(v) = self.params.get(name) {
            if self.is_list_param(name) {
                return Some(Value::Array(
                    v.split(',').map(|s| Value::String(s.to_string())).collect(),
                ));
            }
            return Some(Value::String(v.clone()));
        }
        let res = self.tpl["Resources"]
            .get(name)
            .unwrap_or_else(|| panic!("Ref to unknown name {name}"));
        if let Some(cond) = res.get("Condition").and_then(Value::as_str) {
            assert!(
                self.condition(cond),
                "Ref to {name}, which condition {cond} leaves out"
            );
        }
        Some(Value::String(format!("<{name}>")))
    }

    /// `Fn::GetAtt`: a queue's Arn is its real ARN (so IAM checks see it); any
    /// other attribute is a placeholder `<Id.Attr>`.
    fn get_att(&self, res: &str, attr: &str) -> String {
        let r = self.tpl["Resources"]
            .get(res)
            .unwrap_or_else(|| panic!("GetAtt of unknown resource {res}"));
        if let Some(cond) = r.get("Condition").and_then(Value::as_str) {
            assert!(
                self.condition(cond),
                "GetAtt {res}.{attr}, which condition {cond} leaves out"
            );
        }
        if r["Type"] == "AWS::SQS::Queue" && attr == "Arn" {
            let name = self
                .resolve(&r["Properties"]["QueueName"])
                .map(|v| flatten_scalar(&v))
                .expect("queue name");
            return format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}");
        }
        format!("<{res}.{attr}>")
    }

    fn sub(&self, text: &str, vars: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {text}"));
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(name) {
                out.push_str(v);
            } else if let Some((res, attr)) = name.split_once('.') {
                out.push_str(&self.get_att(res, attr));
            } else {
                let v = self
                    .reference(name)
                    .unwrap_or_else(|| panic!("${{{name}}} resolves to no value"));
                out.push_str(&flatten_scalar(&v));
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// The value CloudFormation would see; `None` is `AWS::NoValue`.
    fn resolve(&self, v: &Value) -> Option<Value> {
        if let Some((k, arg)) = single_key(v) {
            match k {
                "Ref" => return self.reference(arg.as_str().expect("Ref name")),
                "Fn::If" => {
                    let name = arg[0].as_str().expect("If condition name");
                    let branch = if self.condition(name) {
                        &arg[1]
                    } else {
                        &arg[2]
                    };
                    return self.resolve(branch);
                }
                "Fn::Sub" => {
                    let (text, vars) = match arg {
                        Value::String(s) => (s.as_str(), BTreeMap::new()),
                        Value::Array(a) => {
                            let mut vars = BTreeMap::new();
                            if let Some(map) = a.get(1).and_then(Value::as_object) {
                                for (name, val) in map {
                                    let r = self
                                        .resolve(val)
                                        .unwrap_or_else(|| panic!("Sub var {name} has no value"));
                                    vars.insert(name.clone(), flatten_scalar(&r));
                                }
                            }
                            (a[0].as_str().expect("Sub text"), vars)
                        }
                        other => panic!("bad Fn::Sub {other}"),
                    };
                    return Some(Value::String(self.sub(text, &vars)));
                }
                "Fn::Join" => {
                    let delim = arg[0].as_str().expect("Join delimiter");
                    let items = self.resolve(&arg[1]).expect("Join list");
                    let parts: Vec<String> = items
                        .as_array()
                        .expect("Join list")
                        .iter()
                        .map(flatten_scalar)
                        .collect();
                    return Some(Value::String(parts.join(delim)));
                }
                "Fn::FindInMap" => {
                    let keys: Vec<String> = arg
                        .as_array()
                        .expect("FindInMap args")
                        .iter()
                        .map(|k| flatten_scalar(&self.resolve(k).expect("FindInMap key")))
                        .collect();
                    let found = &self.tpl["Mappings"][&keys[0]][&keys[1]][&keys[2]];
                    assert!(!found.is_null(), "FindInMap {keys:?} finds nothing");
                    return Some(found.clone());
                }
                "Fn::GetAtt" => {
                    let (res, attr) = match arg {
                        Value::Array(a) => (
                            a[0].as_str().expect("GetAtt resource").to_string(),
                            a[1].as_str().expect("GetAtt attribute").to_string(),
                        ),
                        Value::String(s) => {
                            let (r, a) = s.split_once('.').expect("GetAtt Res.Attr");
                            (r.to_string(), a.to_string())
                        }
                        other => panic!("bad GetAtt {other}"),
                    };
                    return Some(Value::String(self.get_att(&res, &attr)));
                }
                _ if k.starts_with("Fn::") => panic!("evaluator does not know {k}"),
                _ => {}
            }
        }
        Some(match v {
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match self.resolve(item) {
                        // A list returned by Ref of a list parameter stays nested only
                        // where the template nests it (e.g. Resource: {Ref: List}).
                        Some(r) => out.push(r),
                        None => continue,
                    }
                }
                Value::Array(out)
            }
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, val) in map {
                    if let Some(r) = self.resolve(val) {
                        out.insert(k.clone(), r);
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    /// Resources whose Condition holds, resolved.
    fn resources(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for (id, res) in self.tpl["Resources"].as_object().expect("Resources") {
            if let Some(cond) = res.get("Condition").and_then(Value::as_str) {
                if !self.condition(cond) {
                    continue;
                }
            }
            out.insert(id.clone(), self.resolve(res).expect("resource"));
        }
        out
    }
}

/// `{ "Fn::X": arg }` / `{ "Ref": name }` / `{ "Condition": name }` → (key, arg).
fn single_key(v: &Value) -> Option<(&str, &Value)> {
    let map = v.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let (k, arg) = map.iter().next()?;
    (k == "Ref" || k == "Condition" || k.starts_with("Fn::")).then_some((k.as_str(), arg))
}

fn flatten_scalar(v: &Value) -> String {
    match v {
        Value::Array(a) => a.iter().map(flatten_scalar).collect::<Vec<_>>().join(","),
        other => scalar_string(other),
    }
}

fn as_strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().flat_map(as_strings).collect(),
        Value::Null => vec![],
        other => vec![scalar_string(other)],
    }
}

// ---------------------------------------------------------------- IAM checks

/// Every reason an S3/SQS/KMS statement is too broad; empty = fine. `buckets`
/// are the only buckets and `queues` the only queue names a statement may
/// name; KMS statements name key ARNs and may be used only through S3 or SQS
/// (`kms:ViaService`).
fn wildcard_violations(
    statement: &Value,
    buckets: &BTreeSet<String>,
    queues: &BTreeSet<String>,
) -> Vec<String> {
    let mut bad = Vec::new();
    let actions = as_strings(&statement["Action"]);
    let touches = |svc: &str| {
        actions
            .iter()
            .any(|a| a == "*" || a.to_ascii_lowercase().starts_with(&format!("{svc}:")))
    };
    let s3 = touches("s3");
    let sqs = touches("sqs");
    let kms = touches("kms");
    if statement.get("NotAction").is_some() || statement.get("NotResource").is_some() {
        bad.push(format!("NotAction/NotResource in {statement}"));
    }
    if !(s3 || sqs || kms) {
        return bad;
    }
    if kms {
        bad.extend(via_service_violations(statement));
    }
    for a in &actions {
        if a.contains('*') || a.contains('?') {
            bad.push(format!("wildcard action {a}"));
        }
    }
    let resources = as_strings(&statement["Resource"]);
    if resources.is_empty() {
        bad.push(format!("no Resource in {statement}"));
    }
    for r in &resources {
        if r == "*" {
            bad.push("resource *".to_string());
            continue;
        }
        if let Some(rest) = r.strip_prefix("arn:aws:s3:::") {
            let bucket = rest.split('/').next().unwrap_or("");
            if !buckets.contains(bucket) {
                bad.push(format!(
                    "resource {r}: bucket {bucket:?} is not a configured bucket"
                ));
            }
            // `bucket/prefix*` is a key range inside one bucket; a `*` anywhere
            // before the final position would widen it beyond the prefix.
            let key = rest.split_once('/').map(|(_, k)| k).unwrap_or("");
            let inner = key.strip_suffix('*').unwrap_or(key);
            if inner.contains('*') || inner.contains('?') {
                bad.push(format!("resource {r}: wildcard inside the key prefix"));
            }
        } else if let Some(name) = r.strip_prefix(&format!("arn:aws:sqs:{REGION}:{ACCOUNT}:")) {
            if !queues.contains(name) {
                bad.push(format!("resource {r}: not one of the migration queues"));
            }
        } else if let Some(rest) = r.strip_prefix("arn:aws:kms:") {
            let key_id = rest.split_once(":key/").map(|(_, id)| id).unwrap_or("");
            if key_id.is_empty() || rest.contains('*') || rest.contains('?') {
                bad.push(format!("resource {r}: not one KMS key ARN"));
            }
        } else {
            bad.push(format!("resource {r} is not an S3, SQS or KMS key ARN"));
        }
    }
    bad
}

/// A KMS statement must carry `kms:ViaService` naming only S3 or SQS endpoints:
/// the key is then usable for SSE-KMS objects and queues, not for direct calls.
fn via_service_violations(statement: &Value) -> Vec<String> {
    let services = as_strings(&statement["Condition"]["StringEquals"]["kms:ViaService"]);
    if services.is_empty() {
        return vec![format!("KMS statement without kms:ViaService: {statement}")];
    }
    services
        .iter()
        .filter(|s| {
            let mut parts = s.splitn(3, '.');
            let (svc, region, suffix) = (parts.next(), parts.next(), parts.next());
            !(matches!(svc, Some("s3" | "sqs"))
                && region.is_some_and(|r| !r.is_empty() && !r.contains('*'))
                && suffix == Some("amazonaws.com"))
        })
        .map(|s| format!("kms:ViaService {s} is not an S3/SQS endpoint"))
        .collect()
}

/// Resolved task roles, and roles of the stack's Lambda functions (the
/// lifecycle-rule custom resource), which obey the same rules: role id → its
/// statements (all inline policies).
fn task_role_statements(ev: &Eval) -> BTreeMap<String, Vec<Value>> {
    let resources = ev.resources();
    let mut task_roles = BTreeSet::new();
    for res in resources.values() {
        let arn = match res["Type"].as_str() {
            Some("AWS::ECS::TaskDefinition") => &res["Properties"]["TaskRoleArn"],
            Some("AWS::Lambda::Function") => &res["Properties"]["Role"],
            _ => continue,
        };
        let arn = arn.as_str().expect("role ARN");
        let id = arn
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix(".Arn>"))
            .unwrap_or_else(|| panic!("role {arn} is not a role of this stack"));
        task_roles.insert(id.to_string());
    }
    assert!(
        !task_roles.is_empty(),
        "no task definition with a task role"
    );
    let mut out = BTreeMap::new();
    for id in task_roles {
        let role = &resources[&id];
        assert_eq!(role["Type"], "AWS::IAM::Role", "{id}");
        assert!(
            role["Properties"].get("ManagedPolicyArns").is_none(),
            "{id}: managed policies cannot be checked for wildcards"
        );
        let mut statements = Vec::new();
        for policy in role["Properties"]["Policies"].as_array().expect("Policies") {
            statements.extend(
                policy["PolicyDocument"]["Statement"]
                    .as_array()
                    .expect("Statement list")
                    .iter()
                    .cloned(),
            );
        }
        // Standalone policies attached to the role must be checked as well.
        for res in resources.values() {
            if matches!(
                res["Type"].as_str(),
                Some("AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy" | "AWS::IAM::RolePolicy")
            ) && res["Properties"].to_string().contains(&format!("<{id}>"))
            {
                statements.extend(
                    res["Properties"]["PolicyDocument"]["Statement"]
                        .as_array()
                        .expect("Statement list")
                        .iter()
                        .cloned(),
                );
            }
        }
        out.insert(id, statements);
    }
    out
}

fn expected_queue_names(ev: &Eval) -> BTreeSet<String> {
    let prefix = &ev.params["QueueNamePrefix"];
    let n: usize = ev.params["QueueNum"].parse().expect("QueueNum");
    let mut names: BTreeSet<String> = (1..=n).map(|i| format!("{prefix}{i:02}")).collect();
    names.insert(ev.params["DeadQueueName"].clone());
    names
}

fn configured_buckets(ev: &Eval) -> BTreeSet<String> {
    [
        "SourceBucket",
        "TargetBucket",
        "ManifestBucket",
        "ReportBucket",
    ]
    .iter()
    .map(|p| ev.params[*p].clone())
    .filter(|b| !b.is_empty())
    .collect()
}

/// Actions of a role's statements on one service, with the resources each names.
fn actions_by_resource(statements: &[Value], svc: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for st in statements {
        let actions: Vec<String> = as_strings(&st["Action"])
            .into_iter()
            .filter(|a| a.starts_with(&format!("{svc}:")))
            .collect();
        for r in as_strings(&st["Resource"]) {
            out.entry(r).or_default().extend(actions.iter().cloned());
        }
    }
    out.retain(|_, a| !a.is_empty());
    out
}

/// A container's `Environment` or `Secrets` list as Name → `field`.
fn name_values(list: &Value, field: &str) -> BTreeMap<String, String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list of {field}s: {list}"))
        .iter()
        .map(|e| (scalar_string(&e["Name"]), scalar_string(&e[field])))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Parameter combinations the IAM checks run under: defaults and the extremes.
fn scenarios() -> Vec<Vec<(&'static str, &'static str)>> {
    vec![
        vec![],
        vec![("QueueNum", "1"), ("CreateQueues", "false")],
        vec![
            ("Mode", "check"),
            ("Verify", "true"),
            ("Sync", "mirror"),
            ("SourcePrefix", "data/2024/"),
            ("TargetPrefix", "copy/"),
            ("AbortIncompleteUploadDays", "7"),
            ("ManifestBucket", "inventory-bucket"),
            ("ManifestPrefix", "inv/"),
            ("ReportBucket", "report-bucket"),
            ("ObjectAcl", "none"),
            ("StorageClass", "GLACIER_IR"),
            ("KmsKeyArns", "arn:aws:kms:us-east-1:123456789012:key/abcd"),
            ("QueueNamePrefix", "mig-"),
            ("DeadQueueName", "mig-dead"),
            ("ClusterName", "shared"),
            ("EphemeralStorageGiB", "100"),
            ("AlarmTopicArn", "arn:aws:sns:us-east-1:123456789012:ops"),
        ],
        vec![
            ("Mode", "downup"),
            ("SourceRegion", "eu-west-1"),
            ("QueueNum", "3"),
        ],
    ]
}

// ---------------------------------------------------------------- tests

#[test]
fn templates_parse_and_use_only_long_form_intrinsics() {
    for path in template_paths() {
        let text = std::fs::read_to_string(&path).expect("read template");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            let code = line.split(" #").next().unwrap_or(line);
            for tag in [
                "!Ref",
                "!Sub",
                "!GetAtt",
                "!If",
                "!Join",
                "!Equals",
                "!FindInMap",
            ] {
                assert!(
                    !code.contains(tag),
                    "{}:{}: short-form {tag}; use the long form so the file parses as YAML",
                    path.display(),
                    n + 1
                );
            }
        }
        let tpl = load_template(&path);
        // Every Ref/Sub/If in every resource resolves with the defaults.
        Eval::new(&tpl, &[]).resources();
    }
}

#[test]
fn wildcard_checker_rejects_broad_statements() {
    // The checker itself must catch what the task roles must never contain.
    let buckets = set(&["source-bucket"]);
    let queues = set(&["q01"]);
    let cases = [
        json!({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::source-bucket/*"}),
        json!({"Effect": "Allow", "Action": "sqs:*", "Resource": "arn:aws:sqs:us-east-1:123456789012:q01"}),
        json!({"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"}),
        json!({"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::source-bucket/*"}),
        json!({"Effect": "Allow", "Action": "*", "Resource": "arn:aws:s3:::source-bucket"}),
        json!({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*"}),
        json!({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::other/*"}),
        json!({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::source-bucket/*/x*"}),
        json!({"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "arn:aws:sqs:us-east-1:123456789012:*"}),
        json!({"Effect": "Allow", "NotAction": "iam:*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::source-bucket/*"}),
        json!({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}}),
        json!({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "arn:aws:kms:us-east-1:123456789012:key/*", "Condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}}),
        json!({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "arn:aws:kms:us-east-1:123456789012:alias/a", "Condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}}),
        json!({"Effect": "Allow", "Action": "kms:*", "Resource": "arn:aws:kms:us-east-1:123456789012:key/k", "Condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}}),
        json!({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "arn:aws:kms:us-east-1:123456789012:key/k"}),
        json!({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "arn:aws:kms:us-east-1:123456789012:key/k", "Condition": {"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}}}),
    ];
    for st in &cases {
        assert!(
            !wildcard_violations(st, &buckets, &queues).is_empty(),
            "checker accepted {st}"
        );
    }
    let fine = json!({"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::source-bucket/data/*"});
    assert_eq!(
        wildcard_violations(&fine, &buckets, &queues),
        Vec::<String>::new()
    );
    let fine_kms = json!({"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": ["arn:aws:kms:us-east-1:123456789012:key/k"],
        "Condition": {"StringEquals": {"kms:ViaService": ["s3.us-east-1.amazonaws.com", "sqs.us-east-1.amazonaws.com"]}}});
    assert_eq!(
        wildcard_violations(&fine_kms, &buckets, &queues),
        Vec::<String>::new()
    );
}

#[test]
fn task_roles_grant_no_wildcard_action_or_resource_for_s3_sqs_and_kms() {
    for path in template_paths() {
        let tpl = load_template(&path);
        for overrides in scenarios() {
            let ev = Eval::new(&tpl, &overrides);
            let buckets = configured_buckets(&ev);
            let queues = expected_queue_names(&ev);
            for (role, statements) in task_role_statements(&ev) {
                for st in &statements {
                    assert_eq!(st["Effect"], "Allow", "{role}: {st}");
                    let bad = wildcard_violations(st, &buckets, &queues);
                    assert!(
                        bad.is_empty(),
                        "{}: {role} with {overrides:?}: {bad:?}",
                        path.display()
                    );
                }
            }
        }
    }
}

#[test]
fn executor_role_reads_only_the_source_and_writes_only_the_target() {
    let tpl = main_template();
    let read_source = set(&[
        "s3:GetObject",
        "s3:GetObjectTagging",
        "s3:GetObjectVersion",
        "s3:GetObjectVersionTagging",
    ]);
    // No s3:ListMultipartUploadParts: nothing calls ListParts (until resumable
    // uploads, issue #17).
    let write_target = set(&[
        "s3:PutObject",
        "s3:PutObjectTagging",
        "s3:AbortMultipartUpload",
    ]);
    let queue_actions = set(&[
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    ]);

    // Defaults: copy mode, whole buckets, the seed's ACL.
    let ev = Eval::new(&tpl, &[]);
    let st = &task_role_statements(&ev)["ExecutorTaskRole"];
    let s3 = actions_by_resource(st, "s3");
    let mut target_write = write_target.clone();
    target_write.insert("s3:PutObjectAcl".into());
    let expected: BTreeMap<String, BTreeSet<String>> = [
        (
            "arn:aws:s3:::source-bucket/*".to_string(),
            read_source.clone(),
        ),
        (
            "arn:aws:s3:::source-bucket".to_string(),
            set(&["s3:ListBucket"]),
        ),
        ("arn:aws:s3:::target-bucket/*".to_string(), target_write),
    ]
    .into_iter()
    .collect();
    assert_eq!(s3, expected, "executor S3 grants with defaults");
    let acl = st
        .iter()
        .find(|s| as_strings(&s["Action"]) == ["s3:PutObjectAcl"])
        .expect("PutObjectAcl statement");
    assert_eq!(
        acl["Condition"]["StringEquals"]["s3:x-amz-acl"], "bucket-owner-full-control",
        "only the configured canned ACL may be set"
    );
    let sqs = actions_by_resource(st, "sqs");
    assert_eq!(
        sqs.keys().cloned().collect::<BTreeSet<_>>(),
        [
            "arn:aws:sqs:us-east-1:123456789012:s3-migration-01",
            "arn:aws:sqs:us-east-1:123456789012:s3-migration-02",
            "arn:aws:sqs:us-east-1:123456789012:s3-migration-03",
            "arn:aws:sqs:us-east-1:123456789012:s3-migration-04",
            "arn:aws:sqs:us-east-1:123456789012:s3-migration-05",
            "arn:aws:sqs:us-east-1:123456789012:s3-migration-dead",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    );
    assert!(sqs.values().all(|a| *a == queue_actions), "{sqs:?}");

    // Prefixes narrow both ends; check mode may read (not write more of) the target.
    let ev = Eval::new(
        &tpl,
        &[
            ("SourcePrefix", "data/"),
            ("TargetPrefix", "copy/"),
            ("Mode", "check"),
            ("ObjectAcl", "none"),
        ],
    );
    let s3 = actions_by_resource(&task_role_statements(&ev)["ExecutorTaskRole"], "s3");
    let mut target_objects = write_target.clone();
    target_objects.extend(set(&["s3:GetObject", "s3:GetObjectTagging"]));
    let expected: BTreeMap<String, BTreeSet<String>> = [
        ("arn:aws:s3:::source-bucket/data/*".to_string(), read_source),
        (
            "arn:aws:s3:::source-bucket".to_string(),
            set(&["s3:ListBucket"]),
        ),
        (
            "arn:aws:s3:::target-bucket/copy/*".to_string(),
            target_objects,
        ),
        (
            "arn:aws:s3:::target-bucket".to_string(),
            set(&["s3:ListBucket"]),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        s3, expected,
        "executor S3 grants with prefixes in check mode"
    );

    // Sync=copy reads the target; only Sync=mirror may delete, and only there.
    for (sync, deletes) in [("copy", false), ("mirror", true)] {
        let ev = Eval::new(&tpl, &[("TargetPrefix", "copy/"), ("Sync", sync)]);
        let roles = task_role_statements(&ev);
        let s3 = actions_by_resource(&roles["ExecutorTaskRole"], "s3");
        let target = &s3["arn:aws:s3:::target-bucket/copy/*"];
        assert!(target.contains("s3:GetObject"), "{sync}: {s3:?}");
        assert_eq!(
            target.contains("s3:DeleteObject"),
            deletes,
            "{sync}: {s3:?}"
        );
        let deleting: Vec<&String> = s3
            .iter()
            .filter(|(_, a)| a.contains("s3:DeleteObject"))
            .map(|(r, _)| r)
            .collect();
        assert!(
            deleting.len() <= 1,
            "deletes only under the target prefix: {deleting:?}"
        );
        let list = roles["CommanderTaskRole"]
            .iter()
            .find(|s| s["Sid"] == "ListTargetForSync")
            .expect("the commander lists the target for --sync");
        assert_eq!(list["Resource"], "arn:aws:s3:::target-bucket");
        assert_eq!(list["Condition"]["StringLike"]["s3:prefix"], "copy/*");
    }
    let ev = Eval::new(&tpl, &[]);
    assert!(
        !task_role_statements(&ev)["CommanderTaskRole"]
            .iter()
            .any(|s| s["Sid"] == "ListTargetForSync"),
        "no target listing without Sync"
    );

    // Without a target prefix, keys keep the source prefix: writes stay under it.
    let ev = Eval::new(&tpl, &[("SourcePrefix", "data/")]);
    let s3 = actions_by_resource(&task_role_statements(&ev)["ExecutorTaskRole"], "s3");
    assert!(
        s3.contains_key("arn:aws:s3:::target-bucket/data/*"),
        "{s3:?}"
    );
}

#[test]
fn commander_lists_only_under_the_source_prefix() {
    let tpl = main_template();
    let ev = Eval::new(&tpl, &[("SourcePrefix", "data/")]);
    let st = &task_role_statements(&ev)["CommanderTaskRole"];
    let list = st
        .iter()
        .find(|s| s["Sid"] == "ListSource")
        .expect("ListSource statement");
    assert_eq!(list["Resource"], "arn:aws:s3:::source-bucket");
    assert_eq!(list["Condition"]["StringLike"]["s3:prefix"], "data/*");
    let s3 = actions_by_resource(st, "s3");
    assert!(
        s3.values()
            .all(|a| !a.contains("s3:PutObject") && !a.contains("s3:GetObject")),
        "without reports or manifests the commander neither reads nor writes objects: {s3:?}"
    );
}

#[test]
fn commander_may_clean_up_stale_uploads_on_the_target_key_range_only() {
    // `commander cleanup` calls ListMultipartUploads (bucket) and
    // AbortMultipartUpload (each stale key); without both it is denied.
    let tpl = main_template();
    for (overrides, range) in [
        (vec![], "arn:aws:s3:::target-bucket/*"),
        (
            vec![("SourcePrefix", "data/")],
            "arn:aws:s3:::target-bucket/data/*",
        ),
        (
            vec![("SourcePrefix", "data/"), ("TargetPrefix", "copy/")],
            "arn:aws:s3:::target-bucket/copy/*",
        ),
    ] {
        let ev = Eval::new(&tpl, &overrides);
        let s3 = actions_by_resource(&task_role_statements(&ev)["CommanderTaskRole"], "s3");
        let holders = |action: &str| -> Vec<&String> {
            s3.iter()
                .filter(|(_, a)| a.contains(action))
                .map(|(r, _)| r)
                .collect()
        };
        assert_eq!(
            holders("s3:ListBucketMultipartUploads"),
            ["arn:aws:s3:::target-bucket"],
            "{overrides:?}: {s3:?}"
        );
        assert_eq!(
            holders("s3:AbortMultipartUpload"),
            [range],
            "{overrides:?}: aborts only on the target key range: {s3:?}"
        );
    }
}

#[test]
fn kms_grants_name_keys_and_go_through_s3_or_sqs_only() {
    let tpl = main_template();
    let key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    for (region, want) in [
        (
            "",
            vec!["s3.us-east-1.amazonaws.com", "sqs.us-east-1.amazonaws.com"],
        ),
        (
            "eu-west-1",
            vec![
                "s3.us-east-1.amazonaws.com",
                "sqs.us-east-1.amazonaws.com",
                "s3.eu-west-1.amazonaws.com",
            ],
        ),
    ] {
        let ev = Eval::new(&tpl, &[("KmsKeyArns", key), ("SourceRegion", region)]);
        for (role, statements) in task_role_statements(&ev) {
            let kms: Vec<&Value> = statements
                .iter()
                .filter(|s| {
                    as_strings(&s["Action"])
                        .iter()
                        .any(|a| a.starts_with("kms:"))
                })
                .collect();
            assert_eq!(kms.len(), 1, "{role}: one KMS statement");
            assert_eq!(as_strings(&kms[0]["Resource"]), [key], "{role}");
            assert_eq!(
                as_strings(&kms[0]["Condition"]["StringEquals"]["kms:ViaService"]),
                want,
                "{role} with SourceRegion={region:?}"
            );
            assert!(via_service_violations(kms[0]).is_empty(), "{role}");
        }
    }
    // KmsKeyArns' pattern (applied per element): parameter_patterns_cannot_inject_wildcards.
}

#[test]
fn task_protection_is_granted_on_this_clusters_tasks_only() {
    // The ECS agent calls UpdateTaskProtection with the task role when the
    // executor PUTs $ECS_AGENT_URI/task-protection/v1/state.
    let tpl = main_template();
    for (overrides, cluster) in [
        (vec![], "<Cluster>"),
        (vec![("ClusterName", "shared")], "shared"),
    ] {
        let ev = Eval::new(&tpl, &overrides);
        let roles = task_role_statements(&ev);
        let grants = actions_by_resource(&roles["ExecutorTaskRole"], "ecs");
        let want: BTreeMap<String, BTreeSet<String>> = [(
            format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/*"),
            set(&["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"]),
        )]
        .into_iter()
        .collect();
        assert_eq!(grants, want, "{overrides:?}");
        assert!(
            actions_by_resource(&roles["CommanderTaskRole"], "ecs").is_empty(),
            "the commander runs as a one-off task: nothing to protect"
        );
    }
}

#[test]
fn copy_source_credentials_come_only_from_secrets_manager() {
    let tpl = main_template();
    let secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mig/source-AbC123";
    let secret_reads = |res: &BTreeMap<String, Value>| -> Vec<Value> {
        res["ExecutionRole"]["Properties"]["Policies"]
            .as_array()
            .expect("Policies")
            .iter()
            .flat_map(|p| {
                p["PolicyDocument"]["Statement"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|s| {
                as_strings(&s["Action"])
                    .iter()
                    .any(|a| a.starts_with("secretsmanager:"))
            })
            .collect()
    };

    let res = Eval::new(&tpl, &[]).resources();
    let exec = &res["ExecutorTaskDefinition"]["Properties"]["ContainerDefinitions"][0];
    assert!(
        exec.get("Secrets").is_none(),
        "no secret configured: no Secrets"
    );
    assert!(
        secret_reads(&res).is_empty(),
        "no secret configured: no grant"
    );

    let res = Eval::new(&tpl, &[("CopySourceSecretArn", secret), ("Mode", "downup")]).resources();
    let exec = &res["ExecutorTaskDefinition"]["Properties"]["ContainerDefinitions"][0];
    let secrets = name_values(&exec["Secrets"], "ValueFrom");
    let want: BTreeMap<String, String> = [
        ("COPY_SOURCE_AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        ("COPY_SOURCE_AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
    ]
    .iter()
    .map(|(name, key)| (name.to_string(), format!("{secret}:{key}::")))
    .collect();
    assert_eq!(secrets, want);
    let reads = secret_reads(&res);
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(
        as_strings(&reads[0]["Action"]),
        ["secretsmanager:GetSecretValue"]
    );
    assert_eq!(
        as_strings(&reads[0]["Resource"]),
        [secret],
        "that secret only"
    );

    // Never a credential in plain environment values, in any task definition.
    for overrides in scenarios() {
        let res = Eval::new(&tpl, &overrides).resources();
        for id in ["ExecutorTaskDefinition", "CommanderTaskDefinition"] {
            for c in res[id]["Properties"]["ContainerDefinitions"]
                .as_array()
                .expect("containers")
            {
                for e in c["Environment"].as_array().expect("Environment") {
                    let name = scalar_string(&e["Name"]);
                    assert!(
                        !["ACCESS_KEY", "SECRET", "SESSION_TOKEN", "SSE_C"]
                            .iter()
                            .any(|w| name.contains(w)),
                        "{id}: {name} is a credential in a plain environment value"
                    );
                }
            }
        }
    }
}

#[test]
fn stack_updates_leave_the_task_count_to_autoscaling() {
    // A DesiredCount on the service resets the fleet on every update that
    // touches it; each stopped task's returned messages count as receives.
    let tpl = main_template();
    assert!(
        tpl["Parameters"].get("DesiredCount").is_none(),
        "DesiredCount parameter is gone"
    );
    let res = Eval::new(&tpl, &[]).resources();
    let service = &res["ExecutorService"]["Properties"];
    assert!(
        service.get("DesiredCount").is_none(),
        "the service must not set DesiredCount: {service}"
    );
    let receives = tpl["Parameters"]["MaxReceiveCount"]["Default"]
        .as_u64()
        .expect("MaxReceiveCount default");
    assert!(
        receives >= 10,
        "MaxReceiveCount default {receives} does not survive deploys and Spot interruptions"
    );
    for (id, queue) in &res {
        if queue["Type"] == "AWS::SQS::Queue" && id != "DeadLetterQueue" {
            assert_eq!(
                queue["Properties"]["RedrivePolicy"]["maxReceiveCount"], "10",
                "{id}"
            );
        }
    }
}

#[test]
fn dead_letters_are_kept_14_days_and_the_log_group_survives_only_real_stacks() {
    let tpl = main_template();
    for retention in ["60", "86400", "1209600"] {
        let res = Eval::new(&tpl, &[("MessageRetentionPeriod", retention)]).resources();
        assert_eq!(
            res["DeadLetterQueue"]["Properties"]["MessageRetentionPeriod"], 1209600,
            "DLQ retention with MessageRetentionPeriod={retention}"
        );
        assert_eq!(
            res["WorkQueue01"]["Properties"]["MessageRetentionPeriod"],
            retention
        );
    }
    // Retained after teardown, but deleted when the first create rolls back,
    // so a retry with the same stack name does not find its fixed name taken.
    assert_eq!(
        tpl["Resources"]["LogGroup"]["DeletionPolicy"],
        "RetainExceptOnCreate"
    );
}

#[test]
fn parameter_patterns_cannot_inject_wildcards() {
    // A bucket, prefix, queue, key or secret parameter that accepted `*` would turn a precise
    // ARN into a wildcard at deploy time; their AllowedPattern must forbid it.
    let tpl = main_template();
    for name in [
        "SourceBucket",
        "SourcePrefix",
        "TargetBucket",
        "TargetPrefix",
        "ManifestBucket",
        "ManifestPrefix",
        "ReportBucket",
        "ReportPrefix",
        "QueueNamePrefix",
        "DeadQueueName",
        // A CommaDelimitedList's pattern applies to each element.
        "KmsKeyArns",
        "CopySourceSecretArn",
    ] {
        let pattern = tpl["Parameters"][name]["AllowedPattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no AllowedPattern"));
        assert!(
            pattern.starts_with('^') && pattern.ends_with('$'),
            "{name}: pattern {pattern} is not anchored"
        );
        assert!(
            pattern_excludes_star(pattern),
            "{name}: pattern {pattern} can match `*`"
        );
    }
}

/// True when a regex made of literals, character classes, groups and
/// quantifiers cannot match a `*` character: no `.`, no `\*`, no class that
/// admits `*`. (Conservative: anything else unusual counts as "can match".)
fn pattern_excludes_star(pattern: &str) -> bool {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                let next = chars.get(i + 1).copied().unwrap_or('\\');
                if matches!(next, '*' | 'W' | 'S' | 'D') {
                    return false;
                }
                i += 2;
            }
            '.' => return false,
            '[' => {
                let negated = chars.get(i + 1) == Some(&'^');
                let mut j = if negated { i + 2 } else { i + 1 };
                let mut has_star = false;
                while j < chars.len() && chars[j] != ']' {
                    if chars[j] == '\\' {
                        j += 1;
                    }
                    if chars.get(j) == Some(&'*') {
                        has_star = true;
                    }
                    j += 1;
                }
                if has_star != negated {
                    return false;
                }
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    true
}

#[test]
fn pattern_checker_knows_star_admitting_patterns() {
    assert!(pattern_excludes_star("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"));
    assert!(pattern_excludes_star("^[^*?]*$"));
    assert!(!pattern_excludes_star("^.*$"));
    assert!(!pattern_excludes_star("^[^?]*$"));
    assert!(!pattern_excludes_star("^[a-z*]+$"));
    assert!(!pattern_excludes_star("^a\\*$"));
}

#[test]
fn autoscaling_tracks_backlog_per_task_and_scales_to_and_from_zero() {
    let tpl = main_template();
    for n in 1..=5usize {
        let n_str = n.to_string();
        let ev = Eval::new(&tpl, &[("QueueNum", n_str.as_str())]);
        let res = ev.resources();
        let visible: BTreeSet<String> = (1..=n).map(|i| format!("v{i}")).collect();

        let target = &res["ScalableTarget"]["Properties"];
        assert_eq!(target["ScalableDimension"], "ecs:service:DesiredCount");
        assert_eq!(target["MinCapacity"], "0", "scales in to zero by default");
        // GovCloud requires RoleARN; the partition must come from the stack.
        assert_eq!(
            target["RoleARN"],
            format!("arn:aws:iam::{ACCOUNT}:role/aws-service-role/ecs.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_ECSService")
        );

        let tt =
            &res["BacklogTargetTracking"]["Properties"]["TargetTrackingScalingPolicyConfiguration"];
        assert_eq!(
            tt["DisableScaleIn"], false,
            "executors protect their own tasks while they hold messages, so scale-in is on"
        );
        let metrics = tt["CustomizedMetricSpecification"]["Metrics"]
            .as_array()
            .expect("metrics");
        let ids = metric_ids(metrics);
        let mut want = visible.clone();
        want.insert("desired".into());
        assert_eq!(ids, want, "QueueNum={n}");
        check_queue_metrics(metrics, "ApproximateNumberOfMessagesVisible", &ev);
        let divisor = metrics
            .iter()
            .find(|m| m["Id"] == "desired")
            .expect("desired");
        assert_eq!(
            divisor["MetricStat"]["Metric"]["MetricName"], "DesiredTaskCount",
            "backlog per DESIRED task: running tasks are 0 while they start, which jumps to MaxTasks"
        );
        let expr = returned_expression(metrics);
        assert_eq!(
            identifiers(&expr),
            want,
            "expression {expr} uses every queue and desired"
        );
        let (_, below) = expr
            .split_once('/')
            .unwrap_or_else(|| panic!("per task: {expr}"));
        assert!(
            below.contains("desired"),
            "divides by desired tasks: {expr}"
        );

        let wake = &res["ScaleOutFromZeroAlarm"]["Properties"];
        let metrics = wake["Metrics"].as_array().expect("alarm metrics");
        assert!(
            metrics.len() <= 11,
            "CloudWatch alarms allow 10 metrics + expression"
        );
        let mut want = visible.clone();
        want.insert("desired".into());
        assert_eq!(metric_ids(metrics), want);
        assert_eq!(identifiers(&returned_expression(metrics)), want);
        let policy = &res["ScaleOutFromZeroPolicy"]["Properties"]["StepScalingPolicyConfiguration"];
        assert_eq!(policy["AdjustmentType"], "ChangeInCapacity");

        let empty = &res["QueuesEmptyAlarm"]["Properties"];
        let metrics = empty["Metrics"].as_array().expect("alarm metrics");
        assert!(
            metrics.len() <= 11,
            "CloudWatch alarms allow 10 metrics + expression"
        );
        let mut want = visible.clone();
        want.extend((1..=n).map(|i| format!("n{i}")));
        assert_eq!(
            metric_ids(metrics),
            want,
            "visible and in flight, QueueNum={n}"
        );
        assert_eq!(identifiers(&returned_expression(metrics)), want);
        check_queue_metrics(metrics, "ApproximateNumberOfMessagesNotVisible", &ev);
        assert_eq!(empty["ComparisonOperator"], "LessThanOrEqualToThreshold");
        let policy = &res["ScaleInToZeroPolicy"]["Properties"]["StepScalingPolicyConfiguration"];
        assert_eq!(policy["AdjustmentType"], "ExactCapacity");
        assert_eq!(policy["StepAdjustments"][0]["ScalingAdjustment"], 0);
    }
}

fn metric_ids(metrics: &[Value]) -> BTreeSet<String> {
    metrics
        .iter()
        .filter(|m| m.get("MetricStat").is_some())
        .map(|m| m["Id"].as_str().expect("Id").to_string())
        .collect()
}

fn returned_expression(metrics: &[Value]) -> String {
    let returned: Vec<&Value> = metrics.iter().filter(|m| m["ReturnData"] == true).collect();
    assert_eq!(returned.len(), 1, "exactly one returned series");
    returned[0]["Expression"]
        .as_str()
        .expect("returned series is an expression")
        .to_string()
}

/// Lower-case identifiers in a metric-math expression (function names are upper case).
fn identifiers(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .map(str::to_string)
        .collect()
}

/// Every SQS metric names one of the configured work queues, each exactly once per metric name.
fn check_queue_metrics(metrics: &[Value], metric_name: &str, ev: &Eval) {
    let n: usize = ev.params["QueueNum"].parse().expect("QueueNum");
    let prefix = &ev.params["QueueNamePrefix"];
    let mut seen = BTreeSet::new();
    for m in metrics {
        let metric = &m["MetricStat"]["Metric"];
        if metric["Namespace"] == "AWS/SQS" && metric["MetricName"] == metric_name {
            assert_eq!(metric["Dimensions"][0]["Name"], "QueueName");
            seen.insert(
                metric["Dimensions"][0]["Value"]
                    .as_str()
                    .expect("queue")
                    .to_string(),
            );
        }
    }
    let want: BTreeSet<String> = (1..=n).map(|i| format!("{prefix}{i:02}")).collect();
    assert_eq!(seen, want, "{metric_name} queues");
}

#[test]
fn dashboard_renders_to_json_with_queues_dlq_emf_and_tasks() {
    let tpl = main_template();
    for n in ["1", "5"] {
        let ev = Eval::new(&tpl, &[("QueueNum", n), ("Mode", "downup")]);
        let res = ev.resources();
        let body = res["Dashboard"]["Properties"]["DashboardBody"]
            .as_str()
            .expect("DashboardBody string");
        let dash: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("dashboard is not JSON ({e}):\n{body}"));
        let mut metrics: Vec<Vec<String>> = Vec::new();
        for w in dash["widgets"].as_array().expect("widgets") {
            if let Some(rows) = w["properties"]["metrics"].as_array() {
                for row in rows {
                    metrics.push(
                        row.as_array()
                            .expect("metric row")
                            .iter()
                            .filter_map(|c| c.as_str().map(str::to_string))
                            .collect(),
                    );
                }
            }
        }
        let has = |want: &[&str]| {
            metrics
                .iter()
                .any(|row| row.iter().map(String::as_str).eq(want.iter().copied()))
        };
        let count: usize = n.parse().unwrap();
        for i in 1..=count {
            let q = format!("s3-migration-{i:02}");
            assert!(
                has(&[
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesVisible",
                    "QueueName",
                    &q
                ]),
                "{q}"
            );
            assert!(
                has(&[
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesNotVisible",
                    "QueueName",
                    &q
                ]),
                "{q}"
            );
        }
        let extra = format!("s3-migration-{:02}", count + 1);
        assert!(
            !metrics.iter().any(|r| r.contains(&extra)),
            "{extra} shown with QueueNum={n}"
        );
        assert!(has(&[
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            "QueueName",
            "s3-migration-dead"
        ]));
        for m in ["Objects", "Bytes", "Failures", "ObjectLatencyMs"] {
            assert!(has(&["S3Migration", m, "Mode", "downup"]), "EMF metric {m}");
        }
        assert!(metrics.iter().any(|r| r.first().map(String::as_str)
            == Some("ECS/ContainerInsights")
            && r.get(1).map(String::as_str) == Some("RunningTaskCount")));
        // Per-second rates are expressions over the EMF sums.
        assert!(
            body.contains("objects / PERIOD(objects)") && body.contains("bytes / PERIOD(bytes)")
        );
    }
}

#[test]
fn task_definitions_run_the_image_binaries_with_the_seed_queue_settings() {
    let tpl = main_template();
    let ev = Eval::new(&tpl, &[("Verify", "true"), ("StorageClass", "STANDARD_IA")]);
    let res = ev.resources();
    let dockerfile = read("Dockerfile");
    let copied = runtime_copied_binaries(&dockerfile);
    for (id, program) in [
        ("ExecutorTaskDefinition", "executor"),
        ("CommanderTaskDefinition", "commander"),
    ] {
        let td = &res[id]["Properties"];
        assert_eq!(td["RequiresCompatibilities"], json!(["FARGATE"]));
        assert_eq!(td["NetworkMode"], "awsvpc");
        let c = &td["ContainerDefinitions"][0];
        let cmd = as_strings(&c["Command"]);
        assert_eq!(
            cmd[0], program,
            "{id}: the image has no entrypoint; the command names the program"
        );
        assert!(copied.contains(program), "{program} is not in the image");
        assert!(
            c.get("EntryPoint").is_none(),
            "{id}: entrypoint must stay unset"
        );
        assert_eq!(c["ReadonlyRootFilesystem"], true);
        assert_eq!(c["User"], "65532:65532");
        assert_eq!(c["MountPoints"][0]["ContainerPath"], "/tmp");
        let env = name_values(&c["Environment"], "Value");
        assert_eq!(env["QUEUE_NAME_PATTERN"], "s3-migration-{:0>2d}");
        assert_eq!(env["QUEUE_NUM"], "5");
        assert_eq!(env["DEAD_QUEUE_NAME"], "s3-migration-dead");
        assert_eq!(env["COPY_REGION_NAME"], REGION);
        let logs = &c["LogConfiguration"];
        assert_eq!(logs["LogDriver"], "awslogs");
        assert_eq!(logs["Options"]["awslogs-group"], "<LogGroup>");
    }
    let exec = &res["ExecutorTaskDefinition"]["Properties"]["ContainerDefinitions"][0];
    let cmd = as_strings(&exec["Command"]);
    let after = |flag: &str| {
        cmd.iter()
            .position(|a| a == flag)
            .map(|i| cmd[i + 1].clone())
    };
    assert_eq!(after("--mode").as_deref(), Some("copy"));
    assert_eq!(after("--storage-class").as_deref(), Some("STANDARD_IA"));
    assert_eq!(after("--metrics").as_deref(), Some("emf"));
    assert!(cmd.contains(&"--verify".to_string()));

    // Shutdown budget: grace (running keys) + wrap-up (returns, DLQ sends,
    // report flush) + margin must fit before ECS's SIGKILL.
    let stop = exec["StopTimeout"].as_u64().expect("executor StopTimeout");
    assert!(
        stop >= 100,
        "StopTimeout {stop} s leaves no time to return messages"
    );
    let env = name_values(&exec["Environment"], "Value");
    let secs = |name: &str| -> u64 {
        env.get(name)
            .unwrap_or_else(|| panic!("executor environment lacks {name}"))
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let (grace, wrap_up) = (
        secs("EXECUTOR_GRACE_PERIOD"),
        secs("EXECUTOR_WRAP_UP_PERIOD"),
    );
    assert!(
        grace + wrap_up + 10 <= stop,
        "grace {grace} s + wrap-up {wrap_up} s + 10 s margin exceeds StopTimeout {stop} s"
    );
    for id in ["ExecutorTaskDefinition", "CommanderTaskDefinition"] {
        let c = &res[id]["Properties"]["ContainerDefinitions"][0];
        assert_eq!(
            c["LinuxParameters"]["Capabilities"]["Drop"],
            json!(["ALL"]),
            "{id}: every Linux capability dropped"
        );
        assert!(
            c["LinuxParameters"]["Capabilities"].get("Add").is_none(),
            "{id}: none added back"
        );
    }
    assert_eq!(res["LogGroup"]["Properties"]["RetentionInDays"], "30");
    assert!(
        dockerfile.lines().any(|l| l.trim() == "VOLUME [\"/tmp\"]"),
        "the image declares /tmp so the Fargate scratch volume keeps its permissions"
    );
}

// ---------------------------------------------------------------- docs

/// Parameter names used by the walkthrough: `Name=value` after
/// `--parameter-overrides`, `ParameterKey=Name`, and the first column of
/// Markdown tables whose header is `Parameter`.
fn doc_parameters(markdown: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut used = BTreeSet::new();
    let mut table = BTreeSet::new();
    let mut in_code = false;
    let mut in_overrides = false;
    let mut in_param_table = false;
    for line in markdown.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_code = !in_code;
            in_overrides = false;
            continue;
        }
        for piece in t.split("ParameterKey=").skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            used.insert(name);
        }
        if in_code {
            let mut tokens = t.split_whitespace();
            if t.contains("--parameter-overrides") {
                in_overrides = true;
                for tok in tokens.by_ref() {
                    if tok == "--parameter-overrides" {
                        break;
                    }
                }
            }
            if in_overrides {
                for tok in tokens {
                    if tok.starts_with("--") {
                        in_overrides = false;
                        break;
                    }
                    if let Some((name, _)) = tok.split_once('=') {
                        if name.chars().all(|c| c.is_ascii_alphanumeric()) && !name.is_empty() {
                            used.insert(name.to_string());
                        }
                    }
                }
                if !t.ends_with('\\') {
                    in_overrides = false;
                }
            }
            continue;
        }
        if t.starts_with('|') {
            let first = t.trim_matches('|').split('|').next().unwrap_or("").trim();
            if first == "Parameter" {
                in_param_table = true;
            } else if in_param_table && !first.starts_with('-') {
                table.insert(first.trim_matches('`').to_string());
            }
        } else {
            in_param_table = false;
        }
    }
    (used, table)
}

#[test]
fn deploy_walkthrough_names_only_parameters_the_template_has() {
    // docs/deploy.md is what operators follow (the README only links to it).
    let doc = read("docs/deploy.md");
    assert!(
        doc.contains("--template-file cloudformation/s3-migration.yaml"),
        "the walkthrough deploys cloudformation/s3-migration.yaml"
    );
    let tpl = main_template();
    let params = tpl["Parameters"].as_object().expect("Parameters");
    let (used, table) = doc_parameters(&doc);
    assert!(
        used.len() >= 5,
        "walkthrough names few parameters: {used:?}"
    );
    for name in used.iter().chain(table.iter()) {
        assert!(
            params.contains_key(name),
            "the deploy walkthrough (docs/deploy.md) names `{name}`, which the template does not have"
        );
    }
    for (name, decl) in params {
        assert!(
            table.contains(name),
            "parameter {name} is missing from the parameter table of docs/deploy.md"
        );
        if decl.get("Default").is_none() {
            assert!(
                used.contains(name),
                "required parameter {name} is not set in the walkthrough"
            );
        }
    }
}

#[test]
fn doc_parser_finds_overrides_keys_and_tables() {
    let md = "```\naws cloudformation deploy --stack-name x \\\n  --parameter-overrides A=1 Bee=\"x y\" \\\n    Cee=$V \\\n  --capabilities CAPABILITY_IAM\nrun Not=This\n```\nuse ParameterKey=Dee,ParameterValue=1\n\n| Parameter | Default |\n|---|---|\n| `Eff` | 1 |\n\n| Other | x |\n|---|---|\n| `Gee` | 2 |\n";
    let (used, table) = doc_parameters(md);
    assert_eq!(used, set(&["A", "Bee", "Cee", "Dee"]));
    assert_eq!(table, set(&["Eff"]));
}

// ---------------------------------------------------------------- Dockerfile

/// Instructions with continuation lines joined.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = String::new();
    for line in dockerfile.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            buf.push_str(head);
        } else {
            buf.push_str(line);
            out.push(std::mem::take(&mut buf));
        }
    }
    out
}

fn run_after_marker(dockerfile: &str, marker: &str) -> String {
    let lines = instructions(dockerfile);
    let at = lines
        .iter()
        .position(|l| l.trim() == format!("# {marker}"))
        .unwrap_or_else(|| panic!("Dockerfile has no `# {marker}` line"));
    lines[at + 1..]
        .iter()
        .find_map(|l| l.strip_prefix("RUN "))
        .unwrap_or_else(|| panic!("no RUN after `# {marker}`"))
        .trim()
        .to_string()
}

fn builder_workdir(dockerfile: &str) -> String {
    let lines = instructions(dockerfile);
    let from = lines
        .iter()
        .position(|l| l.starts_with("FROM ") && l.ends_with(" AS builder"))
        .expect("a stage named builder");
    lines[from..]
        .iter()
        .find_map(|l| l.strip_prefix("WORKDIR "))
        .expect("builder WORKDIR")
        .trim()
        .to_string()
}

/// Sources of `COPY --from=builder`.
fn copy_from_builder(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    for l in instructions(dockerfile) {
        if let Some(rest) = l.strip_prefix("COPY --from=builder ") {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            out.extend(parts[..parts.len() - 1].iter().map(|s| s.to_string()));
        }
    }
    out
}

fn runtime_copied_binaries(dockerfile: &str) -> BTreeSet<String> {
    copy_from_builder(dockerfile)
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or("").to_string())
        .collect()
}

/// Workspace members from the root Cargo.toml's `members = [...]`.
fn workspace_members() -> Vec<String> {
    let manifest = read("Cargo.toml");
    let start = manifest.find("members").expect("members");
    let open = start + manifest[start..].find('[').expect("[");
    let close = open + manifest[open..].find(']').expect("]");
    manifest[open + 1..close]
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

fn package_name(member: &str) -> String {
    let manifest = read(&format!("{member}/Cargo.toml"));
    manifest
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix("name")
                .map(|r| r.trim_start())
                .and_then(|r| r.strip_prefix('='))
                .map(|r| r.trim().trim_matches('"').to_string())
        })
        .expect("package name")
}

#[test]
fn runtime_stage_copies_exactly_the_binaries_the_builder_builds() {
    let dockerfile = read("Dockerfile");
    let build = run_after_marker(&dockerfile, "ci-build-command");
    let words: Vec<&str> = build.split_whitespace().collect();
    assert_eq!(&words[..2], ["cargo", "build"], "{build}");
    assert!(
        words.contains(&"--release") && words.contains(&"--locked"),
        "{build}"
    );
    let packages: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "-p" || w[0] == "--package")
        .map(|w| w[1])
        .collect();
    assert_eq!(packages, ["commander", "executor"]);

    let members = workspace_members();
    let workdir = builder_workdir(&dockerfile);
    let mut expected = BTreeSet::new();
    for p in &packages {
        let member = members
            .iter()
            .find(|m| package_name(m) == *p)
            .unwrap_or_else(|| panic!("no workspace member is package {p}"));
        let manifest = read(&format!("{member}/Cargo.toml"));
        assert!(
            !manifest.contains("[[bin]]"),
            "{member}: a [[bin]] section may rename the binary; update this test"
        );
        assert!(
            workspace_root().join(member).join("src/main.rs").is_file(),
            "{member}/src/main.rs: package {p} builds no binary named {p}"
        );
        expected.insert(format!("{workdir}/target/release/{p}"));
    }
    let copied: BTreeSet<String> = copy_from_builder(&dockerfile).into_iter().collect();
    assert_eq!(
        copied, expected,
        "COPY --from=builder sources vs. build outputs"
    );

    let lines = instructions(&dockerfile);
    let runtime = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("runtime stage");
    let runtime_lines = &lines[runtime..];
    let dest = runtime_lines
        .iter()
        .find_map(|l| l.strip_prefix("COPY --from=builder "))
        .and_then(|r| r.split_whitespace().last())
        .expect("copy destination");
    let path = runtime_lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("ENV PATH="))
        .expect("runtime ENV PATH");
    assert!(
        path.split([':', ' '])
            .any(|d| d == dest.trim_end_matches('/')),
        "the binaries' directory {dest} is on PATH ({path})"
    );
    assert!(
        runtime_lines.iter().any(|l| l.trim() == "ENTRYPOINT []"),
        "no entrypoint: `docker run IMAGE executor ...` runs the named program"
    );
    let user = runtime_lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER in the runtime stage");
    assert!(
        !matches!(user.trim(), "root" | "0" | "0:0"),
        "runtime runs as root"
    );
}

#[test]
fn dependency_layer_covers_every_workspace_member() {
    let dockerfile = read("Dockerfile");
    let dockerignore = read(".dockerignore");
    let lines = instructions(&dockerfile);
    let stub_at = lines
        .iter()
        .position(|l| l.trim() == "# ci-stub-sources")
        .expect("# ci-stub-sources marker");
    let stub = run_after_marker(&dockerfile, "ci-stub-sources");
    let before: Vec<&String> = lines[..stub_at].iter().collect();
    for m in workspace_members() {
        let copy = format!("COPY {m}/Cargo.toml {m}/");
        assert!(
            before.iter().any(|l| l.trim() == copy),
            "Dockerfile: `{copy}` missing before the stub build (workspace member {m})"
        );
        assert!(
            stub.contains(&format!("{m}/src")),
            "Dockerfile: the stub RUN creates no source for {m}"
        );
        assert!(
            dockerignore
                .lines()
                .any(|l| l.trim() == format!("!{m}/Cargo.toml")),
            ".dockerignore excludes {m}/Cargo.toml"
        );
    }
    // Real sources: every built package and every path dependency of the workspace.
    let manifest = read("Cargo.toml");
    let mut needed: BTreeSet<String> = ["commander", "executor"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for l in manifest.lines() {
        if let Some(i) = l.find("path = \"") {
            let rest = &l[i + 8..];
            needed.insert(rest[..rest.find('"').expect("closing quote")].to_string());
        }
    }
    for m in needed {
        let copy = format!("COPY {m}/src {m}/src");
        assert!(
            lines[stub_at..].iter().any(|l| l.trim() == copy),
            "Dockerfile: `{copy}` missing after the stub build"
        );
        assert!(
            dockerignore
                .lines()
                .any(|l| l.trim() == format!("!{m}/src/")),
            ".dockerignore excludes {m}/src"
        );
    }
}

/// Every base image is pinned by digest (a tag alone can be re-pushed under a
/// fleet), and keeps its tag beside the digest for readers and bumps.
#[test]
fn base_images_are_pinned_by_digest() {
    let dockerfile = read("Dockerfile");
    let froms: Vec<String> = instructions(&dockerfile)
        .into_iter()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "{froms:?}");
    for from in &froms {
        let image = from.split_whitespace().nth(1).expect("FROM IMAGE");
        let (name, digest) = image
            .split_once("@sha256:")
            .unwrap_or_else(|| panic!("`{from}`: base image not pinned by digest"));
        assert!(
            digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
            "`{from}`: not a sha256 digest"
        );
        assert!(
            name.rsplit('/').next().is_some_and(|n| n.contains(':')),
            "`{from}`: keep the tag beside the digest"
        );
    }
}

/// The release profile the image builds keeps panics unwinding: the executor
/// catches a key's panic and parks that key; `abort` would kill the process
/// with every message it holds.
#[test]
fn release_profile_unwinds_and_strips() {
    let manifest = read("Cargo.toml");
    let profile: String = manifest
        .split("[profile.release]")
        .nth(1)
        .expect("[profile.release]")
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!profile.contains("\"abort\""), "{profile}");
    assert!(profile.contains("panic = \"unwind\""), "{profile}");
    assert!(profile.contains("strip = true"), "{profile}");
}
