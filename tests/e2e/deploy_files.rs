//! The deployment files cannot run here (no container engine), so this test reads every
//! one of them and checks what a typo would break: images, ports, scrape targets, metric
//! names, scaling caps, and that every `ORDERFLOW_*` variable is a flag of the
//! subcommand the container runs (as `orderflow <subcommand> --help` lists them).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/deploy")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// `ORDERFLOW_*` variables `orderflow <subcommand…> --help` documents.
fn known_env(subcommand: &[String]) -> BTreeSet<String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(subcommand)
        .arg("--help")
        .output()
        .expect("run orderflow --help");
    assert!(output.status.success(), "`orderflow {subcommand:?}` is not a command");
    let help = String::from_utf8_lossy(&output.stdout);
    help.split("[env: ").skip(1).filter_map(|rest| rest.split('=').next()).map(str::to_string).collect()
}

/// The subcommand words of a container's arguments (`consume payment` → `consume`;
/// `topics create`, `schemas register` are two words).
fn subcommand(args: &[String]) -> Vec<String> {
    let words = if matches!(args.first().map(String::as_str), Some("topics" | "schemas")) { 2 } else { 1 };
    args.iter().take(words).cloned().collect()
}

fn check_env(what: &str, args: &[String], names: impl IntoIterator<Item = String>) {
    let known = known_env(&subcommand(args));
    for name in names {
        if name == "RUST_LOG" || name.starts_with("ORDERFLOW_KAFKA_") {
            continue; // log filter; librdkafka passthrough
        }
        assert!(known.contains(&name), "{what}: {name} is not a flag of `orderflow {}`", subcommand(args).join(" "));
    }
}

fn port_of(address: &str) -> u16 {
    address.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{address} has no port"))
}

/// Every port a service listens on (its API and its metrics listener).
fn listen_ports(env: &BTreeMap<String, String>) -> Vec<u16> {
    env.iter().filter(|(k, _)| k.ends_with("_LISTEN")).map(|(_, v)| port_of(v)).collect()
}

/// Where Prometheus scrapes a service: its metrics listener (the API ports want a token).
fn scrape_port(env: &BTreeMap<String, String>) -> Option<u16> {
    env.get("ORDERFLOW_METRICS_LISTEN").map(|v| port_of(v))
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_sequence().map(|items| items.iter().map(s).collect()).unwrap_or_default()
}

/// Metric names the code emits.
fn emitted_metrics() -> BTreeSet<String> {
    let mut sources = Vec::new();
    for dir in ["src", "consumers/src", "producers/src", "infra/src"] {
        files(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir), &mut sources);
    }
    let mut names = BTreeSet::new();
    for path in sources.iter().filter(|p| p.extension().is_some_and(|e| e == "rs")) {
        let text = std::fs::read_to_string(path).expect("read source");
        for piece in text.split('"').skip(1).step_by(2) {
            if piece.starts_with("orderflow_") && piece.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                names.insert(piece.to_string());
            }
        }
    }
    names
}

