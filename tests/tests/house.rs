//! House rules that keep the code easy to live in, checked on the sources:
//! SDK types stay behind the store and queue doors, and no production
//! function grows past what one screen and one name can explain.

use std::path::{Path, PathBuf};

/// The only production files that may name `aws_sdk_*`, `aws_smithy_*` or
/// `SdkError`: the S3 store (and its submodules), the SQS queue, and the
/// client builders.
const SDK_DOORS: [&str; 4] = [
    "common/src/store/s3.rs",
    "common/src/store/s3/",
    "common/src/queue/sqs.rs",
    "common/src/clients.rs",
];

/// Longest production function, in lines from its signature to its closing brace.
const MAX_FUNCTION_LINES: usize = 120;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under the production crates' `src/`, as (relative path, text).
fn production_sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for krate in ["common", "commander", "executor"] {
        let mut stack = vec![root().join(krate).join("src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let rel = path
                        .strip_prefix(root())
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    out.push((rel, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
    }
    assert!(out.len() > 30, "found only {} source files", out.len());
    out
}

/// The lines of `text` outside `#[cfg(test)]` items (the item after the
/// attribute, up to its closing brace at the same indentation).
fn without_tests(text: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start().starts_with("#[cfg(test)]") {
            let indent = lines[i].len() - lines[i].trim_start().len();
            let close = format!("{}}}", " ".repeat(indent));
            i += 1;
            // A one-line item (`mod x;`, `use ..;`) ends at its semicolon.
            if lines.get(i).is_some_and(|l| l.trim_end().ends_with(';')) {
                i += 1;
                continue;
            }
            while i < lines.len() && lines[i] != close {
                i += 1;
            }
            i += 1;
            continue;
        }
        out.push((i + 1, lines[i]));
        i += 1;
    }
    out
}

#[test]
fn sdk_types_stay_behind_the_store_and_queue_doors() {
    let mut leaks = Vec::new();
    for (path, text) in production_sources() {
        if SDK_DOORS.iter().any(|d| path.starts_with(d)) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if ["aws_sdk_", "aws_smithy", "SdkError"]
                .iter()
                .any(|t| line.contains(t))
            {
                leaks.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "SDK types outside {SDK_DOORS:?} (route them through the store or queue traits):\n{}",
        leaks.join("\n")
    );
}

/// `fn` signatures and their length, in production code.
fn long_functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines = without_tests(text);
    let mut out = Vec::new();
    for (i, (n, line)) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let sig = trimmed
            .trim_start_matches("pub ")
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("async ")
            .trim_start_matches("const ");
        let Some(rest) = sig.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{}}}", " ".repeat(indent));
        if let Some((end, _)) = lines[i + 1..].iter().find(|(_, l)| *l == close) {
            let len = end - n + 1;
            if len > MAX_FUNCTION_LINES {
                out.push((*n, name, len));
            }
        }
    }
    out
}

#[test]
fn no_production_function_is_longer_than_a_name_can_explain() {
    let mut long = Vec::new();
    for (path, text) in production_sources() {
        for (n, name, len) in long_functions(&text) {
            long.push(format!("{path}:{n}: fn {name} has {len} lines"));
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them into named pieces):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    let body = "    x();\n".repeat(MAX_FUNCTION_LINES);
    let text = format!(
        "pub async fn long() {{\n{body}}}\n\nfn short() {{\n    y();\n}}\n\n#[cfg(test)]\nmod tests {{\n    fn long_test() {{\n{body}    }}\n}}\n"
    );
    let found = long_functions(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].0, found[0].1.as_str()), (1, "long"));
    assert_eq!(without_tests(&text).len(), MAX_FUNCTION_LINES + 7);
}
