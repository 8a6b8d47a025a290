use super::*;
use std::collections::HashMap;

fn files(compose: &str, env: Option<&str>) -> StackFiles {
    StackFiles {
        name: "shop".into(),
        compose: compose.into(),
        env: env.map(str::to_owned),
    }
}

fn load_with(
    compose: &str,
    env: Option<&str>,
    extra: &[(&str, &str)],
) -> Result<StackSpec, ComposeError> {
    let fs: HashMap<PathBuf, String> = extra
        .iter()
        .map(|(p, c)| (PathBuf::from(p), (*c).to_owned()))
        .collect();
    load(
        &files(compose, env),
        Path::new("/stacks/shop"),
        &|p: &Path| {
            fs.get(p)
                .cloned()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
        },
    )
}

fn ok(compose: &str) -> StackSpec {
    load_with(compose, None, &[]).unwrap_or_else(|e| panic!("{compose}\n=> {e}"))
}

/// The error for a compose file must mention every fragment.
fn check_err(compose: &str, env: Option<&str>, fragments: &[&str]) {
    let err = load_with(compose, env, &[]).expect_err(compose).report();
    for f in fragments {
        assert!(err.contains(f), "{compose}\n=> {err}\n(lacks {f:?})");
    }
}

#[test]
fn a_full_stack_resolves() {
    let spec = load_with(
        r#"
x-common: &common
  restart: unless-stopped
  labels:
    tier: shop
services:
  app:
    <<: *common
    image: "dockmesh-test/busybox:${TAG:-1}"
    command: sh -c 'echo "$$HOME"; sleep 5'
    entrypoint: ["/bin/sh", "-c"]
    environment:
      DB_HOST: db
      EMPTY:
      FROM_ENV:
      NUMBER: 5
    env_file: app.env
    ports:
      - "${APP_PORT}:80"
      - "127.0.0.1:9000-9001:9000-9001/udp"
      - target: 443
        published: "8443"
        host_ip: 0.0.0.0
    volumes:
      - data:/data
      - ./conf:/etc/conf:ro
      - type: volume
        source: cache
        target: /cache
        read_only: true
      - type: bind
        source: /srv/logs
        target: /logs
    networks:
      front:
        aliases: [shop-app]
      default:
    healthcheck:
      test: wget -q -O- http://127.0.0.1/
      interval: 2s
      timeout: 1s
      retries: "${RETRIES:-4}"
      start_period: 1m30s
    depends_on:
      db:
        condition: service_healthy
      cache:
    user: 1000
    working_dir: /app
    mem_limit: 256m
    stop_grace_period: 1500ms
  db:
    image: db:1
    healthcheck:
      test: ["CMD", "true"]
  cache:
    image: cache:1
    healthcheck:
      disable: true
volumes:
  data:
  cache:
    name: shared-cache
  unused:
networks:
  front:
    labels:
      role: edge
"#,
        Some("APP_PORT=8080\nFROM_ENV=yes\n"),
        &[(
            "app.env",
            "FROM_FILE=1\nDB_HOST=overridden-by-environment\n",
        )],
    )
    .unwrap();
    assert_eq!(spec.project, "shop");
    let order: Vec<&str> = spec.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["db", "cache", "app"], "dependencies come first");
    let app = spec.service("app").unwrap();
    assert_eq!(app.image, "dockmesh-test/busybox:1");
    assert_eq!(
        app.command.as_deref().unwrap(),
        ["sh", "-c", "echo \"$HOME\"; sleep 5"]
    );
    assert_eq!(app.entrypoint.as_deref().unwrap(), ["/bin/sh", "-c"]);
    let env: Vec<(&str, &str)> = app
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("DB_HOST", "db"),
            ("FROM_ENV", "yes"),
            ("FROM_FILE", "1"),
            ("NUMBER", "5")
        ],
        "env_file first, environment overrides, a bare name takes .env's value or is left out"
    );
    assert_eq!(
        app.ports,
        [
            PortSpec {
                host_ip: None,
                host_port: Some(8080),
                container_port: 80,
                protocol: "tcp".into()
            },
            PortSpec {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(9000),
                container_port: 9000,
                protocol: "udp".into()
            },
            PortSpec {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(9001),
                container_port: 9001,
                protocol: "udp".into()
            },
            PortSpec {
                host_ip: Some("0.0.0.0".into()),
                host_port: Some(8443),
                container_port: 443,
                protocol: "tcp".into()
            },
        ]
    );
    assert_eq!(
        app.mounts,
        [
            MountSpec {
                kind: MountKind::Volume,
                source: "shop_data".into(),
                target: "/data".into(),
                read_only: false,
                no_copy: false,
                selinux: None,
                consistency: None,
            },
            MountSpec {
                kind: MountKind::Bind,
                source: "/stacks/shop/conf".into(),
                target: "/etc/conf".into(),
                read_only: true,
                no_copy: false,
                selinux: None,
                consistency: None,
            },
            MountSpec {
                kind: MountKind::Volume,
                source: "shared-cache".into(),
                target: "/cache".into(),
                read_only: true,
                no_copy: false,
                selinux: None,
                consistency: None,
            },
            MountSpec {
                kind: MountKind::Bind,
                source: "/srv/logs".into(),
                target: "/logs".into(),
                read_only: false,
                no_copy: false,
                selinux: None,
                consistency: None,
            },
        ]
    );
    assert_eq!(app.networks["front"].engine_name, "shop_front");
    assert_eq!(app.networks["front"].aliases, ["shop-app"]);
    assert_eq!(app.networks["default"].engine_name, "shop_default");
    let hc = app.healthcheck.as_ref().unwrap();
    assert_eq!(
        hc.test.as_deref().unwrap(),
        ["CMD-SHELL", "wget -q -O- http://127.0.0.1/"]
    );
    assert_eq!(hc.interval_ns, Some(2_000_000_000));
    assert_eq!(hc.timeout_ns, Some(1_000_000_000));
    assert_eq!(hc.retries, Some(4));
    assert_eq!(hc.start_period_ns, Some(90_000_000_000));
    assert_eq!(app.depends_on["db"], DependCondition::ServiceHealthy);
    assert_eq!(app.depends_on["cache"], DependCondition::ServiceStarted);
    assert_eq!(
        app.restart.as_deref(),
        Some("unless-stopped"),
        "merge keys are applied"
    );
    assert_eq!(app.labels["tier"], "shop");
    assert_eq!(app.user.as_deref(), Some("1000"));
    assert_eq!(app.working_dir.as_deref(), Some("/app"));
    assert_eq!(app.mem_limit, Some(256 << 20));
    assert_eq!(
        app.stop_grace_period,
        Some(2),
        "rounded up to whole seconds"
    );
    let cache = spec.service("cache").unwrap();
    assert_eq!(
        cache.healthcheck.as_ref().unwrap().test.as_deref().unwrap(),
        ["NONE"]
    );
    let volumes: Vec<&str> = spec
        .volumes
        .values()
        .map(|v| v.engine_name.as_str())
        .collect();
    assert_eq!(
        volumes,
        ["shared-cache", "shop_data"],
        "only volumes in use, by engine name"
    );
    let networks: Vec<&str> = spec
        .networks
        .values()
        .map(|n| n.engine_name.as_str())
        .collect();
    assert_eq!(networks, ["shop_default", "shop_front"]);
    assert_eq!(spec.networks["front"].labels["role"], "edge");
}

