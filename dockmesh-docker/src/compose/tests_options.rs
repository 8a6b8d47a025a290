//! The engine options of a service (`options.rs`): each key to its resolved value, and every
//! problem of a file reported at once.

use super::*;

fn load_ok(compose: &str, env: Option<&str>, profiles: Option<&[String]>) -> StackSpec {
    let files = StackFiles {
        name: "shop".into(),
        compose: compose.into(),
        env: env.map(str::to_owned),
    };
    load_with_profiles(
        &files,
        Path::new("/stacks/shop"),
        &|_| Err(std::io::Error::other("none")),
        profiles,
    )
    .unwrap_or_else(|e| panic!("{compose}\n=> {}", e.report()))
}

fn load_err(compose: &str) -> ComposeError {
    let files = StackFiles {
        name: "shop".into(),
        compose: compose.into(),
        env: None,
    };
    load(&files, Path::new("/stacks/shop"), &|_| {
        Err(std::io::Error::other("none"))
    })
    .expect_err(compose)
}

/// `service` (the body of service `web`) resolves to `expected`, the JSON of its options with
/// empty ones left out.
fn check(service: &str, expected: serde_json::Value) {
    let compose = format!("services:\n  web:\n    image: x\n{service}");
    let spec = load_ok(&compose, None, Some(&["*".into()]));
    let got = serde_json::to_value(&spec.services[0].options).unwrap();
    assert_eq!(got, expected, "{service}");
}

#[test]
fn each_option_resolves_to_its_engine_value() {
    use serde_json::json;
    let cases: &[(&str, serde_json::Value)] = &[
        (
            "    container_name: shop-web\n",
            json!({"container_name": "shop-web"}),
        ),
        (
            "    hostname: web1\n    domainname: example.org\n",
            json!({"hostname": "web1", "domainname": "example.org"}),
        ),
        (
            "    ulimits:\n      nproc: 65535\n      nofile: {soft: 20000, hard: 40000}\n",
            json!({"ulimits": {"nofile": {"soft": 20000, "hard": 40000}, "nproc": {"soft": 65535, "hard": 65535}}}),
        ),
        (
            "    expose: [80, '53/udp', '3000-3001']\n",
            json!({"expose": ["80/tcp", "53/udp", "3000/tcp", "3001/tcp"]}),
        ),
        ("    read_only: 'true'\n", json!({"read_only": true})),
        ("    tmpfs: /run\n", json!({"tmpfs": {"/run": ""}})),
        (
            "    tmpfs: ['/run', '/tmp:size=64m,mode=1777']\n",
            json!({"tmpfs": {"/run": "", "/tmp": "size=64m,mode=1777"}}),
        ),
        (
            "    security_opt: ['no-new-privileges:true']\n",
            json!({"security_opt": ["no-new-privileges:true"]}),
        ),
        (
            "    cap_add: [NET_ADMIN]\n    cap_drop: [ALL]\n",
            json!({"cap_add": ["NET_ADMIN"], "cap_drop": ["ALL"]}),
        ),
        ("    network_mode: host\n", json!({"network_mode": "host"})),
        ("    network_mode: none\n", json!({"network_mode": "none"})),
        ("    shm_size: 256m\n", json!({"shm_size": 268435456})),
        (
            "    dns: 1.1.1.1\n    dns_search: [example.org]\n    dns_opt: [ndots:2]\n",
            json!({"dns": ["1.1.1.1"], "dns_search": ["example.org"], "dns_opt": ["ndots:2"]}),
        ),
        (
            "    tty: true\n    stdin_open: true\n    init: true\n",
            json!({"tty": true, "stdin_open": true, "init": true}),
        ),
        ("    init: false\n", json!({"init": false})),
        ("    pids_limit: 100\n", json!({"pids_limit": 100})),
        (
            "    devices: ['/dev/fuse', '/dev/snd:/dev/sound', '/dev/kvm:/dev/kvm:rw']\n",
            json!({"devices": [
                {"host": "/dev/fuse", "container": "/dev/fuse", "permissions": "rwm"},
                {"host": "/dev/snd", "container": "/dev/sound", "permissions": "rwm"},
                {"host": "/dev/kvm", "container": "/dev/kvm", "permissions": "rw"},
            ]}),
        ),
        (
            "    logging:\n      driver: json-file\n      options: {max-size: 10m, max-file: 3}\n",
            json!({"logging": {"driver": "json-file", "options": {"max-file": "3", "max-size": "10m"}}}),
        ),
        ("    privileged: true\n", json!({"privileged": true})),
        (
            "    sysctls: {net.core.somaxconn: 1024}\n",
            json!({"sysctls": {"net.core.somaxconn": "1024"}}),
        ),
        (
            "    sysctls: ['net.ipv4.ip_forward=1']\n",
            json!({"sysctls": {"net.ipv4.ip_forward": "1"}}),
        ),
        (
            "    stop_signal: SIGINT\n",
            json!({"stop_signal": "SIGINT"}),
        ),
        (
            "    extra_hosts: ['db:10.0.0.5', 'v6=::1', 'gw:host-gateway']\n",
            json!({"extra_hosts": ["db:10.0.0.5", "v6:::1", "gw:host-gateway"]}),
        ),
        (
            "    extra_hosts: {db: 10.0.0.5}\n",
            json!({"extra_hosts": ["db:10.0.0.5"]}),
        ),
        (
            "    group_add: [audio, 1001]\n",
            json!({"group_add": ["audio", "1001"]}),
        ),
        (
            "    cpus: 1.5\n    mem_reservation: 64m\n",
            json!({"nano_cpus": 1_500_000_000i64, "mem_reservation": 67108864}),
        ),
        (
            "    deploy:\n      resources:\n        limits: {cpus: '0.5', pids: 50}\n        reservations: {memory: 32m}\n",
            json!({"nano_cpus": 500_000_000, "pids_limit": 50, "mem_reservation": 33554432}),
        ),
        ("    profiles: [debug]\n", json!({"profiles": ["debug"]})),
        (
            "    platform: linux/amd64\n",
            json!({"platform": "linux/amd64"}),
        ),
    ];
    for (service, expected) in cases {
        check(service, expected.clone());
    }
}

