//! Issue 13: the farm for Docker. `docker-compose config` (Debian's docker-compose, which
//! needs no engine) must accept docker-compose.yml, and what it resolves must be the farm of
//! `scripts/farm`: three memcached nodes, three instances over the same node list with R=2,
//! each advertising the port its SRV record names and answering to its SRV target name, and
//! a DNS service with NAPTR, `_sip._udp` and `_sip._tcp` SRV records over the three. The
//! Dockerfile is multi-stage and its runtime runs as an unprivileged user.

use std::path::Path;
use std::process::Command;

fn compose_config(env: &[(&str, &str)]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("docker-compose")
        .arg("-f")
        .arg(root.join("docker-compose.yml"))
        .arg("config")
        .envs(env.iter().copied())
        .output()
        .expect("docker-compose (apt-get install docker-compose)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "docker-compose config refused it: {err}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of service `name` in `docker-compose config`'s output (two-space indented).
fn service<'a>(config: &'a str, name: &str) -> Vec<&'a str> {
    let head = format!("  {name}:");
    config
        .lines()
        .skip_while(|l| *l != head)
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect()
}

#[test]
fn compose_file_is_the_farm_behind_dns_srv() {
    let config = compose_config(&[
        ("SIPFARM_HOST", "192.0.2.10"),
        ("SIPFARM_DOMAIN", "voice.example.test"),
    ]);
    for n in 1..=3 {
        let node = service(&config, &format!("memcached-{n}"));
        assert!(
            node.iter().any(|l| l.contains("image: memcached:")),
            "{node:?}"
        );
    }
    let mut node_lists = Vec::new();
    for (n, port) in [(1, 5060), (2, 5062), (3, 5064)] {
        let inst = service(&config, &format!("sipfarm-{n}"));
        let get = |key: &str| {
            inst.iter()
                .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
                .unwrap_or_else(|| panic!("sipfarm-{n} has no {key}: {inst:?}"))
                .trim_matches('\'')
                .to_owned()
        };
        assert_eq!(get("SIPFARM_REPLICAS"), "2");
        assert_eq!(get("SIPFARM_DOMAIN"), "voice.example.test");
        assert_eq!(get("SIPFARM_ADVERTISE"), format!("192.0.2.10:{port}"));
        assert_eq!(get("SIPFARM_ALIAS"), format!("sip{n}.voice.example.test"));
        assert_eq!(get("SIPFARM_DNS_SERVER"), "172.28.0.53:53");
        node_lists.push(get("SIPFARM_MEMCACHED"));
        assert!(
            inst.iter()
                .any(|l| l.contains(&format!("published: {port}"))
                    || l.contains(&format!("{port}:5060/udp"))),
            "sipfarm-{n} is not published on {port}: {inst:?}"
        );
    }
    assert!(
        node_lists.iter().all(|l| *l == node_lists[0]),
        "one node list: {node_lists:?}"
    );
    assert_eq!(node_lists[0].split(',').count(), 3);

    let dns = service(&config, "dns").join("\n");
    for proto in ["udp", "tcp"] {
        for (n, port) in [(1, 5060), (2, 5062), (3, 5064)] {
            let srv = format!(
                "--srv-host=_sip._{proto}.voice.example.test,sip{n}.voice.example.test,{port},10,10"
            );
            assert!(dns.contains(&srv), "no {srv} in:\n{dns}");
        }
    }
    for n in 1..=3 {
        assert!(dns.contains(&format!(
            "--host-record=sip{n}.voice.example.test,192.0.2.10"
        )));
    }
    assert!(dns.contains("SIP+D2U,,_sip._udp.voice.example.test"));
    assert!(dns.contains("SIP+D2T,,_sip._tcp.voice.example.test"));
}

#[test]
fn dockerfile_is_multi_stage_and_runs_unprivileged() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(stages.len() >= 3, "{stages:?}");
    assert!(
        stages.last().unwrap().ends_with("AS runtime"),
        "the default build is the runtime"
    );
    assert!(text.contains("COPY --from=build /src/target/release/sipfarm"));
    let runtime = text.split("AS runtime").nth(1).unwrap();
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the runtime stage");
    assert!(user.trim() != "root" && user.trim() != "0", "{user}");
    assert!(
        !runtime.contains("cargo"),
        "no toolchain in the runtime image"
    );
}