#[test]
fn external_and_named_resources() {
    let spec = ok(r#"
services:
  a:
    image: x
    volumes: [old:/a, legacy:/b, own:/c]
    networks: [ext, named]
volumes:
  old:
    external: true
  legacy:
    external:
      name: legacy-data
  own:
    name: my-own
networks:
  ext:
    external: true
    name: shared-net
  named:
    name: plain
"#);
    let v = |k: &str| {
        (
            spec.volumes[k].engine_name.as_str(),
            spec.volumes[k].external,
        )
    };
    assert_eq!(v("old"), ("old", true));
    assert_eq!(v("legacy"), ("legacy-data", true));
    assert_eq!(v("own"), ("my-own", false));
    assert_eq!(spec.networks["ext"].engine_name, "shared-net");
    assert!(spec.networks["ext"].external);
    assert_eq!(spec.networks["named"].engine_name, "plain");
    assert!(
        !spec.networks.contains_key("default"),
        "unused networks are left out"
    );
}

#[test]
fn unsupported_keys_are_named_with_their_service() {
    let cases: &[(&str, &[&str])] = &[
        (
            "services:\n  web:\n    image: x\n    ipc: host\n",
            &["service `web`", "`ipc`", "does not support"],
        ),
        (
            "services:\n  web:\n    image: x\n    pid: host\n",
            &["service `web`", "`pid`"],
        ),
        (
            "services:\n  web:\n    image: x\n    deploy: {replicas: 0}\n",
            &["service `web`", "`deploy.replicas`", "at least 1"],
        ),
        (
            "services:\n  web:\n    image: x\n    deploy: {replicas: 101}\n",
            &["service `web`", "`deploy.replicas`", "more than the 100"],
        ),
        (
            "services:\n  web:\n    image: x\n    container_name: c\n    deploy: {replicas: 2}\n",
            &["service `web`", "2 replicas", "`container_name: c`"],
        ),
        (
            "services:\n  web:\n    image: x\n    ports: [\"8080:80\"]\n    deploy: {replicas: 3}\n",
            &["service `web`", "3 replicas", "host port 8080", "`\"80\"`"],
        ),
        (
            "services:\n  web:\n    image: x\n    deploy:\n      update_config: {order: sideways}\n",
            &["`deploy.update_config.order`", "stop-first or start-first"],
        ),
        (
            "services:\n  web:\n    image: x\n    deploy:\n      update_config: {failure_action: retry, max_failure_ratio: 2, delay: soon}\n",
            &[
                "`deploy.update_config.failure_action`",
                "`deploy.update_config.max_failure_ratio`",
                "`deploy.update_config.delay`",
            ],
        ),
        (
            "services:\n  web:\n    image: x\n    deploy:\n      update_config: {rollback: true}\n",
            &["`deploy.update_config`", "`rollback`"],
        ),
        (
            "services:\n  web:\n    image: x\n    network_mode: container:other\n",
            &["service `web`", "`network_mode`", "service:NAME"],
        ),
        (
            "services:\n  web:\n    image: x\n    healthcheck:\n      test: true\n      start_timeout: 1s\n",
            &["service `web` healthcheck", "`start_timeout`"],
        ),
        (
            "services:\n  web:\n    image: x\n    ports:\n      - target: 80\n        mode: swarm\n",
            &["service `web` ports entry 1", "`mode`"],
        ),
        (
            "services:\n  web:\n    image: x\n    volumes:\n      - type: volume\n        source: d\n        target: /d\n        volume: {subpath: x}\nvolumes:\n  d:\n",
            &["service `web` volumes entry 1", "`subpath`"],
        ),
        (
            "services:\n  web:\n    image: x\n    networks:\n      n:\n        ipv4_address: 10.0.0.2\nnetworks:\n  n:\n",
            &["service `web` network `n`", "`ipv4_address`"],
        ),
        (
            "services:\n  web:\n    image: x\n    depends_on:\n      db:\n        condition: service_started\n        restart: soon\n  db:\n    image: y\n",
            &[
                "service `web` depends_on `db`",
                "`restart` must be true or false",
            ],
        ),
        (
            "services:\n  web:\n    image: x\nsecrets:\n  s:\n    external: true\n",
            &["secret `s`", "`external`", "file, environment"],
        ),
        (
            "services:\n  web:\n    image: x\nconfigs: {c: {external: true}}\n",
            &["config `c`", "`external`"],
        ),
        (
            "include: [other.yaml]\nservices:\n  web:\n    image: x\n",
            &["top level", "`include`"],
        ),
        (
            "services:\n  web:\n    image: x\nvolumes:\n  d:\n    driver_opts: {}\n    labels: {}\n    foo: 1\n",
            &["volume `d`", "`foo`"],
        ),
        (
            "services:\n  web:\n    image: x\nnetworks:\n  n:\n    ipam: {}\n",
            &["network `n`", "`ipam`"],
        ),
        (
            "services:\n  web:\n    image: x\n    build: .\n",
            &["service `web`", "`build`", "never built"],
        ),
    ];
    for (compose, fragments) in cases {
        check_err(compose, None, fragments);
    }
}

/// What `docker compose config` (Compose v2) prints for a typical stack: defaults written out
/// (`required: true`, `mode: ingress`, `protocol: tcp`, `published` as a string,
/// `bind.create_host_path`, `volume: {}`, `networks.default` with its `name`, `default: null`
/// attachments), and `x-` keys.
const COMPOSE_CONFIG_OUTPUT: &str = r#"name: shop
services:
  db:
    environment:
      POSTGRES_PASSWORD: secret
    healthcheck:
      test:
        - CMD-SHELL
        - pg_isready -U postgres
      timeout: 5s
      interval: 10s
      retries: 5
    image: postgres:16
    networks:
      default: null
    restart: unless-stopped
    volumes:
      - type: volume
        source: dbdata
        target: /var/lib/postgresql/data
        volume: {}
    x-owner: team-db
  web:
    command:
      - nginx
      - -g
      - daemon off;
    depends_on:
      db:
        condition: service_healthy
        required: true
        restart: false
    image: nginx:1.27
    networks:
      default: null
    ports:
      - mode: ingress
        host_ip: 127.0.0.1
        target: 80
        published: "8080"
        protocol: tcp
    volumes:
      - type: bind
        source: /srv/shop/static
        target: /usr/share/nginx/html
        read_only: true
        bind:
          create_host_path: true
networks:
  default:
    name: shop_default
volumes:
  dbdata:
    name: shop_dbdata
x-common:
  tier: backend
"#;

#[test]
fn docker_compose_config_output_is_accepted() {
    let spec = ok(COMPOSE_CONFIG_OUTPUT);
    let printed_defaults = spec.clone();
    // It means the same as the file written without the printed defaults.
    let plain = COMPOSE_CONFIG_OUTPUT
        .replace("        volume: {}\n", "")
        .replace("        required: true\n        restart: false\n", "")
        .replace("      - mode: ingress\n        host_ip", "      - host_ip")
        .replace("        bind:\n          create_host_path: true\n", "");
    assert_ne!(plain, COMPOSE_CONFIG_OUTPUT);
    assert_eq!(ok(&plain), printed_defaults);
    let web = spec.services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(web.ports.len(), 1);
    assert_eq!(web.ports[0].host_port, Some(8080));
}

#[test]
fn printed_defaults_with_other_values_are_named() {
    let base = COMPOSE_CONFIG_OUTPUT;
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "required: true",
            "required: maybe",
            &["depends_on `db`", "`required` must be true or false"],
        ),
        (
            "mode: ingress",
            "mode: swarm",
            &["ports entry 1", "`mode` is `swarm`"],
        ),
        (
            "create_host_path: true",
            "create_host_path: false",
            &["volumes entry 1 `bind`", "`create_host_path` is `false`"],
        ),
        (
            "create_host_path: true",
            "propagation: rshared",
            &["volumes entry 1 `bind`", "`propagation`"],
        ),
        (
            "volume: {}",
            "volume: {subpath: x}",
            &["volumes entry 1 `volume`", "`subpath`"],
        ),
    ];
    for (from, to, fragments) in cases {
        let compose = base.replacen(from, to, 1);
        assert_ne!(compose, base, "{from}");
        check_err(&compose, None, fragments);
    }
}

