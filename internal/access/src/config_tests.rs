use super::*;
use crate::{hash_token, Access, Action, Permission};

/// The example of the issue, as an operator would write it.
const EXAMPLE: &str = r#"
[auth]
# Off by default (a zero-config single node stays open). On when true.
enabled = true
principals_file = "principals.toml"
open_metrics = true
open_ready = true

[[auth.principals]]
name = "orders-service"
tokens = ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
cert_names = ["orders.clients.example"]
quota = { publish_events_per_sec = 5000, publish_bytes_per_sec = 5000000, max_streams = 16 }

[[auth.principals.grants]]
role = "producer"          # admin | producer | consumer | viewer
topics = ["orders.*"]      # glob patterns; default ["*"]

[[auth.principals.grants]]
role = "consumer"
topics = ["orders.*"]
groups = ["orders-*"]      # consumer group patterns; default ["*"]
"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapper {
    auth: AuthConfig,
}

fn parse(text: &str) -> Result<AuthConfig, toml::de::Error> {
    toml::from_str::<Wrapper>(text).map(|w| w.auth)
}

fn problems(cfg: &AuthConfig) -> Vec<String> {
    match cfg.validate() {
        Ok(()) => Vec::new(),
        Err(AccessError::Invalid(errors)) => errors.iter().map(|e| e.to_string()).collect(),
        Err(other) => panic!("not a validation error: {other}"),
    }
}

fn one_principal(name: &str) -> PrincipalConfig {
    PrincipalConfig {
        name: name.into(),
        tokens: vec![hash_token(name)],
        cert_names: Vec::new(),
        quota: QuotaConfig::default(),
        grants: vec![GrantConfig {
            role: "admin".into(),
            topics: everything(),
            groups: everything(),
        }],
    }
}

#[test]
fn the_example_parses_validates_and_works() {
    let auth = parse(EXAMPLE).unwrap();
    assert!(auth.enabled && auth.open_metrics && auth.open_ready);
    assert_eq!(auth.principals_file, Some(PathBuf::from("principals.toml")));
    let p = &auth.principals[0];
    assert_eq!(p.quota.publish_events_per_sec, Some(5000));
    assert_eq!(p.quota.max_streams, Some(16));
    assert_eq!(p.grants[0].groups, ["*"], "groups default to everything");
    assert_eq!(problems(&auth), Vec::<String>::new());

    let access = Access::new(&auth, Vec::new()).unwrap();
    let orders = access.authenticate_token("test").unwrap();
    assert_eq!(orders.name, "orders-service");
    let may = |a: Action<'_>| access.authorize(&orders, &a).is_ok();
    assert!(may(Action::on_topic(Permission::Publish, "orders.eu")));
    assert!(may(Action::on_group(
        Permission::Consume,
        "orders.eu",
        "orders-billing"
    )));
    assert!(!may(Action::on_group(
        Permission::Consume,
        "orders.eu",
        "billing"
    )));
    assert!(!may(Action::on_topic(Permission::Publish, "billing")));
    assert!(!may(Action::cluster(Permission::Cluster)));
}

#[test]
fn defaults_leave_auth_off_and_endpoints_open() {
    let auth = parse("[auth]").unwrap();
    assert_eq!(auth, AuthConfig::default());
    assert!(!auth.enabled && auth.open_metrics && auth.open_ready);
    assert!(auth.validate().is_ok());
}

#[test]
fn round_trips_through_toml() {
    let auth = parse(EXAMPLE).unwrap();
    let text = toml::to_string(&auth).unwrap();
    assert_eq!(toml::from_str::<AuthConfig>(&text).unwrap(), auth);
}

