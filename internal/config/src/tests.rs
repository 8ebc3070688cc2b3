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