#[test]
fn extension_keys_are_allowed() {
    ok("x-top: 1\nservices:\n  web:\n    image: x\n    x-note: hi\nvolumes:\n  d:\n    x-v: 1\n");
}

#[test]
fn invalid_files_give_clear_errors() {
    let cases: &[(&str, Option<&str>, &[&str])] = &[
        ("services: [", None, &["not valid YAML"]),
        ("- a\n- b\n", None, &["must be a mapping"]),
        ("volumes: {}\n", None, &["no `services`"]),
        ("services: {}\n", None, &["`services` is empty"]),
        (
            "services:\n  web:\n    command: x\n",
            None,
            &["service `web`", "no `image`"],
        ),
        (
            "services:\n  web:\n    image: ${IMG:?set IMG in .env}\n",
            None,
            &["services.web.image", "IMG is not set: set IMG in .env"],
        ),
        (
            "services:\n  web:\n    image: a $ b\n",
            None,
            &["services.web.image", "`$` must be followed"],
        ),
        (
            "services:\n  web:\n    image: x\n    volumes: [/data]\n",
            None,
            &["anonymous", "give it a name"],
        ),
        (
            "services:\n  web:\n    image: x\n    volumes: [missing:/d]\n",
            None,
            &["volume `missing`", "not declared"],
        ),
        (
            "services:\n  web:\n    image: x\n    volumes: [./d:/d:shared]\n",
            None,
            &["mount option `shared`"],
        ),
        (
            "services:\n  web:\n    image: x\n    volumes: [~/d:/d]\n",
            None,
            &["starts with `~`"],
        ),
        (
            "services:\n  web:\n    image: x\n    volumes: [d:relative]\nvolumes:\n  d:\n",
            None,
            &["must be an absolute path"],
        ),
        (
            "services:\n  web:\n    image: x\n    volumes:\n      - type: npipe\n        source: x\n        target: /t\n",
            None,
            &["mount type `npipe`"],
        ),
        (
            "services:\n  web:\n    image: x\n    networks: [nope]\n",
            None,
            &["network `nope`", "not declared"],
        ),
        (
            "services:\n  web:\n    image: x\n    depends_on: [db]\n",
            None,
            &["depends on `db`", "not a service"],
        ),
        (
            "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n",
            None,
            &["cycle"],
        ),
        (
            "services:\n  a:\n    image: x\n    depends_on: [a]\n",
            None,
            &["depends on itself"],
        ),
        (
            "services:\n  a:\n    image: x\n    depends_on:\n      b:\n        condition: service_done\n  b:\n    image: y\n",
            None,
            &["service_done", "does not support"],
        ),
        (
            "services:\n  web:\n    image: x\n    ports: [\"80:80:80:80\"]\n",
            None,
            &["invalid port"],
        ),
        (
            "services:\n  web:\n    image: x\n    ports: [\"8000-8001:80\"]\n",
            None,
            &["ranges differ"],
        ),
        (
            "services:\n  web:\n    image: x\n    ports: [\"80/sctp\"]\n",
            None,
            &["protocol `sctp`"],
        ),
        (
            "services:\n  web:\n    image: x\n    ports: [\"99999:80\"]\n",
            None,
            &["invalid port"],
        ),
        (
            "services:\n  web:\n    image: x\n    restart: sometimes\n",
            None,
            &["restart policy `sometimes`"],
        ),
        (
            "services:\n  web:\n    image: x\n    mem_limit: lots\n",
            None,
            &["mem_limit", "invalid size"],
        ),
        (
            "services:\n  web:\n    image: x\n    stop_grace_period: 10\n",
            None,
            &["stop_grace_period", "invalid duration"],
        ),
        (
            "services:\n  web:\n    image: x\n    healthcheck:\n      test: [\"wget\", \"x\"]\n",
            None,
            &["CMD, CMD-SHELL or NONE"],
        ),
        (
            "services:\n  web:\n    image: x\n    healthcheck:\n      retries: many\n",
            None,
            &["`retries`"],
        ),
        (
            "services:\n  web:\n    image: x\n    labels: {com.docker.compose.project: other}\n",
            None,
            &["reserved"],
        ),
        (
            "services:\n  web:\n    image: x\n    env_file: missing.env\n",
            None,
            &["service `web`", "missing.env", "cannot be read"],
        ),
        (
            "services:\n  web:\n    image: x\n    env_file: /etc/passwd\n",
            None,
            &["service `web`", "\"/etc/passwd\" is absolute"],
        ),
        (
            "services:\n  web:\n    image: x\n    env_file: [ok.env, ../../../etc/shadow]\n",
            None,
            &[
                "service `web`",
                "\"../../../etc/shadow\" leaves the stack directory",
            ],
        ),
        (
            "services:\n  web:\n    image: x\n    extends: {service: base, file: /etc/compose.yaml}\n",
            None,
            &["extends file /etc/compose.yaml", "is absolute"],
        ),
        (
            "services:\n  web:\n    image: x\n    secrets: [s]\nsecrets:\n  s: {file: ../other/key}\n",
            None,
            &["secret `s`", "leaves the stack directory"],
        ),
        (
            "services:\n  Web Server:\n    image: x\n",
            None,
            &["service `Web Server`", "service names"],
        ),
        (
            "name: other\nservices:\n  web:\n    image: x\n",
            None,
            &["`other`", "stack is `shop`"],
        ),
        (
            "services:\n  web:\n    image: x\n    ports: !reset []\n",
            None,
            &["services.web.ports", "YAML tag `!reset`"],
        ),
        (
            "services:\n  web:\n    image: x\n",
            Some("BROKEN LINE"),
            &[".env line 1"],
        ),
    ];
    for (compose, env, fragments) in cases {
        check_err(compose, *env, fragments);
    }
}

