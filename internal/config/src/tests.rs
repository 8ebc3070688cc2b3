use super::*;

#[test]
fn sizes_parse_with_units() {
    assert_eq!("262144".parse::<ByteSize>().unwrap(), ByteSize(262_144));
    assert_eq!("256MiB".parse::<ByteSize>().unwrap(), ByteSize(256 << 20));
    assert_eq!("1 GiB".parse::<ByteSize>().unwrap(), ByteSize(1 << 30));
    assert_eq!("64kb".parse::<ByteSize>().unwrap(), ByteSize(64_000));
    assert!("12parsecs".parse::<ByteSize>().is_err());
    assert!("MiB".parse::<ByteSize>().is_err());
    assert_eq!(ByteSize(256 << 20).to_string(), "256MiB");
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closure type
fn layers_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chronos.toml");
    std::fs::write(
        &file,
        "partitions = 4\ndedup_ttl = \"1h\"\n[wal]\nfsync = \"batch\"\nsegment_bytes = \"1MiB\"\n",
    )
    .unwrap();
    figment::Jail::expect_with(|jail| {
        jail.set_env("CHRONOS_PARTITIONS", "6");
        jail.set_env("CHRONOS_WAL__SEGMENT_BYTES", "2MiB");
        jail.set_env("CHRONOS_CONFIG", "ignored-here");
        let flags = Overrides {
            partitions: Some(3),
            ..Default::default()
        };
        let c = Config::load(Some(&file), &flags).map_err(|e| e.to_string())?;
        assert_eq!(c.partitions, 3, "flag beats env and file");
        assert_eq!(c.wal.segment_bytes, ByteSize(2 << 20), "env beats file");
        assert_eq!(c.wal.fsync, FsyncMode::Batch, "file beats default");
        assert_eq!(c.dedup_ttl, Duration::from_secs(3600));
        assert_eq!(c.grpc_addr, Config::default().grpc_addr, "default stays");
        Ok(())
    });
}

#[test]
fn missing_file_and_bad_values_are_errors() {
    let flags = Overrides::default();
    let err = Config::load(Some(Path::new("/nonexistent/chronos.toml")), &flags).unwrap_err();
    assert!(matches!(err, ConfigError::MissingFile(_)), "{err}");

    let flags = Overrides {
        partitions: Some(0),
        ..Default::default()
    };
    let err = Config::load(None, &flags).unwrap_err();
    assert!(err.to_string().contains("partitions"), "{err}");
}

#[test]
fn client_pings_below_100ms_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chronos.toml");
    std::fs::write(&file, "[delivery]\nclient_ping_timeout = \"10ms\"\n").unwrap();
    let err = Config::load(Some(&file), &Overrides::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("delivery.client_ping_timeout: must be at least 100ms"),
        "{err}"
    );
}

#[test]
fn replays_must_be_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chronos.toml");
    std::fs::write(&file, "[limits]\nmax_replays = 0\n").unwrap();
    let err = Config::load(Some(&file), &Overrides::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("limits.max_replays must be 1..=4096, got 0"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chronos.toml");
    std::fs::write(&file, "partitons = 4\n").unwrap();
    let err = Config::load(Some(&file), &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("partitons"), "{err}");
}

#[test]
fn example_file_matches_defaults() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/chronos.toml");
    let parsed: Config = Figment::from(Toml::file(&example)).extract().unwrap();
    assert_eq!(
        parsed,
        Config::default(),
        "config/chronos.toml must document the defaults"
    );
}