#[test]
fn deploy_maps_to_the_service_fields_compose_uses() {
    let spec = load_ok(
        "services:\n  web:\n    image: x\n    deploy:\n      replicas: 1\n      resources:\n        limits: {memory: 128m}\n      restart_policy: {condition: on-failure, max_attempts: 3}\n",
        None,
        None,
    );
    let web = &spec.services[0];
    assert_eq!(web.mem_limit, Some(128 << 20));
    assert_eq!(web.restart.as_deref(), Some("on-failure:3"));
    for (condition, restart) in [
        ("none", "no"),
        ("any", "always"),
        ("on-failure", "on-failure"),
    ] {
        let spec = load_ok(
            &format!(
                "services:\n  web:\n    image: x\n    deploy:\n      restart_policy: {{condition: {condition}}}\n"
            ),
            None,
            None,
        );
        assert_eq!(
            spec.services[0].restart.as_deref(),
            Some(restart),
            "{condition}"
        );
    }
}

#[test]
fn network_mode_service_orders_and_replaces_the_networks() {
    let spec = load_ok(
        "services:\n  web:\n    image: x\n    network_mode: service:vpn\n  vpn:\n    image: y\n",
        None,
        None,
    );
    let names: Vec<&str> = spec.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["vpn", "web"]);
    let web = spec.service("web").unwrap();
    assert!(web.networks.is_empty());
    assert_eq!(
        web.options.network_mode,
        Some(NetworkMode::Service("vpn".into()))
    );
}