#[test]
fn interpolated_values_cannot_change_the_file_structure() {
    let spec = load_with(
        "services:\n  web:\n    image: x\n    environment:\n      PASSWORD: ${PW}\n      QUOTED: \"${PW}\"\n",
        Some("PW='a: b\" # c'\n"),
        &[],
    )
    .unwrap();
    let web = spec.service("web").unwrap();
    assert_eq!(web.environment["PASSWORD"], "a: b\" # c");
    assert_eq!(web.environment["QUOTED"], "a: b\" # c");
}

#[test]
fn interpolated_scalars_get_their_types() {
    let spec = load_with(
        "services:\n  web:\n    image: x\n    ports:\n      - target: ${T}\n        published: ${P}\n    healthcheck:\n      retries: ${R}\n      disable: ${D}\n    volumes:\n      - type: volume\n        source: d\n        target: /d\n        read_only: ${RO}\nvolumes:\n  d:\n    external: ${EXT}\n",
        Some("T=80\nP=8080\nR=3\nD=false\nRO=true\nEXT=true\n"),
        &[],
    )
    .unwrap();
    let web = spec.service("web").unwrap();
    assert_eq!(web.ports[0].container_port, 80);
    assert_eq!(web.ports[0].host_port, Some(8080));
    assert_eq!(web.healthcheck.as_ref().unwrap().retries, Some(3));
    assert!(web.mounts[0].read_only);
    assert!(spec.volumes["d"].external);
    assert_eq!(spec.volumes["d"].engine_name, "d");
}

