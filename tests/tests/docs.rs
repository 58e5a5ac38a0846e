//! `docs/` is the one copy of the documentation and `README.md` its short
//! introduction and table of contents. Nothing else keeps the two in step, so
//! these checks do: every page under `docs/` is linked from the README; every
//! relative link (and `#anchor`) in the README and in `docs/` leads somewhere;
//! every long flag that `--help` prints, for `executor` and for each
//! `commander` subcommand (found in `commander --help`, not listed here), is
//! named in the `docs/` page the README's flag table points to; and the README
//! stays short.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use testsupport::{bin, workspace_root};

/// A README longer than this is turning back into a second copy of `docs/`.
const README_MAX_LINES: usize = 400;

/// The README section that says which page documents which command's flags.
const FLAG_TABLE_HEADING: &str = "## Where each flag is documented";

fn read(rel: &Path) -> String {
    let path = workspace_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every `*.md` under `docs/` (recursively), relative to the workspace root.
fn doc_pages() -> BTreeSet<PathBuf> {
    let root = workspace_root();
    let mut pages = BTreeSet::new();
    let mut stack = vec![root.join("docs")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read docs/").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                pages.insert(path.strip_prefix(&root).expect("under root").to_path_buf());
            }
        }
    }
    assert!(!pages.is_empty(), "no page under docs/");
    pages
}

/// The README and every docs page: the files whose links are checked.
fn markdown_files() -> BTreeSet<PathBuf> {
    let mut files = doc_pages();
    files.insert(PathBuf::from("README.md"));
    files
}

/// Lines outside fenced code blocks (``` or ~~~), where links and headings live.
fn prose_lines(md: &str) -> Vec<&str> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for line in md.lines() {
        let t = line.trim_start();
        match fence {
            Some(f) if t.starts_with(f) => fence = None,
            Some(_) => {}
            None if t.starts_with("```") => fence = Some("```"),
            None if t.starts_with("~~~") => fence = Some("~~~"),
            None => out.push(line),
        }
    }
    out
}

/// The line without its inline code spans, so `[x](y)` shown as code is no link.
fn strip_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + ticks..];
        let closing = "`".repeat(ticks);
        match after.find(&closing) {
            Some(end) => rest = &after[end + ticks..],
            // An unmatched backtick is literal text.
            None => {
                out.push_str(&rest[start..start + ticks]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Targets of the inline links `[text](target)` in the prose of `md`.
fn links(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose_lines(md) {
        let line = strip_code_spans(line);
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            // `(target "title")`: the target is the first word.
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push(target.to_string());
            rest = &after[end + 1..];
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (inline code
/// and link markup included), spaces turned into `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor GitHub gives the headings of `md` (a repeated heading gets `-1`, `-2`, …).
fn anchors(md: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in prose_lines(md) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        let Some(text) = line[hashes..].strip_prefix(' ') else {
            continue;
        };
        if hashes == 0 || hashes > 6 {
            continue;
        }
        let base = slug(text.trim_end_matches('#'));
        let n = seen.entry(base.clone()).or_default();
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// A relative link of `from` (a path relative to the workspace root) resolved
/// to a workspace-relative path and anchor; `None` for an external URL.
fn resolve(from: &Path, target: &str) -> Option<(PathBuf, Option<String>)> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a.to_string())),
        None => (target, None),
    };
    if path.is_empty() {
        return Some((from.to_path_buf(), anchor));
    }
    let mut out = PathBuf::new();
    for c in from
        .parent()
        .unwrap_or(Path::new(""))
        .join(path)
        .components()
    {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    // Above the workspace: keep it, so the existence check fails.
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some((out, anchor))
}

/// `--help` of a binary (with `args` before it), which must succeed.
fn help(binary: &str, args: &[&str]) -> String {
    let out = Command::new(bin(binary))
        .args(args)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("run {binary} {args:?} --help: {e}"));
    assert!(
        out.status.success(),
        "{binary} {args:?} --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The subcommands listed under `Commands:` in clap's help, without `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// The long flags declared in clap's help (`-c, --config-file <FILE>`,
/// `--watch [<SECS>]`), except `--help` and `--version`.
fn long_flags(help: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let t = line.trim_start();
        let declares = t.starts_with("--")
            || (t.starts_with('-') && t[1..].starts_with(|c: char| c.is_ascii_alphanumeric()));
        if !declares {
            continue;
        }
        for word in t.split([' ', ',']).filter(|w| !w.is_empty()) {
            if !word.starts_with('-') && !word.starts_with('<') && !word.starts_with('[') {
                break; // the declaration ends where a description would start
            }
            if let Some(name) = word.strip_prefix("--") {
                let name: String = name.chars().take_while(|&c| is_flag_char(c)).collect();
                if !name.is_empty() {
                    flags.insert(format!("--{name}"));
                }
            }
        }
    }
    flags.remove("--help");
    flags.remove("--version");
    flags
}

fn is_flag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Whether `text` names `flag` as a whole word (`--max` is not `--max-size`).
fn mentions(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + flag.len()..].chars().next();
        !before.is_some_and(is_flag_char) && !after.is_some_and(is_flag_char)
    })
}

/// The README's flag table: command (`commander run`, `executor`, or `global`
/// for the row of the shared flags) → the page its row links to.
fn flag_table(readme: &str) -> BTreeMap<String, PathBuf> {
    let start = readme
        .lines()
        .position(|l| l.trim_end() == FLAG_TABLE_HEADING)
        .unwrap_or_else(|| panic!("README.md has no `{FLAG_TABLE_HEADING}` section"));
    let mut table = BTreeMap::new();
    for line in readme
        .lines()
        .skip(start + 1)
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.trim_start().starts_with('|'))
    {
        let first = line
            .trim()
            .trim_matches('|')
            .split('|')
            .next()
            .unwrap_or("");
        let command = if first.to_lowercase().contains("global") {
            "global".to_string()
        } else {
            match first.split('`').nth(1) {
                Some(c) => c.trim().to_string(),
                None => continue, // header and separator rows
            }
        };
        let Some((page, _)) = links(line)
            .first()
            .and_then(|t| resolve(Path::new("README.md"), t))
        else {
            panic!("the README flag table row `{line}` links no page");
        };
        table.insert(command, page);
    }
    table
}