fn cluster_file(dir: &Path, node_id: u64, extra: &str) -> PathBuf {
    let file = dir.join(format!("node{node_id}.toml"));
    let mut text = format!("node_id = {node_id}\n[cluster]\nallow_plaintext = true\n{extra}\n");
    for id in 1..=3 {
        text.push_str(&format!(
            "[[cluster.nodes]]\nid = {id}\nraft_addr = \"127.0.0.{id}:9100\"\napi_addr = \"127.0.0.{id}:9000\"\n"
        ));
    }
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn cluster_nodes_load_and_default_to_three_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(
        Some(&cluster_file(dir.path(), 2, "")),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.cluster.nodes.len(), 3);
    assert_eq!(c.cluster.effective_replication_factor(), 3);
    assert_eq!(c.cluster.node(2).unwrap().api_addr, "127.0.0.2:9000");
    assert_eq!(Config::default().cluster.effective_replication_factor(), 1);

    let c = Config::load(
        Some(&cluster_file(dir.path(), 1, "replication_factor = 2")),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.cluster.effective_replication_factor(), 2);
}

#[test]
fn bad_cluster_configs_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let flags = Overrides::default();
    let err = Config::load(Some(&cluster_file(dir.path(), 7, "")), &flags).unwrap_err();
    assert!(err.to_string().contains("node_id 7"), "{err}");
    let err = Config::load(
        Some(&cluster_file(dir.path(), 1, "replication_factor = 4")),
        &flags,
    )
    .unwrap_err();
    assert!(err.to_string().contains("replication_factor"), "{err}");

    let file = dir.path().join("dup.toml");
    std::fs::write(
        &file,
        "[[cluster.nodes]]\nid = 1\nraft_addr = \"a:1\"\napi_addr = \"b:2\"\n\
         [[cluster.nodes]]\nid = 2\nraft_addr = \"a:1\"\napi_addr = \"c:3\"\n",
    )
    .unwrap();
    let err = Config::load(Some(&file), &flags).unwrap_err();
    assert!(
        err.to_string().contains("cluster.nodes[1].raft_addr"),
        "{err}"
    );

    std::fs::write(
        &file,
        "[[cluster.nodes]]\nid = 1\nraft_addr = \"nohost\"\napi_addr = \"b:2\"\n",
    )
    .unwrap();
    let err = Config::load(Some(&file), &flags).unwrap_err();
    assert!(
        err.to_string().contains("cluster.nodes[0].raft_addr"),
        "{err}"
    );

    std::fs::write(&file, "[cluster]\nreplication_factor = 3\n").unwrap();
    let err = Config::load(Some(&file), &flags).unwrap_err();
    assert!(err.to_string().contains("cluster.nodes is empty"), "{err}");
}

#[test]
fn a_cluster_needs_tls_or_says_it_allows_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let flags = Overrides::default();
    let file = dir.path().join("plain.toml");
    let mut text = String::from("node_id = 1\n[cluster]\n");
    for id in 1..=3 {
        text += &format!(
            "[[cluster.nodes]]\nid = {id}\nraft_addr = \"127.0.0.{id}:9100\"\napi_addr = \"127.0.0.{id}:9000\"\n"
        );
    }
    std::fs::write(&file, &text).unwrap();
    let err = Config::load(Some(&file), &flags).unwrap_err();
    assert!(err.to_string().contains("cluster.tls"), "{err}");

    // Node-to-node TLS alone still leaves clients in plaintext.
    let tls = "[cluster.tls]\nca = \"ca.pem\"\ncert = \"n.pem\"\nkey = \"n.key\"\n";
    std::fs::write(&file, format!("{text}{tls}")).unwrap();
    let err = Config::load(Some(&file), &flags).unwrap_err();
    assert!(
        err.to_string().starts_with("invalid configuration: tls:"),
        "{err}"
    );

    let public = "[tls]\ncert = \"s.pem\"\nkey = \"s.key\"\n";
    std::fs::write(&file, format!("{text}{tls}{public}")).unwrap();
    let c = Config::load(Some(&file), &flags).expect("secured cluster");
    assert_eq!(c.cluster.name, "chronos");
    assert_eq!(c.tls.unwrap().client_ca, None);

    let named = text.replace(
        "[cluster]\n",
        "[cluster]\nname = \"bad name\"\nallow_plaintext = true\n",
    );
    std::fs::write(&file, named).unwrap();
    let err = Config::load(Some(&file), &flags).unwrap_err();
    assert!(err.to_string().contains("cluster.name"), "{err}");
}