#[test]
fn short_ports() {
    let check = |text: &str, want: &[(Option<&str>, Option<u16>, u16, &str)]| {
        let got = parse_port(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let got: Vec<(Option<&str>, Option<u16>, u16, &str)> = got
            .iter()
            .map(|p| {
                (
                    p.host_ip.as_deref(),
                    p.host_port,
                    p.container_port,
                    p.protocol.as_str(),
                )
            })
            .collect();
        assert_eq!(got, want, "{text}");
    };
    check("80", &[(None, None, 80, "tcp")]);
    check("8080:80", &[(None, Some(8080), 80, "tcp")]);
    check("8080:80/udp", &[(None, Some(8080), 80, "udp")]);
    check(
        "127.0.0.1:8080:80",
        &[(Some("127.0.0.1"), Some(8080), 80, "tcp")],
    );
    check("127.0.0.1::80", &[(Some("127.0.0.1"), None, 80, "tcp")]);
    check("[::1]:8080:80", &[(Some("::1"), Some(8080), 80, "tcp")]);
    check(
        "7000-7001",
        &[(None, None, 7000, "tcp"), (None, None, 7001, "tcp")],
    );
    check(
        "8000-8001:9000-9001",
        &[
            (None, Some(8000), 9000, "tcp"),
            (None, Some(8001), 9001, "tcp"),
        ],
    );
}

#[test]
fn short_mounts() {
    type Case<'a> = (&'a str, (MountKind, &'a str, &'a str, bool));
    let cases: &[Case] = &[
        ("data:/data", (MountKind::Volume, "data", "/data", false)),
        ("data:/data:ro", (MountKind::Volume, "data", "/data", true)),
        ("data:/data:rw", (MountKind::Volume, "data", "/data", false)),
        ("./x:/x", (MountKind::Bind, "./x", "/x", false)),
        ("/abs:/x:ro", (MountKind::Bind, "/abs", "/x", true)),
        ("../up:/x", (MountKind::Bind, "../up", "/x", false)),
    ];
    for (text, (kind, source, target, ro)) in cases {
        let got = parse_short_mount(text).unwrap();
        assert_eq!(
            got,
            (*kind, (*source).to_owned(), (*target).to_owned(), *ro),
            "{text}"
        );
    }
}