#[test]
fn unknown_fields_are_rejected_by_name() {
    for (text, field) in [
        ("[auth]\nenable = true", "enable"),
        ("[[auth.principals]]\nname = \"a\"\ntoken = []", "token"),
        (
            "[[auth.principals]]\nname = \"a\"\nquota = { publish_per_sec = 1 }",
            "publish_per_sec",
        ),
        (
            "[[auth.principals]]\nname = \"a\"\n[[auth.principals.grants]]\nrole = \"admin\"\ntopic = [\"x\"]",
            "topic",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(&format!("unknown field `{field}`")), "{text}: {err}");
    }
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let mut bad = one_principal("a");
    bad.tokens = vec![
        hash_token("a"),
        "sha256:1234".into(),
        "chr_plaintext".into(),
    ];
    bad.cert_names = vec![String::new()];
    bad.quota.publish_events_per_sec = Some(0);
    bad.quota.max_streams = Some(0);
    bad.grants.push(GrantConfig {
        role: "root".into(),
        topics: vec!["orders.*".into(), String::new()],
        groups: Vec::new(),
    });
    let mut unnamed = one_principal("b");
    unnamed.name = "  ".into();
    let cfg = AuthConfig {
        enabled: true,
        principals: vec![bad, unnamed],
        ..AuthConfig::default()
    };
    let got = problems(&cfg);
    let expected = [
        r#"auth.principals[0].tokens[1]: expected "sha256:" and 64 hex digits"#,
        r#"auth.principals[0].tokens[2]: expected "sha256:" and 64 hex digits: list the hash of a token (`chronos token hash`), never the token itself"#,
        "auth.principals[0].cert_names[0]: must not be empty",
        "auth.principals[0].quota.publish_events_per_sec: must be at least 1 (leave it out for no limit)",
        "auth.principals[0].quota.max_streams: must be at least 1 (leave it out for no limit)",
        r#"auth.principals[0].grants[1].role: unknown role "root" (expected one of admin, producer, consumer, viewer)"#,
        r#"auth.principals[0].grants[1].topics[1]: empty pattern (use "*" for any name)"#,
        r#"auth.principals[0].grants[1].groups: lists no pattern, so the grant allows nothing (leave it out for ["*"])"#,
        "auth.principals[1].name: must not be empty",
    ];
    assert_eq!(got, expected);
}

#[test]
fn duplicates_are_named_with_both_places() {
    let mut second = one_principal("b");
    second.name = "a".into();
    second
        .tokens
        .push(hash_token("a").to_uppercase().replace("SHA256", "sha256"));
    let mut first = one_principal("a");
    first.cert_names = vec!["orders.clients.example".into()];
    second.cert_names = vec!["Orders.Clients.Example".into()];
    let cfg = AuthConfig {
        principals: vec![first, second],
        ..AuthConfig::default()
    };
    assert_eq!(
        problems(&cfg),
        [
            r#"auth.principals[1].name: "a" is also the name of auth.principals[0]"#,
            "auth.principals[1].tokens[1]: the same token hash is already listed at auth.principals[0].tokens[0]",
            r#"auth.principals[1].cert_names[0]: "Orders.Clients.Example" is already listed at auth.principals[0].cert_names[0]"#,
        ]
    );
}

#[test]
fn enabled_without_principals_is_refused_unless_a_file_may_have_them() {
    let empty = AuthConfig {
        enabled: true,
        ..AuthConfig::default()
    };
    assert_eq!(
        problems(&empty),
        [
            "auth.principals: auth is enabled but no principal is configured (here or in \
          auth.principals_file): no request could authenticate"
        ]
    );
    let with_file = AuthConfig {
        principals_file: Some("p.toml".into()),
        ..empty.clone()
    };
    assert!(with_file.validate().is_ok());
    // Once the file is read and turns out empty, it is an error.
    assert!(Access::new(&with_file, Vec::new()).is_err());
    assert!(Access::new(&with_file, vec![one_principal("a")]).is_ok());
}

#[test]
fn the_principals_file_has_the_same_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("principals.toml");
    std::fs::write(
        &path,
        format!(
            "[[principals]]\nname = \"ci\"\ntokens = [\"{}\"]\n\n\
             [[principals.grants]]\nrole = \"viewer\"\n",
            hash_token("t")
        ),
    )
    .unwrap();
    let extra = read_principals_file(&path).unwrap();
    assert_eq!(extra.len(), 1);
    assert_eq!(extra[0].grants[0].topics, ["*"]);

    std::fs::write(&path, "[[principals]]\nname = \"ci\"\nrole = \"x\"\n").unwrap();
    let err = read_principals_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("principals.toml") && err.contains("unknown field `role`"),
        "{err}"
    );

    let missing = read_principals_file(&dir.path().join("nope.toml")).unwrap_err();
    assert!(matches!(missing, AccessError::Read { .. }), "{missing}");
}