#[test]
fn profiles_select_services() {
    const FILE: &str = "services:\n  web:\n    image: x\n  debug:\n    image: y\n    profiles: [debug]\n  tools:\n    image: z\n    profiles: [tools, debug]\n";
    let names =
        |spec: StackSpec| -> Vec<String> { spec.services.into_iter().map(|s| s.name).collect() };
    assert_eq!(names(load_ok(FILE, None, None)), ["web"]);
    assert_eq!(
        names(load_ok(FILE, Some("COMPOSE_PROFILES=tools\n"), None)),
        ["web", "tools"]
    );
    assert_eq!(
        names(load_ok(FILE, Some("COMPOSE_PROFILES=debug\n"), None)),
        ["web", "debug", "tools"]
    );
    assert_eq!(
        names(load_ok(FILE, None, Some(&["*".into()]))),
        ["web", "debug", "tools"]
    );
    // A profile given explicitly wins over `.env`.
    assert_eq!(
        names(load_ok(FILE, Some("COMPOSE_PROFILES=debug\n"), Some(&[]))),
        ["web"]
    );
    let container = |spec: &StackSpec| spec.services[0].container_name("shop");
    assert_eq!(container(&load_ok(FILE, None, None)), "shop-web-1");
    assert_eq!(
        container(&load_ok(
            "services:\n  web:\n    image: x\n    container_name: w\n",
            None,
            None
        )),
        "w"
    );
}

/// The error of `compose` names every fragment, and counts `n` problems.
fn check_problems(compose: &str, n: usize, fragments: &[&str]) {
    let e = load_err(compose);
    let report = e.report();
    let count = match &e {
        ComposeError::Several { problems } => problems.len(),
        _ => 1,
    };
    assert_eq!(count, n, "{compose}\n=> {report}");
    for f in fragments {
        assert!(report.contains(f), "{compose}\n=> {report}\n(lacks {f:?})");
    }
}

#[test]
fn every_problem_of_a_file_is_reported() {
    let cases: &[(&str, usize, &[&str])] = &[
        (
            "services:\n  web:\n    image: x\n    ipc: host\n    pid: host\n  db:\n    image: y\n    links: [web]\n",
            3,
            &["3 problems", "`ipc`", "`pid`", "service `db` uses `links`"],
        ),
        (
            "services:\n  web:\n    image: x\n    ipc: host\n    cpus: lots\n  api:\n    build: .\n",
            3,
            &["`ipc`", "`cpus`", "service `api` uses `build`"],
        ),
        (
            "services:\n  web:\n    image: x\n    shm_size: lots\n    cpus: -1\n    devices: [dev/fuse]\n    ulimits: {nofile: {soft: 1}}\n",
            4,
            &["`shm_size`", "`cpus`", "`devices`", "needs `hard`"],
        ),
        (
            "services:\n  web:\n    image: x\n    deploy:\n      placement: {constraints: []}\n      mode: global\n      resources:\n        reservations: {cpus: '1', devices: []}\n      restart_policy: {condition: any, delay: 5s}\n",
            5,
            &[
                "`placement`",
                "swarm",
                "`global`",
                "`cpus`",
                "`devices`",
                "`delay`",
            ],
        ),
        (
            "services:\n  web:\n    image: x\n    network_mode: host\n    networks: [default]\n    ports: ['80:80']\n",
            2,
            &["`network_mode` and `networks`", "remove `ports`"],
        ),
        (
            "services:\n  web:\n    image: x\n    container_name: same\n  db:\n    image: y\n    container_name: same\n",
            1,
            &["`same`", "service `web`"],
        ),
        (
            "services:\n  web:\n    image: x\n    restart: always\n    mem_limit: 1g\n    deploy:\n      resources: {limits: {memory: 1g}}\n      restart_policy: {condition: any}\n",
            2,
            &[
                "`mem_limit` and `deploy.resources.limits.memory`",
                "`restart` and `deploy.restart_policy`",
            ],
        ),
        (
            "services:\n  web:\n    image: x\n    depends_on: [dbg]\n  dbg:\n    image: y\n    profiles: [debug]\n",
            1,
            &["needs `dbg`", "debug", "COMPOSE_PROFILES"],
        ),
        (
            "services:\n  web:\n    image: x\n    network_mode: service:nope\n",
            1,
            &["`nope`", "not a service"],
        ),
        (
            "services:\n  web:\n    image: x\n    container_name: 'bad name'\n    network_mode: bridge\n",
            2,
            &["not a container name", "`bridge` is not supported"],
        ),
    ];
    for (compose, n, fragments) in cases {
        check_problems(compose, *n, fragments);
    }
}