#[test]
fn relative_paths_resolve_inside_the_stack_directory() {
    let spec = ok(
        "services:\n  a:\n    image: x\n    volumes: ['./data/../data/./x:/x', '../sibling:/s']\n",
    );
    let a = spec.service("a").unwrap();
    assert_eq!(a.mounts[0].source, "/stacks/shop/data/x");
    assert_eq!(a.mounts[1].source, "/stacks/sibling");
}

#[test]
fn replicas_and_update_config_are_read_with_swarm_defaults() {
    use dockmesh_core::release::{FailureAction, UpdateConfig, UpdateOrder};
    let spec = load_with(
        "services:\n  web:\n    image: x\n    ports: [\"80\"]\n    deploy:\n      replicas: 3\n      update_config:\n        parallelism: 2\n        delay: 1s\n        order: start-first\n        failure_action: rollback\n        monitor: 500ms\n        max_failure_ratio: 0.25\n  one:\n    image: x\n",
        None,
        &[],
    )
    .unwrap();
    let web = spec.service("web").unwrap();
    assert_eq!(web.replicas(), 3);
    assert_eq!(
        (1..=3)
            .map(|n| web.replica_name("p", n))
            .collect::<Vec<_>>(),
        ["p-web-1", "p-web-2", "p-web-3"]
    );
    let c = web.update_settings().config();
    assert_eq!(
        c,
        UpdateConfig {
            parallelism: 2,
            delay: std::time::Duration::from_secs(1),
            order: UpdateOrder::StartFirst,
            failure_action: FailureAction::Rollback,
            monitor: std::time::Duration::from_millis(500),
            max_failure_ratio: 0.25,
        }
    );
    let one = spec.service("one").unwrap();
    assert_eq!(one.replicas(), 1);
    assert_eq!(one.update_settings().config(), UpdateConfig::default());
    let scaled = load_with(
        "services:\n  web:\n    image: x\n    ports: [\"80\"]\n    deploy:\n      replicas: 5\n  one:\n    image: x\n",
        None,
        &[],
    )
    .unwrap();
    let h = |s: &crate::compose::StackSpec| {
        crate::deploy::config_hash(s, s.service("web").unwrap(), "sha256:1")
    };
    assert_eq!(
        h(&spec),
        h(&scaled),
        "replicas and update_config are not part of the hash: scaling replaces nothing"
    );
}

