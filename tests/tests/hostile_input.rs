//! Hostile input for every parser that reads what users or other systems hand
//! us: S3 Inventory data files and `manifest.json`, S3 Batch Operations CSV
//! manifests, and the size / duration / boolean / date parsers of flags and
//! config keys. Property tests (proptest, 256 cases each) check that no input
//! panics, that every rejection names its input (`file:line`, the flag, or the
//! value), that keys S3 cannot hold (empty, over 1,024 bytes) are refused, and
//! that legal but odd keys (control characters, `%`, `+`, quotes, commas,
//! unicode) come out exactly as they went in.
//!
//! The queue message decoder has its own property tests in `common/src/message.rs`.

use std::io::Write;
use std::process::Command;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use common::config::{parse_bool, parse_duration, parse_size as config_size};
use common::listing::csv_manifest::read_rows;
use common::listing::filter::{parse_size, parse_time};
use common::listing::inventory::{decode_form, parse_manifest, read_data_file, DataFile, Schema};
use common::listing::{FilterSpec, KeyFilter, KeyMap, Selector, MAX_KEY_BYTES};
use common::message::KeyItem;
use common::{Error, ErrorKind};
use proptest::prelude::*;
use serde_json::{json, Value};

const CASES: u32 = 256;
const INVENTORY_FILE: &str = "s3://inv-bucket/src/config/data/f1.csv.gz";
const INVENTORY_SCHEMA: &str =
    "Bucket, Key, Size, LastModifiedDate, ETag, IsLatest, IsDeleteMarker";
const CSV_FILE: &str = "/manifests/run 1/keys.csv";