#[test]
fn every_docs_page_is_linked_from_the_readme() {
    let readme = Path::new("README.md");
    let linked: BTreeSet<PathBuf> = links(&read(readme))
        .iter()
        .filter_map(|t| resolve(readme, t))
        .map(|(path, _)| path)
        .collect();
    let unlinked: Vec<String> = doc_pages()
        .into_iter()
        .filter(|page| !linked.contains(page))
        .map(|page| page.display().to_string())
        .collect();
    assert!(
        unlinked.is_empty(),
        "README.md does not link these docs pages (add them to its Documentation table): {unlinked:?}"
    );
}

#[test]
fn every_relative_link_leads_to_an_existing_file_and_anchor() {
    let root = workspace_root();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        for target in links(&read(&file)) {
            let Some((path, anchor)) = resolve(&file, &target) else {
                continue;
            };
            checked += 1;
            if !root.join(&path).exists() {
                broken.push(format!(
                    "{}: `{target}`: {} does not exist",
                    file.display(),
                    path.display()
                ));
                continue;
            }
            if let Some(anchor) = anchor.filter(|_| path.extension().is_some_and(|e| e == "md")) {
                if !anchors(&read(&path)).contains(&anchor) {
                    broken.push(format!(
                        "{}: `{target}`: {} has no heading with anchor #{anchor}",
                        file.display(),
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} relative links found: is the link parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_flag_in_help_is_documented_where_the_readme_points() {
    let table = flag_table(&read(Path::new("README.md")));
    for (command, page) in &table {
        assert!(
            page.starts_with("docs"),
            "the README flag table sends `{command}` to {}, which is not a docs/ page",
            page.display()
        );
    }
    let page_of = |command: &str| -> (PathBuf, String) {
        let page = table.get(command).unwrap_or_else(|| {
            panic!("the README flag table (`{FLAG_TABLE_HEADING}`) has no row for `{command}`")
        });
        (page.clone(), read(page))
    };
    let (global_page, global_text) = page_of("global");

    let top = help("commander", &[]);
    let globals = long_flags(&top);
    assert!(
        globals.contains("--config-file") && globals.contains("--queue"),
        "global flags not found in `commander --help`: {globals:?}"
    );
    let subs = subcommands(&top);
    assert!(
        subs.iter().any(|s| s == "run") && subs.iter().any(|s| s == "status"),
        "subcommands not found in `commander --help`: {subs:?}"
    );

    let mut commands: Vec<(String, BTreeSet<String>)> = subs
        .iter()
        .map(|sub| {
            (
                format!("commander {sub}"),
                long_flags(&help("commander", &[sub])),
            )
        })
        .collect();
    commands.push(("executor".to_string(), long_flags(&help("executor", &[]))));

    let mut missing = Vec::new();
    let mut checked = 0;
    for (command, flags) in &commands {
        let (page, text) = page_of(command);
        for flag in flags {
            checked += 1;
            let (page, text) = if globals.contains(flag) {
                (&global_page, &global_text)
            } else {
                (&page, &text)
            };
            if !mentions(text, flag) {
                missing.push(format!(
                    "`{command} {flag}` is not documented in {}",
                    page.display()
                ));
            }
        }
    }
    assert!(
        checked >= 60,
        "only {checked} flags found: is the help parser broken?"
    );
    assert!(
        missing.is_empty(),
        "flags printed by --help but not documented:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_readme_stays_short() {
    let lines = read(Path::new("README.md")).lines().count();
    assert!(
        lines < README_MAX_LINES,
        "README.md has {lines} lines (limit {README_MAX_LINES}): move the detail into a docs/ page and link it"
    );
}

#[test]
fn the_parsers_read_markdown_and_help_as_github_and_clap_write_them() {
    let md = "# Top\n\nSee [a](a.md#x-y) and `[not](a link)`.\n```\n[no](code.md)\n## Not a heading\n```\n## `commander run` (`--x`)\n## Top\n";
    assert_eq!(links(md), ["a.md#x-y"]);
    assert_eq!(
        anchors(md),
        ["top", "top-1", "commander-run---x"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    assert_eq!(slug("Key → path"), "key--path");
    assert_eq!(
        resolve(Path::new("docs/a.md"), "../README.md#set-up"),
        Some((PathBuf::from("README.md"), Some("set-up".to_string())))
    );
    assert_eq!(resolve(Path::new("README.md"), "https://x.org/a.md"), None);

    let help = "Usage: c [OPTIONS] <COMMAND>\n\nCommands:\n  init  Create\n  run   Run it\n  help  Print\n\nOptions:\n  -c, --config-file <FILE>\n          Config (see --not-a-flag)\n      --watch [<SECS>]\n          - text: also --not-this\n  -h, --help\n  -V, --version\n";
    assert_eq!(subcommands(help), ["init", "run"]);
    assert_eq!(
        long_flags(help),
        ["--config-file", "--watch"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    assert!(mentions("use `--max N`", "--max"));
    assert!(!mentions("use `--max-size N`", "--max"));
    assert!(!mentions("`--queue-num`", "--queue"));
}