/// Every file a stack names is read by its path relative to the stack directory, never an
/// absolute one, and an error about a file's content names the file and line but never quotes
/// the content: the file may be one the compose file's author cannot read.
#[test]
fn files_a_stack_names_are_read_relative_and_never_quoted() {
    let asked = std::cell::RefCell::new(Vec::new());
    let spec = load(
        &files(
            "services:\n  web:\n    image: x\n    env_file: [./conf/../app.env, conf/more.env]\n",
            None,
        ),
        Path::new("/stacks/shop"),
        &|p: &Path| {
            asked.borrow_mut().push(p.to_path_buf());
            Ok("A=1\n".into())
        },
    )
    .unwrap();
    assert_eq!(
        spec.services[0].environment.get("A").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        *asked.borrow(),
        [PathBuf::from("app.env"), PathBuf::from("conf/more.env")]
    );

    for content in [
        "root:x:0:0:TOPSECRET:/root:/bin/bash\n",
        "TOPSECRET VALUE\n",
        "A='TOPSECRET' TOPSECRET\n",
        "A=${TOPSECRET:?TOPSECRET}\n",
        "A=${TOPSECRET\n",
    ] {
        let err = load_with(
            "services:\n  web:\n    image: x\n    env_file: app.env\n",
            None,
            &[("app.env", content)],
        )
        .expect_err(content)
        .report();
        assert!(err.contains("app.env line 1"), "{content:?} => {err}");
        assert!(!err.contains("TOPSECRET"), "{content:?} => {err}");
    }
}