fn selector() -> Selector {
    Selector::new(
        KeyFilter::new(FilterSpec::default()).expect("default filter"),
        KeyMap::default(),
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip to memory");
    gz.finish().expect("gzip to memory")
}

/// Form encoding as S3 Inventory writes keys: `+` for a space, `%XX` for
/// everything but unreserved characters and `/`.
fn form_encode(key: &[u8]) -> String {
    let mut out = String::new();
    for &b in key {
        match b {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || b"-_.~/*".contains(&b) => out.push(b as char),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// RFC 3986 percent-encoding as S3 Batch Operations manifests use; a `+`
/// stays literal (it must decode to a `+`, not a space).
fn pct_encode(key: &[u8]) -> String {
    let mut out = String::new();
    for &b in key {
        match b {
            b if b.is_ascii_alphanumeric() || b"-_.~/+".contains(&b) => out.push(b as char),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Legal but awkward keys: control characters (NUL included), `%`, `+`,
/// spaces, commas, quotes, `\r`/`\n`, and any unicode scalar.
fn odd_key() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        4 => any::<char>(),
        2 => (0u8..0x20).prop_map(char::from),
        1 => Just('\u{7f}'),
        1 => prop::sample::select(vec!['%', '+', ' ', ',', '"', '/', '\\', '.', '\r', '\n']),
    ];
    prop_oneof![
        20 => prop::collection::vec(ch, 1..60).prop_map(|v| v.into_iter().collect::<String>()),
        // Exactly at S3's limit: 512 two-byte characters.
        1 => Just("é".repeat(MAX_KEY_BYTES / 2)),
    ]
}

/// The subject of an error must be `file:line` for exactly this line.
fn assert_names_line(e: &Error, file: &str, line: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(e.kind, ErrorKind::Input, "{}", e);
    prop_assert_eq!(e.subject.clone(), format!("{file}:{line}"), "{}", e);
    prop_assert!(!e.message.is_empty());
    Ok(())
}

// ---------------------------------------------------------------------------
// S3 Inventory data files
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum InvRow {
    Good {
        key: String,
        size: u64,
        modified: i64,
        etag: String,
        quote_key: bool,
    },
    DeleteMarker(String),
    NotLatest(String),
    Bad(InvBad),
}

#[derive(Debug, Clone)]
enum InvBad {
    /// A broken escape appended to an encoded key: `%G1`, `%`, `%4`, `%zz`.
    Escape(&'static str),
    /// Escapes that decode to bytes that are not UTF-8.
    NotUtf8(&'static str),
    EmptyKey,
    /// A key of this many bytes (over 1,024).
    LongKey(usize),
    /// A row with this many columns (the schema has 7).
    Columns(usize),
    Size(&'static str),
    Date(&'static str),
}

fn inv_row() -> impl Strategy<Value = InvRow> {
    let bad = prop_oneof![
        prop::sample::select(vec!["%G1", "%", "%4", "%zz", "%%41", "%-1"]).prop_map(InvBad::Escape),
        prop::sample::select(vec!["%FF", "%C3", "%ED%A0%80", "%C0%AF"]).prop_map(InvBad::NotUtf8),
        Just(InvBad::EmptyKey),
        (MAX_KEY_BYTES + 1..MAX_KEY_BYTES + 80).prop_map(InvBad::LongKey),
        prop::sample::select(vec![1usize, 2, 3, 6, 8, 12]).prop_map(InvBad::Columns),
        prop::sample::select(vec![
            "12x",
            "-1",
            "1.5",
            "18446744073709551616",
            "0x10",
            " 7"
        ])
        .prop_map(InvBad::Size),
        prop::sample::select(vec![
            "2024-13-01T00:00:00Z",
            "yesterday",
            "2024-05-01",
            "2024-05-01T25:00:00Z"
        ])
        .prop_map(InvBad::Date),
    ];
    prop_oneof![
        12 => (odd_key(), any::<u64>(), 0i64..4_102_444_800, "[0-9a-f]{32}(-[0-9]{1,4})?", any::<bool>())
            .prop_map(|(key, size, modified, etag, quote_key)| InvRow::Good { key, size, modified, etag, quote_key }),
        1 => odd_key().prop_map(InvRow::DeleteMarker),
        1 => odd_key().prop_map(InvRow::NotLatest),
        2 => bad.prop_map(InvRow::Bad),
    ]
}

fn date(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().expect("in range")
}

fn render_inv_row(row: &InvRow) -> String {
    let line = |key: &str, size: &str, date: &str, latest: &str, marker: &str| {
        format!("inv-src,{key},{size},{date},\"abc\",{latest},{marker}")
    };
    let ok_date = "2024-05-01T12:00:00.000Z";
    match row {
        InvRow::Good {
            key,
            size,
            modified,
            etag,
            quote_key,
        } => {
            let k = form_encode(key.as_bytes());
            let k = if *quote_key { format!("\"{k}\"") } else { k };
            let d = date(*modified).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            format!("inv-src,{k},{size},{d},{etag},true,false")
        }
        InvRow::DeleteMarker(k) => line(&form_encode(k.as_bytes()), "", ok_date, "true", "true"),
        InvRow::NotLatest(k) => line(&form_encode(k.as_bytes()), "1", ok_date, "false", "false"),
        InvRow::Bad(InvBad::Escape(e)) => line(&format!("dir/k{e}"), "1", ok_date, "true", "false"),
        InvRow::Bad(InvBad::NotUtf8(e)) => line(&format!("k{e}"), "1", ok_date, "true", "false"),
        InvRow::Bad(InvBad::EmptyKey) => line("", "1", ok_date, "true", "false"),
        InvRow::Bad(InvBad::LongKey(n)) => line(&"k".repeat(*n), "1", ok_date, "true", "false"),
        InvRow::Bad(InvBad::Columns(n)) => vec!["x"; *n].join(","),
        InvRow::Bad(InvBad::Size(s)) => line("k", s, ok_date, "true", "false"),
        InvRow::Bad(InvBad::Date(d)) => line("k", "1", d, "true", "false"),
    }
}

/// Read a data file the way the commander does; the items emitted before the result.
fn read_inventory(data: &[u8], file: &DataFile) -> (Vec<KeyItem>, Result<u64, Error>) {
    let schema = Schema::parse(INVENTORY_SCHEMA, "manifest.json").expect("schema");
    let sel = selector();
    let mut items = Vec::new();
    let counted = std::sync::atomic::AtomicU64::new(0);
    let res = read_data_file(
        data,
        INVENTORY_FILE,
        file,
        &schema,
        &sel,
        Some(&counted),
        &mut |_, item| {
            items.push(item);
            Ok(())
        },
    );
    if let Ok(stats) = &res {
        // The progress counter agrees with the result.
        assert_eq!(
            counted.load(std::sync::atomic::Ordering::Relaxed),
            stats.rows
        );
    }
    (items, res.map(|s| s.rows))
}

fn no_checks() -> DataFile {
    DataFile {
        key: "src/config/data/f1.csv.gz".into(),
        size: None,
        md5: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Rows up to the first bad one are emitted with exactly decoded keys and
    /// facts; the first bad row is refused naming the file, its line and (for
    /// a key, size or date) the offending value.
    #[test]
    fn inventory_rows_decode_exactly_or_fail_at_the_first_bad_line(
        rows in prop::collection::vec(inv_row(), 0..40),
        crlf in any::<bool>(),
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let text: String = rows.iter().map(|r| render_inv_row(r) + eol).collect();
        let (items, res) = read_inventory(&gzip(text.as_bytes()), &no_checks());

        let mut want = Vec::new();
        let mut bad = None;
        for (i, row) in rows.iter().enumerate() {
            match row {
                InvRow::Good { key, size, modified, etag, .. } => want.push((key.clone(), *size, date(*modified), format!("\"{etag}\""))),
                InvRow::DeleteMarker(_) | InvRow::NotLatest(_) => {}
                InvRow::Bad(b) => {
                    bad = Some((i + 1, b.clone(), render_inv_row(row)));
                    break;
                }
            }
        }
        let got: Vec<_> = items
            .iter()
            .map(|i| (i.key.clone(), i.size.unwrap_or(u64::MAX), i.last_modified.unwrap_or_default(), i.etag.clone().unwrap_or_default()))
            .collect();
        prop_assert_eq!(got, want);
        match bad {
            None => prop_assert_eq!(res.expect("no bad row"), rows.len() as u64),
            Some((line, why, raw)) => {
                let e = res.expect_err("a bad row is refused");
                assert_names_line(&e, INVENTORY_FILE, line)?;
                let field = raw.split(',').nth(1).unwrap_or_default().to_string();
                match why {
                    InvBad::Escape(_) | InvBad::NotUtf8(_) => prop_assert!(e.message.contains(&format!("`{field}`")), "{}", e),
                    InvBad::EmptyKey => prop_assert!(e.message.contains("empty key"), "{}", e),
                    InvBad::LongKey(n) => prop_assert!(e.message.contains(&n.to_string()) && e.message.contains("1,024"), "{}", e),
                    InvBad::Columns(n) => prop_assert!(e.message.contains(&format!("{n} columns")), "{}", e),
                    InvBad::Size(s) => prop_assert!(e.message.contains(&format!("`{s}`")), "{}", e),
                    InvBad::Date(d) => prop_assert!(e.message.contains(&format!("`{d}`")), "{}", e),
                }
            }
        }
    }

    /// Any bytes, gzipped or not: no panic; a refusal names the data file.
    #[test]
    fn inventory_data_files_of_arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        text in "[a-z0-9,%\"+ \r\n\u{0}\u{1}\u{feff}é]{0,400}",
        zipped in any::<bool>(),
    ) {
        for raw in [bytes.as_slice(), text.as_bytes()] {
            let data = if zipped { gzip(raw) } else { raw.to_vec() };
            if let (_, Err(e)) = read_inventory(&data, &no_checks()) {
                prop_assert_eq!(e.kind, ErrorKind::Input, "{}", e);
                prop_assert!(e.subject.starts_with(INVENTORY_FILE), "{}", e);
            }
        }
    }

    /// A data file whose MD5 or size differs from the manifest is refused by
    /// name, whatever it holds.
    #[test]
    fn inventory_checksums_are_enforced(rows in prop::collection::vec(inv_row(), 0..5)) {
        let text: String = rows.iter().filter(|r| !matches!(r, InvRow::Bad(_))).map(|r| render_inv_row(r) + "\n").collect();
        let data = gzip(text.as_bytes());
        let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(&data));
        let ok = DataFile { md5: Some(md5), size: Some(data.len() as u64), ..no_checks() };
        prop_assert!(read_inventory(&data, &ok).1.is_ok());
        let wrong_md5 = DataFile { md5: Some("0".repeat(32)), ..ok.clone() };
        let e = read_inventory(&data, &wrong_md5).1.expect_err("md5 mismatch");
        prop_assert_eq!((e.class.as_str(), e.subject.as_str()), ("ChecksumMismatch", INVENTORY_FILE));
        let wrong_size = DataFile { size: Some(data.len() as u64 + 1), ..ok };
        let e = read_inventory(&data, &wrong_size).1.expect_err("size mismatch");
        prop_assert_eq!((e.class.as_str(), e.subject.as_str()), ("SizeMismatch", INVENTORY_FILE));
    }

    /// Form decoding inverts form encoding for every key, and never panics.
    #[test]
    fn form_decoding_round_trips_and_never_panics(key in odd_key(), junk in prop::collection::vec(any::<u8>(), 0..64)) {
        let enc = form_encode(key.as_bytes());
        let decoded = decode_form(enc.as_bytes()).map(|k| k.into_owned());
        prop_assert_eq!(decoded, Some(key));
        let _ = decode_form(&junk);
    }
}

/// The named cases of the issue, one by one, so a failure reads plainly.
#[test]
fn inventory_hostile_keys_one_by_one() {
    let row = |key: &str| format!("inv-src,{key},1,2024-05-01T12:00:00.000Z,abc,true,false\n");
    // Legal but odd: control characters, NUL, DEL, CR/LF, `+`, `%` survive exactly.
    let odd = "\u{0}\u{1}\t\r\n\u{1b}[31m\u{7f} a+b%c,\"d\"/é";
    let (items, res) = read_inventory(
        &gzip(row(&form_encode(odd.as_bytes())).as_bytes()),
        &no_checks(),
    );
    res.expect("odd key accepted");
    assert_eq!(
        items.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
        [odd]
    );
    // Refused, naming the file and line.
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    for (key, why) in [
        ("", "empty key"),
        ("a%G1", "`a%G1`"),
        ("a%", "`a%`"),
        ("a%4", "`a%4`"),
        ("%FF", "`%FF`"),
        (long.as_str(), "1,024"),
    ] {
        let shown = if key.len() > 40 {
            format!("<key of {} bytes>", key.len())
        } else {
            format!("{key:?}")
        };
        let text = row("first") + &row(key);
        let (items, res) = read_inventory(&gzip(text.as_bytes()), &no_checks());
        assert_eq!(items.len(), 1, "{shown}");
        let e = res.expect_err(&shown);
        assert_eq!(e.subject, format!("{INVENTORY_FILE}:2"), "{shown}: {e}");
        assert!(e.message.contains(why), "{shown}: {e}");
    }
}

/// Windows line endings must not shift the line an error names (the `csv`
/// crate's `Position::line` lags by one with `\r\n`: BurntSushi/rust-csv#395).
#[test]
fn inventory_errors_name_the_right_line_in_crlf_files() {
    let text = "inv-src,a,1,2024-05-01T12:00:00.000Z,abc,true,false\r\n\
                inv-src,b,1,2024-05-01T12:00:00.000Z,abc,true,false\r\n\
                inv-src,c%G1,1,2024-05-01T12:00:00.000Z,abc,true,false\r\n";
    let (items, res) = read_inventory(&gzip(text.as_bytes()), &no_checks());
    assert_eq!(items.len(), 2);
    assert_eq!(res.unwrap_err().subject, format!("{INVENTORY_FILE}:3"));
}

// ---------------------------------------------------------------------------
// S3 Inventory manifest.json and fileSchema
// ---------------------------------------------------------------------------

const MANIFEST: &str = "s3://inv-bucket/src/config/2024-05-01T00-00Z/manifest.json";

#[derive(Debug, Clone)]
enum Mutation {
    Keep,
    Remove,
    Replace(Value),
}

fn wrong_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(-1)),
        Just(json!(1.5)),
        Just(json!([])),
        Just(json!({"k": 1})),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![6 => Just(Mutation::Keep), 1 => Just(Mutation::Remove), 2 => wrong_value().prop_map(Mutation::Replace)]
}

fn apply(obj: &mut serde_json::Map<String, Value>, field: &str, m: &Mutation) {
    match m {
        Mutation::Keep => {}
        Mutation::Remove => {
            obj.remove(field);
        }
        Mutation::Replace(v) => {
            obj.insert(field.to_string(), v.clone());
        }
    }
}

/// Whether a mutation of a field breaks the manifest. `required`: the field
/// must be there; `nullable`: `null` means "absent" (optional numbers and
/// strings); strings with a default refuse `null`.
fn breaks(m: &Mutation, required: bool, nullable: bool, numeric: bool) -> bool {
    match m {
        Mutation::Keep => false,
        Mutation::Remove => required,
        Mutation::Replace(Value::Null) => required || !nullable,
        Mutation::Replace(v) if numeric => v.as_u64().is_none(),
        Mutation::Replace(_) => true,
    }
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<i64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        prop::sample::select(vec![
            "sourceBucket",
            "fileFormat",
            "CSV",
            "files",
            "key",
            "fileSchema"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    ".{0,8}",
                    prop::sample::select(vec![
                        "sourceBucket",
                        "destinationBucket",
                        "fileFormat",
                        "fileSchema",
                        "files",
                        "key",
                        "size",
                        "MD5checksum"
                    ])
                    .prop_map(str::to_string)
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Bytes and JSON of any shape: no panic, and a refusal names the manifest.
    #[test]
    fn manifests_of_any_shape_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), value in any_json()) {
        for raw in [bytes, serde_json::to_vec(&value).expect("json")] {
            if let Err(e) = parse_manifest(&raw, MANIFEST) {
                prop_assert_eq!(e.kind, ErrorKind::Input, "{}", e);
                prop_assert_eq!(e.subject.as_str(), MANIFEST);
                prop_assert!(!e.message.is_empty());
            }
        }
    }

    /// A real manifest with fields removed or of the wrong type: refused
    /// exactly when a required field is missing or mistyped, naming the file
    /// (and the field, when it is missing); otherwise read as written.
    #[test]
    fn manifest_fields_missing_or_mistyped_are_refused(
        source in mutation(), destination in mutation(), format in mutation(), schema in mutation(),
        files in mutation(), file_key in mutation(), file_size in mutation(), file_md5 in mutation(),
        extra in any::<bool>(),
    ) {
        let mut file = json!({"key": "src/data/f1.csv.gz", "size": 123, "MD5checksum": "ABCDEF0123"});
        let f = file.as_object_mut().expect("object");
        apply(f, "key", &file_key);
        apply(f, "size", &file_size);
        apply(f, "MD5checksum", &file_md5);
        let mut manifest = json!({
            "sourceBucket": "src",
            "destinationBucket": "arn:aws:s3:::inv-bucket",
            "version": "2016-11-30",
            "fileFormat": "CSV",
            "fileSchema": INVENTORY_SCHEMA,
            "files": [file],
        });
        let m = manifest.as_object_mut().expect("object");
        apply(m, "sourceBucket", &source);
        apply(m, "destinationBucket", &destination);
        apply(m, "fileFormat", &format);
        apply(m, "fileSchema", &schema);
        apply(m, "files", &files);
        if extra {
            m.insert("unknownField".into(), json!({"nested": [1, 2]}));
        }
        let files_ok = match &files {
            Mutation::Keep => !breaks(&file_key, true, false, false)
                && !breaks(&file_size, false, true, true)
                && !breaks(&file_md5, false, true, false),
            Mutation::Replace(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        let ok = !breaks(&source, true, false, false)
            && !breaks(&destination, false, false, false)
            && !breaks(&format, true, false, false)
            // An absent fileSchema is refused too ("manifest has no fileSchema").
            && !breaks(&schema, true, false, false)
            && files_ok;
        match parse_manifest(&serde_json::to_vec(&manifest).expect("json"), MANIFEST) {
            Ok(got) => {
                prop_assert!(ok, "accepted a broken manifest: {}", manifest);
                prop_assert_eq!(got.source_bucket.as_str(), "src");
                prop_assert_eq!(got.file_schema.as_str(), INVENTORY_SCHEMA);
                if let Some(f) = got.files.first() {
                    let size = match &file_size {
                        Mutation::Keep => Some(123),
                        Mutation::Replace(v) => v.as_u64(),
                        Mutation::Remove => None,
                    };
                    prop_assert_eq!(f.key.as_str(), "src/data/f1.csv.gz");
                    prop_assert_eq!(f.size, size);
                    prop_assert_eq!(f.md5.as_deref(), matches!(file_md5, Mutation::Keep).then_some("abcdef0123"));
                }
            }
            Err(e) => {
                prop_assert!(!ok, "refused a good manifest {}: {}", manifest, e);
                prop_assert_eq!(e.kind, ErrorKind::Input);
                prop_assert_eq!(e.subject.as_str(), MANIFEST);
                if e.message.contains("missing field") {
                    let removed: Vec<&str> = [("sourceBucket", &source), ("fileFormat", &format), ("files", &files), ("key", &file_key)]
                        .into_iter()
                        .filter(|(_, m)| matches!(m, Mutation::Remove))
                        .map(|(name, _)| name)
                        .collect();
                    prop_assert!(removed.iter().any(|n| e.message.contains(&format!("`{n}`"))), "{}", e);
                }
            }
        }
    }

    /// fileSchema of any text: a schema without a `Key` column is refused
    /// naming the manifest and quoting the schema; otherwise `Key` is found.
    #[test]
    fn file_schemas_need_a_key_column(cols in prop::collection::vec(prop_oneof![
        prop::sample::select(vec!["Bucket", "Key", " key ", "KEY", "Size", "ETag", "Keys", "", "VersionId"]).prop_map(str::to_string),
        "[^,]{0,12}",
    ], 0..8)) {
        let schema = cols.join(",");
        let key_at = cols.iter().position(|c| c.trim().eq_ignore_ascii_case("key"));
        match (Schema::parse(&schema, MANIFEST), key_at) {
            (Ok(s), Some(i)) => {
                prop_assert_eq!(s.key, i);
                prop_assert_eq!(s.columns, cols.len().max(1));
            }
            (Err(e), None) => {
                prop_assert_eq!(e.subject.as_str(), MANIFEST);
                prop_assert!(e.message.contains(&format!("`{schema}`")), "{}", e);
            }
            (got, want) => prop_assert!(false, "schema {:?}: got {:?}, Key at {:?}", schema, got, want),
        }
    }
}

#[test]
fn orc_and_parquet_manifests_are_refused_by_name() {
    for format in ["ORC", "Parquet", "", "csv2"] {
        let m =
            json!({"sourceBucket": "s", "fileFormat": format, "fileSchema": "Key", "files": []});
        let e = parse_manifest(m.to_string().as_bytes(), MANIFEST).expect_err(format);
        assert_eq!(e.subject, MANIFEST);
        assert!(e.message.contains(&format!("`{format}`")), "{e}");
    }
}

// ---------------------------------------------------------------------------
// S3 Batch Operations CSV manifests
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum CsvRow {
    Good {
        bucket: &'static str,
        key: String,
        version: String,
        quote: bool,
    },
    Blank(&'static str),
    Bad(CsvBad),
}

#[derive(Debug, Clone)]
enum CsvBad {
    Escape(&'static str),
    NotUtf8(&'static str),
    EmptyKey,
    LongKey(usize),
    Columns(usize),
    Bucket(&'static str),
    UnbalancedQuote,
}

fn csv_row() -> impl Strategy<Value = CsvRow> {
    let bad = prop_oneof![
        prop::sample::select(vec!["%G1", "%", "%4", "%zz", "%-1"]).prop_map(CsvBad::Escape),
        prop::sample::select(vec!["%FF", "%C3", "%ED%A0%80"]).prop_map(CsvBad::NotUtf8),
        Just(CsvBad::EmptyKey),
        (MAX_KEY_BYTES + 1..MAX_KEY_BYTES + 80).prop_map(CsvBad::LongKey),
        prop::sample::select(vec![1usize, 4, 7]).prop_map(CsvBad::Columns),
        prop::sample::select(vec!["Bad Bucket", "s3://src-a", "a/b", "x", "UPPER", "b c"])
            .prop_map(CsvBad::Bucket),
        Just(CsvBad::UnbalancedQuote),
    ];
    prop_oneof![
        12 => (prop::sample::select(vec!["src-a", "src-b"]), odd_key(), "[A-Za-z0-9._-]{0,12}", any::<bool>())
            .prop_map(|(bucket, key, version, quote)| CsvRow::Good { bucket, key, version, quote }),
        1 => prop::sample::select(vec!["", " ", "\t", " \t "]).prop_map(CsvRow::Blank),
        2 => bad.prop_map(CsvRow::Bad),
    ]
}

fn render_csv_row(row: &CsvRow) -> String {
    match row {
        CsvRow::Good {
            bucket,
            key,
            version,
            quote,
        } => {
            let k = pct_encode(key.as_bytes());
            let k = if *quote { format!("\"{k}\"") } else { k };
            if version.is_empty() {
                format!("{bucket},{k}")
            } else {
                format!("{bucket},{k},{version}")
            }
        }
        CsvRow::Blank(s) => s.to_string(),
        CsvRow::Bad(CsvBad::Escape(e)) => format!("src-a,dir/k{e}"),
        CsvRow::Bad(CsvBad::NotUtf8(e)) => format!("src-a,k{e}"),
        CsvRow::Bad(CsvBad::EmptyKey) => "src-a,".to_string(),
        CsvRow::Bad(CsvBad::LongKey(n)) => format!("src-a,{}", "k".repeat(*n)),
        CsvRow::Bad(CsvBad::Columns(n)) => vec!["src-a"; *n].join(","),
        CsvRow::Bad(CsvBad::Bucket(b)) => format!("{b},k"),
        CsvRow::Bad(CsvBad::UnbalancedQuote) => "src-a,\"open".to_string(),
    }
}

type CsvOut = (Vec<(String, KeyItem)>, Result<u64, Error>);

fn read_csv(data: &[u8], only: Option<&str>) -> CsvOut {
    let sel = selector();
    let mut out = Vec::new();
    let counted = std::sync::atomic::AtomicU64::new(0);
    let res = read_rows(
        data,
        CSV_FILE,
        only,
        &sel,
        Some(&counted),
        &mut |_, src: &Arc<str>, item| {
            out.push((src.to_string(), item));
            Ok(())
        },
    );
    if let Ok(n) = &res {
        // The progress counter agrees with the result.
        assert_eq!(counted.load(std::sync::atomic::Ordering::Relaxed), *n);
    }
    (out, res)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Rows up to the first bad one come out with exactly decoded keys, their
    /// bucket and version; blank lines are skipped but counted as lines; the
    /// first bad row is refused naming the file and its line.
    #[test]
    fn csv_manifest_rows_decode_exactly_or_fail_at_the_first_bad_line(
        rows in prop::collection::vec(csv_row(), 0..40),
        crlf in any::<bool>(),
        bom in any::<bool>(),
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut text: String = rows.iter().map(|r| render_csv_row(r) + eol).collect();
        if bom {
            text.insert(0, '\u{feff}');
        }
        let (items, res) = read_csv(text.as_bytes(), None);
        let mut want = Vec::new();
        let mut bad = None;
        for (i, row) in rows.iter().enumerate() {
            match row {
                CsvRow::Good { bucket, key, version, .. } => {
                    want.push((format!("s3://{bucket}"), key.clone(), (!version.is_empty()).then(|| version.clone())))
                }
                CsvRow::Blank(_) => {}
                CsvRow::Bad(b) => {
                    bad = Some((i + 1, b.clone()));
                    break;
                }
            }
        }
        let got: Vec<_> = items.into_iter().map(|(s, i)| (s, i.key, i.version_id)).collect();
        prop_assert_eq!(got, want);
        match bad {
            None => {
                let n = res.expect("no bad row");
                prop_assert_eq!(n, rows.iter().filter(|r| !matches!(r, CsvRow::Blank(_))).count() as u64);
            }
            Some((line, why)) => {
                let e = res.expect_err("a bad row is refused");
                assert_names_line(&e, CSV_FILE, line)?;
                match why {
                    CsvBad::EmptyKey => prop_assert!(e.message.contains("empty key"), "{}", e),
                    CsvBad::LongKey(n) => prop_assert!(e.message.contains(&n.to_string()) && e.message.contains("1,024"), "{}", e),
                    CsvBad::Columns(n) => prop_assert!(e.message.contains(&format!("{n} columns")), "{}", e),
                    CsvBad::Escape(_) | CsvBad::NotUtf8(_) => prop_assert!(e.message.contains("percent-encoded"), "{}", e),
                    CsvBad::Bucket(_) | CsvBad::UnbalancedQuote => {}
                }
            }
        }
    }

    /// Any bytes: no panic; a refusal names the file and a line.
    #[test]
    fn csv_manifests_of_arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        text in "[a-z0-9,%\"+ \r\n\t\u{0}\u{1}\u{feff}é-]{0,400}",
        only in any::<bool>(),
    ) {
        for raw in [bytes.as_slice(), text.as_bytes()] {
            if let (_, Err(e)) = read_csv(raw, only.then_some("src-a")) {
                prop_assert_eq!(e.kind, ErrorKind::Input, "{}", e);
                let line = e.subject.strip_prefix(&format!("{CSV_FILE}:")).unwrap_or_else(|| panic!("{e}"));
                prop_assert!(line.parse::<u64>().is_ok_and(|n| n >= 1), "{}", e);
            }
        }
    }
}

/// The named cases of the issue, one by one, so a failure reads plainly.
#[test]
fn csv_manifest_hostile_keys_one_by_one() {
    let odd = "\u{0}\u{1}\t\r\n\u{1b}[31m\u{7f} a+b%c,\"d\"/é";
    let (items, res) = read_csv(
        format!("src-a,{}\n", pct_encode(odd.as_bytes())).as_bytes(),
        None,
    );
    res.expect("odd key accepted");
    assert_eq!(
        items
            .iter()
            .map(|(_, i)| i.key.as_str())
            .collect::<Vec<_>>(),
        [odd]
    );
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    // `%G1`, a lone `%` and `%4` are not percent-encodings: refused like `%FF`
    // (the module promises "a bad escape ... is an error naming the file and line").
    for (key, why) in [
        ("", "empty key"),
        ("a%G1", "percent"),
        ("a%", "percent"),
        ("a%4", "percent"),
        ("%FF", "percent"),
        (long.as_str(), "1,024"),
    ] {
        let shown = if key.len() > 40 {
            format!("<key of {} bytes>", key.len())
        } else {
            format!("{key:?}")
        };
        let (items, res) = read_csv(format!("src-a,first\nsrc-a,{key}\n").as_bytes(), None);
        assert_eq!(items.len(), 1, "{shown}");
        let e = res.expect_err(&shown);
        assert_eq!(e.subject, format!("{CSV_FILE}:2"), "{shown}: {e}");
        assert!(e.message.contains(why), "{shown}: {e}");
    }
}

#[test]
fn csv_manifest_rows_of_another_bucket_than_the_source_are_refused() {
    let (items, res) = read_csv(b"src-a,k1\nsrc-b,k2\n", Some("src-a"));
    assert_eq!(items.len(), 1);
    let e = res.unwrap_err();
    assert_eq!(e.subject, format!("{CSV_FILE}:2"));
    assert!(
        e.message.contains("src-b") && e.message.contains("src-a"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// Sizes, durations, booleans and dates (config keys and flags)
// ---------------------------------------------------------------------------

/// Text that looks like a size, duration, boolean or date, and junk.
fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,25}(\\.[0-9]{0,25})?[ ]?(|[kKmMgGtT]|[kKmMgGtT][iI]?[bB]|[bB]|[smhd]|[KMGT]iB|x|Q|\u{1F600})",
        "[-+]?[0-9]{1,5}[ .,eE_][0-9]{0,5}[a-zA-Z]{0,3}",
        "[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9]{1,2}:[0-9]{2}(:[0-9]{2})?(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:?[0-9]{2})?)?",
        "(true|false|yes|no|on|off|1|0|TRUE|Yes|y|n|2)",
        ".{0,24}",
        "[ \t\n]*",
    ]
}

const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

const FLAG_UNITS: &[(&str, u32)] = &[
    ("", 0),
    ("b", 0),
    ("K", 10),
    ("kb", 10),
    ("MiB", 20),
    ("G", 30),
    ("T", 40),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Config sizes (`part_size`, `max_message_bytes`, …): no panic; exact
    /// values for every unit; a refusal quotes the value.
    #[test]
    fn config_sizes(s in value_text(), n in 0u64..1 << 20, unit in prop::sample::select(UNITS)) {
        if let Err(e) = config_size(&s) {
            prop_assert!(e.contains(s.trim()), "{}: {}", s, e);
        }
        prop_assert_eq!(config_size(&format!("{n}{}", unit.0)), Ok(n * unit.1));
        prop_assert_eq!(config_size(&format!(" {n} {} ", unit.0)), Ok(n * unit.1));
    }

    /// Durations (`visibility_timeout`, …): no panic; exact; refusals quote the value.
    #[test]
    fn config_durations(s in value_text(), n in 0u64..1 << 30, unit in prop::sample::select(&[("", 1u64), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)][..])) {
        if let Err(e) = parse_duration(&s) {
            prop_assert!(e.contains(s.trim()), "{}: {}", s, e);
        }
        prop_assert_eq!(parse_duration(&format!("{n}{}", unit.0)).map(|d| d.as_secs()), Ok(n * unit.1));
    }

    /// Booleans: no panic; refusals quote the value.
    #[test]
    fn config_bools(s in value_text()) {
        match parse_bool(&s) {
            Ok(b) => prop_assert_eq!(b, ["true", "yes", "on", "1"].contains(&s.trim().to_ascii_lowercase().as_str())),
            Err(e) => prop_assert!(e.contains(s.trim()), "{}: {}", s, e),
        }
    }

    /// `--min-size` / `--max-size`: no panic; 1024-based units exact; a refusal
    /// names the flag and quotes the value; overflow is a refusal, not a wrap.
    #[test]
    fn size_flags(s in value_text(), n in 0u64..1 << 23, unit in prop::sample::select(FLAG_UNITS)) {
        if let Err(e) = parse_size(&s, "--min-size") {
            prop_assert_eq!(e.subject.as_str(), "--min-size");
            prop_assert!(e.message.contains(&format!("`{s}`")), "{}", e);
        }
        prop_assert_eq!(parse_size(&format!("{n}{}", unit.0), "--max-size").ok(), Some(n << unit.1));
        let huge = format!("{}T", u64::MAX >> 39);
        prop_assert!(parse_size(&huge, "--max-size").is_err());
    }

    /// `--modified-since` (commander and executor): no panic; RFC 3339 at any
    /// offset and `YYYY-MM-DD` are exact; a refusal names the flag / quotes the value.
    #[test]
    fn date_flags(s in value_text(), secs in -62_135_510_400i64..253_402_214_399, offset_min in -1439i32..1439) {
        match parse_time(&s, "--modified-since") {
            Err(e) => {
                prop_assert_eq!(e.subject.as_str(), "--modified-since");
                prop_assert!(e.message.contains(&format!("`{s}`")), "{}", e);
            }
            Ok(t) => prop_assert_eq!(executor::cli::parse_time(&s), Ok(t), "commander and executor agree on {:?}", s),
        }
        if let Err(e) = executor::cli::parse_time(&s) {
            prop_assert!(e.contains(&format!("`{s}`")), "{}", e);
        }
        let t = date(secs);
        let tz = chrono::FixedOffset::east_opt(offset_min * 60).expect("offset");
        let text = t.with_timezone(&tz).to_rfc3339();
        prop_assert_eq!(parse_time(&text, "--modified-since").ok(), Some(t));
        prop_assert_eq!(executor::cli::parse_time(&text), Ok(t));
        let day = t.format("%Y-%m-%d").to_string();
        let midnight = t.date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        prop_assert_eq!(parse_time(&day, "--not-modified-since").ok(), Some(midnight));
        prop_assert_eq!(executor::cli::parse_time(&day), Ok(midnight));
    }

    /// Executor `--sleep-sec` / `--grace-period`: no panic; refusals quote the value.
    #[test]
    fn seconds_flags(s in value_text()) {
        match executor::cli::parse_seconds(&s) {
            Ok(v) => prop_assert!((0.0..=86_400.0).contains(&v)),
            Err(e) => prop_assert!(e.contains(&format!("`{s}`")), "{}", e),
        }
    }
}

/// The binaries refuse bad flag values before doing anything, naming the flag
/// and quoting the value, with a non-zero exit.
#[test]
fn binaries_name_the_flag_and_the_value_they_refuse() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |bin: &str, args: &[&str]| {
        let out = Command::new(testsupport::bin(bin))
            .args(args)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .env("AWS_REGION", "us-east-1")
            .env("QUEUE_BACKEND", "local")
            .env("QUEUE_PATH", dir.path().join("q.db"))
            .output()
            .expect("run binary");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (bin, flag, value) in [
        ("commander", "--min-size", "12Q"),
        ("commander", "--max-size", "99999999999999999999T"),
        ("commander", "--modified-since", "yesterday"),
        ("commander", "--not-modified-since", "2024-13-01"),
        ("executor", "--modified-since", "2024-02-30"),
        ("executor", "--sleep-sec", "-1"),
        ("executor", "--grace-period", "NaN"),
    ] {
        let flag_value = format!("{flag}={value}");
        let mut args = if bin == "commander" {
            vec!["run", "-s", "src-bucket", "-t", "dst-bucket"]
        } else {
            vec![]
        };
        args.push(&flag_value);
        let (status, stderr) = run(bin, &args);
        assert!(!status.success(), "{bin} {flag} {value} succeeded");
        assert!(
            stderr.contains(flag) && stderr.contains(value),
            "{bin} {flag} {value}: {stderr}"
        );
    }
}