#[test]
fn every_deployment_file_parses_and_matches_the_binarys_images_ports_env_and_metrics() {
    let mut all = Vec::new();
    files(&deploy_dir(), &mut all);
    for path in &all {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => assert!(!yaml_documents(path).is_empty(), "{} is empty", path.display()),
            Some("json") => {
                let _: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("read"))
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            _ => {}
        }
    }

    // compose: Kafka in KRaft mode, PostgreSQL 15, one orderflow image for every service.
    let compose = &yaml_documents(&deploy_dir().join("compose.yaml"))[0];
    let services = compose["services"].as_mapping().expect("services");
    let kafka = &compose["services"]["kafka"];
    assert!(s(&kafka["image"]).starts_with("apache/kafka:"), "Apache Kafka");
    assert!(
        s(&kafka["environment"]["KAFKA_PROCESS_ROLES"]).contains("controller"),
        "KRaft: the broker is its own controller"
    );
    assert!(services.keys().all(|k| !s(k).contains("zookeeper")));
    assert_eq!(s(&compose["services"]["postgres"]["image"]), "postgres:15");
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("--bin orderflow") && dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/orderflow\"]"));
    let image = s(&compose["services"]["topics"]["image"]);
    assert_eq!(s(&compose["services"]["topics"]["build"]["dockerfile"]), "infra/deploy/Dockerfile");
    let mut compose_ports: BTreeMap<String, u16> = BTreeMap::new();
    let mut consumers_in_compose = BTreeSet::new();
    for (name, service) in services {
        let name = s(name);
        if s(&service["image"]).starts_with("orderflow") {
            assert_eq!(s(&service["image"]), image, "{name} runs the orderflow image");
            let args = string_list(&service["command"]);
            let env: BTreeMap<String, String> =
                service["environment"].as_mapping().expect("environment").iter().map(|(k, v)| (s(k), s(v))).collect();
            check_env(&format!("compose {name}"), &args, env.keys().cloned());
            if args[0] == "consume" {
                consumers_in_compose.insert(args[1].clone());
            }
            let published: Vec<String> = string_list(&service["ports"])
                .iter()
                .map(|p| p.rsplit(':').next().unwrap_or_default().to_string())
                .chain(string_list(&service["expose"]))
                .collect();
            for port in listen_ports(&env) {
                assert!(published.contains(&port.to_string()), "{name} listens on {port} but exposes {published:?}");
            }
            for host_port in string_list(&service["ports"]) {
                assert!(host_port.starts_with("127.0.0.1:"), "{name} publishes {host_port} beyond the host's loopback");
            }
            if let Some(port) = scrape_port(&env) {
                compose_ports.insert(name, port);
            }
        }
    }
    assert_eq!(
        consumers_in_compose,
        ["fulfilment", "history", "inventory", "order-process", "payment", "stock"].map(String::from).into()
    );

    // Prometheus scrapes each service on the port it listens on.
    let prometheus = &yaml_documents(&deploy_dir().join("prometheus.yml"))[0];
    let mut scraped = BTreeSet::new();
    for job in prometheus["scrape_configs"].as_sequence().expect("jobs") {
        for target in job["static_configs"].as_sequence().into_iter().flatten().flat_map(|c| string_list(&c["targets"]))
        {
            let (host, port) = target.split_once(':').expect("host:port");
            assert_eq!(compose_ports.get(host).map(u16::to_string).as_deref(), Some(port), "scrape target {target}");
            scraped.insert(host.to_string());
        }
        for sd in job["dns_sd_configs"].as_sequence().into_iter().flatten() {
            for host in string_list(&sd["names"]) {
                assert_eq!(compose_ports.get(&host).map(|p| *p as u64), sd["port"].as_u64(), "dns target {host}");
                scraped.insert(host);
            }
        }
    }
    let with_metrics: BTreeSet<String> = compose_ports.keys().cloned().collect();
    assert_eq!(scraped, with_metrics, "every service with a listener is scraped");

    // Grafana asks only for metrics the code emits.
    let emitted = emitted_metrics();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_dir().join("grafana/dashboards/orderflow.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("orderflow_"))
            {
                let base =
                    ["_bucket", "_sum", "_count"].iter().fold(word, |w, suffix| w.strip_suffix(suffix).unwrap_or(w));
                assert!(emitted.contains(base), "dashboard asks for {word}, which nothing emits");
                asked += 1;
            }
        }
    }
    assert!(asked >= 8);

    // Kubernetes: the same image, flags, ports; one scaled Deployment per consumer group.
    let mut k8s = Vec::new();
    for path in all.iter().filter(|p| p.parent().is_some_and(|d| d.ends_with("k8s"))) {
        k8s.extend(yaml_documents(path));
    }
    let config_keys: Vec<String> = k8s
        .iter()
        .filter(|d| s(&d["kind"]) == "ConfigMap")
        .flat_map(|d| d["data"].as_mapping().cloned().unwrap_or_default().keys().map(s).collect::<Vec<_>>())
        .collect();
    let mut partitions = None;
    let mut deployments: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for doc in &k8s {
        let kind = s(&doc["kind"]);
        if kind != "Deployment" && kind != "Job" {
            continue;
        }
        let name = s(&doc["metadata"]["name"]);
        let pod = &doc["spec"]["template"];
        let container = &pod["spec"]["containers"][0];
        assert_eq!(s(&container["image"]), image, "{name} runs the orderflow image");
        let args = string_list(&container["args"]);
        let env: BTreeMap<String, String> =
            // A value, or one taken from the pod (`valueFrom`, e.g. its name).
            container["env"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|e| (s(&e["name"]), e.get("value").map(s).unwrap_or_default()))
                .collect();
        let from_config = container["envFrom"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|e| e["configMapRef"]["name"].as_str() == Some("orderflow-config"));
        let mut names: Vec<String> = env.keys().cloned().collect();
        if from_config {
            names.extend(config_keys.iter().cloned());
        }
        check_env(&format!("k8s {name}"), &args, names);
        if let Some(p) = env.get("ORDERFLOW_PARTITIONS") {
            partitions = Some(p.parse::<u64>().expect("partitions"));
        }
        let container_ports: Vec<u64> = container["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|p| p["containerPort"].as_u64())
            .collect();
        for port in listen_ports(&env) {
            assert!(container_ports.contains(&(port as u64)), "{name} listens on {port}, no containerPort says so");
        }
        if let Some(port) = scrape_port(&env) {
            assert_eq!(
                s(&pod["metadata"]["annotations"]["prometheus.io/port"]),
                port.to_string(),
                "{name} scrape port"
            );
        }
        // Credentials come from Secrets, never from the manifest's own env values.
        for (key, value) in &env {
            assert!(
                !(key.contains("PASSWORD") || key.ends_with("DATABASE_URL") || value.contains("@")),
                "{name}: {key} carries a credential inline; use a Secret"
            );
        }
        deployments.insert(name, args);
    }
    for service in k8s.iter().filter(|d| s(&d["kind"]) == "Service") {
        let target = s(&service["spec"]["selector"]["app"]);
        assert!(deployments.contains_key(&target), "Service selects {target}, which does not exist");
        for port in service["spec"]["ports"].as_sequence().into_iter().flatten() {
            assert_ne!(port["targetPort"].as_u64(), Some(9464), "Service {target} publishes the metrics listener");
        }
    }
    // Every Secret a pod reads exists in the manifests.
    let secrets: BTreeSet<String> =
        k8s.iter().filter(|d| s(&d["kind"]) == "Secret").map(|d| s(&d["metadata"]["name"])).collect();
    for doc in k8s.iter().filter(|d| ["Deployment", "Job"].contains(&s(&d["kind"]).as_str())) {
        let pod = &doc["spec"]["template"]["spec"];
        let refs = pod["containers"][0]["envFrom"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|e| e["secretRef"]["name"].as_str().map(String::from))
            .chain(
                pod["volumes"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v["secret"]["secretName"].as_str().map(String::from)),
            );
        for name in refs {
            assert!(
                secrets.contains(&name),
                "{} reads Secret {name}, which no manifest defines",
                s(&doc["metadata"]["name"])
            );
        }
    }
    let partitions = partitions.expect("the topics Job sets ORDERFLOW_PARTITIONS");
    let mut scaled = BTreeSet::new();
    for so in k8s.iter().filter(|d| s(&d["kind"]) == "ScaledObject") {
        let target = s(&so["spec"]["scaleTargetRef"]["name"]);
        let args =
            deployments.get(&target).unwrap_or_else(|| panic!("ScaledObject scales {target}, which does not exist"));
        assert_eq!(args[0], "consume", "{target} is a consumer group");
        let max = so["spec"]["maxReplicaCount"].as_u64().expect("maxReplicaCount");
        assert!(max <= partitions, "{target} may scale to {max} members but the topic has {partitions} partitions");
        let query = s(&so["spec"]["triggers"][0]["metadata"]["query"]);
        assert!(
            query.contains("orderflow_consumer_lag") && query.contains(&format!("projection=\"{}\"", args[1])),
            "{query}"
        );
        scaled.insert(args[1].clone());
    }
    assert_eq!(scaled, consumers_in_compose, "every consumer group is scaled on its lag");
}

