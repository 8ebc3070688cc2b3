use super::*;
use serde_json::Value;

fn rec(principal: &str, detail: Option<String>) -> AuditRecord {
    AuditRecord {
        principal: principal.into(),
        action: "seek_group".into(),
        target: "topic=orders group=g1".into(),
        result: "ok".into(),
        detail,
        node: 1,
    }
}

fn lines(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn a_line_is_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let audit = Audit::open(AuditConfig::new(&path)).unwrap();
    let t = UNIX_EPOCH + Duration::from_millis(1_796_280_000_123);
    audit.record_at(&rec("orders-service", None), t);
    audit.record_at(&rec("x\"\n", Some("why \u{1f}".into())), t);
    let text = fs::read_to_string(&path).unwrap();
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        r#"{"time":"2026-12-03T06:40:00.123Z","principal":"orders-service","action":"seek_group","target":"topic=orders group=g1","result":"ok","node":1}"#
    );
    let all = lines(&path);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["principal"], "x\"\n");
    assert_eq!(all[1]["detail"], "why \u{1f}");
    assert_eq!(audit.errors(), 0);
}

#[test]
fn opening_appends_and_creates_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/audit/audit.log");
    Audit::open(AuditConfig::new(&path))
        .unwrap()
        .record(&rec("a", None));
    Audit::open(AuditConfig::new(&path))
        .unwrap()
        .record(&rec("b", None));
    let names: Vec<_> = lines(&path)
        .iter()
        .map(|l| l["principal"].clone())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn disabled_records_nothing() {
    let audit = Audit::disabled();
    audit.record(&rec("a", None));
    assert!(!audit.is_enabled() && audit.path().is_none() && audit.errors() == 0);
}

#[test]
fn zero_max_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AuditConfig::new(dir.path().join("a.log"));
    cfg.max_bytes = 0;
    assert!(matches!(Audit::open(cfg), Err(AuditError::ZeroMaxBytes)));
}

#[test]
fn rotation_keeps_keep_files_and_the_newest_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let cfg = AuditConfig {
        path: path.clone(),
        max_bytes: 1000,
        keep: 3,
    };
    let audit = Audit::open(cfg).unwrap();
    for i in 0..200 {
        audit.record(&rec("p", Some(i.to_string())));
    }
    assert!(!numbered(&path, 4).exists(), "more files than keep");
    let mut seen = Vec::new();
    for file in [
        numbered(&path, 3),
        numbered(&path, 2),
        numbered(&path, 1),
        path.clone(),
    ] {
        let size = fs::metadata(&file).unwrap().len();
        assert!(size <= 1000, "{file:?} too big");
        // A rotated file was full: no room left for another line (< 200 bytes).
        assert!(
            file == path || size > 800,
            "{file:?} rotated early at {size} bytes"
        );
        for line in lines(&file) {
            seen.push(line["detail"].as_str().unwrap().parse::<u32>().unwrap());
        }
    }
    // The newest lines, in order, with none missing between them.
    assert_eq!(seen.last(), Some(&199));
    let first = seen[0];
    assert_eq!(seen, (first..200).collect::<Vec<_>>());
}

#[test]
fn keep_zero_keeps_only_the_current_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let cfg = AuditConfig {
        path: path.clone(),
        max_bytes: 500,
        keep: 0,
    };
    let audit = Audit::open(cfg).unwrap();
    for i in 0..50 {
        audit.record(&rec("p", Some(i.to_string())));
    }
    assert!(!numbered(&path, 1).exists());
    assert_eq!(lines(&path).last().unwrap()["detail"], "49");
}

#[test]
fn a_line_longer_than_max_bytes_is_written_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let cfg = AuditConfig {
        path: path.clone(),
        max_bytes: 100,
        keep: 2,
    };
    let audit = Audit::open(cfg).unwrap();
    audit.record(&rec("p", Some("x".repeat(300))));
    audit.record(&rec("q", None));
    assert_eq!(lines(&numbered(&path, 1))[0]["principal"], "p");
    assert_eq!(lines(&path)[0]["principal"], "q");
}

#[test]
fn concurrent_writers_produce_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let audit = Audit::open(AuditConfig::new(&path)).unwrap();
    std::thread::scope(|s| {
        for t in 0..8 {
            let audit = audit.clone();
            s.spawn(move || {
                for i in 0..500 {
                    audit.record(&rec(
                        &format!("writer-{t}"),
                        Some(format!("{i} {}", "y".repeat(t * 50))),
                    ));
                }
            });
        }
    });
    let all = lines(&path);
    assert_eq!(all.len(), 8 * 500);
    for t in 0..8 {
        let name = format!("writer-{t}");
        let mine: Vec<u32> = all
            .iter()
            .filter(|l| l["principal"] == name.as_str())
            .map(|l| {
                l["detail"]
                    .as_str()
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            mine,
            (0..500).collect::<Vec<_>>(),
            "{name}'s lines out of order or lost"
        );
    }
}

#[test]
fn concurrent_writers_across_rotations_produce_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let cfg = AuditConfig {
        path: path.clone(),
        max_bytes: 4096,
        keep: 50,
    };
    let audit = Audit::open(cfg).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let audit = audit.clone();
            s.spawn(move || {
                for i in 0..250 {
                    audit.record(&rec(&format!("w{t}"), Some(i.to_string())));
                }
            });
        }
    });
    let mut total = 0;
    for n in 1..=50 {
        let file = numbered(&path, n);
        if file.exists() {
            total += lines(&file).len();
        }
    }
    total += lines(&path).len();
    assert_eq!(total, 1000);
    assert_eq!(audit.errors(), 0);
}

#[test]
fn io_errors_are_counted_not_raised_and_recovered_from() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let path = logs.join("audit.log");
    let cfg = AuditConfig {
        path: path.clone(),
        max_bytes: 10,
        keep: 1,
    };
    let audit = Audit::open(cfg).unwrap();
    audit.record(&rec("a", None));
    // A file where the directory was: rotation and reopening fail.
    fs::remove_dir_all(&logs).unwrap();
    fs::write(&logs, b"not a directory").unwrap();
    audit.record(&rec("b", None));
    audit.record(&rec("c", None));
    assert_eq!(audit.errors(), 2);
    fs::remove_file(&logs).unwrap();
    audit.record(&rec("d", None));
    assert_eq!(lines(&path)[0]["principal"], "d");
    assert_eq!(audit.errors(), 2);
}

#[test]
fn timestamps_are_rfc3339_utc_with_millis() {
    assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        rfc3339_millis(UNIX_EPOCH + Duration::from_millis(1_796_280_000_123)),
        "2026-12-03T06:40:00.123Z"
    );
    // A clock before 1970 or past 9999 does not panic.
    assert_eq!(
        rfc3339_millis(UNIX_EPOCH - Duration::from_secs(5)),
        "1970-01-01T00:00:00.000Z"
    );
    let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
    assert!(rfc3339_millis(far).starts_with("9999-12-31T23:59:59"));
}

#[test]
fn config_defaults_and_unknown_fields() {
    let cfg: AuditConfig = toml::from_str(r#"path = "/var/log/chronos/audit.log""#).unwrap();
    assert_eq!(cfg, AuditConfig::new("/var/log/chronos/audit.log"));
    assert_eq!((cfg.max_bytes, cfg.keep), (64 * 1024 * 1024, 5));
    let err = toml::from_str::<AuditConfig>("path = \"a\"\nmax_byte = 1").unwrap_err();
    assert!(err.to_string().contains("max_byte"), "{err}");
}