#[test]
fn start_interval_and_host_port_mode_are_read() {
    let spec = load_ok(
        "services:\n  web:\n    image: x\n    ports:\n      - {target: 80, published: 8080, mode: host}\n    healthcheck:\n      test: [CMD, 'true']\n      start_interval: 500ms\n",
        None,
        None,
    );
    let web = &spec.services[0];
    assert_eq!(web.ports[0].host_port, Some(8080));
    assert_eq!(
        web.healthcheck.as_ref().unwrap().start_interval_ns,
        Some(500_000_000)
    );
}

#[test]
fn depends_on_service_completed_successfully_is_read() {
    let spec = load_ok(
        "services:\n  web:\n    image: x\n    depends_on:\n      migrate: {condition: service_completed_successfully}\n  migrate:\n    image: x\n",
        None,
        None,
    );
    let web = spec.service("web").unwrap();
    assert_eq!(
        web.depends_on.get("migrate"),
        Some(&DependCondition::ServiceCompletedSuccessfully)
    );
    assert_eq!(spec.services[0].name, "migrate");
}

#[test]
fn secrets_and_configs_are_read_only_bind_mounts() {
    let spec = load_ok(
        "services:\n  web:\n    image: x\n    secrets: [db_password, {source: api_key, target: key}]\n    configs: [{source: nginx, target: /etc/nginx/nginx.conf}, site]\nsecrets:\n  db_password: {file: ./secrets/db.txt}\n  api_key: {file: keys/api}\nconfigs:\n  nginx: {file: ./nginx.conf}\n  site: {file: site.conf}\n",
        None,
        None,
    );
    let mounts: Vec<(String, String, bool)> = spec.services[0]
        .mounts
        .iter()
        .map(|m| (m.source.clone(), m.target.clone(), m.read_only))
        .collect();
    let m = |s: &str, t: &str| (s.to_owned(), t.to_owned(), true);
    assert_eq!(
        mounts,
        [
            m("/stacks/shop/secrets/db.txt", "/run/secrets/db_password"),
            m("/stacks/shop/keys/api", "/run/secrets/key"),
            m("/stacks/shop/nginx.conf", "/etc/nginx/nginx.conf"),
            m("/stacks/shop/site.conf", "/site"),
        ]
    );
    check_problems(
        "services:\n  web:\n    image: x\n    secrets: [nope, {source: s, mode: 0400}]\nsecrets:\n  s: {file: ./s}\n",
        2,
        &["`nope`, which is not declared", "`mode`"],
    );
}

#[test]
fn extends_merges_as_compose_does() {
    let common = "services:\n  base:\n    image: common:${TAG}\n    environment: [A=1, B=2]\n    ports: ['80']\n    volumes: [data:/data, ./a:/a]\n    command: [sleep, '1']\n";
    let files = StackFiles {
        name: "shop".into(),
        compose: "services:\n  web:\n    extends: {service: base, file: common.yaml}\n    environment: {B: '3'}\n    ports: ['81']\n    volumes: ['./b:/a']\n    command: [sleep, '2']\n  worker:\n    extends: web\n    labels: [x=y]\nvolumes:\n  data:\n".into(),
        env: Some("TAG=7\n".into()),
    };
    let spec = load(&files, Path::new("/stacks/shop"), &|p: &Path| {
        if p == Path::new("common.yaml") {
            Ok(common.to_owned())
        } else {
            Err(std::io::Error::other("no such file"))
        }
    })
    .unwrap_or_else(|e| panic!("{}", e.report()));
    for name in ["web", "worker"] {
        let s = spec.service(name).unwrap();
        assert_eq!(s.image, "common:7", "{name}");
        assert_eq!(
            s.environment,
            BTreeMap::from([("A".into(), "1".into()), ("B".into(), "3".into())])
        );
        let ports: Vec<u16> = s.ports.iter().map(|p| p.container_port).collect();
        assert_eq!(ports, [80, 81]);
        let mounts: Vec<(&str, &str)> = s
            .mounts
            .iter()
            .map(|m| (m.source.as_str(), m.target.as_str()))
            .collect();
        assert_eq!(mounts, [("shop_data", "/data"), ("/stacks/shop/b", "/a")]);
        assert_eq!(
            s.command.as_deref(),
            Some(&["sleep".into(), "2".into()][..])
        );
    }
    assert_eq!(
        spec.service("worker")
            .unwrap()
            .labels
            .get("x")
            .map(String::as_str),
        Some("y")
    );
    check_problems(
        "services:\n  a:\n    image: x\n    extends: nope\n  b:\n    extends: b\n  c:\n    image: x\n    extends: {service: a, file: missing.yaml}\n",
        4,
        &[
            "`nope` is not a service",
            "extends itself",
            "missing.yaml",
            "cannot be read",
            "service `b`: has no `image`",
        ],
    );
}