/// The two-region shape: per region a Kafka cluster, the checkout, the query API and every
/// group with its region's settings; MirrorMaker 2 both ways; and the Kubernetes region
/// ConfigMap holds only what the services that read it take as flags.
#[test]
fn the_two_region_files_give_each_region_every_service_and_mirror_both_ways() {
    let compose = &yaml_documents(&deploy_dir().join("compose.regions.yaml"))[0];
    let services = compose["services"].as_mapping().expect("services");
    for region in ["eu", "us"] {
        let other = if region == "eu" { "us" } else { "eu" };
        assert!(s(&compose["services"][format!("kafka-{region}").as_str()]["image"]).starts_with("apache/kafka:"));
        let mut groups = BTreeSet::new();
        for (name, service) in services.iter().filter(|(n, _)| s(n).ends_with(&format!("-{region}"))) {
            let name = s(name);
            if !s(&service["image"]).starts_with("orderflow") {
                continue;
            }
            let args = string_list(&service["command"]);
            let env: BTreeMap<String, String> =
                service["environment"].as_mapping().expect("environment").iter().map(|(k, v)| (s(k), s(v))).collect();
            check_env(&format!("compose {name}"), &args, env.keys().cloned());
            if let Some(brokers) = env.get("ORDERFLOW_BROKERS") {
                assert_eq!(brokers, &format!("kafka-{region}:9092"), "{name} uses its region's cluster");
            }
            if let Some(database) = env.get("ORDERFLOW_DATABASE_URL") {
                assert!(database.ends_with(&format!("/orderflow_{region}")), "{name} uses its region's database");
            }
            if matches!(args[0].as_str(), "checkout" | "serve-api" | "consume") {
                assert_eq!(env.get("ORDERFLOW_REGION").map(String::as_str), Some(region), "{name}");
            }
            match args[0].as_str() {
                "consume" => {
                    groups.insert(args[1].clone());
                    assert_eq!(env.get("ORDERFLOW_MIRROR_REGIONS").map(String::as_str), Some(other), "{name}");
                }
                "checkout" => assert_eq!(
                    env.get("ORDERFLOW_REGION_CHECKOUTS").map(String::as_str),
                    Some(format!("{other}=http://checkout-{other}:8080").as_str()),
                    "{name} forwards to the other region's checkout"
                ),
                _ => {}
            }
        }
        assert_eq!(
            groups,
            ["fulfilment", "history", "inventory", "order-process", "payment", "stock"].map(String::from).into()
        );
    }
    let mirror = &compose["services"]["mirror-maker"];
    assert!(s(&mirror["image"]).starts_with("apache/kafka:"));
    let properties = std::fs::read_to_string(deploy_dir().join("regions/mm2.properties")).expect("mm2.properties");
    for line in
        ["clusters = eu, us", "eu->us.enabled = true", "us->eu.enabled = true", "sync.topic.configs.enabled = false"]
    {
        assert!(properties.lines().any(|l| l.trim() == line), "mm2.properties: {line}");
    }

    // Kubernetes: the region ConfigMap's keys are flags of the checkout; the consumers and
    // the query API take the region and the mirrors (and ignore the checkouts' URLs).
    let region_config = &yaml_documents(&deploy_dir().join("k8s/regions/region-config.yaml"))[0];
    let keys: Vec<String> = region_config["data"].as_mapping().expect("data").keys().map(s).collect();
    check_env("k8s region config", &["checkout".to_string()], keys.clone());
    let checkout_only = ["ORDERFLOW_REGION_CHECKOUTS", "ORDERFLOW_COUNTRY_REGIONS"];
    let read_by_all: Vec<String> = keys.into_iter().filter(|k| !checkout_only.contains(&k.as_str())).collect();
    for command in ["consume", "serve-api"] {
        check_env("k8s region config", &[command.to_string()], read_by_all.clone());
    }
    for file in ["checkout.yaml", "serve-api.yaml", "consumers.yaml"] {
        for doc in yaml_documents(&deploy_dir().join("k8s").join(file)) {
            if s(&doc["kind"]) != "Deployment" {
                continue;
            }
            let refs = &doc["spec"]["template"]["spec"]["containers"][0]["envFrom"];
            let reads_region = refs.as_sequence().into_iter().flatten().any(|e| {
                e["configMapRef"]["name"].as_str() == Some("orderflow-region")
                    && e["configMapRef"]["optional"].as_bool() == Some(true)
            });
            assert!(reads_region, "{file}: {} reads the optional region ConfigMap", s(&doc["metadata"]["name"]));
        }
    }
}