#[test]
fn mount_flags_are_read() {
    let spec = load_ok(
        "services:\n  web:\n    image: x\n    volumes:\n      - data:/data:ro,nocopy\n      - ./c:/c:z,cached\n      - {type: volume, source: data, target: /d2, volume: {nocopy: true}}\n      - {type: bind, source: /srv, target: /srv, bind: {selinux: Z, create_host_path: true}}\nvolumes:\n  data:\n",
        None,
        None,
    );
    let flags: Vec<(bool, bool, Option<&str>, Option<&str>)> = spec.services[0]
        .mounts
        .iter()
        .map(|m| {
            (
                m.read_only,
                m.no_copy,
                m.selinux.as_deref(),
                m.consistency.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            (true, true, None, None),
            (false, false, Some("z"), Some("cached")),
            (false, true, None, None),
            (false, false, Some("Z"), None),
        ]
    );
    check_problems(
        "services:\n  web:\n    image: x\n    volumes: ['./c:/c:nocopy']\n",
        1,
        &["`nocopy` is not supported here"],
    );
}

#[test]
fn depends_on_required_and_restart_are_read() {
    const FILE: &str = "services:\n  web:\n    image: x\n    depends_on:\n      db: {condition: service_started, restart: true}\n      cache: {condition: service_started, required: false}\n  db:\n    image: x\n  cache:\n    image: x\n    profiles: [cache]\n";
    let spec = load_ok(FILE, None, None);
    let web = spec.service("web").unwrap();
    assert_eq!(
        web.depends_on.keys().collect::<Vec<_>>(),
        ["db"],
        "an optional dependency that is not deployed is left out"
    );
    assert_eq!(web.restart_with.iter().collect::<Vec<_>>(), ["db"]);
    let spec = load_ok(FILE, None, Some(&["cache".into()]));
    let web = spec.service("web").unwrap();
    assert_eq!(web.depends_on.keys().collect::<Vec<_>>(), ["cache", "db"]);
    assert_eq!(web.optional.iter().collect::<Vec<_>>(), ["cache"]);
}

#[test]
fn secrets_from_the_environment_and_inline_configs_are_written_into_the_container() {
    let spec = load_ok(
        "services:\n  web:\n    image: x\n    secrets: [token]\n    configs: [{source: motd, target: /etc/motd}]\nsecrets:\n  token: {environment: TOKEN}\nconfigs:\n  motd: {content: hello}\n",
        Some("TOKEN=s3cret\n"),
        None,
    );
    let files: Vec<(&str, &str)> = spec.services[0]
        .files
        .iter()
        .map(|f| (f.target.as_str(), f.content.as_str()))
        .collect();
    assert_eq!(
        files,
        [("/run/secrets/token", "s3cret"), ("/etc/motd", "hello")]
    );
    let json = serde_json::to_string(&spec.services[0]).unwrap();
    assert!(
        !json.contains("s3cret"),
        "the content is hashed, never written out: {json}"
    );
    check_problems(
        "services:\n  web:\n    image: x\n    secrets: [token]\nsecrets:\n  token: {environment: TOKEN}\n",
        1,
        &["`TOKEN`, which .env does not set"],
    );
}

#[test]
fn long_syntax_tmpfs_mounts_are_tmpfs() {
    check(
        "    volumes:\n      - {type: tmpfs, target: /cache, tmpfs: {size: 64m}}\n      - {type: tmpfs, target: /ro, read_only: true}\n",
        serde_json::json!({"tmpfs": {"/cache": "size=67108864", "/ro": "ro"}}),
    );
    check_problems(
        "services:\n  web:\n    image: x\n    volumes:\n      - {type: tmpfs, target: /c, source: x}\n",
        1,
        &["`source` does not apply to a tmpfs mount"],
    );
}
